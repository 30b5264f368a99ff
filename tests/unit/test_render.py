"""Unit tests of the pure render layer (no cluster)."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace
from typing import Any

import pytest

from moe_operator import render
from moe_operator.render import (
    HostMount,
    Owner,
    RenderInput,
    WeightsSource,
    child_keys,
    children,
    leaderworkerset,
    model_args_for,
    model_path_for,
    pod_disruption_budget,
    router_deployment,
    router_pod_disruption_budget,
    router_service,
    sglang_argv,
    spec_hash,
)

OWNER = Owner(api_version="moe-operator.io/v1alpha1", kind="MoEDeployment", name="dsv3", uid="1234-uid")
PLAN = ("--model-path", "deepseek-ai/DeepSeek-V3", "--tp-size", "16", "--ep-size", "16", "--trust-remote-code")


def make(**over: Any) -> RenderInput:
    kw: dict[str, Any] = dict(
        name="dsv3",
        namespace="llm",
        owner=OWNER,
        model_id="deepseek-v3",
        sglang_args=PLAN,
        nodes_per_group=2,
        devices_per_node=8,
        device_resource="nvidia.com/gpu",
        replicas=3,
        image="lmsysorg/sglang:v0.5.23",
        node_selector={"moe-operator.io/pool": "h200"},
        tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},),
        weights=WeightsSource(hf_token_secret="hf-token"),
        pool="h200",
        accelerator="h200",
        spec_hash="abc123",
    )
    kw.update(over)
    return RenderInput(**kw)


def tmpl(inp: RenderInput, role: str) -> dict[str, Any]:
    return leaderworkerset(inp)["spec"]["leaderWorkerTemplate"][f"{role}Template"]


def container(inp: RenderInput, role: str) -> dict[str, Any]:
    return tmpl(inp, role)["spec"]["containers"][0]


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


# --- SGLang argv -----------------------------------------------------------------


def test_multinode_argv_golden() -> None:
    c = container(make(), "leader")
    assert c["command"] == ["python3", "-m", "sglang.launch_server"]
    assert c["args"] == [
        *PLAN,
        "--dist-init-addr",
        "$(LWS_LEADER_ADDRESS):20000",
        "--nnodes",
        "$(LWS_GROUP_SIZE)",
        "--node-rank",
        "$(LWS_WORKER_INDEX)",
        "--host",
        "0.0.0.0",
        "--port",
        "30000",
        "--enable-metrics",
    ]


def test_leader_and_worker_run_identical_containers_except_probes() -> None:
    inp = make(extra_args=("--context-length", "65536"), env=(("NCCL_IB_GID_INDEX", "3"),))
    lead, work = container(inp, "leader"), container(inp, "worker")
    for key in ("image", "command", "args", "env", "resources", "volumeMounts", "ports", "securityContext"):
        assert lead[key] == work[key], key
    assert lead["args"][len(PLAN) : len(PLAN) + 2] == ["--context-length", "65536"]
    lspec, wspec = tmpl(inp, "leader")["spec"], tmpl(inp, "worker")["spec"]
    for key in ("volumes", "nodeSelector", "tolerations", "terminationGracePeriodSeconds", "enableServiceLinks"):
        assert lspec[key] == wspec[key], key


def test_single_node_group_has_no_rendezvous() -> None:
    inp = make(nodes_per_group=1, sglang_args=("--model-path", "m", "--tp-size", "8"))
    args = container(inp, "leader")["args"]
    for flag in ("--dist-init-addr", "--nnodes", "--node-rank"):
        assert flag not in args
    assert args[-5:] == ["--host", "0.0.0.0", "--port", "30000", "--enable-metrics"]
    assert leaderworkerset(inp)["spec"]["leaderWorkerTemplate"]["size"] == 1


def test_custom_ports_and_metrics_off() -> None:
    inp = make(port=8080, dist_port=5757, metrics_enabled=False)
    c = container(inp, "worker")
    assert "$(LWS_LEADER_ADDRESS):5757" in c["args"]
    assert c["args"][-2:] == ["--port", "8080"]
    assert "--enable-metrics" not in c["args"]
    assert c["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "dist", "containerPort": 5757, "protocol": "TCP"},
    ]


@pytest.mark.parametrize(
    "extra",
    [
        ("--tp-size", "8"),
        ("--tp", "16"),  # alias of --tp-size
        ("--tensor-parallel-size=16",),
        ("--trust-remote-code",),
        ("--port", "1234"),  # builder-owned
        ("--host=127.0.0.1",),
        ("--enable-metrics",),
        ("--node-rank", "0"),
        ("--nccl-init-addr", "x:1"),  # alias of --dist-init-addr
        ("--mem-fraction-static", "0.8", "--mem-fraction-static", "0.9"),  # duplicate inside extra
        ("0.8",),  # leading value would glue onto the plan's last flag
    ],
)
def test_extra_args_conflicts_raise(extra: tuple[str, ...]) -> None:
    inp = make(extra_args=extra)
    with pytest.raises(ValueError):
        sglang_argv(inp)
    with pytest.raises(ValueError):
        children(inp)


@pytest.mark.parametrize(
    "plan",
    [
        ("--model-path", "m", "--tp-size", "16", "--port", "30000"),  # per-pod flag in the plan
        ("--model-path", "m", "--tp-size", "16", "--tp-size", "16"),  # duplicate in the plan
        ("--tp-size", "16"),  # no model path
        ("--model-path", "m", "--tp-size", "8"),  # 8 != 2 nodes x 8 GPUs
        ("--model-path", "m", "--tp-size", "8", "--pp-size", "3"),  # 24 != 16
        ("--model-path", "m", "--tp-size", "x"),
    ],
)
def test_bad_plans_raise(plan: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        sglang_argv(make(sglang_args=plan))


def test_world_size_accepts_pp_and_deprecated_dp_attention() -> None:
    sglang_argv(make(sglang_args=("--model-path", "m", "--tp-size", "8", "--pp-size", "2")))
    # deprecated spelling: --dp-size is attention DP inside TP, not replicas
    sglang_argv(make(sglang_args=("--model-path", "m", "--tp", "16", "--enable-dp-attention", "--dp-size", "16")))
    # new meaning: --dp-size = model replicas
    sglang_argv(make(sglang_args=("--model-path", "m", "--tp-size", "8", "--dp-size", "2")))


# --- env, resources, volumes, security ---------------------------------------------------


def test_env() -> None:
    inp = make(env=(("NCCL_IB_GID_INDEX", "3"), ("PYTHONUNBUFFERED", "0")))
    env = container(inp, "leader")["env"]
    assert env[0] == {
        "name": "LWS_WORKER_INDEX",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['leaderworkerset.sigs.k8s.io/worker-index']"}},
    }
    assert env[1] == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}}
    # the user overrides a soft default; user env keeps its order at the end
    assert env[2:] == [{"name": "NCCL_IB_GID_INDEX", "value": "3"}, {"name": "PYTHONUNBUFFERED", "value": "0"}]
    names = [e["name"] for e in env]
    assert len(names) == len(set(names))


def test_env_defaults_and_no_token_without_secret() -> None:
    env = container(make(weights=WeightsSource()), "leader")["env"]
    assert [e["name"] for e in env] == ["LWS_WORKER_INDEX", "PYTHONUNBUFFERED"]


@pytest.mark.parametrize("name", ["LWS_WORKER_INDEX", "HF_TOKEN", "LWS_LEADER_ADDRESS"])
def test_reserved_env_raises(name: str) -> None:
    with pytest.raises(ValueError):
        leaderworkerset(make(env=((name, "x"),)))


def test_duplicate_env_raises() -> None:
    with pytest.raises(ValueError):
        make(env=(("A", "1"), ("A", "2")))


def test_resources() -> None:
    res = container(make(rdma_resource="rdma/ib", rdma_count=4), "worker")["resources"]
    assert res == {
        "limits": {"nvidia.com/gpu": "8", "rdma/ib": "4"},
        "requests": {"nvidia.com/gpu": "8", "rdma/ib": "4"},
    }
    res = container(make(device_resource="huawei.com/Ascend910", devices_per_node=16, nodes_per_group=1), "leader")
    assert res["resources"] == {"limits": {"huawei.com/Ascend910": "16"}, "requests": {"huawei.com/Ascend910": "16"}}


def test_shm_cache_security_and_placement() -> None:
    inp = make(shm_size="32Gi", cache_host_path="/var/cache/sglang")
    t = tmpl(inp, "leader")
    vols = {v["name"]: v for v in t["spec"]["volumes"]}
    assert vols["dshm"] == {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "32Gi"}}
    assert vols["cache"]["hostPath"] == {"path": "/var/cache/sglang", "type": "DirectoryOrCreate"}
    mounts = {m["mountPath"]: m for m in t["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["/dev/shm"]["name"] == "dshm" and mounts["/root/.cache"]["name"] == "cache"
    c = t["spec"]["containers"][0]
    # hardened: only IPC_LOCK (RDMA memory registration) of all capabilities, no escalation, runtime seccomp, no token
    assert c["securityContext"] == {"allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"], "add": ["IPC_LOCK"]}}
    assert t["spec"]["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert t["spec"]["automountServiceAccountToken"] is False
    assert t["spec"]["nodeSelector"] == {"moe-operator.io/pool": "h200"}
    assert t["spec"]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert t["spec"]["enableServiceLinks"] is False
    assert "hostNetwork" not in t["spec"]


def test_user_values_are_literal_for_the_kubelet() -> None:
    """The kubelet expands $(VAR) in args and env values and reads "$$" as "$": users' values are escaped, the
    builder's own references ($(LWS_WORKER_INDEX), the API key) are not."""
    inp = make(env=(("A", "x$(HOME)y"), ("B", "$$")), extra_args=("--chat-template", "$(id)"))
    c = container(inp, "leader")
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["A"] == "x$$(HOME)y" and env["B"] == "$$$$"
    assert c["args"][c["args"].index("--chat-template") + 1] == "$$(id)"
    assert "$(LWS_WORKER_INDEX)" in c["args"]


