"""AcceleratorPool status: how many Ready nodes match and how many devices they offer, refreshed as nodes come and
go by a timer that reads the node store (informer; slimmed nodes, so 2,000 of them cost a few MiB): a node's status
updates arrive as watch events, but a pool's numbers are recomputed at most every REFRESH_SECONDS, and written only
when they change."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import kopf

from moe_operator.cache import NODE, nodes_matching
from moe_operator.handlers.leadership import is_leader
from moe_operator.planning import SpecProblem, profile_for_pool, typed_pool
from moe_operator.status import now_iso

GROUP, VERSION, PLURAL = "moe-operator.io", "v1alpha1", "acceleratorpools"
REFRESH_SECONDS = 30.0


def _ready(node: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in node.get("status", {}).get("conditions", []))


def node_allocatable(nodes: Sequence[Mapping[str, Any]]) -> dict[str, str] | None:
    """The smallest allocatable CPU (whole cores), memory and ephemeral storage (whole GiB) among `nodes`, which
    engine pods are sized from: rounded down so a node a few MiB smaller, or a kubelet that re-reports, does not
    change the pods' size (and roll every group)."""
    from kubernetes.utils.quantity import parse_quantity

    out: dict[str, str] = {}
    for key, out_key, unit, suffix in (("cpu", "cpu", 1, ""), ("memory", "memory", 1024**3, "Gi"),
                                       ("ephemeral-storage", "ephemeralStorage", 1024**3, "Gi")):
        values = [parse_quantity(v) for n in nodes if (v := n.get("status", {}).get("allocatable", {}).get(key))]
        if values:
            out[out_key] = f"{int(min(values) // unit)}{suffix}"
    return out or None


def pool_status(body: Mapping[str, Any], nodes: Sequence[Mapping[str, Any]], resource: str) -> dict[str, Any]:
    """The status the CRD declares: `nodes` = Ready nodes matching nodeSelector, `allocatableDevices` on them."""
    ready = [n for n in nodes if _ready(n)]
    devices = sum(int(n.get("status", {}).get("allocatable", {}).get(resource, 0) or 0) for n in ready)
    smallest = node_allocatable(ready)
    gen = body["metadata"].get("generation", 1)
    ok = "True" if ready else "False"
    prev: dict[str, Any] = next((c for c in (body.get("status") or {}).get("conditions", [])
                                 if c.get("type") == "Ready"), {})
    reason = "NodesReady" if ready else ("NoReadyNodes" if nodes else "NoMatchingNodes")
    return {
        "observedGeneration": gen, "nodes": len(ready), "allocatableDevices": devices,
        "nodeAllocatable": smallest,
        "conditions": [{
            "type": "Ready", "status": ok, "observedGeneration": gen, "reason": reason,
            "message": f"{len(ready)} of {len(nodes)} matching node(s) Ready, {devices} {resource}",
            "lastTransitionTime": prev.get("lastTransitionTime") if prev.get("status") == ok else now_iso(),
        }],
    }


def _changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    old = old or {}
    strip = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in new["conditions"]]
    was = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in old.get("conditions", [])]
    keys = ("observedGeneration", "nodes", "allocatableDevices", "nodeAllocatable")
    return any(old.get(k) != new[k] for k in keys) or strip != was


async def matching_nodes(memo: kopf.Memo, selector: dict[str, str]) -> list[dict[str, Any]]:
    """The pool's nodes from the node store once it has listed (no API read per refresh), else from the API."""
    stores = getattr(memo, "stores", None)
    cached = nodes_matching(stores.by_kind.get(NODE) if stores is not None else None, selector)
    if cached is not None:
        return cached
    sel = ",".join(f"{k}={v}" for k, v in selector.items())
    return list(await memo.kube.list("v1", "Node", label_selector=sel or None))


async def _observe(body: kopf.Body, memo: kopf.Memo) -> dict[str, Any] | None:
    if not is_leader(memo):
        return None
    try:
        pool = typed_pool(body, "spec")
        profile = profile_for_pool(pool)
    except (SpecProblem, KeyError, ValueError):
        return None  # admission refuses such a pool; one written around it gets no status rather than a crash
    nodes = await matching_nodes(memo, dict(pool.spec.node_selector))
    new = pool_status(body, nodes, profile.resource_name)
    return new if _changed(body.get("status"), new) else None


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def pool_changed(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, **_: Any) -> None:
    new = await _observe(body, memo)
    if new is not None:
        patch.status.update(new)


@kopf.timer(GROUP, VERSION, PLURAL, interval=REFRESH_SECONDS, initial_delay=REFRESH_SECONDS)
async def pool_refresh(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, **_: Any) -> None:
    """Nodes added, removed or NotReady: written only when the numbers change (no writes in a steady state)."""
    new = await _observe(body, memo)
    if new is not None:
        patch.status.update(new)
