"""Drain-aware rollouts: a new pod template reaches the groups one at a time, each taken out of routing and drained
of its running requests before LWS replaces it.

LWS alone rolls a group the moment its template changes (highest index first, maxUnavailable 1): the requests running
on it are cut. The operator holds the rollout with the LWS `partition` (groups below it keep their revision) and
moves it down one group per step; the progress lives in status.rollout, so a restarted operator resumes it:
  1. the template changes -> it is applied with partition = replicas: no group is replaced yet;
  2. once every group at or above the partition runs the new revision and all groups are Ready, the next group
     (partition - 1) leaves routing (its leader's routable label -> "false", as a scale-down drain does);
  3. when its running and queued requests are 0, or drain.timeoutSeconds passed, the partition drops to it and LWS
     replaces that group; its new pods come routable from the template;
  4. partition 0 and every group updated: done.
A scale-down drain in progress (status.drain) holds the rollout: one group out of routing at a time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from moe_operator.render.meta import A_TEMPLATE_HASH as TEMPLATE_HASH
from moe_operator.render.meta import L_ROUTABLE as ROUTABLE
from moe_operator.render.meta import LWS_GROUP_INDEX_LABEL as GROUP_INDEX
from moe_operator.render.meta import LWS_WORKER_INDEX_LABEL as WORKER_INDEX


@dataclass(frozen=True)
class Step:
    partition: int  # to render on the LWS
    rollout: dict[str, Any] | None  # status.rollout after this step ({group, startedAt}) or None
    unroute: int | None = None  # group to take out of routing now
    reroute: tuple[int, ...] = ()  # updated groups whose leader is still unroutable (a template-identical step)
    message: str = ""  # what happened, for the log and an event
    reason: str = ""  # the event's reason


def partition_of(lws: Mapping[str, Any] | None) -> int:
    spec = (lws or {}).get("spec") or {}
    cfg = (spec.get("rolloutStrategy") or {}).get("rollingUpdateConfiguration") or {}
    return int(cfg.get("partition") or 0)


def _ts(s: str | None) -> float | None:
    if not s:
        return None
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def unroutable_leaders(pods: Sequence[Mapping[str, Any]]) -> set[int]:
    out = set()
    for p in pods:
        labels = (p.get("metadata") or {}).get("labels") or {}
        leader = labels.get(WORKER_INDEX) == "0" and labels.get(GROUP_INDEX, "").isdigit()
        if leader and labels.get(ROUTABLE) == "false":
            out.add(int(labels[GROUP_INDEX]))
    return out


def updated_groups(pods: Sequence[Mapping[str, Any]], template_hash: str | None) -> set[int] | None:
    """Groups whose every (non-terminating) pod carries the current template hash; None without a hash to compare."""
    if not template_hash:
        return None
    by_group: dict[int, bool] = {}
    for p in pods:
        meta = p.get("metadata") or {}
        g = (meta.get("labels") or {}).get(GROUP_INDEX, "")
        if not g.isdigit() or meta.get("deletionTimestamp"):
            continue
        ok = (meta.get("annotations") or {}).get(TEMPLATE_HASH) == template_hash
        by_group[int(g)] = by_group.get(int(g), True) and ok
    return {g for g, ok in by_group.items() if ok}


def plan_rollout(*, now: float, now_iso: str, lws: Mapping[str, Any] | None, template_hash: str, replicas: int,
                 status: Mapping[str, Any], idle: Mapping[int, bool], unroutable: set[int],
                 drain_timeout: float, routed: set[int] | None = None, updated: set[int] | None = None) -> Step:
    """The partition to apply and what to do to routing, from the cached LWS and status. `idle[g]`: group g's
    running and queued requests are 0 (absent: no metrics for it). `routed`: groups every router has as a healthy
    worker (None: unknown) — the next group is drained only once the groups already replaced are back in rotation,
    or the routers would be left with no worker (LWS calls a group Ready before the router has re-added it).
    `updated`: groups whose pods run the current template (None: LWS's updatedReplicas is used)."""
    if lws is None or replicas == 0:
        return Step(partition=0, rollout=None)
    applied = ((lws.get("metadata") or {}).get("annotations") or {}).get(TEMPLATE_HASH)
    scale_drain = (status.get("drain") or {}).get("group")
    if applied != template_hash:
        # a rollout replaced by a newer template starts over: a group it was draining is routed again meanwhile
        return Step(partition=replicas, rollout=None, reroute=tuple(sorted(unroutable - {scale_drain})),
                    message=f"new pod template: rolling {replicas} group(s) one at a time, each drained first",
                    reason="RolloutStarted")
    p = min(partition_of(lws), replicas)
    st = lws.get("status") or {}
    ready = int(st.get("readyReplicas", 0) or 0)
    replaced = (all(g in updated for g in range(p, replicas)) if updated is not None
                else int(st.get("updatedReplicas", 0) or 0) >= replicas - p)
    reroute = tuple(sorted(g for g in unroutable if p <= g < replicas and g != scale_drain))
    current: dict[str, Any] | None = dict(status.get("rollout") or {}) or None
    if p == 0:
        return Step(partition=0, rollout=None, reroute=reroute)
    if current is None:
        back = routed is None or all(g in routed for g in range(p, replicas))
        if not replaced or ready < replicas or scale_drain is not None or not back:
            return Step(partition=p, rollout=None, reroute=reroute)  # the last replaced group is not back yet
        g = p - 1
        return Step(partition=p, rollout={"group": g, "startedAt": now_iso}, unroute=g, reroute=reroute,
                    message=f"rollout: draining group {g} before it is replaced", reason="RolloutDraining")
    g = int(current["group"])
    started = _ts(current.get("startedAt")) or now
    if idle.get(g) or now - started >= drain_timeout:
        why = "0 running requests" if idle.get(g) else f"drain timeout {drain_timeout:.0f}s reached"
        return Step(partition=g, rollout=None, reroute=reroute,
                    message=f"rollout: group {g} drained ({why}); LWS replaces it", reason="RolloutGroupDrained")
    return Step(partition=p, rollout=current, reroute=reroute)
