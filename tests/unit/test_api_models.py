"""The pydantic models: examples validate, bad specs are rejected naming the field, the Python mirror of the CRD
(schema + CEL) agrees with the schema, status helpers behave.

BAD_MOED / BAD_POOL / GOOD_MOED are plain data so the cluster tier can replay them against a real apiserver
(`cel=True` rows are rejected there only by x-kubernetes-validations).
"""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from moe_operator.api import (
    AcceleratorPool,
    InvalidResource,
    MoEDeployment,
    MoEDeploymentStatus,
    PlanStatus,
    validate_object,
)
from moe_operator.api.crd import ACCELERATOR_POOL, MOE_DEPLOYMENT, openapi_schema
from moe_operator.api.openapi import apply_defaults, validate

ROOT = Path(__file__).resolve().parents[2]
# examples of this API (examples/rig/ holds the rig's own LeaderWorkerSet demo)
EXAMPLES = sorted(
    p
    for p in (ROOT / "examples").rglob("*.yaml")
    if any(d and d.get("kind") in ("MoEDeployment", "AcceleratorPool") for d in yaml.safe_load_all(p.read_text()))
)
DELETE = object()

MOED: dict[str, Any] = {
    "apiVersion": "moe-operator.io/v1alpha1",
    "kind": "MoEDeployment",
    "metadata": {"name": "kimi", "namespace": "default"},
    "spec": {
        "model": {"catalog": "kimi-k2.5"},
        "weights": {"pvc": {"claimName": "models", "subPath": "kimi-k2.5"}},
        "precision": "int4",
        "sessions": {"target": 64, "contextTokens": 131072},
        "pool": "h200",
    },
}
POOL: dict[str, Any] = {
    "apiVersion": "moe-operator.io/v1alpha1",
    "kind": "AcceleratorPool",
    "metadata": {"name": "h200"},
    "spec": {"accelerator": {"profile": "h200"}, "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H200"}},
}


