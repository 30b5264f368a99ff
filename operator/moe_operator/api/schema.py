"""pydantic v2 model -> Kubernetes structural OpenAPI v3 schema (the `openAPIV3Schema` of a CRD version).

pydantic's JSON Schema (2020-12) is rewritten into the subset CRDs accept:

- `$ref`/`$defs` are inlined; a field's own description/default/validations win over the referenced model's;
- `Optional[X]` (`anyOf: [X, {type: null}]`, `default: null`) becomes plain `X`, not required, without default
  (null is pruned by the apiserver, so CEL sees an absent field and `has()` works);
- `anyOf: [integer, string]` and nodes marked `x-kubernetes-int-or-string` keep the one union CRDs allow;
- `const` -> `enum`; numeric `exclusiveMinimum/Maximum` -> `minimum/maximum` + boolean flags (OpenAPI 3.0);
- `additionalProperties: true` (free-form dict) -> `x-kubernetes-preserve-unknown-fields`; `additionalProperties:
  false` (extra="forbid") is dropped (the apiserver prunes unknown fields anyway);
- `patternProperties` with one pattern (a dict with constrained keys) -> `additionalProperties` (key rules need CEL);
- `title`, `propertyNames`, `examples`, `uniqueItems` and null defaults are dropped;
- keys are ordered (description, type, ... then x-kubernetes-*) so the generated YAML diffs cleanly.

Anything else that is not structural raises `SchemaError` naming the path, so a model change cannot silently
produce a CRD the apiserver rejects.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel


class SchemaError(ValueError):
    pass


_DROP = {"title", "propertyNames", "examples", "uniqueItems", "$schema", "$id", "readOnly", "writeOnly"}
_FORBIDDEN = {
    "allOf",
    "oneOf",
    "not",
    "prefixItems",
    "patternProperties",
    "dependentSchemas",
    "if",
    "then",
    "else",
    "discriminator",
    "const",
    "$defs",
    "definitions",
}
_ORDER_FIRST = ["description", "type", "format", "enum", "default", "nullable"]


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural schema of `model` (validation mode, camelCase aliases)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _order(_convert(raw, defs, "", ()))


def _resolve(ref: str, defs: dict[str, Any], path: str) -> dict[str, Any]:
    prefix = "#/$defs/"
    if not ref.startswith(prefix) or ref[len(prefix) :] not in defs:
        raise SchemaError(f"{path or '<root>'}: unresolvable $ref {ref}")
    return copy.deepcopy(defs[ref[len(prefix) :]])


def _merge(inner: dict[str, Any], outer: dict[str, Any]) -> dict[str, Any]:
    """Field-level keys (outer) override the referenced type's (inner); validation lists are concatenated."""
    out = dict(inner)
    for k, v in outer.items():
        if k == "x-kubernetes-validations" and k in out:
            out[k] = [*out[k], *v]
        else:
            out[k] = v
    return out


def _is_null(node: Any) -> bool:
    return isinstance(node, dict) and node.get("type") == "null" and len(node) == 1


def _convert(node: dict[str, Any], defs: dict[str, Any], path: str, stack: tuple[str, ...]) -> dict[str, Any]:
    node = dict(node)
    where = path or "<root>"

    if "$ref" in node:
        ref = node.pop("$ref")
        if ref in stack:
            raise SchemaError(f"{where}: recursive model {ref} cannot be inlined")
        inner = _convert(_resolve(ref, defs, path), defs, path, (*stack, ref))
        return _merge(inner, _convert(node, defs, path, stack) if node else {})

    if "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if not _is_null(b)]
        if node.get("default", 0) is None:
            node.pop("default")
        if node.get("x-kubernetes-int-or-string") or (
            len(branches) == 2 and sorted(b.get("type", "") for b in branches) == ["integer", "string"]
        ):
            node["x-kubernetes-int-or-string"] = True
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
            node.pop("type", None)
            return _clean(node, defs, path, stack)
        if len(branches) != 1:
            raise SchemaError(f"{where}: union of {len(branches)} types is not structural (only int-or-string is)")
        inner = _convert(branches[0], defs, path, stack)
        return _merge(inner, _clean(node, defs, path, stack))

    return _clean(node, defs, path, stack)


def _clean(node: dict[str, Any], defs: dict[str, Any], path: str, stack: tuple[str, ...]) -> dict[str, Any]:
    where = path or "<root>"
    for k in _DROP:
        node.pop(k, None)
    if "default" in node and node["default"] is None:
        node.pop("default")
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for k in ("exclusiveMinimum", "exclusiveMaximum"):
        if k in node and not isinstance(node[k], bool):
            bound = "minimum" if k == "exclusiveMinimum" else "maximum"
            node[bound] = node.pop(k)
            node[k] = True
    pp = node.get("patternProperties")
    if isinstance(pp, dict) and len(pp) == 1 and "additionalProperties" not in node and "properties" not in node:
        # dict[ConstrainedKey, V]: CRDs cannot constrain map keys structurally (a CEL rule has to)
        node["additionalProperties"] = next(iter(node.pop("patternProperties").values()))
    bad = _FORBIDDEN.intersection(node)
    if bad:
        raise SchemaError(f"{where}: {sorted(bad)} not allowed in a structural schema")

    ap = node.get("additionalProperties")
    if ap is False:
        node.pop("additionalProperties")
    elif ap is True or ap == {}:
        node.pop("additionalProperties")
        node["x-kubernetes-preserve-unknown-fields"] = True
    elif isinstance(ap, dict):
        node["additionalProperties"] = _convert(ap, defs, f"{path}.*", stack)

    if node.get("x-kubernetes-preserve-unknown-fields"):
        node.setdefault("type", "object")

    if "properties" in node:
        node["properties"] = {
            name: _convert(sub, defs, f"{path}.{name}" if path else name, stack)
            for name, sub in node["properties"].items()
        }
        if not node.get("required"):
            node.pop("required", None)
    if "items" in node:
        if not isinstance(node["items"], dict):
            raise SchemaError(f"{where}: tuple-typed items are not structural")
        node["items"] = _convert(node["items"], defs, f"{path}[]", stack)
    return node


def _order(node: Any) -> Any:
    """Stable, readable key order: description, type, ... alphabetical ..., x-kubernetes-*; properties keep
    the model's field order."""
    if isinstance(node, list):
        return [_order(v) for v in node]
    if not isinstance(node, dict):
        return node
    first = [k for k in _ORDER_FIRST if k in node]
    ext = sorted(k for k in node if k.startswith("x-kubernetes-"))
    rest = sorted(k for k in node if k not in first and k not in ext)
    out: dict[str, Any] = {}
    for k in [*first, *rest, *ext]:
        v = node[k]
        if k == "properties":
            out[k] = {name: _order(sub) for name, sub in v.items()}
        elif k in ("default", "enum", "x-kubernetes-list-map-keys", "required"):
            out[k] = v
        elif k == "x-kubernetes-validations":
            out[k] = [
                {kk: r[kk] for kk in ("rule", "message", "messageExpression", "fieldPath", "reason") if kk in r}
                for r in v
            ]
        else:
            out[k] = _order(v)
    return out
