"""Check every rule of operator/moe_operator/data/sglang_compat.yaml against the pinned SGLang wheel's own source.

Usage (conformance venv, see hack/setup-sglang):  .venv-sglang/bin/python hack/sglang/check_compat.py
Prints JSON {"sglang_version", "results": [{"rule", "file", "function", "missing": [...], "present": [...],
"error"}]}. The wheel's files are located with importlib (find_spec), parsed with ast and the named function
(``Class.method`` allowed) is printed with ast.unparse, so fragments compare on normalised code, independent of
formatting. Nothing is imported from the modules checked (several need CUDA-only packages) and nothing is modified.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "operator" / "moe_operator" / "data" / "sglang_compat.yaml"


def _srt_root() -> Path:
    spec = importlib.util.find_spec("sglang")
    if spec is None or spec.origin is None:
        raise SystemExit("sglang is not installed in this interpreter (use .venv-sglang)")
    return Path(spec.origin).parent / "srt"


def _function_source(path: Path, qualname: str | None) -> str:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if not qualname:
        return ast.unparse(tree)
    node: ast.AST = tree
    for part in qualname.split("."):
        found = [
            n for n in ast.iter_child_nodes(node)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and n.name == part
        ]  # fmt: skip
        if not found:
            raise LookupError(f"{qualname} not found in {path.name}")
        node = found[-1]
    return ast.unparse(node)


def check(table: dict) -> list[dict]:
    srt = _srt_root()
    out = []
    for section in ("moe", "memory"):
        for rule in table.get(section) or []:
            for ev in rule.get("evidence") or []:
                res = {"rule": rule["id"], "file": ev["file"], "function": ev.get("function"), "missing": [],
                       "present": [], "error": None}
                try:
                    src = _function_source(srt / ev["file"], ev.get("function"))
                    res["missing"] = [c for c in ev.get("contains") or [] if c not in src]
                    res["present"] = [a for a in ev.get("absent") or [] if a in src]
                except (OSError, LookupError, SyntaxError) as exc:
                    res["error"] = f"{type(exc).__name__}: {exc}"
                out.append(res)
    return out


def probes() -> dict[str, object]:
    """Rules small enough to call, not only read: SGLang's own functions run on plain namespaces."""
    from types import SimpleNamespace

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _sglang_env  # noqa: F401  (stubs torch & co. before any sglang import)
    from sglang.srt.arg_groups import overrides

    return {
        backend: overrides._a2a_ep_size(SimpleNamespace(moe_a2a_backend=backend, ep_size=1, tp_size=16))
        for backend in ("none", "deepep")
    }


def main() -> int:
    table = yaml.safe_load(TABLE.read_text(encoding="utf-8"))
    from importlib.metadata import version

    doc = {
        "sglang_version": version("sglang"),
        "table_sglang": table.get("sglang"),
        "results": check(table),
        "a2a_ep_size": probes(),
    }
    json.dump(doc, sys.stdout, indent=1)
    sys.stdout.write("\n")
    bad = [r for r in doc["results"] if r["missing"] or r["present"] or r["error"]]
    return 1 if bad and os.environ.get("CHECK_COMPAT_STRICT") == "1" else 0


if __name__ == "__main__":
    sys.exit(main())
