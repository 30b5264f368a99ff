"""Events posted with the operator's own client (core/v1), for code that runs outside kopf's handler tasks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from moe_operator.kube import Kube, resource_path

COMPONENT = "moe-operator"


async def post_event(kube: Kube, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    meta = obj["metadata"]
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    ns = meta.get("namespace") or "default"
    event = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": ns},
        "involvedObject": {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": meta["name"],
                           "namespace": ns, "uid": meta.get("uid")},
        "type": type_, "reason": reason, "message": message[:1024],
        "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }
    await kube.request("POST", resource_path("v1", "Event", ns), event)
