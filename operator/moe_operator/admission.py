"""Admission checks as plain async functions (the kopf webhook is a thin wrapper), so they are unit-testable and
never raise on bad input: every failure becomes a message naming the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moe_operator.planning import PoolGetter, SpecProblem, plan_deployment, profile_for_pool


async def check_moedeployment(body: Mapping[str, Any], get_pool: PoolGetter) -> str | None:
    """None when admissible, else the reason."""
    try:
        from moe_operator.api import validate_moedeployment

        errors = validate_moedeployment(body)
        if errors:
            return "; ".join(f"{f}: {m}" for f, m in errors[:5])
        spec = body.get("spec", {})
        extra = (spec.get("sglang") or {}).get("extraArgs") or []
        if extra:
            from moe_operator.sglang_flags import validate_extra_args

            flag_errors = validate_extra_args(list(extra))
            if flag_errors:
                return "spec.sglang.extraArgs: " + "; ".join(flag_errors)
        await plan_deployment(spec, get_pool)
    except SpecProblem as exc:
        return f"{exc.field}: {exc.message}"
    except Exception as exc:  # noqa: BLE001 - admission must answer, never crash, on any input
        return f"spec: cannot be validated: {type(exc).__name__}: {exc}"
    return None


def check_pool(body: Mapping[str, Any]) -> str | None:
    try:
        from moe_operator.api import validate_acceleratorpool

        errors = validate_acceleratorpool(body)
        if errors:
            return "; ".join(f"{f}: {m}" for f, m in errors[:5])
        profile_for_pool(body)
    except Exception as exc:  # noqa: BLE001
        return f"spec.accelerator: {exc}"
    return None
