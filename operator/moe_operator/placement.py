"""Groups whose exclusive placement deadlocked, and which leader pod to delete to place them again.

LWS exclusive topology (one group per topology domain) places a group's leader first, with anti-affinity against
other groups' pods, then pins the workers to the leader's domain. When two leaders are bound into one domain at
once (seen on the rig with 200 deployments starting together, 2 of 200), each group's worker is pinned to a domain
the other group fills, and both stay Pending for ever: LWS does not repair it (JobSet does, by recreating the
followers: kubernetes-sigs/jobset#341). Deleting the stuck group's leader pod makes LWS recreate the whole group
(its worker StatefulSet is owned by the leader pod), and the new leader's anti-affinity now sees the other group.

Pure: the reconcile decides from the cached pods and its own memory of what it already repaired."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from moe_operator.render.meta import LWS_GROUP_INDEX_LABEL as GROUP_INDEX
from moe_operator.render.meta import LWS_WORKER_INDEX_LABEL as WORKER_INDEX

GRACE_SECONDS = 60.0  # a worker Unschedulable this long while its leader is placed: not a scheduler hiccup
RETRY_SECONDS = 300.0  # the least time between two repairs of one group


@dataclass(frozen=True)
class Stuck:
    group: int
    leader: str  # the leader pod to delete
    worker: str  # the unschedulable worker
    seconds: float  # how long it has been unschedulable
    message: str  # the scheduler's


def _unschedulable_since(pod: Mapping[str, Any]) -> tuple[float, str] | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
            t = c.get("lastTransitionTime")
            if t:
                return dt.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp(), c.get("message", "")
    return None


def stuck_groups(pods: Sequence[Mapping[str, Any]], now: float, repaired: Mapping[int, float],
                 grace: float = GRACE_SECONDS, retry: float = RETRY_SECONDS) -> list[Stuck]:
    """Groups with a placed leader and a worker Unschedulable for more than `grace` seconds, not repaired in the
    last `retry` seconds (`repaired`: group -> when)."""
    leaders: dict[int, Mapping[str, Any]] = {}
    workers: dict[int, list[Mapping[str, Any]]] = {}
    for p in pods:
        labels = p["metadata"].get("labels") or {}
        try:
            group = int(labels[GROUP_INDEX])
        except (KeyError, ValueError):
            continue
        if p["metadata"].get("deletionTimestamp"):
            continue
        if labels.get(WORKER_INDEX) == "0":
            leaders[group] = p
        else:
            workers.setdefault(group, []).append(p)
    out = []
    for group, leader in sorted(leaders.items()):
        if not (leader.get("spec") or {}).get("nodeName") or now - repaired.get(group, -1e18) < retry:
            continue
        for w in workers.get(group, []):
            since = _unschedulable_since(w)
            if since is not None and now - since[0] > grace:
                out.append(Stuck(group, leader["metadata"]["name"], w["metadata"]["name"], now - since[0], since[1]))
                break
    return out
