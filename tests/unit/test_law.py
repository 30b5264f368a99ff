"""The autoscaling control law (moe_operator.autoscale.law): examples and properties."""

from __future__ import annotations

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
    # demand grows 3000 tokens/s: ~0.6 of 3 groups at the end, the 300 s forecast ~0.9 -> 4 groups before KV is at
    # target
    state = LawState()
    desired = []
    for i in range(8):
        t = i * 15.0
        used = 0.5 * 3 * CAP + 3000 * t
        d = decide(t, [GroupSample(int(used / 3), CAP, 10, 0)] * 3, 3, 0, state, P)
        state = d.state
        desired.append(d.desired_groups)
    assert desired[0] == 3  # one point: no trend yet
    assert desired[-1] >= 4  # utilization still ~0.54 < 0.7, the forecast asks for a group
    assert d.utilization < 0.7
    assert d.slope_tokens_per_s > 2900


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
        last_up = state.last_scale_up_t
        assert last_up is None or now - last_up >= p.scale_down_stabilization_s
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
