"""One idempotent, level-based reconcile for a MoEDeployment (create, update, resume and the periodic timer).

Order: validate -> plan (first fitting pool) -> render children -> server-side apply only what changed ->
delete our own orphans -> observe -> status. A spec that is invalid or cannot be planned never touches the running
children: the groups keep serving the last good spec and the status says why nothing changed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from moe_operator import metrics
from moe_operator.cache import DEPLOYMENT_LABEL, LWS, Cache, ChildKey, newest
from moe_operator.desired import API_VERSION, KIND, Desired, desired_state
from moe_operator.events import post_event
from moe_operator.kube import Kube, KubeError
from moe_operator.placement import stuck_groups
from moe_operator.planning import PlannedDeployment, SpecProblem, plan_summary
from moe_operator.render.inputs import RenderInput
from moe_operator.render.meta import spec_hash
from moe_operator.rollout import TEMPLATE_HASH, Step, partition_of, plan_rollout, unroutable_leaders, updated_groups
from moe_operator.status import Capacity, Observed, compute_status, now_iso, prefill_status, status_changed

APPLIED_HASH = "moe-operator.io/applied-hash"


@dataclass
class Outcome:
    writes: int
    status: dict
    problem: SpecProblem | None
    written: dict | None = None  # the object as our status write left it (newer than the watch for a few ms)


async def apply_children(kube: Kube, inp: RenderInput, desired: list[dict], existing: Mapping[ChildKey, dict],
                         logger: logging.Logger, applied: dict[ChildKey, dict] | None = None) -> int:
    """Apply what differs from what we applied last time (hash annotation on the cached copy), delete orphans.
    Returns API writes; `applied` gets the server's answer per object written (newer than the cache for a few ms).
    A cache a few ms behind our own write costs one idempotent re-apply, never a wrong one."""
    writes = 0
    for obj in desired:
        h = spec_hash(obj)
        obj["metadata"].setdefault("annotations", {})[APPLIED_HASH] = h
        key = (obj["apiVersion"], obj["kind"], obj["metadata"]["name"])
        cur = existing.get(key)
        if cur is not None and cur["metadata"].get("annotations", {}).get(APPLIED_HASH) == h:
            continue
        answer = await kube.apply(obj)
        if applied is not None and isinstance(answer, dict):
            applied[key] = answer
        writes += 1
        logger.info(f"applied {obj['kind']} {obj['metadata']['name']}")
    wanted = {(o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in desired}
    for key in existing.keys() - wanted:
        if await kube.delete(key[0], key[1], key[2], inp.namespace):
            writes += 1
            logger.info(f"deleted orphan {key[1]} {key[2]}")
    return writes


#: how long one cluster-wide reading of the devices pods use serves every caller (InsufficientCapacity messages and
#: the placement repair's "room for a whole group"): at 200 stuck deployments on 2,000 nodes, a LIST of every pod
#: per pass (8 MB of JSON each, ~2/s) was most of the operator's CPU and starved the apiserver until kwok's node
#: heartbeats were late and ~900 nodes went NotReady (bench/control_plane.py)
DEVICE_USAGE_TTL_S = 30.0
_DEVICE_USAGE: dict[str, tuple[float, dict[str, int]]] = {}  # resource -> (monotonic time read, node -> devices)
_DEVICE_USAGE_LOCK: dict[str, asyncio.Lock] = {}


async def devices_in_use(kube: Kube, resource: str, now: float | None = None) -> dict[str, int]:
    """node -> devices of `resource` that non-terminal pods (of every owner) hold there: one LIST per
    DEVICE_USAGE_TTL_S, shared by concurrent callers."""
    lock = _DEVICE_USAGE_LOCK.setdefault(resource, asyncio.Lock())
    async with lock:
        t = time.monotonic() if now is None else now
        hit = _DEVICE_USAGE.get(resource)
        if hit is not None and t - hit[0] < DEVICE_USAGE_TTL_S:
            return hit[1]
        used: dict[str, int] = {}
        for p in await kube.list("v1", "Pod", field_selector="status.phase!=Succeeded,status.phase!=Failed"):
            node = p.get("spec", {}).get("nodeName")
            if node:
                n = sum(int(((c.get("resources") or {}).get("limits") or {}).get(resource, 0) or 0)
                        for c in p["spec"].get("containers", []))
                if n:
                    used[node] = used.get(node, 0) + n
        _DEVICE_USAGE[resource] = (t, used)
        return used


async def observe_capacity(kube: Kube, planned: PlannedDeployment, cache: Cache | None = None) -> Capacity:
    """Free devices in the pool, for InsufficientCapacity messages. Only called when pods are unschedulable. The
    nodes come from the node store; the devices pods use from `devices_in_use` (pods of other owners count too;
    at most DEVICE_USAGE_TTL_S old)."""
    sel = ",".join(f"{k}={v}" for k, v in planned.pool.spec.node_selector.items())
    res = planned.profile.resource_name
    cached = cache.nodes_matching(dict(planned.pool.spec.node_selector)) if cache is not None else None
    nodes = cached if cached is not None else await kube.list("v1", "Node", label_selector=sel or None)
    names = {n["metadata"]["name"]: int(n["status"].get("allocatable", {}).get(res, 0) or 0) for n in nodes}
    in_use = await devices_in_use(kube, res)
    free = {n: names[n] - in_use.get(n, 0) for n in names}
    per = planned.profile.devices_per_node
    return Capacity(pool=planned.pool_name, resource=res, nodes=len(names), devices_per_node=per,
                    free_devices=sum(free.values()), nodes_with_room=sum(1 for v in free.values() if v >= per))


async def repair_placement(kube: Kube, namespace: str, pods: list[dict], repairs: dict[int, float],
                           logger: logging.Logger) -> int:
    """Recreate groups whose exclusive placement deadlocked (moe_operator.placement); returns API writes."""
    now = time.time()
    writes = 0
    for s in stuck_groups(pods, now, repairs):
        repairs[s.group] = now
        if await kube.delete("v1", "Pod", s.leader, namespace):
            writes += 1
            logger.warning(f"PlacementDeadlock: group {s.group}'s worker {s.worker} has been unschedulable for "
                           f"{s.seconds:.0f}s while its leader is placed ({s.message[:160]}); deleting leader "
                           f"{s.leader} so LWS places the whole group again")
    return writes


async def idle_groups(http: Any, pods: list[dict], port: int, group: int) -> dict[int, bool]:
    """{group: running and queued requests are 0} from the group's /metrics (absent: no pod answered)."""
    from moe_operator.autoscale.controller import targets
    from moe_operator.autoscale.scrape import scrape

    if http is None:
        return {}
    got = await scrape(http, [t for t in targets(pods, port) if t.group == group])
    m = got.groups.get(group)
    return {group: m.running_reqs == 0 and m.queued_reqs == 0} if m is not None else {}


