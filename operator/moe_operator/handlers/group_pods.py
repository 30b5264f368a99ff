"""Pods of SGLang groups: a failing or unschedulable group pod refreshes its MoEDeployment's status at once,
instead of waiting for the next periodic pass (a group restart can take less time than one)."""

from __future__ import annotations

from typing import Any

import kopf

from moe_operator.handlers.deployment import GROUP, VERSION, run_reconcile


def _interesting(body: kopf.Body, **_: Any) -> bool:
    st = body.get("status", {})
    return (st.get("phase") in ("Failed", "Pending") or bool(body.get("metadata", {}).get("deletionTimestamp"))
            or any(c.get("type") == "Ready" for c in st.get("conditions", [])))


@kopf.on.event("", "v1", "pods", labels={"moe-operator.io/deployment": kopf.PRESENT,
                                         "leaderworkerset.sigs.k8s.io/name": kopf.PRESENT}, when=_interesting)
async def group_pod_event(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    meta = body["metadata"]
    name = meta["labels"]["moe-operator.io/deployment"]
    owner = await memo.kube.get(f"{GROUP}/{VERSION}", "MoEDeployment", name, meta["namespace"])
    if owner is not None:
        try:
            await run_reconcile(memo, owner, logger)
        except kopf.TemporaryError as exc:  # events are not retried; the timer will come back
            logger.warning(str(exc))