def patched(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(base)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = body
        for p in parents:
            node = node.setdefault(p, {})
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return body


# (id, changes, text the error must contain, rejected by CEL only (True) or by the structural schema (False))
BAD_MOED: list[tuple[str, dict[str, Any], str, bool]] = [
    ("no-model", {"spec.model": DELETE}, "spec.model", False),
    ("model-empty", {"spec.model": {}}, "model.catalog", True),
    ("model-catalog-and-config", {"spec.model.config": {"model_type": "deepseek_v3"}}, "model.config", True),
    ("model-unknown-catalog", {"spec.model.catalog": "llama-4"}, "spec.model.catalog", False),
    ("weights-missing", {"spec.weights": DELETE}, "spec.weights", False),
    ("weights-two-sources", {"spec.weights.hostPath": {"path": "/models"}}, "weights.hostPath", True),
    ("weights-pvc-absolute-subpath", {"spec.weights.pvc.subPath": "/etc"}, "weights.pvc.subPath", True),
    ("weights-pvc-dotdot", {"spec.weights.pvc.subPath": "a/../../b"}, "weights.pvc.subPath", True),
    (
        "weights-hostpath-relative",
        {"spec.weights": {"hostPath": {"path": "models"}}},
        "spec.weights.hostPath.path",
        False,
    ),
    (
        "weights-hf-bad-repo",
        {"spec.weights": {"huggingFace": {"repo": "a/b/c"}}},
        "spec.weights.huggingFace.repo",
        False,
    ),
    (
        "weights-hf-secret-no-name",
        {"spec.weights": {"huggingFace": {"repo": "a/b", "tokenSecretRef": {"key": "t"}}}},
        "spec.weights.huggingFace.tokenSecretRef.name",
        False,
    ),
    ("precision-unknown", {"spec.precision": "fp16"}, "spec.precision", False),
    ("precision-missing", {"spec.precision": DELETE}, "spec.precision", False),
    ("kv-dtype-unknown", {"spec.kvCacheDtype": "int8"}, "spec.kvCacheDtype", False),
    ("sessions-target-zero", {"spec.sessions.target": 0}, "spec.sessions.target", False),
    ("sessions-target-huge", {"spec.sessions.target": 1_000_001}, "spec.sessions.target", False),
    ("sessions-target-string", {"spec.sessions.target": "many"}, "spec.sessions.target", False),
    ("sessions-context-huge", {"spec.sessions.contextTokens": 10_485_761}, "spec.sessions.contextTokens", False),
    (
        "sessions-average-above-context",
        {"spec.sessions.averageContextTokens": 200_000},
        "sessions.averageContextTokens",
        True,
    ),
    ("pool-and-pools", {"spec.pools": ["b200"]}, "spec.pool or spec.pools", True),
    ("no-pool", {"spec.pool": DELETE}, "spec.pool or spec.pools", True),
    ("pools-empty", {"spec.pool": DELETE, "spec.pools": []}, "spec.pools", False),
    ("pools-duplicate", {"spec.pool": DELETE, "spec.pools": ["h200", "h200"]}, "spec.pools", False),
    ("pools-too-many", {"spec.pool": DELETE, "spec.pools": [f"p{i}" for i in range(9)]}, "spec.pools", False),
    ("pool-bad-name", {"spec.pool": "H200_Pool"}, "spec.pool", False),
    ("replicas-negative", {"spec.replicas": -1}, "spec.replicas", False),
    ("replicas-above-max-groups", {"spec.replicas": 5, "spec.maxGroups": 4}, "spec.replicas", True),
    (
        "autoscaling-min-above-max",
        {"spec.autoscaling": {"enabled": True, "minGroups": 5, "maxGroups": 2}},
        "autoscaling.minGroups",
        True,
    ),
    ("autoscaling-enabled-unbounded", {"spec.autoscaling": {"enabled": True}}, "autoscaling.maxGroups", True),
    (
        "autoscaling-max-above-cap",
        {"spec.autoscaling": {"maxGroups": 9}, "spec.maxGroups": 8},
        "autoscaling.maxGroups",
        True,
    ),
    (
        "autoscaling-min-above-cap",
        {"spec.autoscaling": {"minGroups": 9}, "spec.maxGroups": 8},
        "autoscaling.minGroups",
        True,
    ),
    (
        "autoscaling-kv-target-high",
        {"spec.autoscaling": {"targetKVUtilization": 0.99}},
        "spec.autoscaling.targetKVUtilization",
        False,
    ),
    (
        "autoscaling-kv-target-low",
        {"spec.autoscaling": {"targetKVUtilization": 0.05}},
        "spec.autoscaling.targetKVUtilization",
        False,
    ),
    ("autoscaling-itl-target-too-low", {"spec.autoscaling": {"targetInterTokenLatencySeconds": 0.0001}},
     "spec.autoscaling.targetInterTokenLatencySeconds", False),
    # the apiserver lets an integer 0 pass the structural minimum (int(0.001) = 0): its CEL twin refuses it there
    ("autoscaling-itl-target-int-zero", {"spec.autoscaling": {"targetInterTokenLatencySeconds": 0}},
     "targetInterTokenLatencySeconds", False),
    ("autoscaling-kv-target-int-zero", {"spec.autoscaling": {"targetKVUtilization": 0}}, "targetKVUtilization", False),
    ("pd-prefill-target-int-zero", {"spec.disaggregation": {"prefill": {"promptTokensPerSecond": 1000,
                                                                          "autoscaling": {"targetUtilization": 0}}}},
     "targetUtilization", False),
    ("autoscaling-ttft-target-high", {"spec.autoscaling": {"targetTimeToFirstTokenSeconds": 601}},
     "spec.autoscaling.targetTimeToFirstTokenSeconds", False),
    ("autoscaling-ttft-target-with-pd", {"spec.autoscaling": {"targetTimeToFirstTokenSeconds": 5},
                                         "spec.disaggregation": {"prefill": {"promptTokensPerSecond": 1000}}},
     "targetTimeToFirstTokenSeconds", True),
    ("autoscaling-metrics-port", {"spec.autoscaling": {"metricsPort": 70000}}, "spec.autoscaling.metricsPort", False),
    ("drain-too-long", {"spec.drain": {"timeoutSeconds": 86401}}, "spec.drain.timeoutSeconds", False),
    ("sglang-managed-flag", {"spec.sglang": {"extraArgs": ["--tp-size=8"]}}, "sglang.extraArgs", True),
    ("sglang-managed-flag-split", {"spec.sglang": {"extraArgs": ["--nnodes", "2"]}}, "sglang.extraArgs", True),
    ("sglang-too-many-args", {"spec.sglang": {"extraArgs": ["--x"] * 65}}, "spec.sglang.extraArgs", False),
    (
        "sglang-env-duplicate",
        {"spec.sglang": {"env": [{"name": "A", "value": "1"}, {"name": "A"}]}},
        "sglang.env",
        False,
    ),
    ("sglang-env-bad-name", {"spec.sglang": {"env": [{"name": "1 BAD"}]}}, "spec.sglang.env[0].name", False),
    ("sglang-port-zero", {"spec.sglang": {"port": 0}}, "spec.sglang.port", False),
    ("sglang-image-space", {"spec.sglang": {"image": "lmsysorg/sglang latest"}}, "spec.sglang.image", False),
    ("router-policy-unknown", {"spec.router": {"policy": "manual"}}, "spec.router.policy", False),
    ("router-replicas-zero", {"spec.router": {"replicas": 0}}, "spec.router.replicas", False),
    (
        "placement-bad-key",
        {"spec.placement": {"exclusiveTopologyKey": "not a key"}},
        "spec.placement.exclusiveTopologyKey",
        False,
    ),
    ("max-nodes-per-group-zero", {"spec.maxNodesPerGroup": 0}, "spec.maxNodesPerGroup", False),
    ("unknown-spec-field", {"spec.sessionz": {"target": 1}}, "spec.sessionz", False),
    ("name-too-long", {"metadata.name": "k" * 46}, "metadata.name", False),
    # hostPath: clean absolute paths only (the prefix check against the pool is the webhook's)
    ("weights-hostpath-root", {"spec.weights": {"hostPath": {"path": "/"}}}, "spec.weights.hostPath.path", False),
    ("weights-hostpath-dotdot", {"spec.weights": {"hostPath": {"path": "/mnt/models/../../etc"}}},
     "spec.weights.hostPath.path", False),
    ("weights-hostpath-trailing-slash", {"spec.weights": {"hostPath": {"path": "/mnt/models/"}}},
     "spec.weights.hostPath.path", False),
    ("sglang-env-cuda-visible-devices", {"spec.sglang": {"env": [{"name": "CUDA_VISIBLE_DEVICES", "value": "0"}]}},
     "sglang.env", True),
    ("sglang-env-ascend-visible-devices", {"spec.sglang": {"env": [{"name": "ASCEND_RT_VISIBLE_DEVICES",
                                                                      "value": "0"}]}}, "sglang.env", True),
    ("sglang-image-semicolon", {"spec.sglang": {"image": "image;id"}}, "spec.sglang.image", False),
    ("sglang-image-command-substitution", {"spec.sglang": {"image": "$(id)"}}, "spec.sglang.image", False),
    ("sglang-image-uppercase", {"spec.sglang": {"image": "UPPER/Case:tag"}}, "spec.sglang.image", False),
    ("sglang-image-bad-digest", {"spec.sglang": {"image": "lmsysorg/sglang@sha256:xyz"}}, "spec.sglang.image",
     False),
    ("router-image-empty-tag", {"spec.router": {"image": "lmsysorg/sgl-router:"}}, "spec.router.image", False),
    ("api-key-secret-without-name", {"spec.sglang": {"apiKeySecretRef": {"key": "k"}}},
     "spec.sglang.apiKeySecretRef.name", False),
    ("name-not-dns-1035", {"metadata.name": "1kimi"}, "metadata.name", False),
]

BAD_POOL: list[tuple[str, dict[str, Any], str, bool]] = [
    ("toleration-tolerates-everything", {"spec.tolerations": [{"operator": "Exists"}]}, "tolerations[].key", True),
    ("rdma-device-etc-shadow", {"spec.rdma": {"resourceName": "rdma/ib", "devices": ["/etc/shadow"]}},
     "spec.rdma.devices", True),
    ("rdma-device-root", {"spec.rdma": {"resourceName": "rdma/ib", "devices": ["/"]}}, "spec.rdma.devices[0]", False),
    ("rdma-device-dotdot", {"spec.rdma": {"resourceName": "rdma/ib", "devices": ["/dev/infiniband/../sda"]}},
     "spec.rdma.devices[0]", False),
    ("rdma-device-disk", {"spec.rdma": {"resourceName": "rdma/ib", "devices": ["/dev/nvme0n1"]}},
     "spec.rdma.devices", True),
    ("device-resource-cpu", {"spec.deviceResourceName": "cpu"}, "spec.deviceResourceName", True),
    ("device-resource-native-domain", {"spec.deviceResourceName": "kubernetes.io/gpu"}, "spec.deviceResourceName",
     True),
    ("device-resource-other-vendor", {"spec.deviceResourceName": "huawei.com/Ascend910"}, "spec.deviceResourceName",
     True),
    ("model-cache-etc", {"spec.modelCache": {"hostPathPrefixes": ["/etc"]}}, "spec.modelCache.hostPathPrefixes", True),
    ("model-cache-under-kubelet", {"spec.modelCache": {"hostPathPrefixes": ["/var/lib/kubelet/pods"]}},
     "spec.modelCache.hostPathPrefixes", True),
    ("model-cache-parent-of-kubelet", {"spec.modelCache": {"hostPathPrefixes": ["/var"]}},
     "spec.modelCache.hostPathPrefixes", True),
    ("model-cache-root", {"spec.modelCache": {"hostPathPrefixes": ["/"]}}, "spec.modelCache.hostPathPrefixes[0]",
     False),
    ("pool-image-semicolon", {"spec.sglangImage": "lmsysorg/sglang;reboot"}, "spec.sglangImage", False),
    ("accelerator-missing", {"spec.accelerator": DELETE}, "spec.accelerator", False),
    ("profile-unknown", {"spec.accelerator.profile": "h100"}, "spec.accelerator.profile", False),
    ("custom-incomplete", {"spec.accelerator": {"profile": "custom", "memoryGB": 80}}, "accelerator", True),
    ("vendor-mismatch", {"spec.accelerator": {"profile": "h200", "vendor": "huawei"}}, "accelerator.vendor", True),
    (
        "supported-precision-unknown",
        {"spec.accelerator.supportedPrecisions": ["fp16"]},
        "spec.accelerator.supportedPrecisions[0]",
        False,
    ),
    ("devices-per-node-zero", {"spec.accelerator.devicesPerNode": 0}, "spec.accelerator.devicesPerNode", False),
    (
        "toleration-exists-with-value",
        {"spec.tolerations": [{"key": "a", "operator": "Exists", "value": "x"}]},
        "tolerations[].value",
        True,
    ),
    (
        "toleration-equal-without-key",
        {"spec.tolerations": [{"operator": "Equal", "value": "x"}]},
        "tolerations[].key",
        True,
    ),
    (
        "toleration-bad-effect",
        {"spec.tolerations": [{"key": "a", "effect": "NoRun"}]},
        "spec.tolerations[0].effect",
        False,
    ),
    ("node-selector-bad-value", {"spec.nodeSelector": {"a": "has space"}}, "spec.nodeSelector", False),
    ("node-selector-bad-key", {"spec.nodeSelector": {"bad key": "x"}}, "spec.nodeSelector", True),
    ("cost-negative", {"spec.costPerNodeHour": -1}, "spec.costPerNodeHour", False),
    (
        "rdma-relative-device",
        {"spec.rdma": {"resourceName": "rdma/ib", "devices": ["dev/infiniband"]}},
        "spec.rdma.devices[0]",
        False,
    ),
    ("rdma-no-resource", {"spec.rdma": {"count": 2}}, "spec.rdma.resourceName", False),
    ("device-resource-bad", {"spec.deviceResourceName": "nvidia.com/gpu/x"}, "spec.deviceResourceName", False),
    ("node-memory-not-a-quantity", {"spec.node": {"memory": "lots"}}, "spec.node.memory", False),
    (
        "digests-required-tag-image",
        {"spec.requireImageDigests": True, "spec.sglangImage": "lmsysorg/sglang:v0.5.23"},
        "sglangImage",
        True,
    ),
]

GOOD_MOED: list[tuple[str, dict[str, Any]]] = [
    ("minimal", {}),
    ("inline-config", {"spec.model": {"config": {"model_type": "deepseek_v3", "num_hidden_layers": 61}}}),
    ("configmap", {"spec.model": {"configMapRef": {"name": "my-model"}, "servedModelName": "mine"}}),
    ("pools", {"spec.pool": DELETE, "spec.pools": ["b200", "h200"]}),
    ("average-equals-context", {"spec.sessions.averageContextTokens": 131072}),
    ("scale-to-zero", {"spec.replicas": 0, "spec.autoscaling": {"enabled": True, "minGroups": 0}, "spec.maxGroups": 2}),
    ("similar-flag-allowed", {"spec.sglang": {"extraArgs": ["--tp-size-hint", "--tool-call-parser=kimi_k2"]}}),
    ("resources", {"spec.resources": {"cpu": "96", "memory": "1500Gi", "ephemeralStorage": "800Gi"}}),
    ("network-policy-peers", {"spec.networkPolicy": {"metricsFrom": [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}], "routerFrom": [{"podSelector": {}}]}}),
    (
        "hf-with-token",
        {"spec.weights": {"huggingFace": {"repo": "moonshotai/Kimi-K2.5", "tokenSecretRef": {"name": "hf"}}}},
    ),
]
GOOD_POOL: list[tuple[str, dict[str, Any]]] = [
    (
        "custom",
        {
            "spec.accelerator": {
                "profile": "custom",
                "memoryGB": 96,
                "devicesPerNode": 8,
                "supportedPrecisions": ["bf16", "fp8"],
                "vendor": "nvidia",
            }
        },
    ),
    ("tolerate-a-taint", {"spec.tolerations": [{"key": "example.com/gpu", "operator": "Exists"}]}),
    ("rdma-infiniband", {"spec.rdma": {"resourceName": "rdma/ib", "devices": ["/dev/infiniband",
                                                                              "/dev/infiniband/uverbs0"]}}),
    ("model-cache", {"spec.modelCache": {"hostPathPrefixes": ["/mnt/models", "/data/weights"]}}),
    ("registry-with-port", {"spec.sglangImage": "registry.example.com:5000/team/sglang:v0.5.23-cu129"}),
    ("node-shape", {"spec.node": {"cpu": "223500m", "memory": "2000Gi", "ephemeralStorage": "3Ti"}}),
    (
        "digest-pinned",
        {"spec.requireImageDigests": True, "spec.sglangImage": "lmsysorg/sglang@sha256:" + "ab" * 32},
    ),
    ("override-profile", {"spec.accelerator": {"profile": "ascend-910b", "devicesPerNode": 8, "vendor": "huawei"}}),
]


