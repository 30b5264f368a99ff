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
def test_more_sessions_never_fewer_groups_in_the_smallest_group(c, n1, n2, ctx) -> None:
    lo, hi = sorted((n1, n2))
    a, b = _plan(*c, lo, ctx, objective="min-group"), _plan(*c, hi, ctx, objective="min-group")
    assert isinstance(a, PlanError) == isinstance(b, PlanError)  # without max_groups, feasibility is per-session
    if isinstance(a, PlanError) or isinstance(b, PlanError):
        return
    assert b.nodes_per_group == a.nodes_per_group and b.groups >= a.groups


@SETTINGS
@given(combo, sessions, contexts, contexts)
def test_longer_context_never_fewer_groups_in_the_smallest_group(c, n, ctx1, ctx2) -> None:
    lo, hi = sorted((ctx1, ctx2))
    a, b = _plan(*c, n, lo, objective="min-group"), _plan(*c, n, hi, objective="min-group")
    if isinstance(b, PlanError) or isinstance(a, PlanError):
        assert not (isinstance(a, PlanError) and not isinstance(b, PlanError))
        return
    assert b.nodes_per_group >= a.nodes_per_group
    if b.nodes_per_group == a.nodes_per_group:
        # (the layout inside the group may change: equal-cost ties go to the simpler layout)
        assert b.groups >= a.groups


@SETTINGS
@given(combo, sessions, sessions, contexts, contexts)
def test_min_cost_fleet_is_monotone_and_never_above_min_group(c, n1, n2, ctx1, ctx2) -> None:
    lo, hi = sorted((n1, n2))
    clo, chi = sorted((ctx1, ctx2))
    a, b = _plan(*c, lo, clo), _plan(*c, hi, chi)
    if not isinstance(a, PlanError) and not isinstance(b, PlanError):
        assert b.total_gpus >= a.total_gpus  # same pool: cost is proportional to nodes
        small = _plan(*c, lo, clo, objective="min-group")
        assert a.total_nodes <= small.total_nodes  # type: ignore[union-attr]


def _assert_cheapest_allowed(r) -> None:
    """The chosen layout is one the compatibility table allows, and no feasible candidate is cheaper."""
    from moe_operator.planner.compat import moe_rule

    spec = CATALOG[r.model]
    acc = ACCELERATORS[r.accelerator]
    if spec.n_routed_experts:
        assert moe_rule(a2a=r.moe_a2a_backend, quant=r.precision, arch=acc.arch).supported
        assert r.compat_rule is not None
    price = acc.cost_per_node_hour
    mine = r.total_nodes * price if price is not None else r.total_gpus
    for alt in r.alternatives:
        rule = moe_rule(a2a=alt["moe_a2a_backend"], quant=r.precision, arch=acc.arch)
        if spec.n_routed_experts and not rule.supported:
            assert not alt["feasible"] and alt["reason"].startswith("rejected: SGLang cannot run")
        if alt["feasible"]:
            if price is not None:
                theirs = alt["total_nodes"] * price
            else:
                theirs = alt["groups"] * alt["nodes_per_group"] * acc.devices_per_node
            assert theirs >= mine - 1e-9, (alt, mine)
            if theirs == mine:  # ties: fewer nodes per group first
                assert alt["nodes_per_group"] >= r.nodes_per_group


ACCEPTANCE = [
    (m, a, p, n, ctx)
    for m in MODEL_IDS
    for a, acc in ACCELERATORS.items()
    for p in acc.supported_precisions
    for n in (1, 100, 1000)
    for ctx in (32_768, 131_072)
]


def test_acceptance_grid_plans_the_cheapest_allowed_layout_or_names_the_constraint() -> None:
    """Issue 9's acceptance grid: every catalog model x {h200, b200, ascend-910b, ascend-910c} x every supported
    precision x sessions {1, 100, 1000} x context {32k, 128k}."""
    outcomes = {"planned": 0, "refused": 0}
    for m, a, p, n, ctx in ACCEPTANCE:
        r = _plan(m, a, p, n, ctx)
        if isinstance(r, PlanError):
            assert r.constraint and any(ch.isdigit() for ch in r.message), (m, a, p, n, ctx, r)
            outcomes["refused"] += 1
            continue
        outcomes["planned"] += 1
        _assert_cheapest_allowed(r)
    assert outcomes["planned"] > outcomes["refused"] > 0


@SETTINGS
@given(combo, sessions, contexts, st.sampled_from(["min-cost", "min-group", "max-sessions-per-gpu"]))
def test_any_request_plans_an_allowed_layout(c, n, ctx, objective) -> None:
    r = _plan(*c, n, ctx, objective=objective)
    if isinstance(r, PlanError):
        return
    if objective == "min-cost":
        _assert_cheapest_allowed(r)
    else:
        from moe_operator.planner.compat import moe_rule

        if CATALOG[r.model].n_routed_experts:
            assert moe_rule(a2a=r.moe_a2a_backend, quant=r.precision, arch=ACCELERATORS[r.accelerator].arch).supported


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
