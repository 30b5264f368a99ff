"""Parse router argvs with SMG's own parser (run by the conformance tier in .testcluster/venv-router).

stdin: JSON [{"id": ..., "argv": [...]}] (the flags after the `smg` binary); stdout: JSON {id: result}. Each argv
goes through what `smg launch` does before it starts the Rust router (smg/launch_router.py `parse_router_args` ->
smg/router_args.py `RouterArgs.add_cli_args`, `RouterArgs.from_cli_args`, `_validate_router_args`); an argparse
error (unknown flag, bad choice, missing value) comes back as {"error": ...} instead of exiting. `--policy-choices`
prints the choices of `--policy` / `--prefill-policy` / `--decode-policy` instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from smg.router_args import RouterArgs


class _Refused(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _Refused(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="smg")
    RouterArgs.add_cli_args(p)
    return p


def _choices(p: argparse.ArgumentParser, flag: str) -> list[str]:
    for a in p._actions:
        if flag in a.option_strings:
            return sorted(a.choices or [])
    raise SystemExit(f"no {flag} in SMG's parser")


def parse(argv: list[str]) -> dict[str, object]:
    try:
        ns = _parser().parse_args(argv)
    except _Refused as e:
        return {"error": str(e)}
    ra = RouterArgs.from_cli_args(ns)
    ra._validate_router_args()
    out = {f.name: getattr(ra, f.name) for f in dataclasses.fields(ra)}
    out["discovery_provider"] = ra.selected_discovery_provider()
    return json.loads(json.dumps(out, default=str))


def main() -> None:
    if sys.argv[1:] == ["--policy-choices"]:
        p = _parser()
        print(json.dumps({f: _choices(p, f) for f in ("--policy", "--prefill-policy", "--decode-policy")}))
        return
    items = json.load(sys.stdin)
    print(json.dumps({it["id"]: parse(it["argv"]) for it in items}))


if __name__ == "__main__":
    main()
