"""The autoscaling control law: how many SGLang groups a MoEDeployment should have, from KV-cache occupancy.

One pure, deterministic function (`decide`) shared by the operator (called every STEP_SECONDS = 15 s with scraped
metrics) and by the offline simulator (`moe-operator simulate`), so the benchmarks measure the law that runs in the
cluster.
No I/O, no clock: time comes in as `now_s`; memory between calls lives in a small `LawState` that round-trips
through JSON (the operator may keep it in memory or persist it in an annotation).

Signal. Per group, KV tokens in use (`sglang:kv_used_tokens`, radix-cache evictable tokens are *not* in use,
sglang.md §3.2) over the group's KV pool (`sglang:max_total_num_tokens` summed over its DP ranks), plus running
and queued requests. The fleet *demand* is

    demand = used tokens of the sampled groups, extrapolated to serving groups that have no sample
             + queued requests × mean KV tokens of a running request      (queued work is hidden demand;
               counted only when no group is starting and the queue is not shrinking, at most the KV in use)

Law, each call:
  1. Trend: a robust (Theil-Sen: median of pairwise slopes) slope of KV in use over the last `trend_window_s`
     (default max(180 s, horizon/2)) of calls
     (kept in the state), used once the history spans at least half that window (no extrapolation from two points
     after a restart; one transient sample does not swing the median).
  2. Forecast over the cold-start horizon H (default: cold_start_s, the time a new group needs to serve):
         forecast = demand + max(0, slope) × H               (a group asked for now serves only H from now)
  3. Recommendation, two conditions, the larger wins:
         now:      ceil(demand   / (kv_tokens_per_group × target_kv_utilization))   steady state at the target
         forecast: ceil(forecast / (kv_tokens_per_group × forecast_max_utilization)) KV must not run out before
                                                                                    a group asked for now is Ready
     The target already leaves headroom for growth; the forecast is held to the higher ceiling
     `forecast_max_utilization` (default 0.9) so the same margin is not paid twice.
  4. Queue: if queued requests ≥ `queue_threshold` (KV exhausted somewhere), rec ≥ serving groups + 1 — at once.
  5. Scale up when rec > current_groups. `current_groups` COUNTS the starting (not yet Ready) groups, so a group
     already on its way is credited with the load it will absorb and the law does not ask for it twice.
     Scale-up may add several groups in one call (no stabilization, like HPA's scale-up default).
  6. Scale down by ONE group per call, and only if every scale-down recommendation over the last
     `scale_down_stabilization_s` (a sliding-window maximum kept in the state, HPA-style) was below current_groups;
     that recommendation is step 3 with the target lowered by `scale_down_hysteresis` (default 0.1, a band like
     HPA's 10 % tolerance) so noise around a group boundary does not flap. Also: the window is fully observed
     (state at least that old), the last scale-up is at least that old, nothing is queued and no group is starting.
     Recommendations include the positive trend, so a rising forecast blocks a scale-down; a falling trend is never
     trusted for scale-down (demand now is the floor).
  7. Bounds: the result is always within [min_groups, max_groups] (a fleet outside its bounds is moved straight to
     the bound, the one case where scale-down can exceed one group).

Groups without a sample. The caller passes only the samples it has. `current_groups - starting_groups` groups are
expected to serve; if fewer samples than that arrive (a silent pod), each missing group is assumed to carry the
mean load of the sampled groups (neither ignored — that would under-count demand — nor treated as idle). Samples
with `ready=False` are ignored for load. With no usable sample at all the law holds (bounded) and says so. The
operator's controller counts groups without a sample as starting, which credits them the same way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

__all__ = ["STEP_SECONDS", "LawParams", "GroupSample", "LawState", "Decision", "decide", "least_squares_slope",
           "theil_sen_slope"]

STEP_SECONDS = 15.0  # the operator's autoscaling cadence; the offline simulator replays the law at the same one
HISTORY_MAX = 48  # bounded trend history (48 calls = 12 min at the operator's 15 s cadence)


@dataclass(frozen=True)
class LawParams:
    target_kv_utilization: float = 0.7  # fraction of KV tokens in use per group we aim for
    min_groups: int = 1
    max_groups: int = 8
    scale_down_stabilization_s: float = 300.0
    cold_start_s: float = 300.0  # measured/declared time from "LWS replica added" to "group Ready"
    forecast_horizon_s: float | None = None  # default: cold_start_s
    trend_window_s: float | None = None  # samples the trend is fitted on; default max(180 s, horizon / 2)
    queue_threshold: int = 1  # queued requests (fleet) that trigger an immediate scale-up
    forecast_max_utilization: float = 0.9  # KV utilization the forecast over the horizon may reach
    scale_down_hysteresis: float = 0.1  # scale down only to groups that would run at <= target - this

    @property
    def horizon_s(self) -> float:
        return self.cold_start_s if self.forecast_horizon_s is None else self.forecast_horizon_s

    @property
    def trend_s(self) -> float:
        """Extrapolating H seconds ahead needs at least H/2 of data: a short window's noise times a long horizon
        over-provisions (measured: docs/benchmarks.md, cold start 900 s)."""
        return max(180.0, self.horizon_s / 2) if self.trend_window_s is None else self.trend_window_s


@dataclass(frozen=True)
class GroupSample:
    """One group, aggregated over its DP ranks by the operator."""

    kv_used_tokens: int
    kv_total_tokens: int
    running_reqs: int
    queued_reqs: int
    ready: bool = True


@dataclass(frozen=True)
class LawState:
    """Memory between calls; small and JSON-serializable.

    history: (t, KV tokens in use, queued requests) of recent calls, at most HISTORY_MAX, within trend_window_s (trend).
    recs: monotone (t, recommended_groups) sliding-window maximum over scale_down_stabilization_s: strictly
          decreasing recommendations, so its length is at most the number of distinct group counts.
    """

    history: tuple[tuple[float, float, int], ...] = ()
    recs: tuple[tuple[float, int], ...] = ()
    first_seen_t: float | None = None
    last_scale_up_t: float | None = None
    last_scale_down_t: float | None = None
    group_tokens: float | None = None  # last known KV tokens per group (used when no sample has a pool size)
    tokens_per_request: float | None = None  # last known mean KV tokens of a running request

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> LawState:
        d = json.loads(s)
        return cls(
            history=tuple((float(h[0]), float(h[1]), int(h[2]) if len(h) > 2 else 0) for h in d.get("history", ())),
            recs=tuple((float(t), int(v)) for t, v in d.get("recs", ())),
            first_seen_t=d.get("first_seen_t"),
            last_scale_up_t=d.get("last_scale_up_t"),
            last_scale_down_t=d.get("last_scale_down_t"),
            group_tokens=d.get("group_tokens"),
            tokens_per_request=d.get("tokens_per_request"),
        )


@dataclass(frozen=True)
class Decision:
    desired_groups: int
    reason: str
    state: LawState
    forecast_used_tokens: float
    utilization: float  # KV in use / KV pool over the sampled ready groups, now
    recommended_groups: int = 0  # before bounds and the scale-down rules
    demand_tokens: float = 0.0
    slope_tokens_per_s: float = 0.0


def least_squares_slope(points: Sequence[tuple[float, float]]) -> float:
    """Ordinary least-squares slope of v over t; 0 with fewer than 2 distinct times."""
    n = len(points)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    if den <= 0:
        return 0.0
    return sum((t - mt) * (v - mv) for t, v in points) / den


def theil_sen_slope(points: Sequence[tuple[float, float]]) -> float:
    """Median of the pairwise slopes (robust to a minority of outliers); 0 with fewer than 2 distinct times."""
    slopes = sorted((v2 - v1) / (t2 - t1) for i, (t1, v1) in enumerate(points) for t2, v2 in points[i + 1:]
                    if t2 != t1)
    if not slopes:
        return 0.0
    m = len(slopes) // 2
    return slopes[m] if len(slopes) % 2 else (slopes[m - 1] + slopes[m]) / 2


def _clamp(n: int, p: LawParams) -> int:
    return max(p.min_groups, min(p.max_groups, n))


def decide(now_s: float, samples: Sequence[GroupSample], current_groups: int, starting_groups: int,
           state: LawState, params: LawParams) -> Decision:
    """Desired group count for the fleet. `current_groups` includes the `starting_groups` not yet Ready."""
    p = params
    current = max(0, int(current_groups))
    starting = max(0, min(int(starting_groups), current))
    serving = current - starting
    ready = [s for s in samples if s.ready and s.kv_total_tokens > 0]
    first_seen = state.first_seen_t if state.first_seen_t is not None else now_s

    if not ready:
        # nothing measured (all groups starting, or a metrics outage): keep the fleet as it is, within bounds;
        # never read a missing metric as zero load
        desired = _clamp(current, p)
        st = replace(state, first_seen_t=first_seen)
        what = f"no KV metrics ({starting} of {current} groups starting)" if starting else "no KV metrics"
        reason = f"{what}: hold at {current} groups" if desired == current else \
            f"{what}; bounds [{p.min_groups}, {p.max_groups}]: {current} -> {desired} groups"
        return Decision(desired, reason, st, 0.0, 0.0, desired)

    used = sum(s.kv_used_tokens for s in ready)
    total = sum(s.kv_total_tokens for s in ready)
    running = sum(s.running_reqs for s in ready)
    queued = sum(s.queued_reqs for s in samples if s.ready)
    group_tokens = total / len(ready)
    util = used / total if total else 0.0
    tokens_per_req = used / running if running else state.tokens_per_request
    # serving groups without a sample carry the sampled groups' mean load
    used_est = used * max(serving, len(ready)) / len(ready)
    # queued work is demand the KV could not hold — but a backlog that piled up during a cold start is absorbed by
    # the groups already starting (credited) or by the groups that just became Ready: it counts only when nothing is
    # starting and the queue is not shrinking, and at most doubles the demand per call (growth is then geometric
    # per cold start, never a burst of groups for a transient backlog)
    prev_queued = state.history[-1][2] if state.history else 0
    draining_queue = queued < prev_queued  # capacity already catches up with the backlog
    queued_tokens = 0.0 if starting or draining_queue else min(queued * (tokens_per_req or 0.0), used_est)
    demand = used_est + queued_tokens

    # 1. trend, of KV in use only (a growing queue measures missing capacity, not a growing load)
    hist = [h for h in state.history if now_s - p.trend_s <= h[0] < now_s]
    hist.append((now_s, used_est, queued))
    hist = hist[-HISTORY_MAX:]
    # a trend needs history: at least half the window (an operator restart or a new deployment starts flat)
    slope = theil_sen_slope([(t, v) for t, v, _ in hist]) if hist[-1][0] - hist[0][0] >= p.trend_s / 2 else 0.0
    horizon = p.horizon_s
    # 2. forecast (non-negative trend only: a falling forecast never brings a scale-down forward)
    forecast = demand + max(0.0, slope) * horizon
    # 3. recommendation
    rec_now = math.ceil(demand / (group_tokens * p.target_kv_utilization) - 1e-9)
    rec_fc = math.ceil(forecast / (group_tokens * max(p.target_kv_utilization, p.forecast_max_utilization)) - 1e-9)
    rec = max(rec_now, rec_fc)
    queue_hit = queued >= p.queue_threshold and queued > 0
    if queue_hit:
        rec = max(rec, serving + 1)
    # the scale-down recommendation: the same with the target lowered by the hysteresis band
    down_target = max(0.05, p.target_kv_utilization - p.scale_down_hysteresis)
    rec_down = max(rec, math.ceil(forecast / (group_tokens * down_target) - 1e-9))

    # sliding-window max of recommendations (for scale-down)
    recs = [(t, r) for t, r in state.recs if t >= now_s - p.scale_down_stabilization_s and t < now_s]
    while recs and recs[-1][1] <= rec_down:
        recs.pop()
    recs.append((now_s, rec_down))
    window_max = recs[0][1]

    fc_util = forecast / (group_tokens * max(1, current)) if group_tokens else 0.0
    desc = (f"kv {util:.2f} (target {p.target_kv_utilization:.2f}), forecast {fc_util:.2f} of {current} groups "
            f"in {horizon:.0f}s")
    if queue_hit:
        desc = f"{queued} queued (KV exhausted), " + desc
    last_up, last_down = state.last_scale_up_t, state.last_scale_down_t

    if current < p.min_groups or current > p.max_groups:
        desired = _clamp(current, p)
        reason = f"{desc}: bounds [{p.min_groups}, {p.max_groups}]: {current} -> {desired} groups"
    elif rec > current:
        desired = _clamp(rec, p)
        credit = f", {starting} starting credited" if starting else ""
        if desired > current:
            reason = f"{desc}{credit}: {current} -> {desired} groups"
        else:
            reason = f"{desc}{credit}: wants {rec} groups, capped at max {p.max_groups}"
    else:
        desired = current
        stab = p.scale_down_stabilization_s
        observed = now_s - first_seen >= stab
        since_up = last_up is None or now_s - last_up >= stab
        if (window_max < current and observed and since_up and not queue_hit and starting == 0
                and current > p.min_groups):
            desired = current - 1
            reason = (f"{desc}: below {current} groups for {stab:.0f}s (needs {window_max}): "
                      f"{current} -> {desired} groups")
        elif window_max < current and current > p.min_groups:
            why = ("groups starting" if starting else "queued requests" if queue_hit
                   else "stabilizing" if not (observed and since_up) else "")
            reason = f"{desc}: needs {window_max}, hold at {current} groups ({why})"
        else:
            reason = f"{desc}: hold at {current} groups"

    if desired > current:
        last_up = now_s
    elif desired < current:
        last_down = now_s
    st = LawState(history=tuple(hist), recs=tuple(recs), first_seen_t=first_seen, last_scale_up_t=last_up,
                  last_scale_down_t=last_down, group_tokens=group_tokens, tokens_per_request=tokens_per_req)
    return Decision(desired_groups=desired, reason=reason, state=st, forecast_used_tokens=forecast,
                    utilization=util, recommended_groups=rec, demand_tokens=demand, slope_tokens_per_s=slope)
