"""The rig is real: scheduler places GPU pods on kwok nodes, LWS (with its webhooks) runs groups, kwok chaos works."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from kubernetes.aio import client

from kube import Cluster, wait_for

ROOT = Path(__file__).resolve().parents[2]
KWOK_TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}
LWS = ("leaderworkerset.x-k8s.io", "v1", "leaderworkersets")
WORKER_INDEX = "leaderworkerset.sigs.k8s.io/worker-index"
GROUP_INDEX = "leaderworkerset.sigs.k8s.io/group-index"


def _versions() -> dict[str, str]:
    out = {}
    for line in (ROOT / "hack/versions.env").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "=" in line:
            k, v = line.split("=", 1)
            out[k] = v.strip()
    return out


def lws_manifest(name: str, size: int, gpus: int, product: str = "NVIDIA-H200") -> dict:
    pod = {
        "spec": {
            "tolerations": [KWOK_TOLERATION],
            "nodeSelector": {"nvidia.com/gpu.product": product},
            "containers": [{
                "name": "sglang",
                "image": "lmsysorg/sglang:v0.5.23",
                "command": ["python3", "-m", "sglang.launch_server"],
                "args": ["--dist-init-addr", "$(LWS_LEADER_ADDRESS):20000", "--nnodes", "$(LWS_GROUP_SIZE)"],
                "env": [{"name": "LWS_WORKER_INDEX",
                         "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{WORKER_INDEX}']"}}}],
                "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
            }],
        }
    }
    return {
        "apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "metadata": {"name": name},
        "spec": {"replicas": 1, "leaderWorkerTemplate": {
            "size": size, "restartPolicy": "RecreateGroupOnPodRestart", "workerTemplate": pod}},
    }


async def group_pods(api: client.ApiClient, ns: str, name: str) -> list[client.V1Pod]:
    pods = await client.CoreV1Api(api).list_namespaced_pod(
        ns, label_selector=f"leaderworkerset.sigs.k8s.io/name={name}")
    return [p for p in pods.items if not p.metadata.deletion_timestamp]


def is_ready(pod: client.V1Pod) -> bool:
    return pod.status.phase == "Running" and any(
        c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


async def describe_pods(api: client.ApiClient, ns: str) -> str:
    pods = await client.CoreV1Api(api).list_namespaced_pod(ns)
    return "\n".join(f"  pod {p.metadata.name} phase={p.status.phase} node={p.spec.node_name} ip={p.status.pod_ip} "
                     f"labels={p.metadata.labels}" for p in pods.items) or "  (no pods)"


async def test_apiserver_reports_real_version(cluster: Cluster) -> None:
    version = cluster.kubectl_json("version")
    assert version["serverVersion"]["gitVersion"] == _versions()["K8S_VERSION"]


async def test_simulated_node_pools(cluster: Cluster) -> None:
    nodes = cluster.kubectl_json("get", "nodes", "-l", "type=kwok")["items"]
    by_pool: dict[str, list[dict]] = {}
    for n in nodes:
        by_pool.setdefault(n["metadata"]["labels"]["moe-operator.io/pool"], []).append(n)
    expected = {pool: int(os.environ.get(f"MOE_RIG_{pool.upper()}_NODES", n))
                for pool, n in (("h200", 8), ("b200", 8), ("ascend", 4))}
    for pool, count in expected.items():
        assert len(by_pool.get(pool, [])) >= count, f"{pool}: {len(by_pool.get(pool, []))} nodes"
    assert by_pool.get("cpu"), "no CPU nodes for the operator and routers"
    h200 = by_pool["h200"][0]
    assert h200["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    assert h200["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H200"
    assert h200["metadata"]["labels"]["moe-operator.io/device-memory-gb"] == "141"
    assert h200["metadata"]["labels"]["moe-operator.io/nvlink-domain"]
    b200 = by_pool["b200"][0]
    assert b200["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-B200"
    assert b200["metadata"]["labels"]["moe-operator.io/device-memory-gb"] == "180"
    asc = by_pool["ascend"][0]
    assert asc["status"]["allocatable"]["huawei.com/Ascend910"] == "16"
    assert asc["metadata"]["labels"]["accelerator"] == "huawei-Ascend910"
    assert asc["metadata"]["labels"]["moe-operator.io/device-memory-gb"] == "64"
    for n in nodes:
        assert ipaddress.ip_network(n["spec"]["podCIDR"]).subnet_of(ipaddress.ip_network("127.0.0.0/8"))
        assert any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])


async def test_lws_group_of_two_runs_on_distinct_h200_nodes(api: client.ApiClient, namespace: str) -> None:
    await client.CustomObjectsApi(api).create_namespaced_custom_object(*LWS[:2], namespace, LWS[2],
                                                                       lws_manifest("g2", size=2, gpus=8))

    async def two_ready() -> list[client.V1Pod] | None:
        pods = await group_pods(api, namespace, "g2")
        return pods if len(pods) == 2 and all(is_ready(p) for p in pods) else None

    pods = await wait_for(two_ready, timeout=60, what="2 Ready pods of LWS g2",
                          describe=lambda: describe_pods(api, namespace))
    nodes = {p.spec.node_name for p in pods}
    assert len(nodes) == 2, f"both pods on one node: {nodes}"
    assert all(n.startswith("h200-") for n in nodes), nodes
    # labels set by the LWS pod webhook
    assert sorted(p.metadata.labels[WORKER_INDEX] for p in pods) == ["0", "1"]
    assert all(p.metadata.labels[GROUP_INDEX] == "0" for p in pods)
    for p in pods:
        env = {e.name: e.value for e in p.spec.containers[0].env}
        assert env.get("LWS_LEADER_ADDRESS", "").startswith("g2-0.g2."), env  # injected by the LWS webhook
        assert env.get("LWS_GROUP_SIZE") == "2", env
        assert ipaddress.ip_address(p.status.pod_ip) in ipaddress.ip_network("127.0.0.0/8"), p.status.pod_ip


async def ready_group_of_two(api: client.ApiClient, namespace: str, name: str) -> list[client.V1Pod]:
    """An LWS of one 2-pod group (8 GPUs each), once both pods are Ready."""
    await client.CustomObjectsApi(api).create_namespaced_custom_object(*LWS[:2], namespace, LWS[2],
                                                                       lws_manifest(name, size=2, gpus=8))

    async def two_ready() -> list[client.V1Pod] | None:
        pods = await group_pods(api, namespace, name)
        return pods if len(pods) == 2 and all(is_ready(p) for p in pods) else None

    return await wait_for(two_ready, timeout=60, what="group ready", describe=lambda: describe_pods(api, namespace))


async def test_crashed_worker_container_makes_lws_recreate_the_whole_group(
        api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    pods = await ready_group_of_two(api, namespace, "chaos")
    before = {p.metadata.name: p.metadata.uid for p in pods}
    worker = next(p for p in pods if p.metadata.labels[WORKER_INDEX] == "1")
    # rig chaos stage (hack/rig/stages/pod-container-restart.yaml): the worker's container crashes and is
    # restarted in place, as a kubelet does for restartPolicy=Always; LWS's RecreateGroupOnPodRestart must
    # then recreate the whole group, the healthy leader included
    await core.patch_namespaced_pod(worker.metadata.name, namespace, {"metadata": {"labels": {
        "pod-container-restart.stage.moe-operator.io": "true"}}})

    async def recreated() -> bool:
        pods = await group_pods(api, namespace, "chaos")
        now = {p.metadata.name: p.metadata.uid for p in pods if is_ready(p)}
        # every pod of the group, the healthy leader included, has a new uid
        return len(now) == 2 and all(now.get(n) not in (None, uid) for n, uid in before.items())

    await wait_for(recreated, timeout=90, what="LWS to recreate both pods of the group",
                   describe=lambda: describe_pods(api, namespace))


async def test_failed_pod_is_replaced(api: client.ApiClient, namespace: str) -> None:
    """kwok's own chaos stage (phase Failed) still works on the rig: the StatefulSet replaces the failed pod."""
    core = client.CoreV1Api(api)
    pods = await ready_group_of_two(api, namespace, "fail")
    worker = next(p for p in pods if p.metadata.labels[WORKER_INDEX] == "1")
    await core.patch_namespaced_pod(worker.metadata.name, namespace, {"metadata": {"labels": {
        "pod-container-running-failed.stage.kwok.x-k8s.io": "true"}, "annotations": {
        "pod-container-running-failed.stage.kwok.x-k8s.io/delay": "100"}}})

    async def replaced() -> bool:
        pods = await group_pods(api, namespace, "fail")
        new = [p for p in pods if p.metadata.name == worker.metadata.name and p.metadata.uid != worker.metadata.uid]
        return bool(new) and is_ready(new[0])

    await wait_for(replaced, timeout=90, what="the failed worker pod replaced",
                   describe=lambda: describe_pods(api, namespace))


