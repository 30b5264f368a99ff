"""Validating admission: schema/CEL catch shapes; this catches what needs the planner or other objects —
a pool that does not exist, a precision the pool cannot run, sessions x context that cannot fit, SGLang flags
that SGLang would reject. The message names the field and the number that does not fit.

They run on the webhook's own thread and loop (webhook_server.py): API reads go through `on_operator_loop`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from moe_operator import metrics
from moe_operator.admission import check_moedeployment, check_pool
from moe_operator.cache import Cache
from moe_operator.webhook_server import on_operator_loop


@kopf.on.validate("moe-operator.io", "v1alpha1", "moedeployments", id="validate-moedeployment",
                  operations=["CREATE", "UPDATE"])
async def validate_moedeployment(body: kopf.Body, memo: kopf.Memo, old: Any = None, operation: str | None = None,
                                 **kwargs: Any) -> None:
    if operation == "UPDATE" and not spec_changed(old, body):
        # metadata/finalizer/status-only updates (kopf removing its finalizer on deletion among them) must always
        # pass, or an object whose spec became infeasible could never be deleted
        return
    cache = Cache.of(memo, kwargs)

    async def get_pool(name: str) -> Mapping[str, Any] | None:
        # from the cache; a pool applied in the same `kubectl apply` may be a few ms from it
        return cache.pool(name) or await on_operator_loop(
            memo.kube.get("moe-operator.io/v1alpha1", "AcceleratorPool", name))

    async def get_config_map(name: str) -> Mapping[str, Any] | None:
        return await on_operator_loop(memo.kube.get("v1", "ConfigMap", name, body["metadata"].get("namespace")))

    error = await check_moedeployment(body, get_pool, get_config_map)
    metrics.ADMISSION.labels("MoEDeployment", "denied" if error else "allowed").inc()
    if error:
        raise kopf.AdmissionError(error, code=422)


def spec_changed(old: Any, new: Any) -> bool:
    return old is None or (old.get("spec") if hasattr(old, "get") else None) != new.get("spec")


@kopf.on.validate("moe-operator.io", "v1alpha1", "acceleratorpools", id="validate-acceleratorpool",
                  operations=["CREATE", "UPDATE"])
async def validate_acceleratorpool(body: kopf.Body, old: Any = None, operation: str | None = None,
                                   **_: Any) -> None:
    if operation == "UPDATE" and not spec_changed(old, body):
        return
    error = check_pool(body)
    metrics.ADMISSION.labels("AcceleratorPool", "denied" if error else "allowed").inc()
    if error:
        raise kopf.AdmissionError(error, code=422)
