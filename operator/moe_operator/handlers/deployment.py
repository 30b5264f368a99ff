"""MoEDeployment: one reconcile for create, update, resume, a change of one of its children, and a slow drift pass.
Every read comes from the watch-backed caches (moe_operator.cache); only writes go to the API."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import kopf

from moe_operator import metrics
from moe_operator.cache import Cache, newest
from moe_operator.handlers.leadership import is_leader
from moe_operator.handlers.lifecycle import lock_for
from moe_operator.kube import KubeError
from moe_operator.reconcile import reconcile

GROUP, VERSION, PLURAL = "moe-operator.io", "v1alpha1", "moedeployments"
# drift only: changes of the object and of its children trigger a pass at once (handlers.children)
RESYNC_SECONDS = 60.0
ROLLOUT_POLL_SECONDS = 2.0  # how often a rollout's draining group is checked for idleness


def latest(memo: kopf.Memo, cache: Cache, namespace: str, name: str, body: Mapping[str, Any] | None = None
           ) -> Mapping[str, Any] | None:
    """The newest copy we know: the watch cache, kopf's body, or the answer to our own last status write (the watch
    can lag it by a few ms; reading it stale would undo what the autoscaler just decided). None once deleted."""
    cached = cache.moed(namespace, name)
    if cached is None and body is None:
        return None
    return newest(cached, body, memo.written.get((namespace, name)))


async def run_reconcile(memo: kopf.Memo, cache: Cache, namespace: str, name: str, logger: Any,
                        body: Mapping[str, Any] | None = None) -> None:
    memo.caches_ready.set()  # kopf runs resource handlers only once its indexes are filled
    if not is_leader(memo):
        return  # a standby replica: the leader does it
    key = (namespace, name)
    if key in memo.queued:
        return  # a pass is already waiting behind the running one and will read the state as it is then
    memo.queued.add(key)
    try:
        async with lock_for(memo, namespace, name):
            memo.queued.discard(key)
            await memo.stores.synced()  # a pass over a store still listing would re-apply what it cannot see
            current = latest(memo, cache, namespace, name, body)
            if current is not None:
                await _pass(memo, cache, current, logger)
    finally:
        memo.queued.discard(key)


async def _pass(memo: kopf.Memo, cache: Cache, body: Mapping[str, Any], logger: Any) -> None:
    started = time.perf_counter()
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    try:
        outcome = await reconcile(memo.kube, cache, body, logger, memo.repairs.setdefault(key, {}),
                                  http=getattr(memo, "http", None))
    except Exception as exc:
        metrics.RECONCILES.labels("error").inc()
        metrics.RECONCILE_ERRORS.labels(type(exc).__name__).inc()
        if not isinstance(exc, KubeError):  # an API answer is said in one line; anything else is a bug to trace
            logger.exception("reconcile failed unexpectedly")
        raise kopf.TemporaryError(f"reconcile failed: {exc}", delay=5) from exc
    finally:
        metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
    if outcome.written is not None:
        memo.written[key] = outcome.written
    metrics.API_WRITES.inc(outcome.writes)
    metrics.RECONCILES.labels("problem" if outcome.problem else "ok").inc()


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def changed(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
    meta = body["metadata"]
    await run_reconcile(memo, Cache.of(memo, kwargs), meta["namespace"], meta["name"], logger, body)


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
async def resync(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
    """Drift: a child deleted or changed while no watch event reached us comes back within a minute."""
    meta = body["metadata"]
    await run_reconcile(memo, Cache.of(memo, kwargs), meta["namespace"], meta["name"], logger, body)


def _draining_for_rollout(status: kopf.Status, **_: Any) -> bool:
    """A rollout in progress: a group draining, or groups still to update (waiting for the last one to be back)."""
    return bool(status.get("rollout")) or int(status.get("updatedGroups") or 0) < int(status.get("replicas") or 0)


@kopf.timer(GROUP, VERSION, PLURAL, interval=ROLLOUT_POLL_SECONDS, initial_delay=ROLLOUT_POLL_SECONDS,
            when=_draining_for_rollout)
async def rollout_drain(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
    """While a rollout drains a group, or waits for the routers to take a replaced group back, nothing changes that
    would trigger a pass: look every few seconds (a timer only while a rollout is in progress)."""
    meta = body["metadata"]
    await run_reconcile(memo, Cache.of(memo, kwargs), meta["namespace"], meta["name"], logger, body)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
async def deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    # Children go with the owner through ownerReferences (garbage collection); only our bookkeeping remains.
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    memo.written.pop(key, None)
    memo.repairs.pop(key, None)
    memo.autoscale.pop(key, None)
    metrics.forget(*key)