async def roll(kube: Kube, http: Any, want: Desired, lws: Mapping[str, Any] | None, pods: list[dict],
               routers: list[dict], status: Mapping[str, Any], logger: logging.Logger) -> tuple[int, Step]:
    """The drain-aware rollout step (moe_operator.rollout): sets the partition on the rendered LWS (applied next by
    the caller) and moves the routable labels. Returns the label writes and the step."""
    from moe_operator.autoscale.controller import metrics_port, route
    from moe_operator.routing import routed_groups, router_endpoints

    lws_obj = next(o for o in want.children if o["kind"] == "LeaderWorkerSet")
    spec = want.deployment.spec
    current = dict(status.get("rollout") or {})
    idle = await idle_groups(http, pods, metrics_port(spec), int(current["group"])) if current else {}
    # about to pick the next group: are the replaced ones back in every router? (asked only then)
    routed = await routed_groups(http, router_endpoints(routers), pods, want.render.port) \
        if not current and partition_of(lws) > 0 else None
    digest = lws_obj["metadata"]["annotations"][TEMPLATE_HASH]
    step = plan_rollout(now=time.time(), now_iso=now_iso(), lws=lws, updated=updated_groups(pods, digest),
                        template_hash=digest, replicas=want.replicas,
                        status=status, idle=idle, unroutable=unroutable_leaders(pods),
                        drain_timeout=float(spec.drain.timeout_seconds), routed=routed)
    lws_obj["spec"]["rolloutStrategy"]["rollingUpdateConfiguration"]["partition"] = step.partition
    flips = [(g, True) for g in step.reroute] + ([(step.unroute, False)] if step.unroute is not None else [])
    for g, routable in flips:
        await route(kube, http, spec, want.render.namespace, pods, routers, g, routable)
    if step.message:
        logger.info(step.message)
        metrics.observe_rollout(want.render.namespace, want.render.name, step.reason, step.message)
        try:
            await post_event(kube, want.deployment.to_k8s(), "Normal", step.reason, step.message)
        except KubeError as exc:
            logger.warning(f"could not post the {step.reason} event: {exc}")
    return len(flips), step


