"""AcceleratorPool status: how many nodes match and how many devices they offer."""

from __future__ import annotations

from typing import Any

import kopf

from moe_operator.planning import profile_for_pool, typed_pool
from moe_operator.status import now_iso


@kopf.on.resume("moe-operator.io", "v1alpha1", "acceleratorpools")
@kopf.on.create("moe-operator.io", "v1alpha1", "acceleratorpools")
@kopf.on.update("moe-operator.io", "v1alpha1", "acceleratorpools")
async def pool_changed(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, **_: Any) -> None:
    profile = profile_for_pool(typed_pool(body, "spec"))
    sel = ",".join(f"{k}={v}" for k, v in (body["spec"].get("nodeSelector") or {}).items())
    nodes = await memo.kube.list("v1", "Node", label_selector=sel or None)
    devices = sum(int(n.get("status", {}).get("allocatable", {}).get(profile.resource_name, 0) or 0) for n in nodes)
    ready = sum(1 for n in nodes for c in n.get("status", {}).get("conditions", [])
                if c.get("type") == "Ready" and c.get("status") == "True")
    gen = body["metadata"].get("generation", 1)
    ok = "True" if nodes else "False"
    conditions = body.get("status", {}).get("conditions", [])
    prev: dict[str, Any] = next((c for c in conditions if c.get("type") == "Ready"), {})
    patch.status.update({
        "observedGeneration": gen, "nodes": len(nodes), "readyNodes": ready, "allocatableDevices": devices,
        "conditions": [{
            "type": "Ready", "status": ok, "observedGeneration": gen,
            "reason": "NodesFound" if nodes else "NoMatchingNodes",
            "message": f"{len(nodes)} node(s) match, {devices} {profile.resource_name}",
            "lastTransitionTime": prev.get("lastTransitionTime") if prev.get("status") == ok else now_iso(),
        }],
    })
