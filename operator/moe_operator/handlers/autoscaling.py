"""KV-cache autoscaling: a timer per MoEDeployment with spec.autoscaling.enabled (the decision logic lives in
moe_operator.autoscale; this module only schedules it and writes what it decided)."""

from __future__ import annotations

from typing import Any

import aiohttp
import kopf

from moe_operator import metrics
from moe_operator.autoscale.controller import Memory, active, autoscale_once
from moe_operator.autoscale.law import STEP_SECONDS
from moe_operator.autoscale.prefill_step import PrefillMemory, prefill_enabled, prefill_once
from moe_operator.cache import Cache
from moe_operator.handlers.deployment import GROUP, PLURAL, VERSION, latest, run_reconcile
from moe_operator.handlers.leadership import is_leader
from moe_operator.handlers.lifecycle import lock_for
from moe_operator.kube import KubeError

AUTOSCALE_SECONDS = STEP_SECONDS  # the cadence the offline simulator and the benchmarks replay the law at


def _enabled(spec: kopf.Spec, **_: Any) -> bool:
    from pydantic import ValidationError

    from moe_operator.api.v1alpha1 import MoEDeploymentSpec

    try:
        return active(MoEDeploymentSpec.model_validate(dict(spec)))
    except ValidationError:
        return False  # reconcile stalls it and says why


@kopf.on.startup()
async def open_http(memo: kopf.Memo, **_: Any) -> None:
    # one shared HTTP session for every scrape of every deployment (connection reuse, bounded by the scraper)
    memo.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
    memo.autoscale = {}
    memo.prefill_autoscale = {}


@kopf.on.cleanup()
async def close_http(memo: kopf.Memo, **_: Any) -> None:
    await memo.http.close()


@kopf.timer(GROUP, VERSION, PLURAL, interval=AUTOSCALE_SECONDS, initial_delay=3.0, when=_enabled)
async def autoscale(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
    if not is_leader(memo):
        return
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    cache = Cache.of(memo, kwargs)
    async with lock_for(memo, *key):
        current = latest(memo, cache, *key, body)
        if current is None:
            return
        planned = int(((current.get("status") or {}).get("plan") or {}).get("groups") or 1)
        memory: Memory = memo.autoscale.setdefault(key, Memory())
        result = await autoscale_once(memo.kube, memo.http, current, memory, planned, cache.lws(*key),
                                      cache.pods(*key), cache.router_pods(*key))
        if result is None:
            return
        metrics.observe_autoscaling(*key, result.status_patch, result.event)
        status = current.get("status") or {}
        if any(status.get(k) != v for k, v in result.status_patch.items()):  # a steady deployment costs no write
            await _write_status(memo, key, result.status_patch)
    if result.event:
        kopf.event(body, type=result.event_type, reason=result.event[0], message=result.event[1])
        (logger.warning if result.event_type == "Warning" else logger.info)(f"{result.event[0]}: {result.event[1]}")
    if result.changed_replicas:
        await run_reconcile(memo, cache, *key, logger)  # applies the new LWS replica count now, not at the next resync


def _prefill_enabled(spec: kopf.Spec, **_: Any) -> bool:
    from pydantic import ValidationError

    from moe_operator.api.v1alpha1 import MoEDeploymentSpec

    try:
        return prefill_enabled(MoEDeploymentSpec.model_validate(dict(spec)))
    except ValidationError:
        return False


@kopf.timer(GROUP, VERSION, PLURAL, interval=AUTOSCALE_SECONDS, initial_delay=4.0, when=_prefill_enabled)
async def autoscale_prefill(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
    """The prefill role of a disaggregated deployment, on prompt rate and prefill backlog (autoscale/prefill.py)."""
    from moe_operator.desired import typed

    if not is_leader(memo):
        return
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    cache = Cache.of(memo, kwargs)
    async with lock_for(memo, *key):
        current = latest(memo, cache, *key, body)
        if current is None:
            return
        spec, prefill_lws = typed(current).spec, f"{key[1]}-prefill"
        decode = int((current.get("status") or {}).get("desiredGroups") or 0)
        result = await prefill_once(memo.kube, memo.http, current, spec, memo.prefill_autoscale.setdefault(
            key, PrefillMemory()), cache.lws(*key, prefill_lws), cache.pods(*key, prefill_lws),
            cache.router_pods(*key), decode)
        if result is None:
            return
        old = (current.get("status") or {}).get("prefill") or {}
        if any(old.get(k) != v for k, v in result.status_patch.items()):
            await _write_status(memo, key, {"prefill": result.status_patch})
    if result.event:
        kopf.event(body, type="Normal", reason=result.event[0], message=result.event[1])
        logger.info(f"{result.event[0]}: {result.event[1]}")
    if result.changed:
        await run_reconcile(memo, cache, *key, logger)


async def _write_status(memo: kopf.Memo, key: tuple[str, str], patch: dict[str, Any]) -> None:
    try:
        memo.written[key] = await memo.kube.patch(f"{GROUP}/{VERSION}", "MoEDeployment", key[1], {"status": patch},
                                                  key[0], subresource="status")
    except KubeError as exc:
        if exc.status != 404:  # deleted meanwhile
            raise
