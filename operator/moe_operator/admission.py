"""Admission checks as plain async functions (the kopf webhook is a thin wrapper), so they are unit-testable and
never raise on bad input: every failure becomes a message naming the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moe_operator.planning import ConfigMapGetter, PoolGetter, SpecProblem, profile_for_pool, typed_pool


async def check_moedeployment(body: Mapping[str, Any], get_pool: PoolGetter,
                             get_config_map: ConfigMapGetter | None = None) -> str | None:
    """None when admissible, else the reason: exactly the checks reconcile runs (desired.desired_state), so what
    passes here renders, and what the renderer would refuse is refused here."""
    try:
        from moe_operator.desired import desired_state

        await desired_state(body, get_pool, get_config_map)
    except SpecProblem as exc:
        return f"{exc.field}: {exc.message}"
    except Exception as exc:  # noqa: BLE001 - admission must answer, never crash, on any input
        return f"spec: cannot be validated: {type(exc).__name__}: {exc}"
    return None


def check_pool(body: Mapping[str, Any]) -> str | None:
    try:
        from moe_operator.api import InvalidResource, validate_object

        try:
            validate_object({**body, "kind": "AcceleratorPool"})
        except InvalidResource as exc:
            return "; ".join(exc.errors[:5]) or str(exc)
        profile_for_pool(typed_pool(body, "spec"))
    except SpecProblem as exc:
        return f"{exc.field}: {exc.message}"
    except Exception as exc:  # noqa: BLE001
        return f"spec.accelerator: {exc}"
    return None
