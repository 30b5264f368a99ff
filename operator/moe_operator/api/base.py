"""Building blocks shared by the API models: the camelCase base model, CEL rules mirrored in Python, custom types.

A cross-field rule is declared once, as a `Rule`: its CEL text goes into the CRD (`x-kubernetes-validations`) and its
Python twin runs in `model_validate`, so the apiserver and the operator (handlers, webhook, tests) reject the same
objects with the same message.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationError,
    WithJsonSchema,
    model_serializer,
)
from pydantic import model_validator as _model_validator
from pydantic.alias_generators import to_camel


@dataclass(frozen=True)
class Rule:
    """One `x-kubernetes-validations` entry plus the Python check that mirrors it.

    `check(model) -> bool` must be True exactly when the CEL `rule` holds for the same object. `message` names the
    field(s) and the constraint; `message_expression` (CEL returning a string) can show the offending numbers.
    `field_path` (e.g. ``.averageContextTokens``) tells the apiserver which field to blame; `reason` is one of
    FieldValueInvalid (default), FieldValueRequired, FieldValueForbidden, FieldValueDuplicate.
    """

    rule: str
    message: str
    check: Callable[[Any], bool]
    message_expression: str | None = None
    field_path: str | None = None
    reason: str | None = None
    py_message: Callable[[Any], str] | None = None  # optional richer Python message (shows the values)

    def to_k8s(self) -> dict[str, str]:
        out: dict[str, str] = {"rule": self.rule, "message": self.message}
        if self.message_expression:
            out["messageExpression"] = self.message_expression
        if self.field_path:
            out["fieldPath"] = self.field_path
        if self.reason:
            out["reason"] = self.reason
        return out


def _add_cel_rules(schema: dict[str, Any], cls: type[Any]) -> None:
    rules: tuple[Rule, ...] = getattr(cls, "cel_rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [r.to_k8s() for r in rules]


class ApiModel(BaseModel):
    """Base of every spec/status object: camelCase aliases (names accepted too), unknown spec fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        json_schema_extra=_add_cel_rules,
    )

    # Cross-field rules of this object: CEL in the CRD, mirrored here.
    cel_rules: ClassVar[tuple[Rule, ...]] = ()

    @_model_validator(mode="after")
    def _check_cel_rules(self) -> Any:
        failed = []
        for r in type(self).cel_rules:
            if not r.check(self):
                failed.append(r.py_message(self) if r.py_message else r.message)
        if failed:
            raise ValueError("; ".join(failed))
        return self

    @model_serializer(mode="wrap")
    def _drop_empty_collections(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        # A list/map field left at its empty default is omitted, as the apiserver would store it (no `env: []`).
        data = handler(self)
        if isinstance(data, dict):
            for name, f in type(self).model_fields.items():
                if f.default_factory in (list, dict):
                    for key in (f.alias, name):
                        if key in data and data[key] in ([], {}):
                            del data[key]
        return data

    def to_k8s(self) -> dict[str, Any]:
        """JSON-ready dict with camelCase keys, unset optional fields left out (what goes into a patch or a body)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class StatusModel(ApiModel):
    """Status objects are written by the operator: unknown fields are ignored rather than rejected."""

    model_config = ConfigDict(extra="ignore", validate_assignment=True)


# ------------------------------------------------------------------------------------------------ custom types
def _to_fraction(v: Any) -> str:
    """Accept 0.73, 1, "0.73"; return a canonical decimal string in [0, 1] with at most 4 decimals."""
    if isinstance(v, bool):
        raise ValueError("must be a number in [0, 1] or a decimal string, not a boolean")
    if isinstance(v, int | float):
        x = float(v)
    elif isinstance(v, str):
        try:
            x = float(v.strip())
        except ValueError:
            raise ValueError(f"{v!r} is not a decimal number") from None
    else:
        raise ValueError("must be a number in [0, 1] or a decimal string")
    if not math.isfinite(x) or x < 0 or x > 1:
        raise ValueError(f"{v!r} must be between 0 and 1")
    s = f"{x:.4f}".rstrip("0").rstrip(".")
    return s or "0"


FRACTION_PATTERN = r"^(0(\.[0-9]{1,6})?|1(\.0{1,6})?|\.[0-9]{1,6})$"

# A fraction in [0, 1] stored as a decimal string (the apiserver also accepts the integers 0 and 1). CRDs cannot hold
# a float-or-string union structurally, and floats in status fight with printing; the model takes either and always
# writes a string.
Fraction = Annotated[
    str,
    BeforeValidator(_to_fraction),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "minimum": 0,
            "maximum": 1,
            "maxLength": 16,
            "pattern": FRACTION_PATTERN,
        }
    ),
]


def _to_utc(v: Any) -> Any:
    if isinstance(v, dt.datetime) and v.tzinfo is None:
        return v.replace(tzinfo=dt.UTC)
    return v


def _rfc3339(v: dt.datetime) -> str:
    return v.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# metav1.Time: RFC 3339, seconds precision, UTC ("2026-11-24T10:00:00Z"); naive datetimes are taken as UTC.
Timestamp = Annotated[
    dt.datetime,
    BeforeValidator(_to_utc),
    PlainSerializer(_rfc3339, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time", "maxLength": 64}),
]


# ------------------------------------------------------------------------------------------------- patterns
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# label key / extended resource name: optional DNS-subdomain prefix + "/" + name (63)
QUALIFIED_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# An image reference in the OCI distribution grammar (github.com/distribution/reference, regexp.go): an optional
# registry host (recognised as one only with a "." or ":" in it, or "localhost", as docker normalises names), then
# lowercase path components, then an optional tag and/or digest. `image;id`, `$(id)` and `UPPER/Case:tag` fail it.
_REF_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_REF_HOST = (
    r"(?:" + _REF_LABEL + r"(?:\." + _REF_LABEL + r")+(?::[0-9]+)?"  # registry.example.com[:5000]
    r"|localhost(?::[0-9]+)?"  # localhost[:5000]
    r"|" + _REF_LABEL + r":[0-9]+)"  # myregistry:5000
)
_REF_PATH = r"[a-z0-9]+(?:(?:[_.]|__|[-]+)[a-z0-9]+)*"
IMAGE = (
    r"^(?:" + _REF_HOST + r"/)?" + _REF_PATH + r"(?:/" + _REF_PATH + r")*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
#: an image pinned by digest: repo[:tag]@sha256:<64 hex>
IMAGE_DIGEST = r"^[^\s@]+@sha256:[0-9a-f]{64}$"
#: a Kubernetes resource quantity as requests/limits take it (decimal or binary suffix, or milli for CPU)
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
ABS_PATH = r"^/[^\x00]*$"
#: an absolute path with no ".", ".." or empty components and no trailing "/" (so "/" itself fails): prefix checks on
#: it are checks on the real directory
_PATH_COMPONENT = r"(?:[^/.\x00][^/\x00]*|\.[^/.\x00][^/\x00]*|\.\.[^/\x00]+)"
CLEAN_PATH = r"^(?:/" + _PATH_COMPONENT + r")+$"
ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"


# ------------------------------------------------------------------------------------------------- errors
class InvalidResource(ValueError):
    """A custom resource failed validation; `errors` holds one "field.path: message" line per problem."""

    def __init__(self, kind: str, name: str | None, errors: list[str]):
        self.kind = kind
        self.name = name
        self.errors = errors
        who = f"{kind} {name}" if name else kind
        super().__init__(f"invalid {who}: " + "; ".join(errors))


def field_path(loc: tuple[int | str, ...]) -> str:
    """('spec', 'pools', 2) -> 'spec.pools[2]'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def format_validation_error(exc: ValidationError, prefix: str = "") -> list[str]:
    """One line per error, each starting with the camelCase field path, e.g. `spec.sessions.target: ...`."""
    lines = []
    for err in exc.errors(include_url=False):
        path = field_path(tuple(err["loc"]))
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        lines.append(f"{path or '<root>'}: {msg}")
    return lines


def get_in(body: Mapping[str, Any], *keys: str) -> Any:
    cur: Any = body
    for k in keys:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(k)
    return cur
