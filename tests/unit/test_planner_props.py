"""Property tests: monotonicity, memory never oversubscribed, every combination plans or names a constraint."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moe_operator.planner import ACCELERATORS, CATALOG, PlanError, PlanRequest, plan
from moe_operator.planner.catalog import MODEL_IDS

COMBOS = [(m, a, p) for m in MODEL_IDS for a, acc in ACCELERATORS.items() for p in acc.supported_precisions]
combo = st.sampled_from(COMBOS)
contexts = st.integers(min_value=1024, max_value=262_144)
sessions = st.integers(min_value=1, max_value=2000)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _plan(m: str, a: str, p: str, n: int, ctx: int, **kw: object):
    try:
        return plan(PlanRequest(model=m, precision=p, accelerator=a, sessions=n, context=ctx, **kw))  # type: ignore[arg-type]
    except PlanError as e:
        return e


@SETTINGS
@given(
    combo,
    sessions,
    sessions,
    contexts,
    st.sampled_from(["auto", "fp8_e4m3", "bf16"]),
    st.none() | st.integers(1, 64),
    st.integers(1, 4),
    st.booleans(),
    st.none() | st.integers(1, 262_144),
)
def test_every_combination_plans_or_raises_plan_error(c, n1, _n2, ctx, kv, max_groups, max_nodes, mtp, avg) -> None:
    m, a, p = c
    try:
        r = plan(
            PlanRequest(
                model=m,
                precision=p,
                accelerator=a,
                sessions=n1,
                context=ctx,
                kv_dtype=kv,
                max_groups=max_groups,
                max_nodes_per_group=max_nodes,
                serve_mtp=mtp,
                avg_context=avg,
            )
        )
    except PlanError as e:
        assert e.constraint and e.message
        return
    d = r.to_dict()
    assert d["groups"] * d["sessions_per_group"] >= n1
    assert all(isinstance(x, str) for x in d["sglang_args"])


@SETTINGS
@given(combo, sessions, sessions, contexts)
def test_more_sessions_never_fewer_groups(c, n1, n2, ctx) -> None:
    lo, hi = sorted((n1, n2))
    a, b = _plan(*c, lo, ctx), _plan(*c, hi, ctx)
    assert isinstance(a, PlanError) == isinstance(b, PlanError)  # without max_groups, feasibility is per-session
    if isinstance(a, PlanError) or isinstance(b, PlanError):
        return
    assert b.nodes_per_group == a.nodes_per_group and b.groups >= a.groups


@SETTINGS
@given(combo, sessions, contexts, contexts)
def test_longer_context_never_fewer_groups(c, n, ctx1, ctx2) -> None:
    lo, hi = sorted((ctx1, ctx2))
    a, b = _plan(*c, n, lo), _plan(*c, n, hi)
    if isinstance(b, PlanError) or isinstance(a, PlanError):
        assert not (isinstance(a, PlanError) and not isinstance(b, PlanError))
        return
    assert b.nodes_per_group >= a.nodes_per_group
    if b.nodes_per_group == a.nodes_per_group:
        assert b.groups >= a.groups and b.sessions_per_group <= a.sessions_per_group


@SETTINGS
@given(combo, sessions, sessions, contexts)
def test_min_nodes_objective_fleet_is_monotone(c, n1, n2, ctx) -> None:
    lo, hi = sorted((n1, n2))
    a, b = _plan(*c, lo, ctx, objective="min-nodes"), _plan(*c, hi, ctx, objective="min-nodes")
    if not isinstance(a, PlanError) and not isinstance(b, PlanError):
        assert b.total_nodes >= a.total_nodes
        assert a.total_nodes <= _plan(*c, lo, ctx).total_nodes  # type: ignore[union-attr]


@SETTINGS
@given(combo, sessions, contexts, st.booleans())
def test_plan_never_exceeds_device_memory(c, n, ctx, mtp) -> None:
    r = _plan(*c, n, ctx, serve_mtp=mtp and CATALOG[c[0]].num_nextn_predict_layers > 0)
    if isinstance(r, PlanError):
        return
    g = r.per_gpu
    used = g["runtime_overhead_bytes"] + g["reserved_bytes"] + g["weights_bytes"] + g["kv_used_bytes"]
    assert used <= g["usable_bytes"]
    assert g["kv_used_bytes"] <= g["kv_pool_bytes"]
    assert r.max_total_tokens_per_dp >= ctx
    assert r.sessions_per_dp * ctx <= r.max_total_tokens_per_dp + r.page_size * r.sessions_per_dp
    assert 0 < r.mem_fraction_static < 1
