"""The autoscaling control law: how many SGLang groups a MoEDeployment should have, from KV-cache demand.

One pure, deterministic function (`decide`) shared by the operator (called every STEP_SECONDS = 15 s with scraped
metrics) and by the offline simulator (`moe-operator simulate`), so the benchmarks measure the law that runs in the
cluster. No I/O, no clock: time comes in as `now_s`; memory between calls lives in a small `LawState` that
round-trips through JSON.

Signals (per group, from SGLang's own /metrics; names as SGLang 0.5.23 emits them, sglang.md §3):
  * KV in use: `sglang:kv_used_tokens` (radix-cache evictable tokens are free, not in use) over the group's pool
    (`sglang:max_total_num_tokens` summed over its DP ranks);
  * queued requests `sglang:num_queue_reqs`;
  * from counters and histograms between two calls (the caller computes them, controller.counter_rates): requests
    admitted from the queues per second (`sglang:queue_time_seconds_count`), their service time (mean
    `sglang:e2e_request_latency_seconds` of the finished requests minus the mean `sglang:queue_time_seconds` wait),
    and `queued_tokens` = queued requests x the mean *uncached* prompt of the finished requests
    (`sglang:prompt_tokens_total` - `sglang:cached_tokens_total` over `sglang:num_requests_total`). Without them
    the law falls back to what the gauges say (a queued request needs what a running one holds).
Why these and not others, for growing agent sessions: a live session's KV grows with every generated token and
every tool result it is sent back with; what SGLang holds of it shows in KV in use while it runs, and sessions that
come back faster than the KV can take them show as a growing queue — both are counted, so the demand keeps rising
through an exhaustion instead of saturating at ~95 % as KV in use alone does (the v0.1 law's trend then fell to 0).
`sglang:kv_evictable_tokens` was considered and rejected: it holds the cache of ended sessions too and fills the
pool in any steady state. `sglang:decode_sum_seq_lens` is the running requests' context, a part of KV in use (no
extra information in a sum). The router (SMG) exports no per-session state.

    demand = KV in use                                          while nothing is queued; while requests queue:
           = arrivals/s x service time x KV per running request    Little's law (`_demand`)
             + queued tokens x min(1, service time / H)          working off the queue within one horizon
    (KV in use of the serving groups; a serving group without a sample carries the sampled mean. arrivals =
    requests admitted per second + the queue's growth since the last call: conservation at the queue, so a backlog
    that new groups take over is not read as new arrivals; service time smoothed. A queue is a backlog, not KV
    needed at once. Without those counters the queued tokens count in full, at most doubling the demand.)

Law, each call:
  1. Trend of the *demand* over the last `trend_window_s` (default max(600 s, horizon / 2): 40 calls, so noise
     does not swing a slope that is multiplied by H): the Theil-Sen slopes (median of pairwise slopes) of the
     window's older and newer halves, s_old and s_new. A real ramp rises in both halves; a step rises in one only,
     so unless both are > 0 nothing is extrapolated (bounded step response, below). Used once the history spans
     half the window (no extrapolation from two points after a restart).
  2. Forecast over the horizon H (default the cold start: a group asked for now serves H from now), on a ramp
     (`demand_growth`): growing agent sessions make the demand convex — sessions arrive faster along a ramp and
     each live session's context grows turn by turn — so a straight line under-forecasts what a group asked for now
     must hold when it serves (v0.2: 141 s / 1,173 s of KV exhaustion on the agent workload at 300 / 900 s cold
     start). With the acceleration a = (s_new - s_old) / (half the window) > 0 and the slope now
     s = s_new + a x (a quarter window):
         forecast = demand + min(s x H + a x H^2 / 2, acceleration_cap x s_new x H)     (cap 2: noise x H^2)
     and demand + s_new x H when the slope falls (a ramp's top).
  3. Recommendation, the largest of
         now:      ceil(demand   / (kv_tokens_per_group x target_kv_utilization))
         forecast: ceil(forecast / (kv_tokens_per_group x forecast_max_utilization))    (default 0.9: the target
                   already leaves headroom; the forecast must only not run out before new groups are Ready)
         latency:  with itl_target_s / ttft_target_s (the API's autoscaling.targetInterTokenLatencySeconds /
                   targetTimeToFirstTokenSeconds): L = sum over serving groups of min(max_pressure, mean latency
                   / target) (`_latency_groups`; SGLang's ITL and TTFT histograms between two calls; idle groups
                   0), the compute load in groups at the targets; ceil(L / latency_headroom) now (0.7: requests
                   spread around a group's mean) and ceil((L + growth of L over H) / 0.9), the growth by
                   `demand_growth` as for the KV demand (a ramp of agent sessions makes the compute load convex
                   too: with the pressure cap at 2, a straight line gave goodput 0.960 on agents at a 300 s cold
                   start, this 0.975 at 6 % fewer GPU-hours, swarm 900 s 0.571 -> 0.815, single replays of moe+lat)
     and, while requests queue for KV and no group is starting, at least one group more than the fleet has
     (with latency targets a queue counts as waiting for KV only in groups whose KV in use + queued tokens reach
     the target: SGLang's waiting queue also holds requests waiting for a prefill batch while the KV is free, a
     compute backlog the latency term sizes; the compute replay's per-group queues showed the law adding a group
     per cold start for it, to the 64-group cap at 2 % KV).
     Why latency and not only KV: at long contexts the KV is rarely what runs out first — chunked prefill of
     every turn's new tokens stalls the decode batch of its group, and the batch's step time grows with its size
     and context; in the compute replay (moe_sim.pd, SMG's cache_aware routing) the KV-only law on the agent
     workload either misses (goodput 0.27 at a 300 s cold start) or buys goodput with 64 groups (0.985 at 1.30x the
     static fleet's GPU-hours, 60 s), where the latency term gets 0.968 at 0.72-0.79x (docs/benchmarks.md, fourth run).
  4. Scale up when the recommendation exceeds the fleet, in ONE step to the recommendation. The fleet counted
     includes the groups still starting, so a group on its way is credited with what it will absorb and the law
     never asks for it twice; a backlog that new groups take over shows as admissions and a shorter queue in the
     same interval, so the arrival rate and the demand do not move: absorption is not read as growth (v0.1 read
     the KV the absorbed backlog filled as load and overshot).
  5. Scale down by ONE group, and only when: every scale-down recommendation over the last
     `scale_down_stabilization_s` (step 3 with the target lowered by `scale_down_hysteresis`) was below the
     fleet; the demand is not rising (its full-window trend would not grow it by the hysteresis band within a
     stabilization window); nothing is queued and nothing is starting; and the last scale-up AND the last
     scale-down are at least a stabilization window old — so a fleet shrinks by at most one group per window.
  6. Bounds: the result is always within [min_groups, max_groups] (a fleet outside its bounds is moved straight
     to the bound, the one case where scale-down can exceed one group).

Step response (bounded): after demand steps from D0 to D1 and stays there, the law asks, in the first call that
sees it, for ceil(D1 / (G x target)) groups (G = KV tokens per group; a step beyond the KV shows in the arrival
rate at once, so it is seen in full) and nothing more from the trend (the step is in one half-window only); while
the step's requests queue it adds only what working off that queue within one cold start needs (queued tokens x
service / H, at most the queue), and after a step down it removes one group per stabilization window until
ceil(D1 / (G x (target - hysteresis))) is reached. A latency step asks at most max_pressure (4) / headroom x the
serving groups in one call, and, the groups starting being credited, nothing more until they serve. Unit tests pin
these (tests/unit/test_law.py).

Groups without a sample. `current_groups - starting_groups` groups are expected to serve; if fewer samples than
that arrive (a silent pod), each missing group is assumed to carry the mean load of the sampled groups (neither
ignored — that would under-count demand — nor treated as idle). Samples with `ready=False` are ignored for load.
With no usable sample at all the law holds (bounded) and says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

__all__ = ["STEP_SECONDS", "LawParams", "GroupSample", "LawState", "Decision", "decide", "demand_growth",
           "demand_trend", "least_squares_slope", "theil_sen_slope"]

STEP_SECONDS = 15.0  # the operator's autoscaling cadence; the offline simulator replays the law at the same one
HISTORY_MAX = 48  # bounded trend history (48 calls = 12 min at the operator's 15 s cadence)


@dataclass(frozen=True)
class LawParams:
    target_kv_utilization: float = 0.7  # fraction of KV tokens in use per group we aim for
    min_groups: int = 1
    max_groups: int = 8
    scale_down_stabilization_s: float = 600.0  # the API's default (MoEDeployment autoscaling)
    cold_start_s: float = 300.0  # measured/declared time from "LWS replica added" to "group Ready"
    forecast_horizon_s: float | None = None  # default: cold_start_s
    trend_window_s: float | None = None  # samples the trend is fitted on; default max(180 s, horizon / 2)
    queue_threshold: int = 1  # queued requests (fleet) that trigger an immediate scale-up
    forecast_max_utilization: float = 0.9  # KV utilization the forecast over the horizon may reach
    scale_down_hysteresis: float = 0.1  # scale down only to groups that would run at <= target - this
    trend_window_min_s: float = 600.0  # the trend window is at least this long (40 calls: a robust slope)
    acceleration: bool = True  # forecast a ramp's growing slope too (demand_growth), not only its slope
    acceleration_cap: float = 2.0  # the forecast's growth over H is at most this x the newer half's slope x H
    # compute: latency targets (None: KV only). A group's latency pressure = its mean latency / the target.
    itl_target_s: float | None = None  # mean inter-token latency per group
    ttft_target_s: float | None = None  # mean time to first token per group (includes its prefill queue)
    latency_headroom: float = 0.7  # groups are asked for so that the mean pressure stays <= this (as the KV target)
    # one group's pressure counts at most this (bounded step response). 4, not 2: a group saturated by a backlog
    # reports a pressure far above its share of the load, and at 2 a 900 s cold start grew the fleet ~2.9x per cold
    # start behind a ramp of agent sessions (goodput 0.71-0.76 on agents, 0.91 at 4; 3 gave 0.78: docs/benchmarks.md)
    max_pressure: float = 4.0

    @property
    def horizon_s(self) -> float:
        return self.cold_start_s if self.forecast_horizon_s is None else self.forecast_horizon_s

    @property
    def trend_s(self) -> float:
        """Extrapolating H seconds ahead needs at least H/2 of data: a short window's noise times a long horizon
        over-provisions (measured: docs/benchmarks.md, cold start 900 s)."""
        return max(self.trend_window_min_s, self.horizon_s / 2) if self.trend_window_s is None else self.trend_window_s


@dataclass(frozen=True)
class GroupSample:
    """One group, aggregated over its DP ranks by the operator."""

    kv_used_tokens: int
    kv_total_tokens: int
    running_reqs: int
    queued_reqs: int
    ready: bool = True
    queued_tokens: float | None = None  # KV the queued requests will need (uncached prompts); None: unknown
    admitted_per_s: float | None = None  # requests the group took from its queue per second since the last call
    service_s: float | None = None  # mean seconds a recently finished request held its KV (queue wait excluded)
    itl_s: float | None = None  # mean inter-token latency of the tokens the group decoded since the last call
    ttft_s: float | None = None  # mean time to first token of the requests that got one since the last call


@dataclass(frozen=True)
class LawState:
    """Memory between calls; small and JSON-serializable.

    history: (t, demand tokens, queued requests) of recent calls, at most HISTORY_MAX, within trend_window_s (trend;
             the last one's queue for the arrival rate).
    recs: monotone (t, recommended_groups) sliding-window maximum over scale_down_stabilization_s: strictly
          decreasing recommendations, so its length is at most the number of distinct group counts.
    """

    history: tuple[tuple[float, float, int], ...] = ()
    lat_history: tuple[tuple[float, float], ...] = ()  # (t, latency groups) of recent calls, as `history`
    recs: tuple[tuple[float, int], ...] = ()
    first_seen_t: float | None = None
    last_scale_up_t: float | None = None
    last_scale_down_t: float | None = None
    group_tokens: float | None = None  # last known KV tokens per group (used when no sample has a pool size)
    tokens_per_request: float | None = None  # last known mean KV tokens of a running request
    duration_s: float | None = None  # smoothed mean time a request holds its KV (its service time)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> LawState:
        d = json.loads(s)
        return cls(
            history=tuple((float(h[0]), float(h[1]), int(h[2]) if len(h) > 2 else 0) for h in d.get("history", ())),
            recs=tuple((float(t), int(v)) for t, v in d.get("recs", ())),
            lat_history=tuple((float(t), float(v)) for t, v in d.get("lat_history", ())),
            first_seen_t=d.get("first_seen_t"),
            last_scale_up_t=d.get("last_scale_up_t"),
            last_scale_down_t=d.get("last_scale_down_t"),
            group_tokens=d.get("group_tokens"),
            tokens_per_request=d.get("tokens_per_request"),
            duration_s=d.get("duration_s"),
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


def demand_trend(points: Sequence[tuple[float, float]]) -> float:
    """The smaller of the Theil-Sen slopes of the older and the newer half of `points` (by time): a ramp rises in
    both, a step in one only (so a step is not extrapolated); 0 with fewer than 2 points in a half."""
    if len(points) < 4:
        return 0.0
    mid = (points[0][0] + points[-1][0]) / 2
    old = [pt for pt in points if pt[0] <= mid]
    new = [pt for pt in points if pt[0] >= mid]
    if len(old) < 2 or len(new) < 2:
        return 0.0
    return min(theil_sen_slope(old), theil_sen_slope(new))


def demand_growth(points: Sequence[tuple[float, float]], horizon_s: float, cap: float = 2.0,
                  acceleration: bool = True) -> tuple[float, float]:
    """Forecast growth of the demand over `horizon_s` and the slope used (tokens, tokens/s), from `points`.

    A ramp is what rises in both halves of the window (demand_trend > 0); anything else (flat, falling, a step in
    one half) forecasts no growth. Without `acceleration` the growth is demand_trend x H (the v0.2 law). With it,
    the ramp's own acceleration counts: growing agent sessions make the demand convex — sessions arrive faster
    along a ramp and each live session's context grows turn by turn, so the slope itself rises, and a straight
    line under-forecasts what a group asked for now must hold when it serves H later. Two half-window Theil-Sen
    slopes give the acceleration a = (s_new - s_old) / (half the window), the slope now s = s_new + a x (a quarter
    window), and
        growth = s x H + a x H^2 / 2,   at most cap x s_new x H   (bounded: noise in a short window times H^2)
    A slope that falls (s_new < s_old: a ramp's top) forecasts only the newer slope."""
    if len(points) < 4:
        return 0.0, 0.0
    mid = (points[0][0] + points[-1][0]) / 2
    old = [pt for pt in points if pt[0] <= mid]
    new = [pt for pt in points if pt[0] >= mid]
    if len(old) < 2 or len(new) < 2:
        return 0.0, 0.0
    s_old, s_new = theil_sen_slope(old), theil_sen_slope(new)
    if min(s_old, s_new) <= 0:
        return 0.0, 0.0
    if not acceleration:
        s = min(s_old, s_new)
        return s * horizon_s, s
    if s_new <= s_old:
        return s_new * horizon_s, s_new
    half = (points[-1][0] - points[0][0]) / 2
    a = (s_new - s_old) / half if half > 0 else 0.0
    s = s_new + a * half / 2
    growth = min(s * horizon_s + a * horizon_s * horizon_s / 2, cap * s_new * horizon_s)
    return growth, s


SERVICE_EWMA = 0.2  # smoothing of the mean service time, per call


def _arrivals(history: Sequence[tuple[float, float, int]], now_s: float, queued: int,
              admitted_per_s: float | None) -> float | None:
    """Requests per second arriving at the groups since the last call: admitted from the queues + the queue's
    growth. Conservation at the queue: a backlog that new groups take shows as admissions and a shrinking queue in
    the same interval, which cancel. None without admissions."""
    if admitted_per_s is None:
        return None
    rate = admitted_per_s
    if history and now_s > history[-1][0]:
        rate += (queued - history[-1][2]) / (now_s - history[-1][0])
    return max(0.0, rate)


def _demand(used: float, queued: int, queued_tokens: float, tokens_per_req: float, arrivals: float | None,
            service_s: float | None, horizon_s: float) -> float:
    """KV tokens the fleet needs to serve the arrivals without a queue, and to work off the queue within a horizon.

    Without a queue the demand is the KV in use. With one, KV in use says nothing about the load: it is full, and
    it also holds the backlog being worked off (reading it as load made v0.1 overshoot while new groups absorbed a
    backlog). A queue is a backlog of requests, not KV needed all at once: its requests would have run one after
    another. By Little's law the arrivals need arrivals/s x service time x KV per running request at once, and
    working off the queue within the horizon H needs its tokens x min(1, service / H) on top. Without the arrival
    rate or the service time (metrics without SGLang's counters and histograms) the queued tokens count in full,
    at most doubling the demand (the v0.1 bound)."""
    if queued <= 0:
        return used
    if arrivals is None or service_s is None:
        return used + min(queued_tokens, used) if used > 0 else queued_tokens
    return arrivals * service_s * tokens_per_req + queued_tokens * min(1.0, service_s / max(horizon_s, 1.0))


def _latency_groups(ready: Sequence[GroupSample], serving: int, p: LawParams) -> float | None:
    """The serving groups' compute load in groups at the latency targets: the sum of their pressures (mean
    latency / target, the larger of ITL's and TTFT's, each at most `max_pressure`), serving groups without a
    latency sample carrying the sampled mean; None without targets or samples.

    Why a sum of ratios: at a fixed load, a group's decode step grows with its batch and with the prefill chunks
    it interleaves (aggregated serving), and both shrink as 1/groups when the load spreads over more groups; so
    groups x pressure is the count at which the pressure would be 1. It is a total, like the KV demand, so groups
    still starting are credited (the law compares it with the fleet including them) and the ask is made once.
    Latency rises faster than linearly near saturation (queueing), so the ratio over-asks there; `max_pressure`
    bounds one step's ask to that multiple of the fleet."""
    if p.itl_target_s is None and p.ttft_target_s is None:
        return None
    pressures = []
    for smp in ready:
        got = []
        if p.itl_target_s and smp.itl_s is not None:
            got.append(smp.itl_s / p.itl_target_s)
        if p.ttft_target_s and smp.ttft_s is not None:
            got.append(smp.ttft_s / p.ttft_target_s)
        if got:
            pressures.append(min(p.max_pressure, max(got)))
        elif smp.running_reqs == 0 and smp.queued_reqs == 0:
            pressures.append(0.0)  # idle: nothing decoded, no load (not "unknown", which carries the mean)
    if not pressures:
        return None
    return sum(pressures) * max(serving, len(ready)) / len(pressures)


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
    queued_tokens = 0.0
    for smp in (s for s in samples if s.ready):
        if smp.queued_tokens is not None:
            queued_tokens += smp.queued_tokens
        else:
            queued_tokens += smp.queued_reqs * (tokens_per_req or 0.0)
    admitted = [s.admitted_per_s for s in ready if s.admitted_per_s is not None]
    admitted_fleet = sum(admitted) * max(serving, len(ready)) / len(ready) if admitted else None
    services = [s.service_s for s in ready if s.service_s is not None and s.service_s > 0]
    service = state.duration_s
    if services:
        s_now = sum(services) / len(services)
        service = s_now if service is None else service + SERVICE_EWMA * (s_now - service)
    arrivals = _arrivals(state.history, now_s, queued, admitted_fleet)
    demand = _demand(used_est, queued, queued_tokens, tokens_per_req or 0.0, arrivals, service, p.horizon_s)

    # 1. trend of the demand (not of KV in use: that saturates while the KV is exhausted)
    hist = [h for h in state.history if now_s - p.trend_s <= h[0] < now_s]
    hist.append((now_s, demand, queued))
    hist = hist[-HISTORY_MAX:]
    pts = [(t, v) for t, v, _ in hist]
    spans = hist[-1][0] - hist[0][0] >= p.trend_s / 2  # a trend needs history (a restart or a new fleet starts flat)
    growth, slope = demand_growth(pts, p.horizon_s, p.acceleration_cap, p.acceleration) if spans else (0.0, 0.0)
    rising = spans and theil_sen_slope(pts) * p.scale_down_stabilization_s > \
        p.scale_down_hysteresis * group_tokens * p.target_kv_utilization
    horizon = p.horizon_s
    # 2. forecast
    forecast = demand + growth
    # 3. recommendation
    rec_now = math.ceil(demand / (group_tokens * p.target_kv_utilization) - 1e-9)
    rec_fc = math.ceil(forecast / (group_tokens * max(p.target_kv_utilization, p.forecast_max_utilization)) - 1e-9)
    rec = max(rec_now, rec_fc)
    lat_groups = _latency_groups(ready, serving, p)
    lat_hist = [h for h in state.lat_history if now_s - p.trend_s <= h[0] < now_s]
    if lat_groups is not None:
        # the compute load gets the same forecast as the KV demand: a ramp's latency load grows while groups start
        lat_hist = (lat_hist + [(now_s, lat_groups)])[-HISTORY_MAX:]
        lat_spans = lat_hist[-1][0] - lat_hist[0][0] >= p.trend_s / 2
        lat_growth = demand_growth(lat_hist, horizon, p.acceleration_cap, p.acceleration)[0] if lat_spans else 0.0
        rec = max(rec, math.ceil(lat_groups / p.latency_headroom - 1e-9),
                  math.ceil((lat_groups + lat_growth) / max(p.latency_headroom, p.forecast_max_utilization) - 1e-9))
    # A queue means KV exhaustion only where the group's KV cannot take it: SGLang's waiting queue also holds
    # requests waiting for a prefill batch (compute) while the KV is free. With latency targets that backlog is the
    # latency term's (TTFT includes it), so only the queues of groups whose KV in use + queued tokens reach the
    # target count here; without them every queue does (the KV-only law's one handle on compute backlog).
    kv_queued = queued
    if lat_groups is not None:
        kv_queued = sum(s.queued_reqs for s in samples if s.ready and s.queued_reqs > 0 and (
            s.kv_used_tokens + (s.queued_tokens if s.queued_tokens is not None
                                else s.queued_reqs * (tokens_per_req or 0.0))
            >= s.kv_total_tokens * p.target_kv_utilization))
    queue_hit = kv_queued >= p.queue_threshold and kv_queued > 0
    if queue_hit and starting == 0:
        rec = max(rec, current + 1)
    # the scale-down recommendation: the same with the target lowered by the hysteresis band
    down_target = max(0.05, p.target_kv_utilization - p.scale_down_hysteresis)
    rec_down = max(rec, math.ceil(forecast / (group_tokens * down_target) - 1e-9))
    if lat_groups is not None:
        rec_down = max(rec_down, math.ceil(lat_groups / max(0.05, p.latency_headroom - p.scale_down_hysteresis)
                                           - 1e-9))

    # sliding-window max of recommendations (for scale-down)
    recs = [(t, r) for t, r in state.recs if t >= now_s - p.scale_down_stabilization_s and t < now_s]
    while recs and recs[-1][1] <= rec_down:
        recs.pop()
    recs.append((now_s, rec_down))
    window_max = recs[0][1]

    fc_util = forecast / (group_tokens * max(1, current)) if group_tokens else 0.0
    desc = (f"kv {util:.2f} (target {p.target_kv_utilization:.2f}), demand {demand / group_tokens:.2f} groups, "
            f"forecast {fc_util:.2f} of {current} groups in {horizon:.0f}s")
    if lat_groups is not None:
        desc += f", latency {lat_groups:.2f} groups at target"
    if queue_hit:
        desc = f"{kv_queued} queued (KV exhausted), " + desc
    elif queued:
        desc = f"{queued} queued (compute backlog), " + desc
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
        since_down = last_down is None or now_s - last_down >= stab
        if (window_max < current and observed and since_up and since_down and not rising and not queue_hit
                and starting == 0 and current > p.min_groups):
            desired = current - 1
            reason = (f"{desc}: below {current} groups for {stab:.0f}s (needs {window_max}): "
                      f"{current} -> {desired} groups")
        elif window_max < current and current > p.min_groups:
            why = ("groups starting" if starting else "queued requests" if queue_hit
                   else "demand rising" if rising
                   else "stabilizing" if not (observed and since_up and since_down) else "")
            reason = f"{desc}: needs {window_max}, hold at {current} groups ({why})"
        else:
            reason = f"{desc}: hold at {current} groups"

    if desired > current:
        last_up = now_s
    elif desired < current:
        last_down = now_s
    st = LawState(history=tuple(hist), lat_history=tuple(lat_hist), recs=tuple(recs), first_seen_t=first_seen,
                  last_scale_up_t=last_up, last_scale_down_t=last_down, group_tokens=group_tokens,
                  tokens_per_request=tokens_per_req, duration_s=service)
    return Decision(desired_groups=desired, reason=reason, state=st, forecast_used_tokens=forecast,
                    utilization=util, recommended_groups=rec, demand_tokens=demand, slope_tokens_per_s=slope)
