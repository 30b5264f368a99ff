"""The autoscaling control law (moe_operator.autoscale.law): examples and properties."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from moe_operator.autoscale.law import GroupSample, LawParams, LawState, decide, least_squares_slope

CAP = 1_000_000  # KV tokens per group
P = LawParams(target_kv_utilization=0.7, min_groups=1, max_groups=8, scale_down_stabilization_s=300,
              cold_start_s=300)


def groups(n: int, util: float, queued: int = 0, running: int = 10) -> list[GroupSample]:
    return [GroupSample(int(util * CAP), CAP, running, queued if i == 0 else 0) for i in range(n)]


def run_flat(util: float, n: int, seconds: float, params: LawParams = P, state: LawState | None = None,
             t0: float = 0.0, step: float = 15.0):
    """Call the law every `step` s with constant load; apply its decisions instantly. Returns (decisions, state)."""
    state = state or LawState()
    out = []
    t = t0
    current = n
    while t <= t0 + seconds:
        d = decide(t, groups(current, util * n / current), current, 0, state, params)
        out.append((t, current, d))
        state, current = d.state, d.desired_groups
        t += step
    return out, state


def test_scale_up_reason_reads_well():
    d = decide(0.0, groups(3, 0.82), 3, 0, LawState(), P)
    assert d.desired_groups == 4
    assert d.reason.startswith("kv 0.82 (target 0.70)")
    assert d.reason.endswith("3 -> 4 groups")
    assert abs(d.utilization - 0.82) < 1e-9


def test_steady_load_at_target_holds():
    decisions, _ = run_flat(0.6, 3, 1200)
    assert {d.desired_groups for _, _, d in decisions} == {3}


def test_trend_scales_up_ahead_of_cold_start():
    # demand grows 2000 tokens/s: ~0.51 of 3 groups after 315 s, the 600 s forecast ~0.91 -> 4 groups before KV
    # is at target (the trend needs half its 600 s window of history first)
    state = LawState()
    desired = []
    params = replace(P, cold_start_s=600)
    for i in range(22):
        t = i * 15.0
        used = 0.3 * 3 * CAP + 2000 * t
        d = decide(t, [GroupSample(int(used / 3), CAP, 10, 0)] * 3, 3, 0, state, params)
        state = d.state
        desired.append(d.desired_groups)
    assert desired[0] == 3 and desired[-3] == 3  # no trend before 300 s of history
    assert desired[-1] >= 4  # utilization still ~0.51 < 0.7, the forecast asks for a group
    assert d.utilization < 0.7
    assert d.slope_tokens_per_s > 1900


def test_queued_requests_scale_up_immediately_even_at_low_kv():
    d = decide(0.0, groups(2, 0.3, queued=3), 2, 0, LawState(), P)
    assert d.desired_groups == 3
    assert "queued" in d.reason


def test_starting_group_is_credited_for_the_queue():
    # 2 serving + 1 starting: the queue asks for serving + 1 = 3, already provisioned
    d = decide(0.0, groups(2, 0.9, queued=3), 3, 1, LawState(), P)
    assert d.desired_groups == 3
    assert "hold" in d.reason


def test_scale_down_one_at_a_time_after_stabilization():
    decisions, _ = run_flat(0.1, 6, 3000)
    downs = [(t, cur, d.desired_groups) for t, cur, d in decisions if d.desired_groups < cur]
    assert downs, "load of 0.6 groups must shrink a 6-group fleet"
    assert all(cur - new == 1 for _, cur, new in downs)
    assert downs[0][0] >= 300  # never before a full window observed
    assert decisions[-1][2].desired_groups == 1


def test_no_scale_down_within_stabilization_of_scale_up():
    state = decide(0.0, groups(2, 0.9), 2, 0, LawState(), P).state  # scale up at t=0
    assert state.last_scale_up_t == 0.0
    d = decide(200.0, groups(3, 0.05), 3, 0, state, P)
    assert d.desired_groups == 3


def test_missing_group_sample_extrapolates_mean_load():
    # 4 serving groups, only 2 sampled at 0.8: demand counts 4 groups at 0.8 -> 5 groups
    d = decide(0.0, groups(2, 0.8), 4, 0, LawState(), P)
    assert d.desired_groups == 5
    d = decide(0.0, [], 4, 0, LawState(), P)
    assert d.desired_groups == 4 and "no KV metrics" in d.reason
    d = decide(0.0, [GroupSample(900_000, CAP, 10, 5, ready=False)], 2, 2, LawState(), P)
    assert d.desired_groups == 2


def test_bounds_move_straight_to_bound():
    assert decide(0.0, groups(10, 0.1), 10, 0, LawState(), P).desired_groups == 8
    assert decide(0.0, [], 0, 0, LawState(), P).desired_groups == 1
    assert decide(0.0, groups(8, 1.0, queued=50), 8, 0, LawState(), P).desired_groups == 8


def test_slope():
    assert least_squares_slope([]) == 0.0
    assert least_squares_slope([(1.0, 5.0)]) == 0.0
    assert abs(least_squares_slope([(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]) - 2.0) < 1e-12


# ---- properties -------------------------------------------------------------------------------------------------

sample = st.builds(GroupSample, kv_used_tokens=st.integers(0, CAP), kv_total_tokens=st.just(CAP),
                   running_reqs=st.integers(0, 200), queued_reqs=st.integers(0, 20), ready=st.booleans())
params = st.builds(LawParams, target_kv_utilization=st.floats(0.3, 0.95), min_groups=st.integers(0, 3),
                   max_groups=st.integers(3, 12), scale_down_stabilization_s=st.floats(0, 900),
                   cold_start_s=st.floats(0, 1200))


@st.composite
def histories(draw):
    """A random sequence of calls, fed to the law; yields the final state and the time of the next call."""
    p = draw(params)
    state = LawState()
    t = draw(st.floats(0, 1e6))
    current = draw(st.integers(p.min_groups, p.max_groups))
    for _ in range(draw(st.integers(0, 12))):
        t += draw(st.floats(1, 120))
        n = draw(st.integers(0, current))
        d = decide(t, draw(st.lists(sample, min_size=n, max_size=n)), current,
                   draw(st.integers(0, current)), state, p)
        state, current = d.state, d.desired_groups
    return p, state, current, t + draw(st.floats(1, 120))


@settings(max_examples=150, deadline=None)
@given(histories(), st.lists(sample, max_size=10), st.integers(0, 12), st.integers(0, 12))
def test_bounds_and_one_step_down(h, samples, current, starting):
    p, state, _, now = h
    d = decide(now, samples, current, starting, state, p)
    assert p.min_groups <= d.desired_groups <= max(p.min_groups, p.max_groups)
    if p.min_groups <= current <= p.max_groups:
        assert d.desired_groups >= current - 1
    if any(s.queued_reqs > 0 and s.ready for s in samples) and current >= p.min_groups:
        assert d.desired_groups >= min(current, p.max_groups)  # queued work never scales down
    if d.desired_groups < current <= p.max_groups:
        last_up, last_down = state.last_scale_up_t, state.last_scale_down_t
        assert last_up is None or now - last_up >= p.scale_down_stabilization_s
        assert last_down is None or now - last_down >= p.scale_down_stabilization_s  # one group per window
        first = state.first_seen_t if state.first_seen_t is not None else now
        assert now - first >= p.scale_down_stabilization_s


@settings(max_examples=150, deadline=None)
@given(histories(), st.lists(sample, min_size=1, max_size=8), st.integers(0, 3), st.integers(0, CAP),
       st.integers(0, 20))
def test_monotonic_in_load(h, samples, starting, extra_used, extra_queued):
    p, state, current, now = h
    current = max(current, len(samples))
    more = [GroupSample(min(CAP, s.kv_used_tokens + extra_used), s.kv_total_tokens, s.running_reqs,
                        s.queued_reqs + extra_queued, s.ready) for s in samples]
    a = decide(now, samples, current, min(starting, current), state, p)
    b = decide(now, more, current, min(starting, current), state, p)
    assert b.desired_groups >= a.desired_groups


@settings(max_examples=100, deadline=None)
@given(params, st.integers(1, 11), st.floats(0.71, 1.0), st.floats(0, 1e6))
def test_starting_groups_are_credited(p, current, util, now):
    """Once the law asked for groups, the same load with those groups starting asks for no more."""
    current = max(p.min_groups, min(current, p.max_groups))
    load = groups(current, min(1.0, util * p.target_kv_utilization / 0.7 + 0.05))  # above target
    d1 = decide(now, load, current, 0, LawState(), p)
    assume(d1.desired_groups > current)  # below max_groups
    added = d1.desired_groups - current
    d2 = decide(now + 15, load, d1.desired_groups, max(0, added), d1.state, p)
    assert d2.desired_groups == d1.desired_groups


@settings(max_examples=100, deadline=None)
@given(histories())
def test_state_round_trips_through_json(h):
    _, state, _, _ = h
    assert LawState.from_json(state.to_json()) == state
    assert len(state.history) <= 48


def test_theil_sen_ignores_one_transient():
    from moe_operator.autoscale.law import theil_sen_slope

    pts = [(0.0, 0.0)] + [(15.0 * i, 100.0) for i in range(1, 8)]  # a ramp from empty, then flat
    assert theil_sen_slope(pts) == 0.0
    assert least_squares_slope(pts) > 0


def test_scale_down_hysteresis_keeps_a_group_near_the_boundary():
    # 1.95 groups' worth of KV fits 3 groups at 0.7 (0.65 each) but not at 0.7 - 0.1: a 4-group fleet stays
    decisions, _ = run_flat(1.95 / 4, 4, 1500)
    assert decisions[-1][2].desired_groups == 4
    no_band = LawParams(**{**P.__dict__, "scale_down_hysteresis": 0.0})
    decisions, _ = run_flat(1.95 / 4, 4, 1500, params=no_band)
    assert decisions[-1][2].desired_groups == 3


# ---- the demand-aware law (issue 10) -------------------------------------------------------------------------

def fleet(n: int, used_per_group: float, queued: int = 0, queued_tokens: float | None = None,
          running: int = 10) -> list[GroupSample]:
    return [GroupSample(int(used_per_group), CAP, running, queued if i == 0 else 0,
                        queued_tokens=(queued_tokens if i == 0 else (0.0 if queued_tokens is not None else None)))
            for i in range(n)]


def test_demand_trend_follows_a_ramp_and_ignores_a_step():
    from moe_operator.autoscale.law import demand_trend

    ramp = [(t, 1000.0 + 5.0 * t) for t in range(0, 300, 15)]
    assert abs(demand_trend(ramp) - 5.0) < 1e-9
    step = [(t, 1000.0 if t < 150 else 9000.0) for t in range(0, 300, 15)]
    assert demand_trend(step) == 0.0  # each half is flat: a step is not a trend
    assert demand_trend(ramp[:3]) == 0.0


def test_a_step_in_demand_is_answered_in_one_call_without_overshoot():
    # demand steps from 2 groups' worth at the target to 5.2 groups' worth and stays: one call asks for
    # ceil(5.2 / 1) = 6 groups, and no later call asks for more (the step is never extrapolated)
    p = LawParams(target_kv_utilization=0.7, max_groups=32, scale_down_stabilization_s=600, cold_start_s=900)
    state, current, t = LawState(), 2, 0.0
    for _ in range(40):  # 10 min flat at the target
        d = decide(t, fleet(current, 0.7 * CAP), current, 0, state, p)
        state, current, t = d.state, d.desired_groups, t + 15
    assert current == 2
    total = 5.2 * 0.7 * CAP
    seen = []
    for _ in range(120):  # 30 min after the step; groups serve at once here (the credit is for starting ones)
        d = decide(t, fleet(current, total / current), current, 0, state, p)
        seen.append(d.desired_groups)
        state, current, t = d.state, d.desired_groups, t + 15
    assert seen[0] == 6 and max(seen) == 6


def test_queued_work_counts_while_a_group_is_starting():
    # 3 serving groups full (30 running, 95,000 KV tokens each), 1 starting, 40 queued requests needing 3.5 groups
    # of KV; 1 request admitted per second, each holds its KV 30 s. v0.1 ignored the queue while a group started
    # (it asked for serving + 1 = 4 = current). Now: the arrivals need 1/s x 30 s x 95,000 tokens by Little's law
    # (not KV in use: that is full), and working off the queue within the horizon (300 s) 30/300 of its tokens
    p = LawParams(target_kv_utilization=0.7, max_groups=32, cold_start_s=300)
    f = [GroupSample(950_000, CAP, 10, 40 if i == 0 else 0, queued_tokens=3.5 * CAP if i == 0 else 0.0,
                     admitted_per_s=1 / 3, service_s=30.0) for i in range(3)]
    d = decide(0.0, f, 4, 1, LawState(), p)
    assert abs(d.demand_tokens - (1.0 * 30 * 95_000 + 3.5 * CAP * 30 / 300)) < 1e-6
    assert d.desired_groups == 5  # ceil(3.2 / 0.7)


def test_arrivals_count_by_littles_law_and_a_backlog_taken_over_is_not_growth():
    # the queue grows by 2 requests/s while 1/s is admitted: 3 arrivals/s x 30 s x 95,000 tokens are needed
    p = LawParams(target_kv_utilization=0.7, max_groups=64, cold_start_s=300)
    state = LawState()
    for i in range(5):
        q = 40 + 30 * i
        f = [GroupSample(950_000, CAP, 10, q if k == 0 else 0, queued_tokens=q * 80_000.0 if k == 0 else 0.0,
                         admitted_per_s=1 / 3, service_s=30.0) for k in range(3)]
        d = decide(i * 15.0, f, 4, 1, state, p)
        state = d.state
    assert abs(d.demand_tokens - (3.0 * 30 * 95_000 + 160 * 80_000.0 * 30 / 300)) < 1e-3
    assert d.desired_groups == 15  # ceil(9.83 / 0.7)
    # 11 new groups took 90 queued requests in the next 15 s (6/s admitted, the queue 90 shorter): the arrivals
    # are still 3/s, so the law asks for nothing more (v0.1 read the absorbed backlog as load)
    took = [GroupSample(950_000, CAP, 10, 70 if k == 0 else 0, queued_tokens=70 * 80_000.0 if k == 0 else 0.0,
                        admitted_per_s=(6.0 + 3.0) / 14, service_s=30.0) for k in range(14)]
    d2 = decide(75.0, took, 15, 1, state, p)
    assert abs(d2.demand_tokens - (3.0 * 30 * 95_000 + 70 * 80_000.0 * 30 / 300)) < 1e-3
    assert d2.desired_groups == 15
    # without SGLang's counters the queue counts in full, at most doubling the demand
    plain = [GroupSample(950_000, CAP, 10, 160 if k == 0 else 0, queued_tokens=160 * 80_000.0 if k == 0 else 0.0)
             for k in range(3)]
    assert decide(0.0, plain, 4, 1, LawState(), p).demand_tokens == 2 * 3 * 950_000


def test_trend_is_on_demand_so_exhaustion_does_not_flatten_it():
    # KV in use saturated at 95 % while the queue grows: the demand still rises, so the forecast keeps growing
    p = LawParams(target_kv_utilization=0.7, max_groups=64, cold_start_s=300, scale_down_stabilization_s=600)
    state = LawState()
    for i in range(21):
        t = i * 15.0
        f = [GroupSample(950_000, CAP, 10, 10 + i * i if k == 0 else 0, admitted_per_s=0.25, service_s=40.0,
                         queued_tokens=(10 + i * i) * 50_000.0 if k == 0 else 0.0) for k in range(4)]
        d = decide(t, f, 4, 1, state, p)
        state = d.state
    assert d.slope_tokens_per_s > 3000  # the arrivals keep outgrowing the KV
    assert d.forecast_used_tokens > d.demand_tokens + 250 * d.slope_tokens_per_s


def test_scale_down_at_most_one_group_per_stabilization_window():
    decisions, _ = run_flat(0.05, 7, 4000)
    downs = [t for t, cur, d in decisions if d.desired_groups < cur]
    assert len(downs) >= 3
    assert all(b - a >= P.scale_down_stabilization_s for a, b in zip(downs, downs[1:], strict=False))


def test_no_scale_down_while_demand_rises():
    # a low but rising demand (a ramp starting): the fleet is far above what it needs now, yet it holds
    p = LawParams(target_kv_utilization=0.7, max_groups=32, cold_start_s=900, scale_down_stabilization_s=300)
    state, current = LawState(), 6
    for i in range(120):
        t = i * 15.0
        used = 0.2 * CAP + 400.0 * t  # per group: +0.36 group-targets over a stabilization window
        d = decide(t, fleet(current, used), current, 0, state, p)
        assert d.desired_groups >= current, (t, d.reason)
        state, current = d.state, d.desired_groups


# ---- growth forecast with acceleration (growing agent sessions) --------------------------------------------------

def test_demand_growth_sees_a_convex_ramp_and_stays_bounded():
    from moe_operator.autoscale.law import demand_growth
    convex = [(t, 0.5 * t * t) for t in range(0, 601, 15)]  # slope t: 300 at the start, 600 at the end
    linear, s_lin = demand_growth(convex, 300.0, acceleration=False)
    growth, s = demand_growth(convex, 300.0, cap=10.0)
    true = 0.5 * 900 ** 2 - 0.5 * 600 ** 2
    assert linear < 0.6 * true  # the v0.2 forecast (the older half's slope) misses most of it
    assert abs(growth - true) / true < 0.05 and abs(s - 600) < 5  # slope now and acceleration: ~exact
    capped, _ = demand_growth(convex, 300.0, cap=1.0)
    assert capped <= 1.0 * 1.0001 * 525 * 300  # at most cap x the newer half's slope (t ~ 450..600: 525) x H


def test_demand_growth_does_not_extrapolate_a_step_or_a_falling_slope():
    from moe_operator.autoscale.law import demand_growth
    step = [(float(t), 100.0 if t < 300 else 900.0) for t in range(0, 601, 15)]
    assert demand_growth(step, 900.0) == (0.0, 0.0)
    concave = [(float(t), 1000.0 * t - 0.5 * t * t) for t in range(0, 601, 15)]  # rising, slope falling
    growth, s = demand_growth(concave, 300.0)
    assert 0 < growth <= s * 300.0 + 1e-6 and s < 600  # only the newer slope, no acceleration


def test_law_scales_up_ahead_of_a_convex_ramp_that_a_straight_line_misses():
    def first_scale_up(params: LawParams) -> float:
        state, t = LawState(), 0.0
        while t < 1200:
            used = 20.0 * t * t  # KV demand of sessions arriving faster and growing: 0.45 groups at 150 s
            d = decide(t, [GroupSample(int(used), CAP, 10, 0)], 1, 0, state, params)
            state = d.state
            if d.desired_groups > 1:
                return t
            t += 15.0
        return t
    fast = first_scale_up(replace(P, trend_window_min_s=180.0))
    slow = first_scale_up(replace(P, trend_window_min_s=180.0, acceleration=False))
    assert fast < slow


# ---- latency pressure (compute) ----------------------------------------------------------------------------------

LAT = replace(P, itl_target_s=0.05, ttft_target_s=5.0, max_groups=64)


def lat_groups(n: int, itl: float, ttft: float = 1.0, running: int = 10) -> list[GroupSample]:
    return [GroupSample(int(0.2 * CAP), CAP, running, 0, itl_s=itl, ttft_s=ttft) for _ in range(n)]


def test_latency_pressure_scales_up_when_kv_is_idle():
    d = decide(0.0, lat_groups(4, itl=0.06), 4, 0, LawState(), LAT)  # 1.2 x the ITL target on 4 groups
    assert d.desired_groups == 7 and "latency 4.80 groups at target" in d.reason  # ceil(4.8 / 0.7)
    kv_only = decide(0.0, lat_groups(4, itl=0.06), 4, 0, LawState(), replace(LAT, itl_target_s=None,
                                                                             ttft_target_s=None))
    assert kv_only.desired_groups == 4
    ttft = decide(0.0, lat_groups(4, itl=0.01, ttft=7.5), 4, 0, LawState(), LAT)  # TTFT 1.5 x its target
    assert ttft.desired_groups == 9  # ceil(6 / 0.7)


def test_latency_pressure_is_bounded_credits_starting_groups_and_ignores_idle_groups():
    d = decide(0.0, lat_groups(4, itl=5.0), 4, 0, LawState(), LAT)  # 100 x the target: one step asks 4 x at most
    assert d.desired_groups == 23  # ceil(4 x 4 / 0.7)
    assert decide(0.0, lat_groups(4, itl=5.0), 4, 0, LawState(), replace(LAT, max_pressure=2.0)).desired_groups == 12
    # the same pressure while the 19 asked for start: the total is credited, nothing more is asked
    again = decide(15.0, lat_groups(4, itl=5.0), 23, 19, d.state, LAT)
    assert again.desired_groups == 23
    # two busy groups at the target, two idle ones (no tokens decoded: pressure 0, not the busy groups' mean)
    mixed = lat_groups(2, itl=0.05) + [GroupSample(0, CAP, 0, 0), GroupSample(0, CAP, 0, 0)]
    assert decide(0.0, mixed, 4, 0, LawState(), LAT).desired_groups == 4  # ceil(2 / 0.7) = 3 <= 4: hold


def test_latency_pressure_holds_scale_down():
    # KV says 1 group would do; the compute load (3 groups at the target) keeps 5 (ceil(3 / (0.7 - 0.1)))
    state, current = LawState(), 8
    for i in range(200):
        d = decide(i * 15.0, lat_groups(current, itl=0.05 * 3 / current), current, 0, state, LAT)
        state, current = d.state, d.desired_groups
    assert current == 5


def test_with_latency_targets_a_queue_with_free_kv_is_compute_backlog_not_kv_exhaustion() -> None:
    # 4 groups at 2 % KV, 3 requests each waiting for a prefill batch, latency at 0.5 x the target: SGLang's waiting
    # queue holds them while the KV is free, so the latency law holds (the KV-only law adds its queue group)
    free = [GroupSample(int(0.02 * CAP), CAP, 10, 3, queued_tokens=0.01 * CAP, itl_s=0.025, ttft_s=1.0)
            for _ in range(4)]
    d = decide(0.0, free, 4, 0, LawState(), LAT)
    assert d.desired_groups == 4 and "3 queued" not in d.reason and "12 queued (compute backlog)" in d.reason
    kv_only = decide(0.0, free, 4, 0, LawState(), replace(LAT, itl_target_s=None, ttft_target_s=None))
    assert kv_only.desired_groups == 5
    # the same queue where the queued prompts would take one group's KV past the target: KV exhaustion, one more
    tight = free[:3] + [GroupSample(int(0.65 * CAP), CAP, 10, 3, queued_tokens=0.1 * CAP, itl_s=0.025, ttft_s=1.0)]
    d = decide(0.0, tight, 4, 0, LawState(), LAT)
    assert d.desired_groups == 5 and "3 queued (KV exhausted)" in d.reason


def test_latency_load_gets_the_kv_forecast_a_convex_ramp_is_asked_for_earlier():
    # the compute load of growing agent sessions is convex like their KV (more sessions, each with a longer context):
    # the law extrapolates it with the same acceleration as the KV demand (and the same switch), so it asks sooner
    def first_scale_up(params: LawParams) -> float:
        state, t = LawState(), 0.0
        while t < 1200:
            load = 0.5 + 4.0 * (t / 600.0) ** 2  # the 4 groups' compute load in groups at the ITL target: convex
            itl = 0.05 * load / 4
            d = decide(t, lat_groups(4, itl=itl), 4, 0, state, params)
            state = d.state
            if d.desired_groups > 4:
                return t
            t += 15.0
        return t
    p = replace(LAT, ttft_target_s=None, trend_window_min_s=180.0)
    fast, slow = first_scale_up(p), first_scale_up(replace(p, acceleration=False))
    assert fast < slow < 1200