def errors_of(body: dict[str, Any]) -> list[str]:
    try:
        validate_object(body)
    except InvalidResource as exc:
        return exc.errors
    return []


def schema_errors(body: dict[str, Any], info: Any) -> list[str]:
    schema = openapi_schema(info)
    return validate(apply_defaults(body, schema), schema)


# ---------------------------------------------------------------------------------------------------- examples
def test_examples_exist() -> None:
    names = {str(p.relative_to(ROOT / "examples")) for p in EXAMPLES}
    assert {
        "pools/h200.yaml",
        "pools/b200.yaml",
        "pools/ascend-910c.yaml",
        "kimi-k2.5-h200.yaml",
        "glm-5-b200.yaml",
        "glm-4.7-ascend.yaml",
    } <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_validates(path: Path) -> None:
    for body in yaml.safe_load_all(path.read_text()):
        obj = validate_object(body)
        info = MOE_DEPLOYMENT if body["kind"] == "MoEDeployment" else ACCELERATOR_POOL
        assert schema_errors(body, info) == []
        # the model's dump is accepted by the schema too and round-trips
        assert schema_errors(obj.to_k8s(), info) == []
        assert type(obj).model_validate(obj.to_k8s()) == obj


def test_example_pools_match_the_rig() -> None:
    pools = {
        p.stem: AcceleratorPool.from_body(yaml.safe_load(p.read_text())) for p in (ROOT / "examples/pools").iterdir()
    }
    assert pools["h200"].spec.node_selector == {"nvidia.com/gpu.product": "NVIDIA-H200"}
    assert pools["b200"].spec.node_selector == {"nvidia.com/gpu.product": "NVIDIA-B200"}
    assert pools["ascend-910c"].spec.node_selector == {"accelerator": "huawei-Ascend910"}
    assert pools["ascend-910c"].spec.device_resource_name == "huawei.com/Ascend910"
    assert pools["ascend-910c"].spec.accelerator.devices_per_node == 16
    for pool in pools.values():
        assert pool.spec.topology_key == "moe-operator.io/nvlink-domain"
        assert any(
            t.key == "kwok.x-k8s.io/node" and t.value == "fake" and t.effect == "NoSchedule"
            for t in pool.spec.tolerations
        )
    moeds = {
        MoEDeployment.from_body(yaml.safe_load(p.read_text())).spec.precision
        for p in EXAMPLES
        if "pools" not in p.parts
    }
    assert moeds == {"int4", "fp8", "w8a8"}


