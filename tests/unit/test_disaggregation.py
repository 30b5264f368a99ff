"""Prefill/decode disaggregation, without a cluster: what spec.disaggregation renders, what admission refuses (with the
field and the number), the prefill plan, the prefill control law and its observation of SGLang's counters, and the
status of both roles."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from moe_operator.autoscale.prefill import PrefillParams, PrefillState, bounds, decide, need_groups
from moe_operator.autoscale.prefill_step import PrefillMemory, observe, prefill_enabled, prefill_params
from moe_operator.autoscale.scrape import GroupMetrics
from moe_operator.desired import desired_prefill_groups, desired_state, typed
from moe_operator.planner import PlanRequest, plan
from moe_operator.planner.errors import PlanError
from moe_operator.planner.pd import PrefillRequest, md1_wait, plan_prefill
from moe_operator.planning import SpecProblem
from moe_operator.status import Observed, compute_status, prefill_status

H200 = {"accelerator": {"profile": "h200"}, "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H200"},
        "rdma": {"resourceName": "rdma/ib", "ibDevices": ["mlx5_0", "mlx5_1"]}}
ASCEND = {"accelerator": {"profile": "ascend-910c"}, "nodeSelector": {"accelerator": "huawei-Ascend910"}}
POOLS = {"h200": H200, "ascend": ASCEND}
SPEC: dict[str, Any] = {
    "model": {"catalog": "kimi-k2.5"}, "weights": {"huggingFace": {"repo": "moonshotai/Kimi-K2.5"}},
    "precision": "int4", "pool": "h200",
    "sessions": {"target": 64, "contextTokens": 131072, "averageContextTokens": 32768},
    "disaggregation": {"prefill": {"promptTokensPerSecond": 60000}},
}


def body(spec: dict[str, Any], name: str = "kimi", status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": "moe-operator.io/v1alpha1", "kind": "MoEDeployment",
            "metadata": {"name": name, "namespace": "ns", "uid": "u-1"}, "spec": spec, "status": status or {}}


async def get_pool(name: str) -> dict[str, Any] | None:
    return {"metadata": {"name": name}, "spec": POOLS[name]} if name in POOLS else None


def with_(**patch: Any) -> dict[str, Any]:
    spec = copy.deepcopy(SPEC)
    for path, v in patch.items():
        node = spec
        *parents, leaf = path.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        if v is None:
            node.pop(leaf, None)
        else:
            node[leaf] = v
    return spec


def by(children: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in children if o["kind"] == kind and o["metadata"]["name"] == name)


def args_of(lws: dict[str, Any], role: str = "leaderTemplate") -> list[str]:
    return list(lws["spec"]["leaderWorkerTemplate"][role]["spec"]["containers"][0]["args"])


def value(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


# --- render ----------------------------------------------------------------------------------------------------------


async def test_two_roles_two_leaderworkersets_and_the_router_in_pd_mode() -> None:
    d = await desired_state(body(SPEC), get_pool)
    assert d.prefill is not None and d.planned.prefill is not None
    decode, prefill = by(d.children, "LeaderWorkerSet", "kimi"), by(d.children, "LeaderWorkerSet", "kimi-prefill")
    assert prefill["spec"]["replicas"] == d.planned.prefill.groups == d.prefill.replicas
    for lws, role in ((decode, "decode"), (prefill, "prefill")):
        for t in ("leaderTemplate", "workerTemplate"):
            assert lws["spec"]["leaderWorkerTemplate"][t]["metadata"]["labels"]["moe-operator.io/pd-role"] == role
        argv = args_of(lws)
        assert value(argv, "--disaggregation-mode") == role
        assert value(argv, "--disaggregation-transfer-backend") == "mooncake"  # NVIDIA's default
        assert value(argv, "--disaggregation-ib-device") == "mlx5_0,mlx5_1"  # the pool's rdma.ibDevices
    # the bootstrap server: a flag, a port and the annotation SMG's discovery reads, on prefill leaders only
    assert value(args_of(prefill), "--disaggregation-bootstrap-port") == "8998"
    assert "--disaggregation-bootstrap-port" not in args_of(decode)
    lead = prefill["spec"]["leaderWorkerTemplate"]["leaderTemplate"]
    assert lead["metadata"]["annotations"]["sglang.ai/bootstrap-port"] == "8998"
    assert {"name": "bootstrap", "containerPort": 8998, "protocol": "TCP"} in lead["spec"]["containers"][0]["ports"]
    worker = prefill["spec"]["leaderWorkerTemplate"]["workerTemplate"]
    assert "sglang.ai/bootstrap-port" not in worker["metadata"]["annotations"]
    # each role has its own layout: decode the KV plan (attention DP), prefill the cheapest one holding the weights
    assert value(args_of(decode), "--attn-dp-size") == str(d.planned.plan.attn_dp_size)
    assert value(args_of(prefill), "--tp-size") == str(d.planned.prefill.plan.tp_size)
    # a PDB per role, selecting that role's LWS
    for name in ("kimi", "kimi-prefill"):
        pdb = by(d.children, "PodDisruptionBudget", name)
        assert pdb["spec"]["selector"]["matchLabels"]["leaderworkerset.sigs.k8s.io/name"] == name
    # one router, in PD mode, telling the roles apart by our label
    router = by(d.children, "Deployment", "kimi-router")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--pd-disaggregation" in router and "--selector" not in router and "--dp-aware" not in router
    pre = router[router.index("--prefill-selector") + 1: router.index("--decode-selector")]
    dec = router[router.index("--decode-selector") + 1: router.index("--prefill-policy")]
    assert "moe-operator.io/pd-role=prefill" in pre and "moe-operator.io/pd-role=decode" in dec
    assert "moe-operator.io/routable=true" in pre and "moe-operator.io/routable=true" in dec
    # the prefill role renders no second router or policy
    assert [o["metadata"]["name"] for o in d.children if o["kind"] == "Deployment"] == ["kimi-router"]
    assert len([o for o in d.children if o["kind"] == "NetworkPolicy"]) == 2


async def test_aggregated_deployments_render_no_pd_flag() -> None:
    d = await desired_state(body(with_(disaggregation=None)), get_pool)
    assert d.prefill is None
    assert [o["metadata"]["name"] for o in d.children if o["kind"] == "LeaderWorkerSet"] == ["kimi"]
    argv = args_of(by(d.children, "LeaderWorkerSet", "kimi"))
    assert not [a for a in argv if a.startswith("--disaggregation")]


async def test_ascend_uses_its_transfer_engine_and_the_store_url_on_every_server() -> None:
    spec = with_(pool="ascend", precision="w4a8", disaggregation={
        "prefill": {"promptTokensPerSecond": 5000}, "ascendStoreUrl": "tcp://10.0.0.9:6379"})
    d = await desired_state(body(spec), get_pool)
    for name in ("kimi", "kimi-prefill"):
        lws = by(d.children, "LeaderWorkerSet", name)
        assert value(args_of(lws), "--disaggregation-transfer-backend") == "ascend"
        for t in ("leaderTemplate", "workerTemplate"):
            env = lws["spec"]["leaderWorkerTemplate"][t]["spec"]["containers"][0]["env"]
            assert {"name": "ASCEND_MF_STORE_URL", "value": "tcp://10.0.0.9:6379"} in env


# --- admission: the field and the number -----------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "name", "field", "words"), [
    (with_(disaggregation__transferBackend="nixl", pool="ascend", precision="w4a8"), "kimi",
     "spec.disaggregation", "ascend"),
    (with_(disaggregation__transferBackend="ascend", disaggregation__ascendStoreUrl="tcp://1.2.3.4:1"), "kimi",
     "spec.disaggregation.transferBackend", "nvidia"),
    (with_(pool="ascend", precision="w4a8", disaggregation__transferBackend="ascend"), "kimi",
     "spec.disaggregation.ascendStoreUrl", "ASCEND_MF_STORE_URL"),
    (with_(pool="ascend", precision="w4a8"), "kimi", "spec.disaggregation.ascendStoreUrl", "required"),
    (SPEC, "a" * 38, "metadata.name", "38 characters"),
    (with_(router={"enabled": False}), "kimi", "spec.router.enabled", "router"),
    (with_(disaggregation__bootstrapPort=30000), "kimi", "spec.disaggregation.bootstrapPort", "sglang.port"),
    (with_(autoscaling={"enabled": True, "maxGroups": 4, "targetTimeToFirstTokenSeconds": 5}), "kimi",
     "spec.autoscaling.targetTimeToFirstTokenSeconds", "ttftSeconds"),
    (with_(disaggregation__prefill={"promptTokensPerSecond": 60000, "ttftSeconds": 0.5}), "kimi",
     "spec.disaggregation.prefill", "ttftSeconds (0.5 s)"),
    (with_(disaggregation__prefill={"promptTokensPerSecond": 600000, "maxGroups": 2}), "kimi",
     "spec.disaggregation.prefill", "maxGroups is 2"),
    (with_(disaggregation__prefill={"promptTokensPerSecond": 1, "minGroups": 3, "maxGroups": 2}), "kimi",
     "spec.disaggregation.prefill", "minGroups (3) must be <="),
    (with_(sglang={"extraArgs": ["--disaggregation-mode", "prefill"]}), "kimi", "spec.sglang.extraArgs",
     "--disaggregation-mode"),
    (with_(disaggregation__prefill={"promptTokensPerSecond": 1, "promptTokens": 200000}), "kimi",
     "spec.disaggregation.prefill.promptTokens", "sessions.contextTokens (131072)"),
])
async def test_refused_with_the_field_and_the_number(spec: dict[str, Any], name: str, field: str,
                                                     words: str) -> None:
    from moe_operator.admission import check_moedeployment

    msg = await check_moedeployment(body(spec, name), get_pool)
    assert msg is not None and field in msg and words in msg, msg
    with pytest.raises(SpecProblem) as e:  # reconcile runs the same checks
        await desired_state(body(spec, name), get_pool)
    assert f"{e.value.field}: {e.value.message}" == msg


# --- how many prefill groups -----------------------------------------------------------------------------------------


async def test_prefill_count_fixed_planned_autoscaled_and_ratio_bounded() -> None:
    async def count(spec: dict[str, Any], status: dict[str, Any] | None = None, decode: int = 1) -> int:
        d = await desired_state(body(spec), get_pool)
        return desired_prefill_groups(typed(body(spec)).spec, d.planned, status or {}, decode)

    planned = (await desired_state(body(SPEC), get_pool)).planned.prefill
    assert planned is not None and await count(SPEC) == planned.groups
    assert await count(with_(disaggregation__prefill={"promptTokensPerSecond": 60000, "groups": 2})) == 2
    auto = with_(disaggregation__prefill={"promptTokensPerSecond": 60000, "autoscaling": {"enabled": True}})
    assert await count(auto, {"prefill": {"desiredGroups": 9}}) == 9  # the prefill autoscaler's decision
    assert await count(SPEC, {"prefill": {"desiredGroups": 9}}) == planned.groups  # ignored when it is off
    ratio = with_(disaggregation__ratio={"min": 2, "max": 3})
    assert await count(ratio, decode=4) == max(8, min(12, planned.groups))
    assert await count(with_(disaggregation__ratio={"max": 1}), decode=2) == 2
    # a decode scale-down does not cut autoscaled prefill groups undrained: the prefill autoscaler drains to the bound
    auto_ratio = with_(disaggregation__prefill={"promptTokensPerSecond": 60000, "autoscaling": {"enabled": True}},
                       disaggregation__ratio={"max": 2})
    assert await count(auto_ratio, {"prefill": {"desiredGroups": 6}}, decode=1) == 6
    assert await count(auto_ratio, {"prefill": {"desiredGroups": 6}}, decode=4) == 6


def test_prefill_plan_meets_the_ttft_target_at_its_count() -> None:
    base = PlanRequest(model="kimi-k2.5", precision="int4", sessions=64, context=131072, accelerator="h200",
                       avg_context=32768)
    decode = plan(base)
    req = PrefillRequest(prompt_tokens_per_second=200_000, prompt_tokens=32768, ttft_seconds=4.0)
    p = plan_prefill(base, req, decode)
    assert p.ttft_seconds <= 4.0 and p.utilization <= 0.7
    fewer = p.groups - 1
    rho = 200_000 / (fewer * p.tokens_per_second_per_group)
    # one group fewer would break the utilization target or the TTFT target
    assert rho > 0.7 or md1_wait(rho, p.prefill_seconds) + p.prefill_seconds + p.transfer_seconds > 4.0
    assert p.cost_per_hour == pytest.approx(p.groups * p.plan.nodes_per_group * p.plan.cost_per_node_hour)
    with pytest.raises(PlanError, match="more than disaggregation.prefill.ttftSeconds"):
        plan_prefill(base, PrefillRequest(prompt_tokens_per_second=1000, prompt_tokens=32768, ttft_seconds=0.1),
                     decode)


def test_md1_wait() -> None:
    assert md1_wait(0.0, 2.0) == 0.0
    assert md1_wait(0.5, 2.0) == pytest.approx(1.0)
    assert md1_wait(1.0, 2.0) == math.inf


# --- the prefill control law -----------------------------------------------------------------------------------------

P = PrefillParams(tokens_per_second_per_group=10_000, target_utilization=0.5, ttft_seconds=10, min_groups=1,
                  max_groups=20, stabilization_seconds=60)


def test_need_counts_rate_and_backlog() -> None:
    assert need_groups(P, 0, 0) == 0
    assert need_groups(P, 25_000, 0) == 5  # 25k / (10k x 0.5)
    assert need_groups(P, 25_000, 300_000) == 8  # + 300k tokens to clear in 10 s at 10k/s per group
    # a group asked for now serves after its cold start: the backlog is spread over that, not over the TTFT target
    slow = PrefillParams(**{**P.__dict__, "cold_start_seconds": 300.0})
    assert need_groups(slow, 25_000, 300_000) == 6


def test_up_in_one_step_down_one_per_window_never_with_backlog() -> None:
    s = PrefillState()
    d = decide(0, P, s, current=2, decode_groups=4, rate=25_000, backlog=300_000)
    assert d.desired == 8  # a burst is one step, not one group per tick
    assert decide(1, P, s, current=8, decode_groups=4, rate=1000, backlog=50).desired == 8  # backlog: hold
    assert decide(2, P, s, current=8, decode_groups=4, rate=1000, backlog=0).desired == 8  # window starts
    assert decide(61, P, s, current=8, decode_groups=4, rate=1000, backlog=0).desired == 8
    assert decide(62, P, s, current=8, decode_groups=4, rate=1000, backlog=0).desired == 7  # one group
    assert decide(63, P, s, current=7, decode_groups=4, rate=1000, backlog=0).desired == 7  # next window
    assert decide(63, P, s, current=7, decode_groups=4, rate=None, backlog=None).desired == 7  # nothing seen


def test_bounds_and_ratio() -> None:
    p = PrefillParams(tokens_per_second_per_group=10_000, min_groups=1, max_groups=10, ratio_min=0.5, ratio_max=2)
    assert bounds(p, 4) == (2, 8)
    assert decide(0, p, PrefillState(), 3, 4, 10**9, 0).desired == 8  # capped by ratio.max x decode
    assert decide(0, p, PrefillState(), 3, 4, None, None).desired == 3
    assert decide(0, p, PrefillState(), 1, 4, None, None).desired == 2  # raised to ratio.min x decode


def test_observe_rate_and_backlog_from_sglang_counters() -> None:
    m = PrefillMemory()

    def g(group: int, prompt: float, cached: float, reqs: float, queued: int, bootstrap: int = 0) -> GroupMetrics:
        return GroupMetrics(group=group, kv_used_tokens=0, kv_total_tokens=1, running_reqs=0, queued_reqs=queued,
                            ranks=1, pods_scraped=1, pods_missing=(), prompt_tokens_total=prompt,
                            cached_tokens_total=cached, requests_total=reqs, prefill_bootstrap_reqs=bootstrap)

    assert observe({0: g(0, 1000, 0, 1, 0)}, m, 100.0, 5000) == (None, None)  # one sample: no rate yet
    rate, backlog = observe({0: g(0, 21000, 1000, 5, 2, 1)}, m, 110.0, 5000)
    assert rate == pytest.approx(1900.0)  # (20000 - 1000 uncached) / 10 s
    # queued x mean uncached prompt; the one in the bootstrap queue waits for decode KV, not for a prefill group
    assert backlog == pytest.approx(2 * 19000 / 4)
    rate, _ = observe({0: g(0, 10, 0, 1, 0)}, m, 120.0, 5000)  # a restarted server re-bases, the rate holds
    assert rate == pytest.approx(1900.0)


async def test_prefill_params_come_from_the_spec() -> None:
    spec = typed(body(with_(disaggregation__prefill={
        "promptTokensPerSecond": 1000, "ttftSeconds": 3, "minGroups": 2, "maxGroups": 7,
        "autoscaling": {"enabled": True, "targetUtilization": 0.6, "scaleDownStabilizationSeconds": 45}},
        disaggregation__ratio={"min": 0.5}))).spec
    assert prefill_enabled(spec)
    assert prefill_params(spec, 1234.0) == PrefillParams(1234.0, 0.6, 3.0, 2, 7, 45.0, 0.5, None, 300.0)
    assert prefill_params(spec, 1234.0, measured_cold_start=95.0).cold_start_seconds == 95.0
    fixed = typed(body(with_(disaggregation__prefill={"promptTokensPerSecond": 1, "groups": 2,
                                                      "autoscaling": {"enabled": True}}))).spec
    assert not prefill_enabled(fixed)  # a fixed count is never autoscaled


# --- status ----------------------------------------------------------------------------------------------------------


def test_status_of_both_roles() -> None:
    lws = {"status": {"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2}, "spec": {}}
    prefill_lws = {"status": {"readyReplicas": 1}}
    prev = {"prefill": {"promptTokensPerSecond": 1200, "drain": {"group": 2}, "readyGroups": 9}}
    pf = prefill_status(prefill_lws, 3, {"groups": 3}, prev["prefill"])
    assert pf["groupSummary"] == "1/3" and pf["promptTokensPerSecond"] == 1200 and pf["drain"] == {"group": 2}
    plan = {"sessionsPerGroup": 10}
    st = compute_status(Observed(generation=1, plan=plan, desired_groups=2, lws=lws, prefill=pf), prev)
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "PrefillGroupsNotReady"
    assert "1/3 prefill groups ready" in ready["message"]
    pf = prefill_status({"status": {"readyReplicas": 3}}, 3, None, None)
    st = compute_status(Observed(generation=1, plan=plan, desired_groups=2, lws=lws, prefill=pf), prev)
    assert next(c for c in st["conditions"] if c["type"] == "Ready")["status"] == "True"
    assert st["prefill"]["groupSummary"] == "3/3"
    # disaggregation turned off: the merge patch removes status.prefill
    st = compute_status(Observed(generation=1, plan=plan, desired_groups=2, lws=lws), prev)
    assert "prefill" in st and st["prefill"] is None


def test_the_law_runs_on_the_capacity_busy_groups_were_measured_to_serve() -> None:
    from moe_operator.autoscale.prefill_step import CAPACITY_WINDOW_S, group_capacity

    m = PrefillMemory()

    def g(prompt: float, queued: int) -> GroupMetrics:
        return GroupMetrics(group=0, kv_used_tokens=0, kv_total_tokens=1, running_reqs=1, queued_reqs=queued,
                            ranks=1, pods_scraped=1, pods_missing=(), prompt_tokens_total=prompt,
                            cached_tokens_total=0.0, requests_total=prompt / 1000)

    assert group_capacity(m, 29_588.0) == 29_588.0  # nothing measured: the plan's figure
    t, served = 0.0, 0.0
    observe({0: g(served, 3)}, m, t, 8192)
    # busy throughout (a queue at every sample), prompts finishing in lumps: 0, 1, 0, 3 ... prompts per 15 s step
    for lump in (0, 24_000, 0, 72_000, 0, 0, 24_000, 0):
        t, served = t + 15, served + lump
        observe({0: g(served, 3)}, m, t, 8192)
    assert len(m.capacity) == int(t // CAPACITY_WINDOW_S)  # one sample per 60 s busy stretch, not per step
    assert sorted(m.capacity) == [24_000 / 60, 96_000 / 60]  # each minute: what finished in it
    assert group_capacity(m, 29_588.0) == 96_000 / 60  # the median (upper of two)
    # an idle step ends the stretch: its partial minute is not a sample
    observe({0: g(served + 500, 0)}, m, t + 15, 8192)
    assert len(m.capacity) == 2 and 0 not in m.streak
