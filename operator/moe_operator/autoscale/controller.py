"""One autoscaling step for a MoEDeployment: observe the groups, ask the control law, and act — scale up at once,
scale down only after draining the group LWS will remove.

Scale-down, step by step (one step per call, so an operator restart resumes where it was; the progress lives in
status.drain):
  1. the law asks for fewer groups -> the highest-index group (the one LWS removes) is taken out of routing: its
     leader pod's `moe-operator.io/routable` label flips to "false", so the router's discovery drops it;
  2. later calls watch that group's running and queued requests; when both are 0, or drain.timeoutSeconds passed,
  3. status.desiredGroups is lowered and reconcile lowers the LeaderWorkerSet's replicas.
If the law asks for more capacity while a group drains, the drain is cancelled and the group routed again.

The operator owns the LWS replica count (status.desiredGroups); the user's spec is never rewritten, so GitOps tools
do not fight it. spec.replicas, when set, wins (kubectl scale / HPA / KEDA through the scale subresource)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp

from moe_operator.api.v1alpha1 import MoEDeploymentSpec
from moe_operator.autoscale.law import Decision, GroupSample, LawParams, LawState, decide
from moe_operator.autoscale.scrape import GroupMetrics, PodTarget, scrape
from moe_operator.kube import Kube
from moe_operator.render.meta import L_ROUTABLE as ROUTABLE_LABEL
from moe_operator.render.meta import LWS_GROUP_INDEX_LABEL as GROUP_INDEX
from moe_operator.render.meta import LWS_WORKER_INDEX_LABEL as WORKER_INDEX
from moe_operator.status import now_iso

DEFAULT_COLD_START_S = 300.0


@dataclass
class Memory:
    """Per-deployment state kept in the operator's memory (rebuilt within a minute after a restart)."""

    law: LawState = field(default_factory=LawState)
    cold_starts: list[float] = field(default_factory=list)
    # per group: SGLang's counters last seen (`Counters`) and what they gave: the mean uncached prompt per finished
    # request (what a queued request is expected to need), admissions per second, mean service time
    counters: dict[int, Counters] = field(default_factory=dict)
    uncached_per_request: dict[int, float] = field(default_factory=dict)
    admitted_per_s: dict[int, float] = field(default_factory=dict)
    service_s: dict[int, float] = field(default_factory=dict)
    # per group: the latency histograms' (t, ITL sum, ITL count, TTFT sum, TTFT count) last seen
    latency: dict[int, tuple[float, float, float, float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Counters:
    t: float
    prompt: float
    cached: float
    finished: float
    admitted: float
    queue_sum: float
    e2e_sum: float
    e2e_count: float


@dataclass(frozen=True)
class Rates:
    queued_tokens: float | None  # KV the queued requests will need
    admitted_per_s: float | None  # requests taken from the queues per second
    service_s: float | None  # mean seconds a finished request held its KV (end-to-end latency minus queue wait)


@dataclass(frozen=True)
class Latency:
    itl_s: float | None  # mean inter-token latency of the tokens decoded since the last step
    ttft_s: float | None  # mean time to first token of the requests that got one since the last step


def latency_since(group: int, m: GroupMetrics, memory: Memory, now: float) -> Latency:
    """Mean ITL and TTFT over the interval since the last step, from the histograms' _sum/_count deltas: what the
    group's compute load did to latency just now (None for a histogram with no new observation, or on the first
    step, or after a counter went down: a restarted server re-bases). Unlike the counter rates, nothing carries
    over: an idle group has no latency, not its last one."""
    if m.itl_count is None and m.ttft_count is None:
        return Latency(None, None)
    cur = (now, m.itl_sum or 0.0, m.itl_count or 0.0, m.ttft_sum or 0.0, m.ttft_count or 0.0)
    before = memory.latency.get(group)
    memory.latency[group] = cur
    if before is None or now <= before[0] or any(c < b for c, b in zip(cur[1:], before[1:], strict=True)):
        return Latency(None, None)
    d = [c - b for c, b in zip(cur[1:], before[1:], strict=True)]
    return Latency(d[0] / d[1] if d[1] > 0 else None, d[2] / d[3] if d[3] > 0 else None)


def counter_rates(group: int, m: GroupMetrics, memory: Memory, now: float) -> Rates:
    """What the law needs beyond gauges, from SGLang's counters and histograms between this step and the last:
    queued x the mean uncached prompt of the requests finished meanwhile (prompt_tokens - cached_tokens over
    num_requests), Δ admissions / Δt (queue_time_seconds_count), and the mean e2e latency of the finished requests
    minus the mean queue wait of the admitted ones. The last known value holds when an interval has none; None
    before any is known (the law then falls back). A counter that went down (a restarted server) re-bases."""
    if m.prompt_tokens_total is not None and m.requests_total is not None:
        cur = Counters(now, m.prompt_tokens_total, m.cached_tokens_total or 0.0, m.requests_total,
                       m.admitted_total or 0.0, m.queue_time_sum or 0.0, m.e2e_sum or 0.0, m.e2e_count or 0.0)
        before = memory.counters.get(group)
        memory.counters[group] = cur
        if before is not None and now > before.t and all(
                getattr(cur, f) >= getattr(before, f) for f in ("prompt", "cached", "finished", "admitted",
                                                                  "queue_sum", "e2e_sum", "e2e_count")):
            done, admitted = cur.finished - before.finished, cur.admitted - before.admitted
            if m.admitted_total is not None:
                memory.admitted_per_s[group] = admitted / (now - before.t)
            if done > 0:
                memory.uncached_per_request[group] = max(0.0, ((cur.prompt - cur.cached)
                                                               - (before.prompt - before.cached)) / done)
            if m.e2e_count is not None and cur.e2e_count > before.e2e_count:
                wait = (cur.queue_sum - before.queue_sum) / admitted if admitted > 0 else 0.0
                e2e = (cur.e2e_sum - before.e2e_sum) / (cur.e2e_count - before.e2e_count)
                memory.service_s[group] = max(0.1, e2e - wait)
    mean = memory.uncached_per_request.get(group)
    return Rates(None if mean is None else m.queued_reqs * mean, memory.admitted_per_s.get(group),
                 memory.service_s.get(group))


@dataclass(frozen=True)
class StepResult:
    desired_groups: int
    status_patch: dict[str, Any]
    event: tuple[str, str] | None  # (reason, message)
    changed_replicas: bool
    event_type: str = "Normal"


def law_params(spec: MoEDeploymentSpec, measured_cold_start: float | None, planned_groups: int) -> LawParams:
    """The law's settings from the typed spec: its defaults are the API's (one source), and 0 is a value."""
    auto = spec.autoscaling
    if auto.cold_start_seconds is not None:
        cold = float(auto.cold_start_seconds)
    else:
        cold = measured_cold_start if measured_cold_start is not None else DEFAULT_COLD_START_S
    hi = auto.max_groups if auto.max_groups is not None else spec.max_groups
    return LawParams(
        target_kv_utilization=auto.target_kv_utilization,
        min_groups=auto.min_groups,
        max_groups=hi if hi is not None else max(1, planned_groups),
        scale_down_stabilization_s=float(auto.scale_down_stabilization_seconds),
        cold_start_s=cold,
        itl_target_s=auto.target_inter_token_latency_seconds,
        ttft_target_s=auto.target_time_to_first_token_seconds,
    )


def active(spec: MoEDeploymentSpec) -> bool:
    """The built-in autoscaler steers the group count: enabled, and nobody set spec.replicas (kubectl scale, HPA)."""
    return spec.autoscaling.enabled and spec.replicas is None


def metrics_port(spec: MoEDeploymentSpec) -> int:
    """Where SGLang serves /metrics: autoscaling.metricsPort, else the HTTP port (SGLang's own default)."""
    return spec.autoscaling.metrics_port or spec.sglang.port


def _ts(s: str | None) -> float | None:
    if not s:
        return None
    import datetime as dt

    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def measure_cold_starts(pods: Sequence[Mapping[str, Any]]) -> list[float]:
    """Seconds from leader pod creation to Ready, for leaders that became Ready (what a new group costs)."""
    out = []
    for p in pods:
        if p["metadata"].get("labels", {}).get(WORKER_INDEX) != "0":
            continue
        created = _ts(p["metadata"].get("creationTimestamp"))
        ready = next((c for c in p.get("status", {}).get("conditions", []) if c.get("type") == "Ready"), None)
        if created and ready and ready.get("status") == "True":
            t = _ts(ready.get("lastTransitionTime"))
            if t is not None and t >= created:
                out.append(t - created)
    return out


def targets(pods: Sequence[Mapping[str, Any]], port: int) -> list[PodTarget]:
    out = []
    for p in pods:
        labels = p["metadata"].get("labels", {})
        ip = p.get("status", {}).get("podIP")
        if p.get("status", {}).get("phase") != "Running" or not ip or p["metadata"].get("deletionTimestamp"):
            continue
        try:
            group = int(labels[GROUP_INDEX])
        except (KeyError, ValueError):
            continue
        out.append(PodTarget(group=group, pod=p["metadata"]["name"], url=f"http://{ip}:{port}/metrics"))
    return out


def starting_groups(pods: Sequence[Mapping[str, Any]], replicas: int) -> int:
    """Groups below `replicas` whose leader pod is missing or not Ready yet: capacity that is coming."""
    ready = set()
    for p in pods:
        labels = p["metadata"].get("labels", {})
        conditions = p.get("status", {}).get("conditions", [])
        if labels.get(WORKER_INDEX) == "0" and any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            try:
                ready.add(int(labels[GROUP_INDEX]))
            except (KeyError, ValueError):
                pass
    return sum(1 for g in range(replicas) if g not in ready)


def plan_step(*, now: float, spec: MoEDeploymentSpec, status: Mapping[str, Any], replicas: int, starting: int,
              metrics: Mapping[int, GroupMetrics], memory: Memory, planned_groups: int,
              measured_cold_start: float | None) -> tuple[Decision, StepResult]:
    """The decision part of a step, pure: what to do given what was observed."""
    params = law_params(spec, measured_cold_start, planned_groups)
    samples = []
    for g, got in sorted(metrics.items()):
        if g < replicas:
            r = counter_rates(g, got, memory, now)
            lat = latency_since(g, got, memory, now)
            samples.append(GroupSample(kv_used_tokens=got.kv_used_tokens, kv_total_tokens=got.kv_total_tokens,
                                       running_reqs=got.running_reqs, queued_reqs=got.queued_reqs, ready=True,
                                       queued_tokens=r.queued_tokens, admitted_per_s=r.admitted_per_s,
                                       service_s=r.service_s, itl_s=lat.itl_s, ttft_s=lat.ttft_s))
    # a Ready group without a sample (its metrics endpoint is silent) is assumed to carry the sampled groups' mean
    # load; groups still starting are credited as capacity that is coming
    decision = decide(now, samples, replicas, starting, memory.law, params)
    memory.law = decision.state
    drain = status.get("drain") or None
    patch: dict[str, Any] = {
        "kvUtilization": f"{decision.utilization:.2f}",
        "kvUtilizationPercent": max(0, min(100, round(decision.utilization * 100))),
        "liveSessions": sum(m.running_reqs for m in metrics.values()),
    }
    desired = replicas
    event = None
    changed = False
    timeout = float(spec.drain.timeout_seconds)
    if drain:
        group = int(drain["group"])
        # cancel only when the load needs every group again, not because the law's scale-down clock restarted
        # (e.g. after an operator restart): a drain in progress has already taken the group out of routing
        if decision.recommended_groups >= replicas:
            patch["drain"] = None
            patch["lastScaleReason"] = f"drain of group {group} cancelled: {decision.reason}"
            event = ("DrainCancelled", patch["lastScaleReason"])
        else:
            m = metrics.get(group)
            started = _ts(drain.get("startedAt")) or now
            idle = m is not None and m.running_reqs == 0 and m.queued_reqs == 0
            if idle or now - started >= timeout:
                desired = replicas - 1
                why = "0 running requests" if idle else f"drain timeout {timeout:.0f}s reached"
                patch.update({"drain": None, "lastScaleTime": now_iso(),
                              "lastScaleReason": f"{replicas} -> {desired} groups: group {group} drained ({why})"})
                event = ("ScaledDown", patch["lastScaleReason"])
                changed = True
    elif decision.desired_groups > replicas:
        desired = decision.desired_groups
        patch.update({"lastScaleTime": now_iso(), "lastScaleReason": decision.reason})
        event = ("ScaledUp", decision.reason)
        changed = True
    elif decision.desired_groups < replicas and not status.get("rollout"):
        # (not while a rollout drains a group: one group out of routing at a time)
        group = replicas - 1  # LWS removes the highest group index
        patch.update({"drain": {"group": group, "startedAt": now_iso()},
                      "lastScaleReason": f"draining group {group}: {decision.reason}"})
        event = ("Draining", patch["lastScaleReason"])
    else:
        patch["lastScaleReason"] = status.get("lastScaleReason") or decision.reason
    if changed:
        patch["desiredGroups"] = desired
    return decision, StepResult(desired_groups=desired, status_patch=patch, event=event, changed_replicas=changed)


def with_silent_pods(result: StepResult, status: Mapping[str, Any], silent: tuple[str, ...]) -> StepResult:
    """Report pods whose /metrics did not answer in status.podsWithoutMetrics, with a Warning event when the set
    changes to a non-empty one (a scale event of the same step takes precedence; the status still says it)."""
    before = tuple(status.get("podsWithoutMetrics") or ())
    now = silent[:64]
    patch = {**result.status_patch, "podsWithoutMetrics": list(now) if now else None}
    event = result.event
    if now and now != before and event is None:
        shown = ", ".join(now[:5]) + (f" and {len(now) - 5} more" if len(now) > 5 else "")
        event = ("MetricsMissing", f"no /metrics from {len(now)} pod(s): {shown}; scaling continues on the "
                                   f"groups that answered (a silent group counts as their mean load)")
    return replace(result, status_patch=patch, event=event, event_type="Warning" if event and
                   event[0] == "MetricsMissing" else result.event_type)


async def set_routable(kube: Kube, namespace: str, pods: Sequence[Mapping[str, Any]], group: int,
                       routable: bool) -> None:
    """Flip the routable label on the group's leader pod: the router's discovery selector includes it."""
    for p in pods:
        labels = p["metadata"].get("labels") or {}
        if labels.get(GROUP_INDEX) == str(group) and labels.get(WORKER_INDEX) == "0":
            await kube.patch("v1", "Pod", p["metadata"]["name"],
                             {"metadata": {"labels": {ROUTABLE_LABEL: "true" if routable else "false"}}}, namespace)


async def autoscale_once(kube: Kube, session: aiohttp.ClientSession, body: Mapping[str, Any], memory: Memory,
                         planned_groups: int, lws: Mapping[str, Any] | None,
                         pods: Sequence[Mapping[str, Any]],
                         routers: Sequence[Mapping[str, Any]] = ()) -> StepResult | None:
    """One step for one MoEDeployment. `lws` and `pods` (its group pods) come from the operator's caches; the API is
    only written (drain labels), the pods' /metrics are scraped."""
    from moe_operator.desired import typed
    from moe_operator.planning import SpecProblem

    meta, status = body["metadata"], body.get("status") or {}
    try:
        spec = typed(body).spec
    except SpecProblem:
        return None  # reconcile reports it (Stalled); the autoscaler leaves the groups alone
    if not active(spec):
        return None
    ns = meta["namespace"]
    if lws is None:
        return None
    replicas = int(lws.get("spec", {}).get("replicas", 0) or 0)
    memory.cold_starts = (memory.cold_starts + measure_cold_starts(pods))[-20:]
    measured = max(memory.cold_starts) if memory.cold_starts else None
    scraped = await scrape(session, targets(pods, metrics_port(spec)))
    _, result = plan_step(now=time.time(), spec=spec, status=status, replicas=replicas,
                          starting=starting_groups(pods, replicas), metrics=scraped.groups,
                          memory=memory, planned_groups=planned_groups, measured_cold_start=measured)
    result = with_silent_pods(result, status, scraped.silent)
    drain_before = status.get("drain")
    drain_after = result.status_patch.get("drain", drain_before)
    if drain_after and not drain_before:
        await route(kube, session, spec, ns, pods, routers, int(drain_after["group"]), routable=False)
    elif drain_before and "drain" in result.status_patch and result.status_patch["drain"] is None \
            and not result.changed_replicas:
        await route(kube, session, spec, ns, pods, routers, int(drain_before["group"]), routable=True)
    return result


async def route(kube: Kube, session: aiohttp.ClientSession, spec: MoEDeploymentSpec, namespace: str,
                pods: Sequence[Mapping[str, Any]], routers: Sequence[Mapping[str, Any]], group: int,
                routable: bool, pd_role: str | None = None) -> None:
    """The group in or out of rotation: its leader's routable label and every router's worker list (routing.py;
    not with an API key, which a worker re-added by the operator would lack). `pd_role`: which PD role `pods`
    are (default: decode with spec.disaggregation, else aggregated)."""
    from moe_operator.routing import leader_url, pd_worker, router_endpoints, set_in_rotation

    pd = spec.disaggregation
    role = pd_role if pd_role is not None else ("decode" if pd is not None else "")
    await set_routable(kube, namespace, pods, group, routable=routable)
    if spec.sglang.api_key_secret_ref is None:
        await set_in_rotation(session, router_endpoints(routers), leader_url(pods, group, spec.sglang.port), routable,
                              pd_worker(role, pd.bootstrap_port if pd is not None else None))
