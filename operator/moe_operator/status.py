"""MoEDeployment status as a pure function of what was observed (azimuth style).

Conditions follow the Kubernetes convention (type/status/reason/message/lastTransitionTime/observedGeneration) and
are kstatus-compatible: `Reconciling` mirrors `Progressing` and `Stalled` marks states that will not resolve without
intervention, so Argo CD / Flux health checks read them without custom Lua."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from moe_operator.render.meta import LWS_GROUP_INDEX_LABEL as GROUP_INDEX_LABEL

CONDITION_TYPES = ("Ready", "Progressing", "Reconciling", "Degraded", "Stalled")


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Capacity:
    """What the pool can offer when group pods are unschedulable (numbers for InsufficientCapacity)."""

    pool: str
    resource: str
    nodes: int
    devices_per_node: int
    free_devices: int
    nodes_with_room: int  # nodes that can take one more group pod


@dataclass(frozen=True)
class Observed:
    generation: int
    pool: str | None = None
    plan: Mapping[str, Any] | None = None
    problem: tuple[str, str] | None = None  # (reason, message): invalid spec, infeasible plan, missing pool
    desired_groups: int = 0
    lws: Mapping[str, Any] | None = None
    pods: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    capacity: Capacity | None = None
    selector: str = ""
    #: node -> why a group pod on it cannot be counted on (cache.node_problem), for the nodes of this deployment's pods
    node_problems: Mapping[str, str] = field(default_factory=dict)
    #: groups whose pods run the current template (from the pods' template-hash annotation); None: LWS's count
    updated_groups: int | None = None
    #: with spec.disaggregation: status.prefill as prefill_status computed it (the groups above are the decode role)
    prefill: Mapping[str, Any] | None = None



def _group(p: Mapping[str, Any]) -> int | None:
    idx = (p.get("metadata", {}).get("labels") or {}).get(GROUP_INDEX_LABEL)
    return int(idx) if isinstance(idx, str) and idx.isdigit() else None


def _groups_on_bad_nodes(obs: Observed) -> dict[int, str]:
    """group index -> "pod on node (problem)" for groups with a pod on a node in obs.node_problems."""
    out: dict[int, str] = {}
    for p in obs.pods:
        node = (p.get("spec") or {}).get("nodeName")
        g = _group(p)
        if node is not None and node in obs.node_problems and g is not None and g not in out:
            out[g] = f"pod {p['metadata'].get('name')} on node {node} ({obs.node_problems[node]})"
    return out


def _lws_rolling(lws: Mapping[str, Any] | None) -> tuple[bool, int]:
    """(rolling out, groups at the current revision). LWS bumps status.observedGeneration as soon as it sees a new
    template, so that alone says nothing; a rollout lasts while updatedReplicas (groups whose pods run the current
    revision) is below replicas, or while LWS says UpdateInProgress."""
    if lws is None:
        return False, 0
    st = lws.get("status") or {}
    current = int(st.get("replicas", 0) or 0)
    updated = int(st.get("updatedReplicas", current) or 0)
    gen = (lws.get("metadata") or {}).get("generation")
    lagging = gen is not None and st.get("observedGeneration", gen) != gen
    # a partition above 0 is the operator holding groups back for a drain-aware rollout (moe_operator.rollout)
    held = int((((lws.get("spec") or {}).get("rolloutStrategy") or {}).get("rollingUpdateConfiguration") or {})
               .get("partition") or 0) > 0
    in_progress = any(c.get("type") == "UpdateInProgress" and c.get("status") == "True"
                      for c in st.get("conditions") or [])
    return lagging or held or updated < current or in_progress, min(updated, current)


def _pod_ready(p: Mapping[str, Any]) -> bool:
    st = p.get("status", {})
    return st.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions", []))


def _unschedulable(p: Mapping[str, Any]) -> str | None:
    """The scheduler's message for a pod it could not place."""
    for c in p.get("status", {}).get("conditions", []):
        if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
            return str(c.get("message") or "unschedulable")
    return None


def _image_pull_failure(p: Mapping[str, Any]) -> str | None:
    for cs in p.get("status", {}).get("containerStatuses", []) or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName"):
            return f"{waiting['reason']}: {cs.get('image')} ({waiting.get('message', '')})".strip()
    return None


def _restarting(p: Mapping[str, Any]) -> bool:
    return bool(p.get("metadata", {}).get("deletionTimestamp")) or p.get("status", {}).get("phase") == "Failed"


#: status.prefill fields the prefill autoscaler owns, carried over by a recompute
_PREFILL_CARRIED = ("promptTokensPerSecond", "backlogTokens", "lastScaleTime", "lastScaleReason", "drain")


