"""One prefill autoscaling step (spec.disaggregation.prefill.autoscaling): observe the prefill groups, ask the prefill
law (autoscale/prefill.py), act. Scale-up at once; scale-down drains first, as for decode groups, one step per call
with the progress in status.prefill.drain so a restart resumes:
  1. the law asks for fewer prefill groups -> the highest-index one (the group LWS removes) leaves routing (its
     leader's routable label and every SMG replica's worker list);
  2. later calls watch it: when it runs no prefill, queues none, has no request waiting for a decode handshake
     (num_prefill_bootstrap_queue_reqs) and no KV still being sent (num_prefill_inflight_queue_reqs) - or
     drain.timeoutSeconds passed -
  3. status.prefill.desiredGroups is lowered and reconcile lowers the prefill LeaderWorkerSet's replicas.
More demand while a group drains cancels the drain and routes the group again."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from moe_operator.api.v1alpha1 import MoEDeploymentSpec
from moe_operator.autoscale.prefill import PrefillParams, PrefillState, decide
from moe_operator.autoscale.scrape import GroupMetrics, scrape
from moe_operator.kube import Kube
from moe_operator.status import now_iso

#: measured capacity: the median of the last CAPACITY_SAMPLES busy stretches of at least CAPACITY_WINDOW_S each. SGLang
#: counts a prompt's tokens when the request ends, so one 15 s step of a group prefilling long prompts sees 0, 1 or 3
#: of them finish (2.1k-13.5k tokens/s on the Mooncake slice for a ~16.7k capacity): only longer stretches measure it
CAPACITY_SAMPLES = 12
CAPACITY_WINDOW_S = 60.0


@dataclass
class PrefillMemory:
    state: PrefillState = field(default_factory=PrefillState)
    #: group -> (t, uncached, requests, queued) at the last sample
    last: dict[int, tuple[float, float, float, int]] = field(default_factory=dict)
    rate: float | None = None
    per_request: float | None = None  #: mean uncached prompt of a finished request
    cold_starts: list[float] = field(default_factory=list)
    #: uncached prompt tokens/s one group served over stretches it had a queue at every sample (busy throughout)
    capacity: list[float] = field(default_factory=list)
    #: group -> (tokens, seconds) of its current busy stretch
    streak: dict[int, tuple[float, float]] = field(default_factory=dict)


def group_capacity(memory: PrefillMemory, planned: float) -> float:
    """One prefill group's throughput for the law: what busy groups were measured to serve (median of the last
    CAPACITY_SAMPLES saturated intervals), else the plan's figure. The plan prices a prompt with nothing cached before
    it; a long cached prefix still costs attention over it, so agent prompts (a 30-60k cached context, a few k new
    tokens) are served at about a quarter of it (bench/pd.py: 7,950 vs 29,588 tokens/s), and a law on the planned
    figure saw a saturated group as 46 % busy."""
    if not memory.capacity:
        return planned
    xs = sorted(memory.capacity)
    return xs[len(xs) // 2]


@dataclass(frozen=True)
class PrefillResult:
    status_patch: dict[str, Any]  #: the status.prefill fields to merge
    changed: bool  #: desiredGroups changed: reconcile applies it now
    event: tuple[str, str] | None = None


def prefill_enabled(spec: MoEDeploymentSpec) -> bool:
    pd = spec.disaggregation
    return pd is not None and pd.prefill.autoscaling.enabled and pd.prefill.groups is None


def prefill_params(spec: MoEDeploymentSpec, tokens_per_second_per_group: float,
                   measured_cold_start: float | None = None) -> PrefillParams:
    """The prefill law's settings from the typed spec (its defaults are the API's); the cold start as the decode
    law takes it (autoscaling.coldStartSeconds, else measured, else the default)."""
    from moe_operator.autoscale.controller import DEFAULT_COLD_START_S

    pd = spec.disaggregation
    assert pd is not None
    p = pd.prefill
    cold = spec.autoscaling.cold_start_seconds
    return PrefillParams(
        cold_start_seconds=float(cold) if cold is not None else (
            measured_cold_start if measured_cold_start is not None else DEFAULT_COLD_START_S),
        tokens_per_second_per_group=tokens_per_second_per_group,
        target_utilization=p.autoscaling.target_utilization, ttft_seconds=p.ttft_seconds,
        min_groups=p.min_groups, max_groups=p.max_groups,
        stabilization_seconds=float(p.autoscaling.scale_down_stabilization_seconds),
        ratio_min=pd.ratio.min if pd.ratio else None, ratio_max=pd.ratio.max if pd.ratio else None)


def observe(groups: Mapping[int, GroupMetrics], memory: PrefillMemory, now: float,
            typical_prompt: float) -> tuple[float | None, float | None]:
    """(prompt tokens/s served lately, prompt tokens waiting) from the tokenizer counters between two steps and the
    queues; (None, None) until two samples exist."""
    total_rate, known = 0.0, False
    finished_tokens = finished = 0.0
    for g, m in groups.items():
        if m.prompt_tokens_total is None or m.requests_total is None:
            continue
        cur = (now, m.prompt_tokens_total - (m.cached_tokens_total or 0.0), m.requests_total, m.queued_reqs)
        before = memory.last.get(g)
        memory.last[g] = cur
        if before is None or cur[0] <= before[0] or cur[1] < before[1] or cur[2] < before[2]:
            continue  # first sample, or a restarted server
        known = True
        served = (cur[1] - before[1]) / (cur[0] - before[0])
        total_rate += served
        if before[3] > 0 and cur[3] > 0:  # a queue at both ends: busy throughout, what it served is its capacity
            tokens, seconds = memory.streak.get(g, (0.0, 0.0))
            tokens, seconds = tokens + (cur[1] - before[1]), seconds + (cur[0] - before[0])
            if seconds >= CAPACITY_WINDOW_S:
                if tokens > 0:
                    memory.capacity = (memory.capacity + [tokens / seconds])[-CAPACITY_SAMPLES:]
                tokens, seconds = 0.0, 0.0
            memory.streak[g] = (tokens, seconds)
        else:
            memory.streak.pop(g, None)
        finished_tokens += cur[1] - before[1]
        finished += cur[2] - before[2]
    for g in list(memory.last):
        if g not in groups:
            memory.last.pop(g)
            memory.streak.pop(g, None)
    if finished > 0:
        memory.per_request = finished_tokens / finished
    if known:
        memory.rate = total_rate
    if memory.rate is None:
        return None, None
    # not the bootstrap queue: those wait for their decode side's KV (the decode role's shortage)
    waiting = sum(m.queued_reqs for m in groups.values())
    return memory.rate, waiting * (memory.per_request or typical_prompt)


def _idle(m: GroupMetrics | None) -> bool:
    return m is not None and m.running_reqs == 0 and m.queued_reqs == 0 and m.prefill_bootstrap_reqs == 0 \
        and m.prefill_inflight_reqs == 0


async def prefill_once(kube: Kube, session: aiohttp.ClientSession, body: Mapping[str, Any], spec: MoEDeploymentSpec,
                       memory: PrefillMemory, lws: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]],
                       routers: Sequence[Mapping[str, Any]], decode_groups: int) -> PrefillResult | None:
    from moe_operator.autoscale.controller import _ts, measure_cold_starts, metrics_port, route, targets

    status = dict((body.get("status") or {}).get("prefill") or {})
    plan = status.get("plan") or {}
    tput = float(plan.get("promptTokensPerSecondPerGroup") or 0)
    if lws is None or tput <= 0:
        return None  # reconcile has not created the role yet
    pd = spec.disaggregation
    assert pd is not None
    ns = body["metadata"]["namespace"]
    now = time.time()
    current = int(status.get("desiredGroups") or (lws.get("spec") or {}).get("replicas") or 0)
    scraped = await scrape(session, targets(pods, metrics_port(spec)))
    typical = float(pd.prefill.prompt_tokens or spec.sessions.average_context_tokens or spec.sessions.context_tokens)
    rate, backlog = observe(scraped.groups, memory, now, typical)
    memory.cold_starts = (memory.cold_starts + measure_cold_starts(pods))[-20:]
    measured = max(memory.cold_starts) if memory.cold_starts else None
    d = decide(now, prefill_params(spec, group_capacity(memory, tput), measured), memory.state, current,
               decode_groups, rate, backlog)
    patch: dict[str, Any] = {"promptTokensPerSecond": round(rate) if rate is not None else None,
                             "backlogTokens": round(backlog) if backlog is not None else None}
    drain = status.get("drain")
    if drain is not None:
        g = int(drain["group"])
        started = _ts(drain.get("startedAt")) or now
        # demand is back: the group serves again. `need`, not `desired`: right after the step that started this drain
        # the law holds (desired == current while its next window runs), which is no reason to cancel; and only on
        # a measured rate: after an operator restart the first step has none, and `need` then is the current count
        if rate is not None and d.need >= current:
            await route(kube, session, spec, ns, pods, routers, g, routable=True, pd_role="prefill")
            patch["drain"] = None
            return PrefillResult(patch, False, ("PrefillDrainCancelled", f"prefill group {g} routed again: {d.reason}"))
        if _idle(scraped.groups.get(g)) or now - started >= spec.drain.timeout_seconds:
            why = "idle" if _idle(scraped.groups.get(g)) else f"drain timeout {spec.drain.timeout_seconds}s"
            patch.update({"drain": None, "desiredGroups": current - 1, "lastScaleTime": now_iso(),
                          "lastScaleReason": f"prefill group {g} drained ({why}): {d.reason}"})
            return PrefillResult(patch, True, ("PrefillScaledDown", f"{current} -> {current - 1} prefill groups: "
                                               f"group {g} drained ({why})"))
        return PrefillResult(patch, False)
    if d.desired > current:
        patch.update({"desiredGroups": d.desired, "lastScaleTime": now_iso(), "lastScaleReason": d.reason})
        return PrefillResult(patch, True, ("PrefillScaledUp", f"{current} -> {d.desired} prefill groups: {d.reason}"))
    if d.desired < current and current > 0:
        g = current - 1
        await route(kube, session, spec, ns, pods, routers, g, routable=False, pd_role="prefill")
        patch["drain"] = {"group": g, "startedAt": now_iso()}
        return PrefillResult(patch, False, ("PrefillDraining", f"prefill group {g} left routing: {d.reason}"))
    return PrefillResult(patch, False)
