"""Property tests of the render layer: argv merging never emits a flag twice."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moe_operator.render import Owner, RenderInput, WeightsSource, children, leaderworkerset
from moe_operator.render.argv import canonical_flag, flags, is_flag

OWNER = Owner(api_version="moe-operator.io/v1alpha1", kind="MoEDeployment", name="m", uid="u")

# (flag, values) fragments; the two pools share no flag
PLAN_POOL: list[tuple[str, ...]] = [
    ("--trust-remote-code",),
    ("--mem-fraction-static", "0.82"),
    ("--context-length", "131072"),
    ("--kv-cache-dtype", "fp8_e4m3"),
    ("--moe-a2a-backend", "deepep"),
    ("--quantization", "fp8"),
    ("--max-running-requests", "256"),
]
EXTRA_POOL: list[tuple[str, ...]] = [
    ("--chunked-prefill-size", "8192"),
    ("--watchdog-timeout", "600"),
    ("--decode-log-interval", "40"),
    ("--served-model-name", "dsv3"),
    ("--tool-call-parser", "kimi_k2"),
    ("--cuda-graph-max-bs-decode", "64"),
    ("--page-size=64",),
    ("--skip-server-warmup",),
    ("--extra-metric-labels", '{"pool":"h200"}'),
]

settings.register_profile("render", max_examples=60, deadline=None)


@st.composite
def inputs(draw: st.DrawFn) -> tuple[RenderInput, tuple[str, ...]]:
    nodes = draw(st.integers(1, 4))
    devices = draw(st.sampled_from([1, 2, 4, 8, 16]))
    tp = nodes * devices
    plan: list[str] = ["--model-path", draw(st.sampled_from(["deepseek-ai/DeepSeek-V3", "moonshotai/Kimi-K2.5"]))]
    plan += [draw(st.sampled_from(["--tp-size", "--tp", "--tensor-parallel-size"])), str(tp)]
    if draw(st.booleans()):
        plan += ["--ep-size", str(tp)]
    if draw(st.booleans()):
        plan += ["--attn-dp-size", str(draw(st.sampled_from([d for d in (1, 2, 4, 8, 16, 32, 64) if tp % d == 0])))]
    plan_parts = draw(st.lists(st.sampled_from(PLAN_POOL), unique=True, max_size=len(PLAN_POOL)))
    extra_parts = draw(st.lists(st.sampled_from(EXTRA_POOL), unique=True, max_size=len(EXTRA_POOL)))
    for part in plan_parts:
        plan += part
    extra = [tok for part in extra_parts for tok in part]
    port = draw(st.integers(1024, 65535))
    dist_port = draw(st.integers(1024, 65535).filter(lambda p: p != port))
    inp = RenderInput(
        name="m",
        namespace="ns",
        owner=OWNER,
        model_id="custom",
        sglang_args=tuple(plan),
        extra_args=tuple(extra),
        nodes_per_group=nodes,
        devices_per_node=devices,
        device_resource="nvidia.com/gpu",
        replicas=draw(st.integers(0, 8)),
        image="img",
        port=port,
        dist_port=dist_port,
        metrics_enabled=draw(st.booleans()),
        weights=WeightsSource(),
        router_enabled=draw(st.booleans()),
        router_replicas=draw(st.integers(1, 3)),
    )
    return inp, tuple(plan)


def _args(inp: RenderInput, role: str) -> list[str]:
    return leaderworkerset(inp)["spec"]["leaderWorkerTemplate"][f"{role}Template"]["spec"]["containers"][0]["args"]


@settings(settings.get_profile("render"))
@given(inputs())
def test_merged_argv_has_each_flag_once(case: tuple[RenderInput, tuple[str, ...]]) -> None:
    inp, plan = case
    args = _args(inp, "leader")
    assert args == _args(inp, "worker")
    fl = flags(args)
    assert len(fl) == len(set(fl)), fl
    for flag in ("--tp-size", "--host", "--port", "--model-path"):
        assert fl.count(flag) == 1, flag
    assert args[: len(plan)] == list(plan)  # plan first, verbatim
    assert args[args.index("--port") + 1] == str(inp.port)
    multi = inp.nodes_per_group > 1
    assert ("--dist-init-addr" in args) is multi
    assert ("--node-rank" in args) is multi
    if multi:
        assert args[args.index("--dist-init-addr") + 1] == f"$(LWS_LEADER_ADDRESS):{inp.dist_port}"
    assert ("--enable-metrics" in args) is inp.metrics_enabled
    objs = children(inp)
    assert json.loads(json.dumps(objs)) == objs
    assert children(inp) == objs


@settings(settings.get_profile("render"))
@given(inputs(), st.data())
def test_extra_args_repeating_a_plan_flag_raise(case: tuple[RenderInput, tuple[str, ...]], data: Any) -> None:
    inp, plan = case
    plan_flags = [t for t in plan if is_flag(t)]
    victim = data.draw(st.sampled_from(plan_flags))
    spelling = data.draw(st.sampled_from(["plain", "equals"]))
    token = f"{victim}=1" if spelling == "equals" else victim
    extra = (*inp.extra_args, token) if spelling == "equals" else (*inp.extra_args, token, "1")
    assert canonical_flag(token) in {canonical_flag(f) for f in plan_flags}
    bad = RenderInput(**{**inp.__dict__, "extra_args": extra})
    with pytest.raises(ValueError):
        leaderworkerset(bad)
    with pytest.raises(ValueError):
        children(bad)


@settings(settings.get_profile("render"))
@given(
    inputs(), st.sampled_from(["--host", "--port", "--nnodes", "--node-rank", "--dist-init-addr", "--enable-metrics"])
)
def test_builder_owned_flags_are_rejected_anywhere(case: tuple[RenderInput, tuple[str, ...]], flag: str) -> None:
    inp, _ = case
    for field in ("sglang_args", "extra_args"):
        bad = RenderInput(**{**inp.__dict__, field: (*getattr(inp, field), flag, "x")})
        with pytest.raises(ValueError):
            leaderworkerset(bad)
