"""Every field of both API models is read: setting it to a non-default value changes what the operator renders or
does (children, status.plan, the autoscaler's settings and scrape port, whether it autoscales at all).

The walk is over the pydantic models themselves, so a new field without a case here fails
`test_every_field_has_a_case`; and each case fails when the operator ignores its field. Admission and reconcile both
go through `desired.desired_state`, so this is what either path sees."""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

import pytest
from pydantic import BaseModel

from moe_operator.api.v1alpha1 import AcceleratorPoolSpec, MoEDeploymentSpec
from moe_operator.autoscale.controller import active, law_params, metrics_port
from moe_operator.autoscale.prefill_step import prefill_enabled, prefill_params
from moe_operator.desired import desired_state, typed
from moe_operator.planner.catalog import DATA_DIR, _load_yaml, _unwrap
from moe_operator.planning import SpecProblem, plan_summary
from moe_operator.render.meta import A_SPEC_HASH


def _config(model: str, **changes: Any) -> dict[str, Any]:
    doc = _load_yaml(DATA_DIR / f"{model}.yaml")
    return {**_unwrap(doc["config"], {}, doc["sources"], ""), **changes}


CM_DATA = {"config.json": json.dumps(_config("kimi-k2")), "other.json": json.dumps(_config("deepseek-v3"))}
POOL: dict[str, Any] = {
    "accelerator": {"profile": "h200"},
    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H200"},
    "rdma": {"resourceName": "rdma/ib"},
    "modelCache": {"hostPathPrefixes": ["/models"]},
}
SPEC: dict[str, Any] = {
    "model": {"catalog": "kimi-k2.5"},
    "weights": {"huggingFace": {"repo": "moonshotai/Kimi-K2.5"}},
    "precision": "int4",
    "sessions": {"target": 4, "contextTokens": 8192},
    "pool": "h200",
    "autoscaling": {"enabled": True, "maxGroups": 4},
}
DENSE = {"planning": {"objective": "max-sessions-per-gpu"}}  # a 4-node group: multi-node fields matter
PF: dict[str, Any] = {"promptTokensPerSecond": 20000, "autoscaling": {"enabled": True}}
PD: dict[str, Any] = {"disaggregation": {"prefill": PF}}


def pd(**prefill: Any) -> dict[str, Any]:
    return {"disaggregation": {"prefill": {**PF, **prefill}}}


ASCEND_POOL = {"accelerator": {"profile": "ascend-910c"}, "nodeSelector": {"accelerator": "huawei-Ascend910"}}
ASCEND = {"pool": "ascend", "precision": "w4a8"}
ASCEND_PD = {"promptTokensPerSecond": 5000}
NO_AUTO = {"autoscaling": {"enabled": False}}