def test_api_key_comes_from_the_secret_for_engines_and_router() -> None:
    inp = make(api_key_secret=("sglang-key", "api-key"))
    for c in (container(inp, "leader"), container(inp, "worker")):
        assert c["args"][c["args"].index("--api-key") + 1] == "$(MOE_SGLANG_API_KEY)"
        assert {"name": "MOE_SGLANG_API_KEY",
                "valueFrom": {"secretKeyRef": {"name": "sglang-key", "key": "api-key"}}} in c["env"]
    router = by_kind(render.children(inp), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert router["args"][router["args"].index("--api-key") + 1] == "$(MOE_SGLANG_API_KEY)"
    assert router["env"] == [{"name": "MOE_SGLANG_API_KEY",
                              "valueFrom": {"secretKeyRef": {"name": "sglang-key", "key": "api-key"}}}]
    assert "--api-key" not in container(make(), "leader")["args"]


def test_node_failure_toleration() -> None:
    assert all("NoExecute" not in str(t) for t in tmpl(make(), "leader")["spec"]["tolerations"])
    tol = tmpl(make(node_failure_toleration_seconds=30), "worker")["spec"]["tolerations"]
    assert {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
            "tolerationSeconds": 30} in tol
    assert {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
            "tolerationSeconds": 30} in tol
    assert tol[0] == {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}  # the pool's first


def test_optional_pod_settings() -> None:
    inp = make(host_mounts=(HostMount(host_path="/dev/infiniband", mount_path="/dev/infiniband", read_only=False),))
    spec = tmpl(inp, "worker")["spec"]
    assert "hostNetwork" not in spec and "privileged" not in spec["containers"][0]["securityContext"]
    c = spec["containers"][0]
    assert {"name": "host-0", "hostPath": {"path": "/dev/infiniband"}} in spec["volumes"]
    assert {"name": "host-0", "mountPath": "/dev/infiniband", "readOnly": False} in c["volumeMounts"]


# --- weights ---------------------------------------------------------------------


def test_pvc_weights() -> None:
    w = WeightsSource(pvc_claim="models", pvc_sub_path="deepseek-v3/")
    path = model_path_for(w, None)
    assert path == "/models/deepseek-v3"
    inp = make(weights=w, sglang_args=("--model-path", path, "--tp-size", "16"))
    t = tmpl(inp, "leader")
    assert {"name": "weights", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in t["spec"][
        "volumes"
    ]
    assert {"name": "weights", "mountPath": "/models", "readOnly": True} in t["spec"]["containers"][0]["volumeMounts"]
    assert all(e["name"] != "HF_TOKEN" for e in t["spec"]["containers"][0]["env"])


def test_hostpath_weights() -> None:
    w = WeightsSource(host_path="/data/models/dsv3")
    assert model_path_for(w, "ignored") == "/models"
    t = tmpl(make(weights=w, sglang_args=("--model-path", "/models", "--tp-size", "16")), "worker")
    assert {"name": "weights", "hostPath": {"path": "/data/models/dsv3", "type": "Directory"}} in t["spec"]["volumes"]


def test_hf_weights_paths() -> None:
    assert model_path_for(WeightsSource(), "deepseek-ai/DeepSeek-V3") == "deepseek-ai/DeepSeek-V3"
    assert model_path_for(WeightsSource(hf_repo="org/fork"), "deepseek-ai/DeepSeek-V3") == "org/fork"
    assert model_args_for(WeightsSource(hf_revision="abc"), "r/m") == ("--model-path", "r/m", "--revision", "abc")
    assert model_args_for(WeightsSource(pvc_claim="c"), "r/m") == ("--model-path", "/models")
    with pytest.raises(ValueError):
        model_path_for(WeightsSource(), None)
    vols = tmpl(make(), "leader")["spec"]["volumes"]
    assert [v["name"] for v in vols] == ["dshm", "cache"]


def test_local_weights_need_a_model_path_under_the_mount() -> None:
    with pytest.raises(ValueError):
        sglang_argv(make(weights=WeightsSource(pvc_claim="c"), sglang_args=PLAN))


@pytest.mark.parametrize(
    "kw",
    [
        {"pvc_claim": "c", "host_path": "/x"},
        {"pvc_sub_path": "x"},
        {"pvc_claim": "c", "pvc_sub_path": "../etc"},
        {"host_path": "relative"},
        {"pvc_claim": "c", "hf_repo": "a/b"},
    ],
)
def test_bad_weights_raise(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        WeightsSource(**kw)


# --- probes ------------------------------------------------------------------------


def test_leader_probes() -> None:
    c = container(make(startup_timeout_seconds=2700), "leader")
    assert c["startupProbe"]["httpGet"]["path"] == "/ready"
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 2700
    assert c["startupProbe"]["failureThreshold"] == math.ceil(2700 / c["startupProbe"]["periodSeconds"])
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 30000, "scheme": "HTTP"}
    live = c["livenessProbe"]
    assert live["httpGet"]["path"] == "/health"
    assert live["timeoutSeconds"] > 20  # SGLANG_HEALTH_CHECK_TIMEOUT
    assert live["periodSeconds"] * live["failureThreshold"] >= 300


def test_worker_probes() -> None:
    c = container(make(), "worker")
    assert c["startupProbe"]["httpGet"]["path"] == "/health"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    assert "livenessProbe" not in c


# --- LWS ---------------------------------------------------------------------------


def test_lws_spec() -> None:
    lws = leaderworkerset(make(drain_timeout_seconds=900))
    assert lws["apiVersion"] == "leaderworkerset.x-k8s.io/v1" and lws["kind"] == "LeaderWorkerSet"
    assert lws["metadata"]["name"] == "dsv3"
    spec = lws["spec"]
    assert spec["replicas"] == 3
    assert spec["startupPolicy"] == "LeaderCreated"
    assert spec["rolloutStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdateConfiguration": {"maxUnavailable": 1, "maxSurge": 0, "partition": 0},
    }
    lwt = spec["leaderWorkerTemplate"]
    assert lwt["size"] == 2 and lwt["restartPolicy"] == "RecreateGroupOnPodRestart"
    for role in ("leader", "worker"):
        assert lwt[f"{role}Template"]["spec"]["terminationGracePeriodSeconds"] == 930
    digest = lws["metadata"]["annotations"]["moe-operator.io/template-hash"]
    assert lws["metadata"]["annotations"] == {"moe-operator.io/spec-hash": "abc123",
                                              "moe-operator.io/template-hash": digest}
    # the pods carry it too (which groups run the current template is read from them); it hashes the rest
    bare = copy.deepcopy(lwt)
    for role in ("leaderTemplate", "workerTemplate"):
        assert bare[role]["metadata"]["annotations"].pop("moe-operator.io/template-hash") == digest
    assert spec_hash(bare) == digest


def test_exclusive_topology_annotation() -> None:
    lws = leaderworkerset(make(exclusive_topology_key="topology.kubernetes.io/rack"))
    assert lws["metadata"]["annotations"]["leaderworkerset.sigs.k8s.io/exclusive-topology"] == (
        "topology.kubernetes.io/rack"
    )
    assert set(leaderworkerset(make(spec_hash=""))["metadata"]["annotations"]) == {"moe-operator.io/template-hash"}


def test_template_hash_follows_the_pod_template_only() -> None:
    a = leaderworkerset(make())["metadata"]["annotations"]["moe-operator.io/template-hash"]
    assert leaderworkerset(make(replicas=7))["metadata"]["annotations"]["moe-operator.io/template-hash"] == a
    assert leaderworkerset(make(image="lmsysorg/sglang:v0.5.24"))["metadata"]["annotations"][
        "moe-operator.io/template-hash"] != a


def test_pod_template_labels() -> None:
    inp = make()
    lead, work = tmpl(inp, "leader")["metadata"]["labels"], tmpl(inp, "worker")["metadata"]["labels"]
    assert lead["moe-operator.io/deployment"] == work["moe-operator.io/deployment"] == "dsv3"
    assert lead["moe-operator.io/role"] == "leader" and work["moe-operator.io/role"] == "worker"
    assert lead["moe-operator.io/routable"] == "true"
    assert "moe-operator.io/routable" not in work
    assert lead["app.kubernetes.io/component"] == "engine"
    assert lead["moe-operator.io/pool"] == "h200" and lead["moe-operator.io/model"] == "deepseek-v3"


def test_label_values_are_sanitised() -> None:
    labels = leaderworkerset(make(model_id="org/Model:v1 (fp8)", pool="", accelerator=""))["metadata"]["labels"]
    assert labels["moe-operator.io/model"] == "org-Model-v1-fp8"
    assert "moe-operator.io/pool" not in labels and "moe-operator.io/accelerator" not in labels


# --- router ------------------------------------------------------------------------


def test_router_args_golden() -> None:
    d = router_deployment(make(router_policy="power_of_two"))
    c = d["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["smg"]
    assert c["image"] == "lightseekorg/smg:1.13.0"
    assert c["args"] == [
        "--service-discovery",
        "--selector",
        "moe-operator.io/deployment=dsv3",
        "moe-operator.io/role=leader",
        "moe-operator.io/routable=true",
        "--service-discovery-port",
        "30000",
        "--service-discovery-namespace",
        "llm",
        "--policy",
        "power_of_two",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--prometheus-host",
        "0.0.0.0",
        "--prometheus-port",
        "29000",
        "--shutdown-grace-period-secs",
        "600",
    ]


@pytest.mark.parametrize(
    ("plan", "dp_aware"),
    [
        (("--model-path", "m", "--tp-size", "16", "--attn-dp-size", "16"), True),
        (("--model-path", "m", "--tp-size", "16", "--attention-data-parallel-size=4"), True),
        (("--model-path", "m", "--tp-size", "16", "--enable-dp-attention", "--dp-size", "16"), True),
        (("--model-path", "m", "--tp-size", "8", "--dp-size", "2"), False),  # model replicas, not attention DP
        (("--model-path", "m", "--tp-size", "8"), False),
    ],
)
def test_router_is_dp_aware_exactly_when_the_plan_has_attention_dp(plan: tuple[str, ...], dp_aware: bool) -> None:
    # SMG 1.13 reads attn_dp_size from /server_info and routes per attention-DP rank (sglang-router 0.3.2 read dp_size
    # = 1 and pinned every request to rank 0, which is why the flag was off before)
    args = router_deployment(make(sglang_args=plan))["spec"]["template"]["spec"]["containers"][0]["args"]
    assert ("--dp-aware" in args) is dp_aware


def test_router_selector_matches_leader_template_only() -> None:
    inp = make()
    args = router_deployment(inp)["spec"]["template"]["spec"]["containers"][0]["args"]
    sel = args[args.index("--selector") + 1 : args.index("--service-discovery-port")]
    selector = dict(s.split("=", 1) for s in sel)
    lead, work = tmpl(inp, "leader")["metadata"]["labels"], tmpl(inp, "worker")["metadata"]["labels"]
    assert selector.items() <= lead.items()
    assert not selector.items() <= work.items()
    router_labels = router_deployment(inp)["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= router_labels.items()


def test_router_deployment_shape() -> None:
    d = router_deployment(make(router_replicas=2))
    assert d["metadata"]["name"] == "dsv3-router"
    spec = d["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "dsv3-router"
    assert "nodeSelector" not in pod and "tolerations" not in pod
    c = pod["containers"][0]
    assert c["image"] == "lightseekorg/smg:1.13.0"
    assert not any("/" in k for k in c["resources"].get("requests", {}))  # no extended resources
    assert c["resources"]["limits"] == {"cpu": "2", "memory": "4Gi", "ephemeral-storage": "1Gi"}  # a leak is bounded
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["runAsUser"] != 0 and sc["readOnlyRootFilesystem"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}} in pod["volumes"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8000, "metrics": 29000}
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    assert c["livenessProbe"]["httpGet"]["path"] == "/liveness"


def test_router_service_and_rbac() -> None:
    inp = make()
    svc = router_service(inp)
    assert svc["metadata"]["name"] == "dsv3-router"  # never "dsv3": that is LWS's headless Service
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["selector"] == router_deployment(inp)["spec"]["selector"]["matchLabels"]
    assert {(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]} == {(8000, "http"), (29000, "metrics")}
    objs = {(o["kind"]): o for o in children(inp)}
    assert objs["Role"]["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    assert objs["RoleBinding"]["subjects"] == [{"kind": "ServiceAccount", "name": "dsv3-router", "namespace": "llm"}]
    assert objs["RoleBinding"]["roleRef"]["name"] == objs["Role"]["metadata"]["name"]


def test_router_disabled() -> None:
    inp = make(router_enabled=False)
    objs = children(inp)
    assert [o["kind"] for o in objs] == ["NetworkPolicy", "LeaderWorkerSet", "PodDisruptionBudget", "Service"]
    svc = objs[-1]
    assert svc["metadata"]["name"] == "dsv3-leaders"
    assert svc["spec"]["selector"] == {
        "moe-operator.io/deployment": "dsv3",
        "moe-operator.io/role": "leader",
        "moe-operator.io/routable": "true",
    }
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]
    assert router_pod_disruption_budget(inp) is None


# --- PDBs ---------------------------------------------------------------------------


def test_group_pdb() -> None:
    pdb = pod_disruption_budget(make(nodes_per_group=4, sglang_args=("--model-path", "m", "--tp-size", "32")))
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert pdb["spec"]["selector"]["matchLabels"] == {
        "moe-operator.io/deployment": "dsv3",
        "leaderworkerset.sigs.k8s.io/name": "dsv3",
    }


def test_router_pdb_only_with_several_replicas() -> None:
    assert router_pod_disruption_budget(make(router_replicas=1)) is None
    pdb = router_pod_disruption_budget(make(router_replicas=3))
    assert pdb is not None and pdb["spec"]["maxUnavailable"] == 1
    assert pdb["metadata"]["name"] == "dsv3-router"
    assert [o["kind"] for o in children(make(router_replicas=3))].count("PodDisruptionBudget") == 2


# --- all objects ---------------------------------------------------------------------


@pytest.mark.parametrize("over", [{}, {"router_enabled": False}, {"router_replicas": 2}])
def test_children_common_invariants(over: dict[str, Any]) -> None:
    inp = make(**over)
    objs = children(inp)
    json.dumps(objs)  # plain JSON
    keys = set()
    for o in objs:
        assert o["apiVersion"] and o["kind"]
        meta = o["metadata"]
        assert meta["name"] and meta["namespace"] == "llm"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "moe-operator.io/v1alpha1",
                "kind": "MoEDeployment",
                "name": "dsv3",
                "uid": "1234-uid",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        labels = meta["labels"]
        assert labels["app.kubernetes.io/part-of"] == "moe-operator"
        assert labels["app.kubernetes.io/managed-by"] == "moe-operator"
        assert labels["app.kubernetes.io/instance"] == "dsv3"
        assert labels["app.kubernetes.io/name"] and labels["app.kubernetes.io/component"]
        assert labels["moe-operator.io/deployment"] == "dsv3"
        assert meta["annotations"]["moe-operator.io/spec-hash"] == "abc123"
        keys.add((o["apiVersion"], o["kind"], meta["name"]))
    assert len(keys) == len(objs)
    assert child_keys(inp) == keys
    # LWS owns the headless Service named like the LWS
    assert ("v1", "Service", "dsv3") not in keys


def test_children_order() -> None:
    kinds = [o["kind"] for o in children(make(router_replicas=2))]
    assert kinds == [
        "NetworkPolicy",
        "NetworkPolicy",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "LeaderWorkerSet",
        "PodDisruptionBudget",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
    ]


def test_orphans_when_router_is_disabled() -> None:
    gone = child_keys(make()) - child_keys(make(router_enabled=False))
    assert {k for _, k, _ in gone} == {"ServiceAccount", "Role", "RoleBinding", "Deployment", "Service",
                                       "NetworkPolicy"}  # the router's policy


def test_determinism_and_no_aliasing() -> None:
    inp = make(env=(("A", "1"),), router_replicas=2)
    first = children(inp)
    assert children(copy.deepcopy(inp)) == first
    assert json.dumps(children(replace(inp)), sort_keys=False) == json.dumps(first, sort_keys=False)
    # mutating one render never leaks into the next
    lws = next(i for i, o in enumerate(first) if o["kind"] == "LeaderWorkerSet")
    first[lws]["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["nodeSelector"]["x"] = "y"
    first[lws]["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["tolerations"][0]["key"] = "z"
    assert children(inp) == children(copy.deepcopy(inp))
    assert children(inp)[lws]["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["nodeSelector"] == {
        "moe-operator.io/pool": "h200"
    }


def test_inputs_accept_lists_and_normalise() -> None:
    inp = make(sglang_args=list(PLAN), extra_args=["--context-length", "4096"], env=[["A", "1"]])
    assert isinstance(inp.sglang_args, tuple) and inp.env == (("A", "1"),)


def test_spec_hash() -> None:
    a = {"b": [1, 2, {"c": "d"}], "a": 1}
    b = {"a": 1, "b": [1, 2, {"c": "d"}]}
    assert spec_hash(a) == spec_hash(b)
    assert len(spec_hash(a)) == 16
    assert spec_hash(a) != spec_hash({"a": 2, "b": [1, 2, {"c": "d"}]})
    assert spec_hash(a) == "f827b73b23ac8567"  # pinned: stable across runs and Python versions
    assert spec_hash(children(make())) == spec_hash(children(make()))


@pytest.mark.parametrize(
    "over",
    [
        {"name": "Bad_Name"},
        {"name": "x" * 46},
        {"name": "1abc"},
        {"namespace": "-x"},
        {"nodes_per_group": 0},
        {"devices_per_node": 0},
        {"replicas": -1},
        {"port": 0},
        {"port": 20000},  # == dist_port
        {"rdma_count": 1},  # without rdma_resource
        {"device_resource": "gpu"},
        {"router_policy": "least_loaded"},
        {"router_replicas": 0},
        {"shm_size": "lots"},
        {"drain_timeout_seconds": -1},
        {"nodes_per_group": True},
        {"exclusive_topology_key": ""},
    ],
)
def test_invalid_inputs_raise(over: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make(**over)


def test_public_api_exports() -> None:
    for name in render.__all__:
        assert hasattr(render, name), name


# --- pod resources, disk, network policy -------------------------------------------------------------------------


def test_engine_pods_are_guaranteed_when_sized() -> None:
    c = tmpl(make(cpu_cores=200, memory_bytes=1900 * 1024**3, ephemeral_bytes=630 * 1024**3,
                  cache_size_limit_bytes=622 * 1024**3), "worker")
    res = c["spec"]["containers"][0]["resources"]
    assert res["requests"] == res["limits"]  # Guaranteed: every resource's request equals its limit
    assert res["limits"]["cpu"] == "200" and res["limits"]["memory"] == "1900Gi"
    assert res["limits"]["ephemeral-storage"] == "630Gi"
    vols = {v["name"]: v for v in c["spec"]["volumes"]}
    assert vols["cache"]["emptyDir"] == {"sizeLimit": "622Gi"}
    unsized = tmpl(make(), "worker")["spec"]["containers"][0]["resources"]["limits"]
    assert "cpu" not in unsized and "memory" not in unsized  # no node shape: devices only


def test_network_policies_admit_only_the_deployments_own_callers() -> None:
    from moe_operator.render.network import network_policies

    prom = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    op = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "moe-system"}},
          "podSelector": {"matchLabels": {"app.kubernetes.io/name": "moe-operator"}}}
    engine, router = network_policies(make(metrics_from=(prom,), operator_peer=op))
    assert engine["spec"]["podSelector"]["matchLabels"] == {"moe-operator.io/deployment": "dsv3",
                                                            "app.kubernetes.io/component": "engine"}
    peers, http = engine["spec"]["ingress"]
    assert "ports" not in peers  # every port between the group's ranks (NCCL, torch.distributed)
    assert peers["from"] == [{"podSelector": {"matchLabels": engine["spec"]["podSelector"]["matchLabels"]}}]
    assert http["ports"] == [{"protocol": "TCP", "port": 30000}]
    assert {"podSelector": {"matchLabels": {"moe-operator.io/deployment": "dsv3",
                                            "app.kubernetes.io/component": "router"}}} in http["from"]
    assert op in http["from"] and prom in http["from"] and len(http["from"]) == 3
    assert router["spec"]["ingress"][0] == {"from": [{"podSelector": {}}], "ports": [{"protocol": "TCP",
                                                                                       "port": 8000}]}
    assert network_policies(make(network_policy=False)) == []
    clients = ({"podSelector": {"matchLabels": {"app": "agent"}}},)
    (_, r) = network_policies(make(router_from=clients))
    assert r["spec"]["ingress"][0]["from"] == [dict(clients[0])]
