"""kopf indexes of the MoEDeployments and AcceleratorPools (the objects kopf watches for its handlers anyway). The
kinds the operator creates are watched by moe_operator.informer (started in handlers.lifecycle), not by kopf."""

from __future__ import annotations

from typing import Any

import kopf

from moe_operator.cache import MOED_INDEX, POOL_INDEX, slim


@kopf.index("moe-operator.io", "v1alpha1", "moedeployments", id=MOED_INDEX)
async def cached_moedeployments(body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(body["metadata"]["namespace"], body["metadata"]["name"]): slim(body)}


@kopf.index("moe-operator.io", "v1alpha1", "acceleratorpools", id=POOL_INDEX)
async def cached_acceleratorpools(body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {body["metadata"]["name"]: slim(body)}
