"""The planner's API inputs are read: spec.planning.objective, the pool's rdma and maxNodes (each test fails when
the operator ignores the field), and status.plan says which objective chose the layout and what the runner-up costs."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from moe_operator.api.v1alpha1 import MoEDeploymentSpec
from moe_operator.planning import SpecProblem, plan_deployment, plan_summary

POOL: dict[str, Any] = {
    "metadata": {"name": "h200"},
    "spec": {
        "accelerator": {"profile": "h200"},
        "rdma": {"resourceName": "rdma/ib", "count": 8},
        "costPerNodeHour": 30,
    },
}
SPEC: dict[str, Any] = {
    "model": {"catalog": "glm-5"},
    "weights": {"huggingFace": {"repo": "zai-org/GLM-5-FP8"}},
    "precision": "fp8",
    "sessions": {"target": 100, "contextTokens": 131072},
    "pool": "h200",
}


async def _plan(spec: dict[str, Any], pool: dict[str, Any] = POOL) -> Any:
    async def get_pool(name: str) -> dict[str, Any] | None:
        return pool if name == "h200" else None

    return (await plan_deployment(MoEDeploymentSpec.model_validate(spec), get_pool)).plan


async def test_objective_field_is_read() -> None:
    cheap = await _plan(SPEC)
    small = await _plan({**SPEC, "planning": {"objective": "min-group"}})
    assert cheap.objective == "min-cost" and small.objective == "min-group"
    assert (cheap.nodes_per_group, cheap.total_nodes) == (2, 4)
    assert small.nodes_per_group == 1 and small.total_nodes > cheap.total_nodes
    s = plan_summary(cheap)
    assert s["objective"] == "min-cost" and s["totalNodes"] == 4 and s["costPerHour"] == "120.00"
    assert s["runnerUp"].endswith("/h") and "nodes" in s["runnerUp"]
    assert s["moeA2ABackend"] == "none"


async def test_pool_without_rdma_gets_single_node_groups() -> None:
    pool = copy.deepcopy(POOL)
    del pool["spec"]["rdma"]
    p = await _plan(SPEC, pool)
    assert p.nodes_per_group == 1
    assert any("needs RDMA" in a["reason"] for a in p.alternatives)


async def test_pool_max_nodes_caps_the_fleet() -> None:
    pool = copy.deepcopy(POOL)
    pool["spec"]["maxNodes"] = 3
    with pytest.raises(SpecProblem) as e:
        await _plan(SPEC, pool)
    assert e.value.field == "spec.pool" and "maxNodes 3" in e.value.message
    pool["spec"]["maxNodes"] = 4
    assert (await _plan(SPEC, pool)).total_nodes <= 4


def test_remembered_plans_are_the_planners_and_cannot_be_changed_by_a_caller() -> None:
    from moe_operator.planner import PlanRequest, plan
    from moe_operator.planning import planned_for

    req = PlanRequest(model="kimi-k2.5", precision="int4", sessions=200, context=131072, accelerator="h200")
    first = planned_for(req)
    assert first == plan(req)
    first.sglang_args.append("--mutated")
    assert planned_for(req) == plan(req)
    other = PlanRequest(model="kimi-k2.5", precision="int4", sessions=300, context=131072, accelerator="h200")
    assert planned_for(other).groups != planned_for(req).groups  # the key is the whole request


def test_status_says_what_one_group_start_downloads_with_hugging_face_weights() -> None:
    from moe_operator.planner import PlanRequest, plan
    from moe_operator.planning import plan_summary

    p = plan(PlanRequest(model="kimi-k2.5", precision="int4", sessions=100, context=131072, accelerator="h200"))
    hf = plan_summary(p, downloads=True)
    assert hf["downloadBytesPerGroup"] == int(p.checkpoint_bytes * p.nodes_per_group) > 1e12  # 2 pods x ~595 GB
    assert "downloadBytesPerGroup" not in plan_summary(p)  # PVC / hostPath