# ---------------------------------------------------------------------------------------------------- bad specs
@pytest.mark.parametrize(("case", "changes", "field", "cel"), BAD_MOED, ids=[c[0] for c in BAD_MOED])
def test_bad_moedeployment_rejected(case: str, changes: dict[str, Any], field: str, cel: bool) -> None:
    errors = errors_of(patched(MOED, changes))
    assert errors, f"{case}: accepted"
    assert any(field in e for e in errors), f"{case}: no error names {field!r}: {errors}"
    # rows the structural schema alone rejects must be rejected by it too (same constraint in both places)
    s_errors = schema_errors(patched(MOED, changes), MOE_DEPLOYMENT)
    if not cel:
        assert s_errors, f"{case}: the CRD schema would accept it"
    else:
        assert s_errors == [], f"{case}: expected only CEL to reject it, schema says {s_errors}"


@pytest.mark.parametrize(("case", "changes", "field", "cel"), BAD_POOL, ids=[c[0] for c in BAD_POOL])
def test_bad_acceleratorpool_rejected(case: str, changes: dict[str, Any], field: str, cel: bool) -> None:
    errors = errors_of(patched(POOL, changes))
    assert errors, f"{case}: accepted"
    assert any(field in e for e in errors), f"{case}: no error names {field!r}: {errors}"
    s_errors = schema_errors(patched(POOL, changes), ACCELERATOR_POOL)
    if not cel:
        assert s_errors, f"{case}: the CRD schema would accept it"
    else:
        assert s_errors == [], f"{case}: expected only CEL to reject it, schema says {s_errors}"