# field -> (base patch, changed patch): top-level keys of a patch replace the spec's (None removes one)
DEPLOYMENT: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "model.catalog": ({}, {"model": {"catalog": "kimi-k2"}}),
    "model.config": ({}, {"model": {"config": _config("kimi-k2")}}),
    "model.configMapRef.name": ({}, {"model": {"configMapRef": {"name": "cm"}}}),
    "model.configMapRef.key": ({"model": {"configMapRef": {"name": "cm"}}},
                               {"model": {"configMapRef": {"name": "cm", "key": "other.json"}}}),
    "model.servedModelName": ({}, {"model": {"catalog": "kimi-k2.5", "servedModelName": "kimi"}}),
    "weights.pvc.claimName": ({}, {"weights": {"pvc": {"claimName": "kimi"}}}),
    "weights.pvc.subPath": ({"weights": {"pvc": {"claimName": "kimi"}}},
                            {"weights": {"pvc": {"claimName": "kimi", "subPath": "k2.5"}}}),
    "weights.hostPath.path": ({}, {"weights": {"hostPath": {"path": "/models/kimi"}}}),
    "weights.huggingFace.repo": ({}, {"weights": {"huggingFace": {"repo": "org/kimi-fork"}}}),
    "weights.huggingFace.revision": ({}, {"weights": {"huggingFace": {"repo": "moonshotai/Kimi-K2.5",
                                                                      "revision": "0123abc"}}}),
    "weights.huggingFace.tokenSecretRef.name": (
        {}, {"weights": {"huggingFace": {"repo": "moonshotai/Kimi-K2.5", "tokenSecretRef": {"name": "hf"}}}}),
    "weights.huggingFace.tokenSecretRef.key": (
        {"weights": {"huggingFace": {"repo": "moonshotai/Kimi-K2.5", "tokenSecretRef": {"name": "hf"}}}},
        {"weights": {"huggingFace": {"repo": "moonshotai/Kimi-K2.5", "tokenSecretRef": {"name": "hf", "key": "t"}}}}),
    "precision": ({}, {"precision": "fp8"}),
    "kvCacheDtype": ({}, {"kvCacheDtype": "fp8_e4m3"}),
    "sessions.target": ({}, {"sessions": {"target": 400, "contextTokens": 8192}}),
    "sessions.contextTokens": ({}, {"sessions": {"target": 4, "contextTokens": 65536}}),
    "sessions.averageContextTokens": ({**NO_AUTO, "sessions": {"target": 200, "contextTokens": 65536}},
                                      {**NO_AUTO, "sessions": {"target": 200, "contextTokens": 65536,
                                                               "averageContextTokens": 8192}}),
    "pool": ({}, {"pool": "h200b"}),
    "pools": ({}, {"pool": None, "pools": ["missing", "h200b"]}),
    "replicas": ({}, {"replicas": 3}),
    "autoscaling.enabled": (NO_AUTO, {"autoscaling": {"enabled": True, "maxGroups": 4}}),
    "autoscaling.minGroups": ({}, {"autoscaling": {"enabled": True, "maxGroups": 4, "minGroups": 2}}),
    "autoscaling.maxGroups": ({}, {"autoscaling": {"enabled": True, "maxGroups": 3}}),
    "autoscaling.targetKVUtilization": ({}, {"autoscaling": {"enabled": True, "maxGroups": 4,
                                                             "targetKVUtilization": 0.5}}),
    "autoscaling.targetInterTokenLatencySeconds": ({}, {"autoscaling": {"enabled": True, "maxGroups": 4,
                                                                        "targetInterTokenLatencySeconds": 0.05}}),
    "autoscaling.targetTimeToFirstTokenSeconds": ({}, {"autoscaling": {"enabled": True, "maxGroups": 4,
                                                                       "targetTimeToFirstTokenSeconds": 5}}),
    "autoscaling.scaleDownStabilizationSeconds": ({}, {"autoscaling": {"enabled": True, "maxGroups": 4,
                                                                       "scaleDownStabilizationSeconds": 60}}),
    "autoscaling.coldStartSeconds": ({}, {"autoscaling": {"enabled": True, "maxGroups": 4, "coldStartSeconds": 0}}),
    "autoscaling.metricsPort": ({}, {"autoscaling": {"enabled": True, "maxGroups": 4, "metricsPort": 9090}}),
    "sglang.image": ({}, {"sglang": {"image": "example.com/sglang:custom"}}),
    "sglang.extraArgs": ({}, {"sglang": {"extraArgs": ["--disable-radix-cache"]}}),
    "sglang.env": ({}, {"sglang": {"env": [{"name": "NCCL_DEBUG", "value": "INFO"}]}}),
    "sglang.port": ({}, {"sglang": {"port": 31000}}),
    "sglang.apiKeySecretRef.name": ({}, {"sglang": {"apiKeySecretRef": {"name": "sglang-key"}}}),
    "sglang.apiKeySecretRef.key": ({"sglang": {"apiKeySecretRef": {"name": "sglang-key"}}},
                                   {"sglang": {"apiKeySecretRef": {"name": "sglang-key", "key": "api-key"}}}),
    "router.enabled": ({}, {"router": {"enabled": False}}),
    "router.policy": ({}, {"router": {"policy": "round_robin"}}),
    "router.replicas": ({}, {"router": {"replicas": 2}}),
    "router.image": ({}, {"router": {"image": "example.com/router:custom"}}),
    "placement.exclusiveTopologyKey": ({}, {"placement": {"exclusiveTopologyKey": "example.com/rack"}}),
    "planning.objective": ({}, DENSE),
    "drain.timeoutSeconds": ({}, {"drain": {"timeoutSeconds": 0}}),
    "maxGroups": ({**NO_AUTO, "sessions": {"target": 200, "contextTokens": 8192}},
                  {**NO_AUTO, "sessions": {"target": 200, "contextTokens": 8192}, "maxGroups": 2}),
    "maxNodesPerGroup": (DENSE, {**DENSE, "maxNodesPerGroup": 1}),
    "resources.cpu": ({}, {"resources": {"cpu": "64"}}),
    "resources.memory": ({}, {"resources": {"memory": "512Gi"}}),
    "resources.ephemeralStorage": ({}, {"resources": {"ephemeralStorage": "1Ti"}}),
    "networkPolicy.enabled": ({}, {"networkPolicy": {"enabled": False}}),
    "networkPolicy.metricsFrom": ({}, {"networkPolicy": {"metricsFrom": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}}),
    "networkPolicy.routerFrom": ({}, {"networkPolicy": {"routerFrom": [
        {"podSelector": {"matchLabels": {"app": "client"}}}]}}),
    "disaggregation.transferBackend": (PD, {"disaggregation": {"prefill": PF, "transferBackend": "nixl"}}),
    "disaggregation.bootstrapPort": (PD, {"disaggregation": {"prefill": PF, "bootstrapPort": 9000}}),
    "disaggregation.ascendStoreUrl": (
        {**ASCEND, "disaggregation": {"prefill": ASCEND_PD, "ascendStoreUrl": "tcp://10.0.0.1:6379"}},
        {**ASCEND, "disaggregation": {"prefill": ASCEND_PD, "ascendStoreUrl": "tcp://10.0.0.2:6379"}}),
    "disaggregation.prefill.promptTokensPerSecond": (PD, pd(promptTokensPerSecond=200000)),
    "disaggregation.prefill.promptTokens": (PD, pd(promptTokens=1000)),
    "disaggregation.prefill.ttftSeconds": (PD, pd(ttftSeconds=2)),
    "disaggregation.prefill.groups": (PD, pd(groups=3)),
    "disaggregation.prefill.minGroups": (PD, pd(minGroups=3)),
    "disaggregation.prefill.maxGroups": (pd(promptTokensPerSecond=200000), pd(promptTokensPerSecond=200000,
                                                                              maxGroups=2)),
    "disaggregation.prefill.maxNodesPerGroup": ({"precision": "fp8", **PD}, {"precision": "fp8",
                                                                            **pd(maxNodesPerGroup=1)}),
    "disaggregation.prefill.autoscaling.enabled": (pd(autoscaling={"enabled": False}), PD),
    "disaggregation.prefill.autoscaling.targetUtilization": (PD, pd(autoscaling={"enabled": True,
                                                                                  "targetUtilization": 0.3})),
    "disaggregation.prefill.autoscaling.scaleDownStabilizationSeconds": (
        PD, pd(autoscaling={"enabled": True, "scaleDownStabilizationSeconds": 30})),
    "disaggregation.ratio.min": (PD, {"disaggregation": {"prefill": PF, "ratio": {"min": 3}}}),
    "disaggregation.ratio.max": (pd(minGroups=2), {"disaggregation": {"prefill": {**PF, "minGroups": 2},
                                                                      "ratio": {"max": 4}}}),
}
CUSTOM = {"accelerator": {"profile": "custom", "memoryGB": 141, "devicesPerNode": 8,
                          "supportedPrecisions": ["bf16", "int4", "w8a8"], "vendor": "nvidia"},
          "sglangImage": "example.com/sglang:pool"}
