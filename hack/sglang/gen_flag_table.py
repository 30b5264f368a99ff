"""Generate operator/moe_operator/data/sglang_flags.json: the flag table of the pinned SGLang's own parser.

Usage (conformance venv only):
    .venv-sglang/bin/python hack/sglang/gen_flag_table.py            # write the table
    .venv-sglang/bin/python hack/sglang/gen_flag_table.py --stdout   # print it (drift check)

Source of truth: the argparse parser that `prepare_server_args` builds (`ServerArgs.add_cli_args`). For every
action: its option strings, canonical dest, nargs / takes_value, choices, type name (int, float, str, bool-flag,
or the converter's name), default, and deprecation. Deprecations come from SGLang's own code, found three ways:
- the action class: `Deprecated*Action` (warns at parse time; `new_flag` is the replacement);
- the help text says "deprecated" (e.g. --enable-flashinfer-allreduce-fusion);
- probing: each flag (and each value of each flag with choices) is run through hack/sglang/parse_argv.py's
  stages (parse, model-independent resolution, `handle_deprecated_args`); a captured warning that mentions
  "deprecat" marks the flag, or the value (`deprecated_values`, e.g. --tool-call-parser glm45 -> glm).
The operator validates users' sglang.extraArgs against this table at admission without importing sglang.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _sglang_env  # noqa: E402  (must precede any sglang import)
import parse_argv  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "operator", "moe_operator", "data", "sglang_flags.json")
_USE = re.compile(r"[Uu]se\s+'?(--[A-Za-z0-9][\w\-{},=<>| .]*?)'?(?:\s+instead|\)|\.|$)")
_USE_VALUE = re.compile(r"use '([^']+)' instead", re.IGNORECASE)


def _type_name(a: argparse.Action) -> str:
    if a.nargs == 0:
        return "bool-flag"
    t = a.type
    if t is None:
        return "str"
    return getattr(t, "__name__", type(t).__name__)


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if v is argparse.SUPPRESS:
        return None
    return repr(v)


def _canonical(a: argparse.Action) -> str:
    longs = [o for o in a.option_strings if o.startswith("--")]
    return (longs or a.option_strings)[0]


def _probe_value(a: argparse.Action) -> str | None:
    if a.nargs == 0:
        return None
    if a.choices:
        return str(sorted(a.choices, key=str)[0])
    return {"int": "1", "float": "0.5"}.get(_type_name(a), "x")


def _probe(
    parser: argparse.ArgumentParser, api: dict[str, Any], argv: list[str], resolve: bool
) -> tuple[bool, list[str]]:
    """parse_argv.check's stages on one shared parser (building the 532-action parser is most of a check's cost).

    Same SGLang code: parse (parse-time Deprecated*Action warnings), `handle_deprecated_args` on the record,
    and (resolve=True) the model-independent resolution. Returns (parsed?, deprecation messages).
    """
    from sglang.srt.server_args import ServerArgs

    with parse_argv._captured() as (cap, wlist, _out, _err):
        try:
            ns = parser.parse_args(argv)
        except SystemExit:
            return False, []
        try:
            rec = ServerArgs.from_cli_args(ns)
            rec._raw_input = {f.name: getattr(rec, f.name) for f in api["record_fields"](type(rec))}
            rec._resolved_overrides = []
            api["run_hook"](api["handle_deprecated_args"], rec)
            if resolve:
                rec2 = ServerArgs.from_cli_args(ns)
                rec2.model_path = "dummy"
                rec2.resolve_once()
        except Exception:  # noqa: BLE001 - a probe value SGLang rejects tells nothing about deprecation
            pass
        msgs = list(cap.messages) + [str(w.message) for w in wlist]
    msgs = [parse_argv._ANSI.sub("", m).strip() for m in msgs]
    return True, [m for m in msgs if "deprecat" in m.lower()]


def build() -> dict[str, Any]:
    from sglang.srt.server_args import ServerArgs

    api = parse_argv._load()
    parser = argparse.ArgumentParser(prog="sglang serve")
    ServerArgs.add_cli_args(parser)

    flags: dict[str, dict[str, Any]] = {}
    aliases: dict[str, str] = {}
    for a in parser._actions:
        if isinstance(a, (argparse._HelpAction, argparse._VersionAction)) or not a.option_strings:
            continue
        canon = _canonical(a)
        help_text = a.help if isinstance(a.help, str) else ""
        entry: dict[str, Any] = {
            "option_strings": list(a.option_strings),
            "dest": a.dest,
            "takes_value": a.nargs != 0,
            "nargs": a.nargs,
            "type": _type_name(a),
            "choices": sorted((str(c) for c in a.choices), key=str) if a.choices else None,
            "default": _jsonable(a.default),
            "required": bool(a.required),
            "deprecated": False,
            "replacement": None,
            "deprecated_values": {},
        }
        cls = type(a).__name__
        if cls.startswith("Deprecated"):
            entry["deprecated"] = True
            entry["replacement"] = getattr(a, "new_flag", None)
        elif re.match(r"\s*\(?deprecated", help_text, re.IGNORECASE):
            entry["deprecated"] = True
            m = _USE.search(help_text)
            entry["replacement"] = m.group(1).strip() if m else None
        flags[canon] = entry
        for o in a.option_strings:
            aliases[o] = canon

    # probe: does SGLang warn "deprecated" for the flag itself, or for one of its values?
    base = ["--model-path", "m"]
    for canon, entry in flags.items():
        if canon in ("--model-path", "--config"):
            continue
        a = next(x for x in parser._actions if canon in x.option_strings)
        argv = [canon] if a.nargs == 0 else [canon, _probe_value(a) or "x"]
        accepted, deps = _probe(parser, api, base + argv, resolve=True)
        flag_dep = [m for m in deps if canon in m or a.dest in m]
        if accepted and flag_dep and not entry["deprecated"]:
            entry["deprecated"] = True
            m = _USE.search(flag_dep[0])
            entry["replacement"] = m.group(1).strip() if m else None
        if entry["deprecated"]:
            entry["deprecation_message"] = (flag_dep or [None])[0]
        for choice in entry["choices"] or []:
            accepted, deps = _probe(parser, api, base + [canon, choice], resolve=False)
            vdep = [m for m in deps if f"'{choice}'" in m]
            if accepted and vdep:
                m = _USE_VALUE.search(vdep[0])
                entry["deprecated_values"][choice] = m.group(1) if m else None

    return {
        "sglang_version": _sglang_env.SGLANG_VERSION,
        "generated_by": "hack/sglang/gen_flag_table.py (from ServerArgs.add_cli_args of the pinned wheel)",
        "num_actions": len(flags),
        "flags": dict(sorted(flags.items())),
        "aliases": dict(sorted(aliases.items())),
    }


def render(table: dict[str, Any]) -> str:
    return json.dumps(table, indent=1, sort_keys=True) + "\n"


def main() -> int:
    text = render(build())
    if "--stdout" in sys.argv[1:]:
        sys.stdout.write(text)
        return 0
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {os.path.relpath(OUT, ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