def prefill_status(lws: Mapping[str, Any] | None, desired: int, plan: Mapping[str, Any] | None,
                   previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """status.prefill: the prefill LWS's ready groups against the count the operator converges to, the prefill
    plan, and what the prefill autoscaler last observed (carried)."""
    prev = previous or {}
    ready = int(((lws or {}).get("status") or {}).get("readyReplicas", 0) or 0)
    out: dict[str, Any] = {k: prev[k] for k in _PREFILL_CARRIED if k in prev}
    out.update({"desiredGroups": desired, "readyGroups": ready, "groupSummary": f"{ready}/{desired}"})
    if plan:
        out["plan"] = dict(plan)
    return out


def compute_status(obs: Observed, previous: Mapping[str, Any] | None = None, now: str | None = None) -> dict:
    """The whole `.status` for a MoEDeployment. `previous` keeps lastTransitionTime stable and carries fields that
    other writers own (the autoscaler's)."""
    previous = previous or {}
    now = now or now_iso()
    plan = dict(obs.plan) if obs.plan else None
    lws_status = (obs.lws or {}).get("status", {}) or {}
    current = int(lws_status.get("replicas", 0) or 0)
    # a group with a pod on a NotReady / unreachable node is not capacity, whatever its (stale) pod status says
    on_bad_nodes = _groups_on_bad_nodes(obs)
    # LWS still counts such a group Ready while its pods' status is stale (the node controller marks them NotReady
    # only after its grace period): take those out, not the ones LWS already dropped
    stale = [g for g in on_bad_nodes if all(_pod_ready(p) for p in obs.pods if _group(p) == g)]
    ready = max(0, int(lws_status.get("readyReplicas", 0) or 0) - len(stale))
    desired = obs.desired_groups
    rolling, updated = _lws_rolling(obs.lws)
    if obs.updated_groups is not None and obs.lws is not None:
        updated = min(obs.updated_groups, current)
        rolling = rolling or updated < current
    spg = int(plan.get("sessionsPerGroup", 0)) if plan else 0

    conds: dict[str, tuple[str, str, str]] = {}
    if obs.problem:
        reason, message = obs.problem
        conds["Ready"] = ("False", reason, message)
        conds["Stalled"] = ("True", reason, message)
        conds["Progressing"] = ("False", reason, "waiting for a valid, feasible spec")
        if ready and ready < desired:
            conds["Degraded"] = ("True", "ServingPreviousSpec",
                                 f"{ready} group(s) keep serving the last valid spec; nothing was removed")
        else:
            conds["Degraded"] = ("False", "NoDegradation", "")
    else:
        unsched_msgs = [m for p in obs.pods if (m := _unschedulable(p))]
        # "Insufficient <resource>": the pool lacks devices. Anything else (a missing PVC, a taint, a selector that
        # matches nothing) is reported with the scheduler's own words.
        unsched = [m for m in unsched_msgs if "Insufficient" in m]
        other = next((m for m in unsched_msgs if "Insufficient" not in m), None)
        pull = next((m for p in obs.pods if (m := _image_pull_failure(p))), None)
        restarting = [p for p in obs.pods if _restarting(p)]
        groups_msg = f"{ready}/{desired} groups ready, capacity {ready * spg} sessions"

        if pull:
            conds["Stalled"] = ("True", "ImagePullFailed", pull)
        elif unsched:
            c = obs.capacity
            if c:
                msg = (f"{len(unsched)} group pod(s) Pending: pool {c.pool} has {c.free_devices} free {c.resource} "
                       f"on {c.nodes} node(s) ({c.nodes_with_room} can take a {c.devices_per_node}-device pod); "
                       f"{desired} group(s) x {plan.get('nodesPerGroup', '?') if plan else '?'} node(s) wanted")
            else:
                msg = f"{len(unsched)} group pod(s) Pending: not enough free devices in the pool"
            conds["Stalled"] = ("True", "InsufficientCapacity", msg)
        elif other:
            conds["Stalled"] = ("True", "Unschedulable", f"group pod(s) Pending: {other}")
        else:
            conds["Stalled"] = ("False", "NotStalled", "")

        stalled = conds["Stalled"][0] == "True"
        pf = obs.prefill
        p_ready, p_desired = (int(pf.get("readyGroups", 0)), int(pf.get("desiredGroups", 0))) if pf else (0, 0)
        if pf is not None:
            groups_msg = f"{ready}/{desired} decode groups ready, capacity {ready * spg} sessions; " \
                         f"{p_ready}/{p_desired} prefill groups ready"
        if desired == 0:
            conds["Ready"] = ("True", "ScaledToZero", "0 groups desired")
        elif ready >= desired and not rolling and p_ready >= p_desired:
            conds["Ready"] = ("True", "AllGroupsReady", groups_msg)
        elif ready >= desired and not rolling:  # decode serves nothing without a prefill server to pair with
            conds["Ready"] = ("False", conds["Stalled"][1] if stalled else "PrefillGroupsNotReady", groups_msg)
        else:
            conds["Ready"] = ("False", conds["Stalled"][1] if stalled else "GroupsNotReady", groups_msg)

        if on_bad_nodes:
            shown = "; ".join(f"group {g}: {w}" for g, w in sorted(on_bad_nodes.items())[:4])
            conds["Degraded"] = ("True", "NodeNotReady", f"{len(on_bad_nodes)} group(s) on a node that is not Ready: "
                                 f"{shown}; " + groups_msg)
        elif restarting and ready < desired:
            conds["Degraded"] = ("True", "GroupRestarting",
                                 f"{len(restarting)} pod(s) failed or terminating; LWS is recreating the group; "
                                 + groups_msg)
        elif ready < desired and int(previous.get("readyGroups", 0) or 0) > ready:  # a ready group went away
            conds["Degraded"] = ("True", "GroupRestarting", groups_msg)
        elif (previous_degraded := _cond(previous, "Degraded")) and previous_degraded.get("status") == "True" \
                and ready < desired:
            conds["Degraded"] = ("True", previous_degraded.get("reason", "GroupRestarting"), groups_msg)
        else:
            conds["Degraded"] = ("False", "NoDegradation", "")

        if stalled:
            conds["Progressing"] = ("False", conds["Stalled"][1], conds["Stalled"][2])
        elif rolling:
            draining = (previous.get("rollout") or {}).get("group")
            conds["Progressing"] = ("True", "RollingOut", f"{updated}/{desired} groups updated to the current spec; "
                                    + (f"draining group {draining} before it is replaced; " if draining is not None
                                       else "") + groups_msg)
        elif ready < desired or current != desired:
            reason = "ScalingUp" if current < desired else "ScalingDown" if current > desired else "GroupsStarting"
            conds["Progressing"] = ("True", reason, groups_msg)
        elif pf is not None and p_ready != p_desired:
            conds["Progressing"] = ("True", "PrefillScaling", groups_msg)
        else:
            conds["Progressing"] = ("False", "Reconciled", groups_msg)
    conds["Reconciling"] = conds["Progressing"]

    status: dict[str, Any] = {k: v for k, v in previous.items() if k in _CARRIED}
    status.update({
        "observedGeneration": obs.generation,
        "replicas": current,
        "readyGroups": ready,
        "desiredGroups": desired,
        "updatedGroups": updated if obs.lws is not None else 0,
        "sessionCapacity": ready * spg,
        "selector": obs.selector,
        "groupSummary": f"{ready}/{desired}",
        "conditions": [_condition(t, *conds[t], obs.generation, previous, now) for t in CONDITION_TYPES],
    })
    if obs.pool:
        status["pool"] = obs.pool
    if plan:
        status["plan"] = plan
    if obs.prefill is not None:
        status["prefill"] = dict(obs.prefill)
    elif previous.get("prefill"):
        status["prefill"] = None  # disaggregation turned off: the merge patch removes it
    return status


# Fields owned by other writers (the autoscaler) that a status recompute must not drop.
_CARRIED = ("kvUtilization", "kvUtilizationPercent", "liveSessions", "lastScaleTime", "lastScaleReason", "drain",
            "podsWithoutMetrics", "plan", "pool", "rollout")


def _cond(status: Mapping[str, Any], ctype: str) -> Mapping[str, Any] | None:
    return next((c for c in status.get("conditions", []) or [] if c.get("type") == ctype), None)


def _condition(ctype: str, status: str, reason: str, message: str, generation: int,
               previous: Mapping[str, Any], now: str) -> dict:
    prev = _cond(previous, ctype)
    changed = not prev or prev.get("status") != status
    return {
        "type": ctype, "status": status, "reason": reason, "message": message[:32768],
        "observedGeneration": generation,
        "lastTransitionTime": now if changed else prev.get("lastTransitionTime", now),  # type: ignore[union-attr]
    }


def status_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """True when a write is needed (timestamps alone never trigger one). The write is a merge patch, where a None
    removes the field: a None in `new` equals the field being absent from `old` (else a carried `rollout: None`
    wrote status on every pass, forever — 60 PATCH/s at 200 deployments while pods were starting)."""
    def strip(s: Mapping[str, Any] | None) -> Any:
        s = {k: v for k, v in (s or {}).items() if v is not None}
        s["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                           for c in s.get("conditions", []) or []]
        return s
    return strip(old) != strip(new)
