"""Validate any moe-operator object body (handlers, admission webhook, `kubectl`-less checks)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moe_operator.api.base import InvalidResource
from moe_operator.api.v1alpha1 import AcceleratorPool, MoEDeployment

KINDS: dict[str, type[MoEDeployment] | type[AcceleratorPool]] = {
    MoEDeployment.KIND: MoEDeployment,
    AcceleratorPool.KIND: AcceleratorPool,
}


def validate_object(body: Mapping[str, Any]) -> MoEDeployment | AcceleratorPool:
    """Validate a MoEDeployment or AcceleratorPool body (dispatch on `kind`); raises InvalidResource whose
    `errors` are "field.path: message" lines."""
    kind = body.get("kind")
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise InvalidResource(str(kind), None, [f"kind: expected one of {sorted(KINDS)}, got {kind!r}"])
    return cls.from_body(body)
