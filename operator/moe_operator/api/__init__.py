"""The moe-operator API: pydantic models that are the single source of truth for the CRDs.

    from moe_operator.api import MoEDeployment, AcceleratorPool, validate_object, crd_manifests

`cli.py` (the `crds` subcommand) stays import-light; everything else here imports pydantic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moe_operator.api.base import InvalidResource, Rule, format_validation_error
from moe_operator.api.v1alpha1 import *  # noqa: F403
from moe_operator.api.v1alpha1 import AcceleratorPool, MoEDeployment
from moe_operator.api.v1alpha1 import __all__ as _v1alpha1_all

KINDS: dict[str, type[MoEDeployment] | type[AcceleratorPool]] = {
    MoEDeployment.KIND: MoEDeployment,
    AcceleratorPool.KIND: AcceleratorPool,
}


def validate_object(body: Mapping[str, Any]) -> MoEDeployment | AcceleratorPool:
    """Validate a MoEDeployment or AcceleratorPool body (dispatch on `kind`); raises InvalidResource."""
    kind = body.get("kind")
    cls = KINDS.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise InvalidResource(str(kind), None, [f"kind: expected one of {sorted(KINDS)}, got {kind!r}"])
    return cls.from_body(body)


def crd_manifests() -> list[dict[str, Any]]:
    """Every CRD, generated from the models (see moe_operator.api.crd)."""
    from moe_operator.api.crd import crd_manifests as _crd_manifests

    return _crd_manifests()


__all__ = [*_v1alpha1_all, "KINDS", "InvalidResource", "Rule", "crd_manifests", "format_validation_error",
           "validate_object"]
