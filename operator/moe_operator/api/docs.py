"""Field reference tables for docs/api.md, generated from the CRD schemas (kept in sync by a test)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moe_operator.api.crd import CRDS, openapi_schema

BEGIN = "<!-- BEGIN GENERATED FIELD REFERENCE (moe-operator crds --docs docs/api.md) -->"
END = "<!-- END GENERATED FIELD REFERENCE -->"


def _type(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    t = node.get("type", "any")
    if t == "array":
        return f"[]{_type(node.get('items', {}))}"
    if t == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map[string]{_type(node['additionalProperties'])}"
    if node.get("format"):
        return f"{t} ({node['format']})"
    return t


def _constraints(node: dict[str, Any]) -> str:
    out = []
    if "enum" in node:
        out.append(" \\| ".join(f"`{v}`" for v in node["enum"]))
    if "minimum" in node or "maximum" in node:
        out.append(f"{node.get('minimum', '')}..{node.get('maximum', '')}")
    if "maxLength" in node and "enum" not in node:
        out.append(f"≤{node['maxLength']} chars")
    if "maxItems" in node:
        out.append(f"≤{node['maxItems']} items")
    if "default" in node and node["default"] != {}:
        out.append(f"default `{node['default']}`")
    return "; ".join(out)


def _rows(node: dict[str, Any], path: str, required: bool) -> list[str]:
    desc = " ".join(node.get("description", "").split()).replace("|", "\\|")
    rows = [f"| `{path}` | {_type(node)}{' (required)' if required else ''} | {_constraints(node)} | {desc} |"]
    target = node.get("items", node) if node.get("type") == "array" else node
    req = set(target.get("required", []))
    for name, sub in target.get("properties", {}).items():
        sep = "[]." if node.get("type") == "array" else "."
        rows += _rows(sub, f"{path}{sep}{name}", name in req)
    return rows


def reference_markdown() -> str:
    parts = [BEGIN, ""]
    for info in CRDS:
        schema = openapi_schema(info)
        for top in ("spec", "status"):
            parts += [
                f"### {info.kind} `.{top}`",
                "",
                "| Field | Type | Constraints | Description |",
                "|---|---|---|---|",
            ]
            parts += _rows(schema["properties"][top], top, False)[1:]
            rules = []
            for _, n in _walk(schema["properties"][top], top):
                rules += [f"- `{r['rule']}` — {r['message']}" for r in n.get("x-kubernetes-validations", [])]
            if rules:
                parts += ["", f"CEL rules of `{info.kind}.{top}`:", "", *rules]
            parts.append("")
    parts.append(END)
    return "\n".join(parts)


def _walk(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for name, sub in node.get("properties", {}).items():
        out += _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        out += _walk(node["items"], f"{path}[]")
    return out


def update_docs(path: Path) -> bool:
    """Replace the generated block in path; True when the file changed."""
    text = path.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    new = text[:start] + reference_markdown() + text[end:]
    if new != text:
        path.write_text(new)
    return new != text


def docs_drift(path: Path) -> bool:
    text = path.read_text()
    if BEGIN not in text or END not in text:
        return True
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[start:end] != reference_markdown()
