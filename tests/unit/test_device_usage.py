"""The devices pods hold per node (capacity messages, placement repair) come from one LIST per TTL, shared."""

from __future__ import annotations

import asyncio
from typing import Any

from moe_operator import reconcile


class CountingLists:
    """Stands in for moe_operator.kube.Kube.list only: counts the cluster-wide pod LISTs (a unit test of the
    caching; the cluster tier runs the real apiserver)."""

    def __init__(self, pods: list[dict[str, Any]]):
        self.pods, self.calls = pods, []

    async def list(self, api_version: str, kind: str, **kw: Any) -> list[dict[str, Any]]:
        self.calls.append((api_version, kind, kw))
        return self.pods


def _pod(node: str | None, gpus: int, other: int = 0) -> dict[str, Any]:
    limits = {"nvidia.com/gpu": str(gpus)} if gpus else {}
    return {"spec": {"nodeName": node, "containers": [{"resources": {"limits": limits}},
                                                      {"resources": {"limits": {"cpu": str(other)}}}]}}


def test_device_usage_is_listed_once_per_ttl_and_shared() -> None:
    reconcile._DEVICE_USAGE.clear()
    kube = CountingLists([_pod("n1", 8), _pod("n1", 0, 4), _pod("n2", 4), _pod(None, 8)])

    async def main() -> None:
        got = await asyncio.gather(*(reconcile.devices_in_use(kube, "nvidia.com/gpu", now=100.0) for _ in range(5)))
        assert all(g == {"n1": 8, "n2": 4} for g in got)  # a pending pod (no node) holds nothing yet
        assert len(kube.calls) == 1  # five concurrent callers, one LIST
        assert kube.calls[0][2] == {"field_selector": "status.phase!=Succeeded,status.phase!=Failed"}
        await reconcile.devices_in_use(kube, "nvidia.com/gpu", now=100.0 + reconcile.DEVICE_USAGE_TTL_S - 1)
        assert len(kube.calls) == 1
        kube.pods = [_pod("n2", 8)]
        assert await reconcile.devices_in_use(kube, "nvidia.com/gpu", now=100.0 + reconcile.DEVICE_USAGE_TTL_S) == \
            {"n2": 8}
        assert len(kube.calls) == 2

    asyncio.run(main())
    reconcile._DEVICE_USAGE.clear()
