"""Deadlocked exclusive placement: which group's leader to delete, and when not to."""

from __future__ import annotations

import datetime as dt
from typing import Any

from moe_operator.placement import stuck_groups

NOW = 1_800_000_000.0


def pod(name: str, group: int, worker: int, node: str | None = None, unschedulable_for: float | None = None,
        deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"leaderworkerset.sigs.k8s.io/group-index": str(group),
                                                     "leaderworkerset.sigs.k8s.io/worker-index": str(worker)}}
    if deleting:
        meta["deletionTimestamp"] = "2027-01-15T08:00:00Z"
    conds = []
    if unschedulable_for is not None:
        t = dt.datetime.fromtimestamp(NOW - unschedulable_for, dt.UTC).isoformat().replace("+00:00", "Z")
        conds.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastTransitionTime": t,
                      "message": "0/2027 nodes are available: 2 Insufficient nvidia.com/gpu"})
    return {"metadata": meta, "spec": {"nodeName": node} if node else {}, "status": {"conditions": conds}}


def test_a_placed_leader_with_a_worker_stuck_past_the_grace_is_repaired() -> None:
    pods = [pod("m-0", 0, 0, "n1"), pod("m-0-1", 0, 1, "n2"),
            pod("m-1", 1, 0, "n3"), pod("m-1-1", 1, 1, unschedulable_for=90)]
    stuck = stuck_groups(pods, NOW, {})
    assert [(s.group, s.leader, s.worker) for s in stuck] == [(1, "m-1", "m-1-1")]
    assert "Insufficient" in stuck[0].message and 89 < stuck[0].seconds < 91


def test_not_yet_or_not_placed_or_recently_repaired_is_left_alone() -> None:
    young = [pod("m-1", 1, 0, "n3"), pod("m-1-1", 1, 1, unschedulable_for=20)]
    assert stuck_groups(young, NOW, {}) == []
    leader_pending = [pod("m-1", 1, 0, None, unschedulable_for=900), pod("m-1-1", 1, 1, unschedulable_for=900)]
    assert stuck_groups(leader_pending, NOW, {}) == []  # no domain for the group at all: capacity, not a deadlock
    old = [pod("m-1", 1, 0, "n3"), pod("m-1-1", 1, 1, unschedulable_for=900)]
    assert stuck_groups(old, NOW, {1: NOW - 100}) == []  # repaired 100 s ago
    assert len(stuck_groups(old, NOW, {1: NOW - 400})) == 1
    assert stuck_groups([pod("m-1", 1, 0, "n3", deleting=True), pod("m-1-1", 1, 1, unschedulable_for=900)],
                        NOW, {}) == []  # already being recreated
