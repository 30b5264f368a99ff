"""`moe-operator` command line. Subcommands import their modules lazily so `plan` starts fast."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from moe_operator import __version__

# name -> (help, module path, function that adds arguments, function that runs); filled by _register
Runner = Callable[[argparse.Namespace], int]


def _cmd_version(args: argparse.Namespace) -> int:
    print(f"moe-operator {__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moe-operator",
        description="Plan, serve and autoscale Mixture-of-Experts models on SGLang multi-node groups.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=_cmd_version)
    _add_lazy_commands(sub)
    return parser


def _add_lazy_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Each subcommand module exposes add_arguments(parser) and run(args) -> int."""
    import importlib

    for name, module, help_text in _COMMANDS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:  # a subcommand whose module is not written yet
            if exc.name != module:
                raise
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.add_arguments(p)
        p.set_defaults(func=mod.run)


# Modules are imported only to add their arguments; they must keep heavy imports inside run().
_COMMANDS: list[tuple[str, str, str]] = [
    ("plan", "moe_operator.planner.cli", "plan memory and topology for a model on an accelerator pool"),
    ("crds", "moe_operator.api.cli", "write the CustomResourceDefinitions generated from the API models"),
    ("run", "moe_operator.run", "run the operator against a cluster"),
    ("simulate", "moe_operator.autoscale.cli", "replay a request trace through the autoscaler and baselines"),
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
