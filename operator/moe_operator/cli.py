"""`moe-operator` command line. Subcommands import their modules lazily so `plan` starts fast."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from moe_operator import __version__


def _cmd_version(args: argparse.Namespace) -> int:
    print(f"moe-operator {__version__}")
    return 0


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moe-operator",
        description="Plan, serve and autoscale Mixture-of-Experts models on SGLang multi-node groups.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=_cmd_version)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    _add_lazy_commands(sub, chosen)
    return parser


def _add_lazy_commands(sub: argparse._SubParsersAction, chosen: str | None) -> None:  # type: ignore[type-arg]
    """Each subcommand module exposes add_arguments(parser) and run(args) -> int. Only the chosen command's module
    is imported, so `plan` never pays for pydantic or kopf."""
    import importlib
    import importlib.util

    for name, module, help_text in _COMMANDS:
        if importlib.util.find_spec(module) is None:  # a command whose module is not part of this build
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name != chosen:
            continue
        mod = importlib.import_module(module)
        mod.add_arguments(p)
        p.set_defaults(func=mod.run)


# Modules are imported only to add their arguments; they must keep heavy imports inside run().
_COMMANDS: list[tuple[str, str, str]] = [
    ("plan", "moe_operator.planner.cli", "plan memory and topology for a model on an accelerator pool"),
    ("crds", "moe_operator.api.cli", "write the CustomResourceDefinitions generated from the API models"),
    ("run", "moe_operator.run", "run the operator against a cluster"),
    ("simulate", "moe_sim.cli", "replay a request trace through the autoscaler and baselines"),
]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