def _prefill_observed(cache: Cache, ns: str, name: str, prefill: RenderInput | None,
                      planned: PlannedDeployment | None, applied: Mapping[ChildKey, dict],
                      prev_status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """status.prefill for this pass; a spec that cannot be planned keeps the last one (its groups keep serving)."""
    if planned is None:
        return prev_status.get("prefill")
    if prefill is None or planned.prefill is None:
        return None
    lws = newest(cache.lws(ns, name, prefill.lws_name), applied.get((*LWS, prefill.lws_name)))
    return prefill_status(lws, prefill.replicas, prefill_plan_summary(planned), prev_status.get("prefill"))


def prefill_plan_summary(planned: PlannedDeployment) -> dict[str, Any]:
    """status.prefill.plan (camelCase, as the CRD declares it)."""
    pp = planned.prefill
    assert pp is not None
    d = pp.to_dict()
    return {
        "nodesPerGroup": d["nodes_per_group"], "gpusPerGroup": d["gpus_per_group"], "tpSize": d["tp_size"],
        "epSize": d["ep_size"], "attnDpSize": d["attn_dp_size"], "groups": d["groups"],
        "promptTokensPerSecondPerGroup": d["prompt_tokens_per_second_per_group"],
        "ttftSeconds": f"{d['ttft_seconds']:.2f}",
        **({"ratio": f"{d['ratio']:.2f}"} if d["ratio"] is not None else {}),
        **({"costPerHour": f"{d['cost_per_hour']:.2f}"} if d["cost_per_hour"] is not None else {}),
        "sglangArgs": list(d["sglang_args"]),
    }


async def reconcile(kube: Kube, cache: Cache, body: Mapping[str, Any], logger: logging.Logger,
                    repairs: dict[int, float] | None = None, http: Any = None) -> Outcome:
    """One pass. Reads come from `cache` (the pool, the children, the LWS, the pods); the API is called for writes,
    for a pool or ConfigMap the cache does not hold, and for free capacity when a group pod is unschedulable."""
    meta = body["metadata"]
    name, ns, gen = meta["name"], meta["namespace"], int(meta.get("generation", 1))
    prev_status = dict(body.get("status") or {})
    # the decode (or aggregated) groups' leaders: the prefill role's carry the deployment label too
    selector = f"{DEPLOYMENT_LABEL}={name},leaderworkerset.sigs.k8s.io/name={name}," \
               "leaderworkerset.sigs.k8s.io/worker-index=0"
    writes = 0
    problem: SpecProblem | None = None
    planned: PlannedDeployment | None = None
    downloads = False
    replicas = int(prev_status.get("desiredGroups", 0) or 0)
    applied: dict[ChildKey, dict] = {}
    prefill: RenderInput | None = None

    async def get_pool(pool_name: str) -> Mapping[str, Any] | None:
        # a pool created a moment ago may not have reached the cache yet
        return cache.pool(pool_name) or await kube.get("moe-operator.io/v1alpha1", "AcceleratorPool", pool_name)

    async def get_config_map(cm_name: str) -> Mapping[str, Any] | None:
        return await kube.get("v1", "ConfigMap", cm_name, ns)

    try:
        # the same checks admission runs (desired.py): a spec written around the webhook stalls here, untouched
        want: Desired = await desired_state(body, get_pool, get_config_map, prev_status)
        planned, replicas, prefill = want.planned, want.replicas, want.prefill
        downloads = want.render.weights.mode == "hf"
        if want.planned.node_known:
            label_writes, step = await roll(kube, http, want, cache.lws(ns, name), cache.pods(ns, name),
                                            cache.router_pods(ns, name), prev_status, logger)
            prev_status["rollout"] = step.rollout
            writes += label_writes
            writes += await apply_children(kube, want.render, want.children, cache.children(ns, name), logger,
                                           applied)
        else:  # its status write triggers this deployment again (handlers.children.pool_changed_dependents)
            logger.info(f"waiting for AcceleratorPool {want.planned.pool_name}'s first status (its nodes' size)")
    except SpecProblem as exc:
        problem = exc
        # a warning when the problem appears or changes, not one per resync pass
        said = any(c.get("message") == f"{exc.field}: {exc.message}" for c in prev_status.get("conditions") or [])
        (logger.info if said else logger.warning)(f"not changing children: {exc}")
    # the LWS as this pass left it, if the watch has not brought our write back yet: a status computed from the copy
    # before a template change would call a rollout that has just begun Reconciled
    lws = newest(cache.lws(ns, name), applied.get((*LWS, name)))
    pods = cache.pods(ns, name)
    digest = ((lws or {}).get("metadata", {}).get("annotations") or {}).get(TEMPLATE_HASH)
    fresh = updated_groups(pods, digest)
    capacity = None
    if planned and any(c.get("reason") == "Unschedulable" for p in pods
                       for c in p.get("status", {}).get("conditions", [])):
        capacity = await observe_capacity(kube, planned, cache)
        # a stuck group is re-placed only where the pool has room for a whole group: without room it is capacity
        # (InsufficientCapacity), and recreating the group would change nothing
        if problem is None and repairs is not None and capacity.nodes_with_room >= planned.plan.nodes_per_group:
            writes += await repair_placement(kube, ns, pods, repairs, logger)
    obs = Observed(
        generation=gen,
        pool=planned.pool_name if planned else None,
        plan=plan_summary(planned.plan, downloads) if planned else None,
        problem=(problem.reason, f"{problem.field}: {problem.message}") if problem else None,
        desired_groups=replicas, lws=lws, pods=pods, capacity=capacity, selector=selector,
        node_problems=cache.node_problems(pods),
        updated_groups=len([g for g in fresh if g < replicas]) if fresh is not None else None,
        prefill=_prefill_observed(cache, ns, name, prefill, planned, applied, prev_status),
    )
    if planned:
        prev_status["plan"] = obs.plan  # the fresh plan replaces the carried one
    new_status = compute_status(obs, prev_status)
    written = None
    if status_changed(body.get("status"), new_status):
        try:
            written = await kube.patch(API_VERSION, KIND, name, {"status": new_status}, ns, subresource="status")
            writes += 1
        except KubeError as exc:
            if exc.status != 404:  # deleted meanwhile
                raise
    metrics.observe_groups(ns, name, desired=replicas, ready=new_status["readyGroups"])
    return Outcome(writes=writes, status=new_status, problem=problem, written=written)