async def test_group_larger_than_a_node_stays_pending_with_failed_scheduling(
        api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    await client.CustomObjectsApi(api).create_namespaced_custom_object(*LWS[:2], namespace, LWS[2],
                                                                       lws_manifest("big", size=2, gpus=16))

    async def failed_scheduling() -> list:
        events = await core.list_namespaced_event(namespace)
        return [e for e in events.items if e.reason == "FailedScheduling" and "nvidia.com/gpu" in (e.message or "")]

    events = await wait_for(failed_scheduling, timeout=60, what="a FailedScheduling event naming nvidia.com/gpu",
                            describe=lambda: describe_pods(api, namespace))
    assert "Insufficient nvidia.com/gpu" in events[0].message, events[0].message
    pods = await group_pods(api, namespace, "big")
    assert pods and all(p.status.phase == "Pending" and not p.spec.node_name for p in pods)


async def test_node_not_ready_chaos_is_observable(api: client.ApiClient, cluster: Cluster) -> None:
    core = client.CoreV1Api(api)
    node = "ascend-003"
    label = "node-not-ready.stage.kwok.x-k8s.io"

    async def ready_status() -> str:
        n = await core.read_node(node)
        return next(c.status for c in n.status.conditions if c.type == "Ready")

    await core.patch_node(node, {"metadata": {"labels": {label: "true"}}})
    try:
        await wait_for(lambda: _eq(ready_status(), "False"), timeout=60, what=f"{node} Ready=False")
    finally:
        await core.patch_node(node, {"metadata": {"labels": {label: None}}})
    await wait_for(lambda: _eq(ready_status(), "True"), timeout=60, what=f"{node} back to Ready=True")


async def _eq(aw, value) -> bool:  # type: ignore[no-untyped-def]
    return (await aw) == value