def test_enough_bad_specs() -> None:
    assert len(BAD_MOED) + len(BAD_POOL) >= 20


@pytest.mark.parametrize(("case", "changes"), GOOD_MOED, ids=[c[0] for c in GOOD_MOED])
def test_good_moedeployment_accepted(case: str, changes: dict[str, Any]) -> None:
    body = patched(MOED, changes)
    assert errors_of(body) == []
    assert schema_errors(body, MOE_DEPLOYMENT) == []


@pytest.mark.parametrize(("case", "changes"), GOOD_POOL, ids=[c[0] for c in GOOD_POOL])
def test_good_acceleratorpool_accepted(case: str, changes: dict[str, Any]) -> None:
    body = patched(POOL, changes)
    assert errors_of(body) == []
    assert schema_errors(body, ACCELERATOR_POOL) == []


def test_error_message_shows_values() -> None:
    errors = errors_of(patched(MOED, {"spec.sessions.averageContextTokens": 200_000}))
    assert errors == [
        "spec.sessions: sessions.averageContextTokens (200000) must be <= sessions.contextTokens (131072)"
    ]
    with pytest.raises(InvalidResource, match="invalid MoEDeployment kimi: spec.precision"):
        MoEDeployment.from_body(patched(MOED, {"spec.precision": "fp16"}))
    assert errors_of({"kind": "Pod"}) == ["kind: expected one of ['AcceleratorPool', 'MoEDeployment'], got 'Pod'"]