POOL_FIELDS: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {  # (spec patch, pool base, changed)
    "accelerator.profile": ({}, {}, {"accelerator": {"profile": "b200"}}),
    "accelerator.memoryGB": ({}, {}, {"accelerator": {"profile": "h200", "memoryGB": 100}}),
    "accelerator.devicesPerNode": ({}, {}, {"accelerator": {"profile": "h200", "devicesPerNode": 4}}),
    "accelerator.supportedPrecisions": ({}, {}, {"accelerator": {"profile": "h200", "supportedPrecisions": ["bf16"]}}),
    "accelerator.vendor": ({}, CUSTOM, {**CUSTOM, "accelerator": {**CUSTOM["accelerator"], "vendor": "huawei"}}),
    "deviceResourceName": ({}, {}, {"deviceResourceName": "nvidia.com/h200"}),
    "nodeSelector": ({}, {}, {"nodeSelector": {"example.com/pool": "a"}}),
    "tolerations": ({}, {}, {"tolerations": [{"key": "example.com/gpu", "operator": "Exists"}]}),
    "rdma.resourceName": ({}, {}, {"rdma": {"resourceName": "nvidia.com/hostdev"}}),
    "rdma.count": ({}, {}, {"rdma": {"resourceName": "rdma/ib", "count": 4}}),
    "rdma.devices": ({}, {}, {"rdma": {"resourceName": "rdma/ib", "devices": ["/dev/infiniband"]}}),
    "sglangImage": ({}, {}, {"sglangImage": "example.com/sglang:pool"}),
    "costPerNodeHour": ({}, {}, {"costPerNodeHour": 10}),
    "topologyKey": (DENSE, {}, {"topologyKey": "example.com/nvlink-domain"}),
    "maxNodes": (DENSE, {}, {"maxNodes": 2}),
    "node.cpu": ({}, {}, {"node": {"cpu": "224"}}),
    "node.memory": ({}, {}, {"node": {"memory": "2000Gi"}}),
    "node.ephemeralStorage": ({}, {}, {"node": {"ephemeralStorage": "500Gi"}}),  # Kimi downloads 622 GiB
    "requireImageDigests": ({}, {}, {"requireImageDigests": True}),
    "nodeFailureTolerationSeconds": ({}, {}, {"nodeFailureTolerationSeconds": 30}),
    # the prefixes gate weights.hostPath: /models/kimi is allowed under /models, refused under /data
    "modelCache.hostPathPrefixes": ({"weights": {"hostPath": {"path": "/models/kimi"}}}, {},
                                    {"modelCache": {"hostPathPrefixes": ["/data"]}}),
    "rdma.ibDevices": (PD, {}, {"rdma": {"resourceName": "rdma/ib", "ibDevices": ["mlx5_0", "mlx5_1"]}}),
}


