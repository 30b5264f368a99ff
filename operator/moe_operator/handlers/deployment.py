"""MoEDeployment: one reconcile for create, update, resume and a periodic level-based pass."""

from __future__ import annotations

import time
from typing import Any

import kopf

from moe_operator import metrics
from moe_operator.handlers.leadership import is_leader
from moe_operator.handlers.lifecycle import lock_for
from moe_operator.kube import KubeError
from moe_operator.reconcile import reconcile

GROUP, VERSION, PLURAL = "moe-operator.io", "v1alpha1", "moedeployments"
RESYNC_SECONDS = 5.0


async def run_reconcile(memo: kopf.Memo, body: Any, logger: Any) -> None:
    if not is_leader(memo):
        return  # a standby replica: the leader's level-based pass does it
    meta = body["metadata"]
    async with lock_for(memo, meta["namespace"], meta["name"]):
        # read under the lock: another writer (the autoscaler) may have changed status since this event was queued
        body = await fresh(memo, body)
        started = time.perf_counter()
        try:
            outcome = await reconcile(memo.kube, body, logger)
        except Exception as exc:
            metrics.RECONCILES.labels("error").inc()
            metrics.RECONCILE_ERRORS.labels(type(exc).__name__).inc()
            if not isinstance(exc, KubeError):  # an API answer is said in one line; anything else is a bug to trace
                logger.exception("reconcile failed unexpectedly")
            raise kopf.TemporaryError(f"reconcile failed: {exc}", delay=5) from exc
        finally:
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
        metrics.API_WRITES.inc(outcome.writes)
        metrics.RECONCILES.labels("problem" if outcome.problem else "ok").inc()


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def changed(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    await run_reconcile(memo, body, logger)


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_SECONDS, initial_delay=1.0)
async def resync(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Drift and observed-state refresh: children deleted out of band come back, status follows the pods."""
    await run_reconcile(memo, body, logger)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
async def deleted(body: kopf.Body, **_: Any) -> None:
    # Children go with the owner through ownerReferences (garbage collection); only our metrics remain.
    metrics.forget(body["metadata"]["namespace"], body["metadata"]["name"])


async def fresh(memo: kopf.Memo, body: kopf.Body) -> Any:
    """The latest object: kopf's body can be a few events old, and the status we compare against must be current."""
    meta = body["metadata"]
    latest = await memo.kube.get(f"{GROUP}/{VERSION}", "MoEDeployment", meta["name"], meta["namespace"])
    return latest if latest is not None else dict(body)