# ---------------------------------------------------------------------------------------------------- defaults
@pytest.mark.parametrize(("info", "body"), [(MOE_DEPLOYMENT, MOED), (ACCELERATOR_POOL, POOL)], ids=["moed", "pool"])
def test_model_defaults_equal_apiserver_defaults(info: Any, body: dict[str, Any]) -> None:
    """What the apiserver stores after defaulting == what the model fills in, so handlers and kubectl agree."""
    schema = openapi_schema(info)
    server = apply_defaults(body, schema)
    model = validate_object(body).to_k8s()
    model.pop("status", None)
    for k in ("labels", "annotations"):  # ObjectMeta conveniences, not part of the CRD
        model["metadata"].pop(k, None)
    assert model == server


def test_defaults_and_accessors() -> None:
    m = MoEDeployment.from_body(MOED)
    assert m.spec.kv_cache_dtype == "auto"
    assert m.spec.router.enabled and m.spec.router.policy == "cache_aware"
    assert m.spec.sglang.port == 30000 and m.spec.drain.timeout_seconds == 600
    assert m.spec.autoscaling.enabled is False and m.spec.autoscaling.target_kv_utilization == 0.7
    assert m.spec.candidate_pools == ["h200"]
    two = MoEDeployment.from_body(patched(MOED, {"spec.pool": DELETE, "spec.pools": ["b", "a"]}))
    assert two.spec.candidate_pools == ["b", "a"]
    # snake_case names are accepted too (populate by name), dumps are camelCase
    by_name = MoEDeployment.model_validate(
        {"spec": {**MOED["spec"], "kv_cache_dtype": "fp8_e4m3", "max_groups": 3}, "metadata": {"name": "x"}}
    )
    dumped = by_name.to_k8s()["spec"]
    assert dumped["kvCacheDtype"] == "fp8_e4m3" and dumped["maxGroups"] == 3
    assert "autoscaling" in dumped and dumped["autoscaling"]["targetKVUtilization"] == 0.7


