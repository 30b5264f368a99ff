"""Validate users' `spec.sglang.extraArgs` against the pinned SGLang's own flag table — without importing sglang.

The table (`data/sglang_flags.json`) is generated from SGLang's argparse parser by
`hack/sglang/gen_flag_table.py` in the conformance venv and drift-checked by `tests/conformance`. This module
only reads JSON (stdlib), so admission stays cheap.

Rules (each violation is one human-readable error naming the flag):
- unknown flags are rejected, with close spellings suggested;
- abbreviations are rejected (argparse accepts unique prefixes such as `--tp`, but they break when SGLang adds
  a flag, e.g. `--cuda-graph-max-bs` became ambiguous): spell the flag out;
- flags the operator sets from the plan are rejected ("set by the operator from the plan; use spec.<field>");
- deprecated flags and deprecated values are rejected, naming SGLang's replacement;
- values: a flag that takes no value must not get one, a valued flag must get its value(s), choices and
  int/float types are checked; `--flag=value` and `--flag value` are both accepted;
- `--config` (reads options from a file, bypassing this check) and `--help`/`--version` are rejected;
- a flag given twice is rejected (argparse silently keeps the last one).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from typing import Any

# flag -> spec field the user should set instead (aliases of these flags are owned too)
DEFAULT_OWNED: dict[str, str] = {
    "--model-path": "model / spec.weights",
    "--tp-size": "pool / spec.maxNodesPerGroup (the planner chooses the layout)",
    "--ep-size": "pool / spec.maxNodesPerGroup (the planner chooses the layout)",
    "--attn-dp-size": "pool / spec.maxNodesPerGroup (the planner chooses the layout)",
    "--dp-size": "replicas / spec.autoscaling (replicas are LWS groups)",
    "--moe-a2a-backend": "pool (the planner chooses the all-to-all backend)",
    "--nnodes": "maxNodesPerGroup",
    "--node-rank": "maxNodesPerGroup",
    "--dist-init-addr": "maxNodesPerGroup",
    "--host": "sglang.port",
    "--port": "sglang.port",
    "--mem-fraction-static": "sessions",
    "--context-length": "sessions.contextTokens",
    "--kv-cache-dtype": "kvCacheDtype",
    "--quantization": "precision",
    "--max-running-requests": "sessions.target",
    "--chunked-prefill-size": "sessions",
    # the planner sizes the model from its config; an override changes layers/experts under the plan's memory math
    "--json-model-override-args": "model.config (the planner sizes memory from the model's config)",
    "--moe-dense-tp-size": "pool / spec.maxNodesPerGroup (the planner chooses the layout)",
    "--revision": "weights.huggingFace.revision",
}

_FORBIDDEN = {
    "--config": "reads options from a file inside the pod, which would bypass this validation; put them in extraArgs",
    "--help": "prints help and exits; the server would never start",
    "-h": "prints help and exits; the server would never start",
    "--version": "prints the version and exits; the server would never start",
    "--api-key": "a key in extraArgs is plain text to everyone who can read the MoEDeployment; set "
    "spec.sglang.apiKeySecretRef (a Secret key) instead",
    "--admin-api-key": "a key in extraArgs is plain text to everyone who can read the MoEDeployment; admin "
    "endpoints are not exposed through the operator",
}
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")  # argparse treats these as values


@lru_cache(maxsize=1)
def load_table() -> dict[str, Any]:
    """The committed flag table of the pinned SGLang (see module docstring)."""
    text = resources.files("moe_operator").joinpath("data/sglang_flags.json").read_text(encoding="utf-8")
    table: dict[str, Any] = json.loads(text)
    return table


def sglang_version(table: Mapping[str, Any] | None = None) -> str:
    return str((table or load_table())["sglang_version"])


def _is_flag(token: str) -> bool:
    return token.startswith("-") and token != "-" and not _NEGATIVE_NUMBER.match(token)


def _check_value(flag: str, entry: Mapping[str, Any], value: str, version: str) -> list[str]:
    typ = entry.get("type")
    norm = value
    if typ == "int":
        try:
            norm = str(int(value))
        except ValueError:
            return [f"{flag}: expects an integer, got {value!r}"]
    elif typ == "float":
        try:
            float(value)
        except ValueError:
            return [f"{flag}: expects a number, got {value!r}"]
    choices = entry.get("choices")
    if choices is not None and norm not in choices and value not in choices:
        shown = ", ".join(choices) if len(choices) <= 20 else ", ".join(choices[:20]) + ", ..."
        return [f"{flag}: invalid value {value!r}; SGLang {version} accepts: {shown}"]
    dep_values = entry.get("deprecated_values") or {}
    if value in dep_values:
        repl = dep_values[value]
        hint = f"; use {flag} {repl}" if repl else ""
        return [f"{flag}: value {value!r} is deprecated in SGLang {version}{hint}"]
    return []


def _unknown(flag: str, aliases: Mapping[str, str], version: str) -> str:
    matches = [o for o in aliases if o.startswith(flag)] if flag.startswith("--") and len(flag) > 2 else []
    canon = sorted({aliases[o] for o in matches})
    if len(canon) == 1:
        return f"{flag}: abbreviation of {canon[0]} (abbreviations are fragile); spell out {canon[0]}"
    if len(canon) > 1:
        shown = ", ".join(canon[:6]) + (", ..." if len(canon) > 6 else "")
        return f"{flag}: ambiguous abbreviation (could be {shown}); spell out the full flag"
    close = difflib.get_close_matches(flag, list(aliases), n=3, cutoff=0.75)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"{flag}: unknown flag for SGLang {version}{hint}"


def validate_extra_args(
    args: list[str],
    owned: Mapping[str, str] | None = None,
    table: Mapping[str, Any] | None = None,
) -> list[str]:
    """Check `args` (SGLang command-line tokens) against the pinned SGLang's flag table.

    owned: flag -> spec field hint for flags the operator sets itself (default DEFAULT_OWNED; aliases of a
    flag are owned with it). Returns human-readable errors; empty means valid.
    """
    tbl = table if table is not None else load_table()
    flags: Mapping[str, Any] = tbl["flags"]
    aliases: Mapping[str, str] = tbl["aliases"]
    version = str(tbl.get("sglang_version", "?"))
    owned_map = DEFAULT_OWNED if owned is None else owned
    owned_canon = {aliases.get(f, f): (f, hint) for f, hint in owned_map.items()}

    errors: list[str] = []
    seen: dict[str, str] = {}
    i, n = 0, len(args)
    while i < n:
        tok = args[i]
        i += 1
        if not isinstance(tok, str) or not _is_flag(tok):
            errors.append(f"{tok!r}: unexpected value (not after a flag that takes one); SGLang takes no positionals")
            continue
        if tok == "--":
            errors.append("'--': not allowed in extraArgs")
            continue
        name, eq, inline = tok.partition("=")
        if name in _FORBIDDEN:
            errors.append(f"{name}: not allowed in extraArgs: {_FORBIDDEN[name]}")
            while not eq and i < n and not _is_flag(args[i]):
                i += 1
            continue
        canon = aliases.get(name)
        if canon is None:
            errors.append(_unknown(name, aliases, version))
            # skip the values that belong to the unknown flag, so they are not reported again
            while i < n and not _is_flag(args[i]):
                i += 1
            continue
        entry = flags[canon]
        spelled = name if name == canon else f"{name} (alias of {canon})"

        # gather values the way argparse would
        nargs = entry.get("nargs")
        values: list[str] = []
        if eq:
            if not entry.get("takes_value"):
                errors.append(f"{spelled}: takes no value, got {inline!r}")
            values = [inline]
        elif entry.get("takes_value"):
            if nargs is None or isinstance(nargs, int):
                want = 1 if nargs is None else nargs
                while len(values) < want and i < n and not _is_flag(args[i]):
                    values.append(args[i])
                    i += 1
                if len(values) < want:
                    what = "a value" if want == 1 else f"{want} values"
                    errors.append(f"{spelled}: expects {what}")
            elif nargs == "?":
                if i < n and not _is_flag(args[i]):
                    values.append(args[i])
                    i += 1
            else:  # "+" or "*"
                while i < n and not _is_flag(args[i]):
                    values.append(args[i])
                    i += 1
                if nargs == "+" and not values:
                    errors.append(f"{spelled}: expects one or more values")

        if canon in owned_canon:
            _, hint = owned_canon[canon]
            errors.append(f"{spelled}: set by the operator from the plan; use spec.{hint}")
            continue
        if entry.get("deprecated"):
            repl = entry.get("replacement")
            hint = f"; use {repl}" if repl else ""
            errors.append(f"{spelled}: deprecated in SGLang {version}{hint}")
            continue
        if canon in seen:
            errors.append(f"{spelled}: given more than once (also as {seen[canon]})")
        seen[canon] = name
        if entry.get("takes_value"):
            for v in values:
                errors.extend(_check_value(name, entry, v, version))
    return errors
