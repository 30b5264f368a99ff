"""A small evaluator of the CRD's structural OpenAPI schema (no CEL): defaulting, unknown-field detection and
value validation the way the apiserver does them, for tests and offline checks of manifests.

Covers what the generated schemas use: type, enum, minimum/maximum (+exclusive flags), min/maxLength, pattern,
min/maxItems, min/maxProperties, required, properties, additionalProperties, items, x-kubernetes-int-or-string,
x-kubernetes-preserve-unknown-fields, x-kubernetes-list-type set/map uniqueness, format date-time, default.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from typing import Any

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
}


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """Return a copy of value with the schema's defaults filled in (recursively, defaults included)."""
    value = copy.deepcopy(value)
    _default(value, schema)
    return value


def _default(value: Any, schema: dict[str, Any]) -> None:
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name, sub in props.items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
        for name, v in value.items():
            if name in props:
                _default(v, props[name])
            elif isinstance(schema.get("additionalProperties"), dict):
                _default(v, schema["additionalProperties"])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for v in value:
            _default(v, schema["items"])


def validate(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Problems of value against schema, each "path: problem"; unknown fields count as problems (the apiserver
    would prune them silently, which for a hand-written manifest is a bug)."""
    where = path or "<root>"
    if schema.get("x-kubernetes-int-or-string"):
        if not (_TYPES["integer"](value) or isinstance(value, str)):
            return [f"{where}: must be an integer or a string"]
    elif "type" in schema:
        if not _TYPES[schema["type"]](value):
            return [f"{where}: must be of type {schema['type']}"]
    elif not schema.get("x-kubernetes-preserve-unknown-fields"):
        return [f"{where}: schema node without a type"]

    out: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{where}: {value!r} not one of {schema['enum']}")
    if _TYPES["number"](value):
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if lo is not None and (value < lo or (schema.get("exclusiveMinimum") and value == lo)):
            out.append(f"{where}: {value} below minimum {lo}")
        if hi is not None and (value > hi or (schema.get("exclusiveMaximum") and value == hi)):
            out.append(f"{where}: {value} above maximum {hi}")
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append(f"{where}: longer than {schema['maxLength']}")
        if "minLength" in schema and len(value) < schema["minLength"]:
            out.append(f"{where}: shorter than {schema['minLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append(f"{where}: {value!r} does not match {schema['pattern']}")
        if schema.get("format") == "date-time":
            try:
                dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                out.append(f"{where}: {value!r} is not an RFC 3339 date-time")
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            out.append(f"{where}: more than {schema['maxItems']} items")
        if "minItems" in schema and len(value) < schema["minItems"]:
            out.append(f"{where}: fewer than {schema['minItems']} items")
        lt = schema.get("x-kubernetes-list-type")
        if lt == "set" and len({repr(v) for v in value}) != len(value):
            out.append(f"{where}: duplicate items in a set")
        if lt == "map":
            keys = [tuple(v.get(k) for k in schema.get("x-kubernetes-list-map-keys", [])) for v in value]
            if len(set(keys)) != len(keys):
                out.append(f"{where}: duplicate map-list keys")
        for i, v in enumerate(value):
            out += validate(v, schema.get("items", {}), f"{path}[{i}]")
    if isinstance(value, dict) and not (
        schema.get("x-kubernetes-preserve-unknown-fields") and "properties" not in schema
    ):
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            out.append(f"{where}: more than {schema['maxProperties']} properties")
        for req in schema.get("required", []):
            if req not in value:
                out.append(f"{path + '.' if path else ''}{req}: required")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for k, v in value.items():
            sub = f"{path}.{k}" if path else k
            if k in props:
                out += validate(v, props[k], sub)
            elif isinstance(extra, dict):
                out += validate(v, extra, sub)
            elif not schema.get("x-kubernetes-preserve-unknown-fields") and path != "metadata":
                out.append(f"{sub}: unknown field")  # (ObjectMeta is never pruned; its schema only names `name`)
    return out