# ---------------------------------------------------------------------------------------------------- status
def test_status_fields_and_derived_columns() -> None:
    st = MoEDeploymentStatus(
        observed_generation=3,
        pool="h200",
        ready_groups=1,
        desired_groups=2,
        kv_utilization=0.73456,
        plan=PlanStatus.model_validate(
            {
                "nodes_per_group": 2,
                "tp_size": 16,
                "weights_bytes": 600_000_000_000,
                "memFractionStatic": 0.85,
                "extra_planner_field": "ignored",
            }
        ),
        last_scale_time=dt.datetime(2026, 11, 24, 10, 0, 0),
        conditions=[{"type": "Ready", "status": "False", "reason": "Scaling", "message": "1/2 groups ready"}],
    )
    out = st.to_k8s()
    assert out["groupSummary"] == "1/2"
    assert out["kvUtilization"] == "0.7346" and out["kvUtilizationPercent"] == 73
    assert out["plan"]["memFractionStatic"] == "0.85" and out["plan"]["weightsBytes"] == 600_000_000_000
    assert out["lastScaleTime"] == "2026-11-24T10:00:00Z"
    assert st.condition("Ready") is not None and st.condition("Ready").reason == "Scaling"
    st.ready_groups = 2  # validate_assignment keeps the derived columns fresh
    st.kv_utilization = "0.5"
    assert st.group_summary == "2/2" and st.kv_utilization_percent == 50
    assert validate(out, openapi_schema(MOE_DEPLOYMENT)["properties"]["status"]) == []
    # what the apiserver may hand back (integers for int-or-string, unknown keys) is accepted
    back = MoEDeploymentStatus.model_validate({**out, "kvUtilization": 1, "somethingNew": True})
    assert back.kv_utilization == "1" and back.kv_utilization_percent == 100
    with pytest.raises(ValueError, match="kv_?[uU]tilization"):
        MoEDeploymentStatus(kv_utilization=1.5)
    with pytest.raises(ValueError, match="ready_?[gG]roups"):
        MoEDeploymentStatus(ready_groups=-1)


def test_full_object_with_status_from_kopf_body() -> None:
    body = patched(
        MOED,
        {
            "metadata.generation": 4,
            "metadata.uid": "u",
            "metadata.managedFields": [{"x": 1}],
            "status": {
                "observedGeneration": 4,
                "replicas": 2,
                "selector": "a=b",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-24T10:00:00Z"}],
            },
        },
    )
    m = MoEDeployment.from_body(body)
    assert m.metadata.generation == 4 and m.status is not None and m.status.replicas == 2
    assert m.status.conditions[0].last_transition_time == dt.datetime(2026, 11, 24, 10, tzinfo=dt.UTC)
    assert m.to_k8s()["metadata"]["managedFields"] == [{"x": 1}]