def _leaves(model: type[BaseModel], prefix: str = "") -> list[str]:
    out: list[str] = []
    for name, f in model.model_fields.items():
        path = prefix + (f.alias or name)
        ann = f.annotation
        args = [a for a in (typing.get_args(ann) or (ann,)) if a is not type(None)]
        if typing.get_origin(ann) is list or any(typing.get_origin(a) is list for a in args):
            args = []  # a list field (env, tolerations) is one field
        sub = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        out += _leaves(sub[0], path + ".") if sub else [path]  # lists (env, tolerations) count as one field
    return out


def _patch(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = {**base, **patch}
    return {k: v for k, v in out.items() if v is not None}


async def _outcome(spec: dict[str, Any], pool: dict[str, Any]) -> str:
    pools = {"h200": pool, "h200b": pool, "ascend": ASCEND_POOL}

    async def get_pool(name: str) -> dict[str, Any] | None:
        return {"metadata": {"name": name}, "spec": pools[name]} if name in pools else None

    async def get_cm(name: str) -> dict[str, Any] | None:
        return {"data": CM_DATA} if name == "cm" else None

    body = {"apiVersion": "moe-operator.io/v1alpha1", "kind": "MoEDeployment",
            "metadata": {"name": "kimi", "namespace": "ns", "uid": "u-1"}, "spec": spec}
    try:
        want = await desired_state(body, get_pool, get_cm)
    except SpecProblem as exc:
        return f"problem {exc.field}: {exc.message}"
    s = typed(body).spec
    # the spec-hash annotation changes with any edit of the spec: it must not count as "read"
    text = json.dumps(want.children, sort_keys=True)
    children = json.loads(text.replace(f'"{A_SPEC_HASH}": "{want.render.spec_hash}"', f'"{A_SPEC_HASH}": ""'))
    pf = want.planned.prefill
    return json.dumps({
        "children": children, "plan": plan_summary(want.planned.plan),
        "law": dataclasses.asdict(law_params(s, measured_cold_start=123.0, planned_groups=1)),
        "scrape_port": metrics_port(s), "autoscaled": active(s),
        "prefill_plan": pf.to_dict() if pf else None, "prefill_autoscaled": prefill_enabled(s),
        "prefill_law": dataclasses.asdict(prefill_params(s, 1000.0)) if s.disaggregation else None,
    }, sort_keys=True)


async def test_the_spec_hash_alone_does_not_count() -> None:
    a = await _outcome(SPEC, POOL)
    assert f'"{A_SPEC_HASH}": ""' in a


def test_every_field_has_a_case() -> None:
    assert sorted(DEPLOYMENT) == sorted(_leaves(MoEDeploymentSpec))
    assert sorted(POOL_FIELDS) == sorted(_leaves(AcceleratorPoolSpec))


@pytest.mark.parametrize("field", sorted(DEPLOYMENT))
async def test_deployment_field_changes_what_the_operator_does(field: str) -> None:
    base, changed = DEPLOYMENT[field]
    before = await _outcome(_patch(SPEC, base), POOL)
    after = await _outcome(_patch(SPEC, changed), POOL)
    assert not before.startswith("problem"), before
    assert after != before, f"spec.{field} is ignored"


@pytest.mark.parametrize("field", sorted(POOL_FIELDS))
async def test_pool_field_changes_what_the_operator_does(field: str) -> None:
    spec_patch, base, changed = POOL_FIELDS[field]
    spec = _patch(SPEC, spec_patch)
    before = await _outcome(spec, _patch(POOL, base))
    after = await _outcome(spec, _patch(POOL, changed))
    assert not before.startswith("problem"), before
    assert after != before, f"AcceleratorPool spec.{field} is ignored"


async def test_a_custom_pool_without_an_image_is_refused_with_the_field() -> None:
    pool = {k: v for k, v in CUSTOM.items() if k != "sglangImage"}
    assert (await _outcome(SPEC, pool)).startswith("problem spec.sglang.image: no SGLang image")


async def test_admission_and_reconcile_refuse_what_the_renderer_refuses() -> None:
    """Issue 11 §2: six specs passed admission and were then refused by the renderer forever; --context-length was
    rendered over the plan's value with the webhook bypassed. One check now, naming the field."""
    from moe_operator.admission import check_moedeployment

    async def get_pool(name: str) -> dict[str, Any] | None:
        return {"metadata": {"name": name}, "spec": POOL}

    cases = {
        "--enable-metrics": ({"extraArgs": ["--enable-metrics"]}, "spec.sglang.extraArgs"),
        "--pp-size": ({"extraArgs": ["--pp-size", "2"]}, "spec.sglang.extraArgs"),
        "--context-length": ({"extraArgs": ["--context-length", "999"]}, "spec.sglang.extraArgs"),
        **{env: ({"env": [{"name": env, "value": "x"}]}, "spec.sglang.env")
           for env in ("LWS_LEADER_ADDRESS", "LWS_WORKER_INDEX", "LWS_GROUP_SIZE", "HF_TOKEN")},
    }  # fmt: skip
    for what, (sglang, field) in cases.items():
        body = {"apiVersion": "moe-operator.io/v1alpha1", "kind": "MoEDeployment",
                "metadata": {"name": "kimi", "namespace": "ns"}, "spec": {**SPEC, "sglang": sglang}}
        msg = await check_moedeployment(body, get_pool)
        assert msg is not None and msg.startswith(field + ": "), (what, msg)
        with pytest.raises(SpecProblem) as e:  # what reconcile runs: the same verdict
            await desired_state(body, get_pool)
        assert f"{e.value.field}: {e.value.message}" == msg
