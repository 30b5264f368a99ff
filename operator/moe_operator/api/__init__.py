"""The moe-operator API: pydantic models that are the single source of truth for the CRDs.

    from moe_operator.api import MoEDeployment, AcceleratorPool, validate_object, crd_manifests

Names are resolved lazily (PEP 562): importing `moe_operator.api.cli` (which the CLI does for every command, to
find the `crds` subcommand) must not pull in pydantic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moe_operator.api.base import InvalidResource as InvalidResource
    from moe_operator.api.base import Rule as Rule
    from moe_operator.api.base import format_validation_error as format_validation_error
    from moe_operator.api.crd import crd_manifests as crd_manifests
    from moe_operator.api.v1alpha1 import *  # noqa: F403
    from moe_operator.api.validation import KINDS as KINDS
    from moe_operator.api.validation import validate_object as validate_object

_V1ALPHA1 = "moe_operator.api.v1alpha1"
_WHERE = {
    "InvalidResource": "moe_operator.api.base",
    "Rule": "moe_operator.api.base",
    "format_validation_error": "moe_operator.api.base",
    "crd_manifests": "moe_operator.api.crd",
    "KINDS": "moe_operator.api.validation",
    "validate_object": "moe_operator.api.validation",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        v1 = importlib.import_module(_V1ALPHA1)
        if name in v1.__all__:
            return getattr(v1, name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*_WHERE, *importlib.import_module(_V1ALPHA1).__all__])
