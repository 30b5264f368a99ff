"""The pod runner gives kwok pods real processes: SGLang simulators at the pods' loopback IPs and the real router,
SMG 1.13.0, discovering them through the rig's API server."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes.aio import client

from kube import Cluster, wait_for
from operator_proc import pod_runner as run_pod_runner

ROOT = Path(__file__).resolve().parents[2]
KWOK_TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}
LWS = ("leaderworkerset.x-k8s.io", "v1", "leaderworkersets")
LWS_NAME = "leaderworkerset.sigs.k8s.io/name"
WORKER_INDEX = "leaderworkerset.sigs.k8s.io/worker-index"
ROUTER_PYTHON = os.environ.get("SMG_PYTHON", str(ROOT / ".testcluster/venv-router/bin/python"))
HAVE_ROUTER = Path(ROUTER_PYTHON).exists()
KV_PER_DP = 8192


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else f"({path} missing)"


def sglang_lws(name: str) -> dict[str, Any]:
    pod = {
        "metadata": {"annotations": {"moe-operator.io/sim-max-total-tokens-per-dp": str(KV_PER_DP),
                                     "moe-operator.io/sim-dp-size": "2",
                                     "moe-operator.io/sim-cold-start-seconds": "2"}},
        "spec": {
            "tolerations": [KWOK_TOLERATION],
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H200"},
            "terminationGracePeriodSeconds": 30,
            "containers": [{
                "name": "sglang",
                "image": "lmsysorg/sglang:v0.5.23",
                "command": ["python3", "-m", "sglang.launch_server"],
                "args": ["--model-path", "deepseek-ai/DeepSeek-V3", "--served-model-name", "dsv3", "--tp-size", "16",
                         "--attn-dp-size", "2", "--dist-init-addr", "$(LWS_LEADER_ADDRESS):20000",
                         "--nnodes", "$(LWS_GROUP_SIZE)", "--node-rank", "$(LWS_WORKER_INDEX)",
                         "--host", "0.0.0.0", "--port", "30000", "--enable-metrics"],
                "env": [{"name": "LWS_WORKER_INDEX",
                         "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{WORKER_INDEX}']"}}}],
                "resources": {"limits": {"nvidia.com/gpu": "8"}},
            }],
        },
    }
    return {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "metadata": {"name": name},
            "spec": {"replicas": 1, "leaderWorkerTemplate": {
                "size": 2, "restartPolicy": "RecreateGroupOnPodRestart", "workerTemplate": pod}}}


def router_pod(name: str, ns: str, lws: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "sim-router"}},
        "spec": {
            "tolerations": [KWOK_TOLERATION],
            "nodeSelector": {"moe-operator.io/pool": "cpu"},
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "router", "image": "lightseekorg/smg:1.13.0",
                "command": ["smg"],
                "args": ["--service-discovery", "--selector", f"{LWS_NAME}={lws}", f"{WORKER_INDEX}=0",
                         "--service-discovery-port", "30000", "--service-discovery-namespace", ns,
                         "--policy", "cache_aware", "--dp-aware", "--host", "0.0.0.0", "--port", "8000",
                         "--prometheus-host", "0.0.0.0", "--prometheus-port", "29000"],
            }],
        },
    }


@pytest.fixture
def pod_runner(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Path]:
    with run_pod_runner(cluster.kubeconfig, namespace, tmp_path, ROUTER_PYTHON, "--cold-start", "2") as log:
        yield log


async def _status(http: aiohttp.ClientSession, url: str) -> int | None:
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
            await r.read()
            return r.status
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None


def _metric(text: str, name: str) -> list[tuple[str, float]]:
    """(dp_rank, value) of the samples of `name`."""
    out = []
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1:].rsplit("} ", 1)
            rank = next((kv.split("=")[1].strip('"') for kv in labels.split(",") if kv.startswith("dp_rank=")), "")
            out.append((rank, float(value)))
    return out


async def test_pod_runner_serves_sglang_groups_and_the_router(
        cluster: Cluster, api: client.ApiClient, namespace: str, pod_runner: Path, tmp_path: Path) -> None:
    core = client.CoreV1Api(api)
    crd = client.CustomObjectsApi(api)
    await crd.create_namespaced_custom_object(*LWS[:2], namespace, LWS[2], sglang_lws("sim"))

    async def running_pods() -> dict[str, client.V1Pod] | None:
        pods = await core.list_namespaced_pod(namespace, label_selector=f"{LWS_NAME}=sim")
        by_index = {p.metadata.labels[WORKER_INDEX]: p for p in pods.items
                    if p.status.phase == "Running" and p.status.pod_ip}
        return by_index if len(by_index) == 2 else None

    async def describe() -> str:
        return _tail(pod_runner)

    pods = await wait_for(running_pods, timeout=120, what="2 Running pods of LWS sim", describe=describe)
    leader = f"http://{pods['0'].status.pod_ip}:30000"
    worker = f"http://{pods['1'].status.pod_ip}:30000"

    async with aiohttp.ClientSession() as http:
        started = time.monotonic()
        first = await wait_for(lambda: _status(http, f"{leader}/ready"), timeout=30, what="leader answering",
                               describe=describe, interval=0.1)
        assert await wait_for(lambda: _is(http, f"{leader}/ready", 200), timeout=30, what="leader /ready 200",
                              describe=describe)
        if first == 503:  # seen during the cold start: it lasted about the annotated 2 s
            assert time.monotonic() - started >= 0.5
        assert await _status(http, f"{worker}/health") == 200
        assert await _status(http, f"{worker}/ready") == 404  # ranks > 0 run SGLang's dummy server

        async with http.get(f"{leader}/metrics") as r:
            leader_metrics = await r.text()
        async with http.get(f"{worker}/metrics") as r:
            worker_metrics = await r.text()
        # attention DP 2 over 2 nodes: DP rank 0 on the leader's /metrics, DP rank 1 on the worker's
        assert _metric(leader_metrics, "sglang:max_total_num_tokens") == [("0", KV_PER_DP)]
        assert _metric(worker_metrics, "sglang:max_total_num_tokens") == [("1", KV_PER_DP)]
        async with http.get(f"{leader}/server_info") as r:
            info = await r.json()
        assert info["served_model_name"] == "dsv3" and info["tp_size"] == 16 and info["attn_dp_size"] == 2

        body = {"model": "dsv3", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
        async with http.post(f"{leader}/v1/chat/completions", json=body) as r:
            assert r.status == 200
            out = await r.json()
        assert out["usage"]["completion_tokens"] == 4 and out["model"] == "dsv3"

        if HAVE_ROUTER:
            await _router_routes_to_the_leader(http, core, namespace, leader, worker, body, describe, tmp_path)

        # deleting the LWS = SIGTERM: /health turns 503, the running request finishes (400 tokens at the default
        # 20 tokens/s: long enough to outlast the garbage collector's delay between the LWS and its pods' deletion,
        # 13 s seen while the previous tier's namespaces were being collected), then both simulators exit
        slow = asyncio.create_task(http.post(f"{leader}/v1/chat/completions", json={**body, "max_tokens": 400}))
        await asyncio.sleep(0.3)
        await crd.delete_namespaced_custom_object(*LWS[:2], namespace, LWS[2], "sim")
        assert await wait_for(lambda: _is(http, f"{leader}/health", 503), timeout=60, what="leader draining",
                              describe=describe, interval=0.1)
        async with await slow as r:
            assert r.status == 200 and (await r.json())["usage"]["completion_tokens"] == 400
        for url in (leader, worker):
            await wait_for(lambda u=url: _closed(http, f"{u}/health"), timeout=60, what=f"{url} closed",
                           describe=describe)
    if not HAVE_ROUTER:
        pytest.skip(f"simulators verified; router part skipped: no smg==1.13.0 interpreter at {ROUTER_PYTHON}"
                    " (set SMG_PYTHON)")


async def _is(http: aiohttp.ClientSession, url: str, status: int) -> bool:
    return await _status(http, url) == status


async def _closed(http: aiohttp.ClientSession, url: str) -> bool:
    return await _status(http, url) is None


async def _router_routes_to_the_leader(http: aiohttp.ClientSession, core: client.CoreV1Api, ns: str, leader: str,
                                       worker: str, body: dict[str, Any], describe: Any, tmp_path: Path) -> None:
    await core.create_namespaced_pod(ns, router_pod("router", ns, "sim"))

    async def router_ip() -> str | None:
        p = await core.read_namespaced_pod("router", ns)
        return p.status.pod_ip if p.status.phase == "Running" else None

    ip = await wait_for(router_ip, timeout=60, what="router pod Running")
    router = f"http://{ip}:8000"

    async def before() -> float:
        async with http.get(f"{leader}/metrics") as r:
            return sum(v for _, v in _metric(await r.text(), "sglang:num_requests_total"))

    n0 = await before()

    async def routed() -> dict[str, Any] | None:
        async with http.post(f"{router}/v1/chat/completions", json=body,
                             timeout=aiohttp.ClientTimeout(total=10)) as r:
            return await r.json() if r.status == 200 else None

    async def router_log() -> str:
        return (await describe()) + "\n--- router ---\n" + _tail(tmp_path / "routers" / f"{ns}_router.log")

    out = await wait_for(routed, timeout=60, what="a chat completion through SMG", describe=router_log,
                         interval=0.5)
    assert out["usage"]["completion_tokens"] == 4
    assert await before() == n0 + 1  # served by the leader's simulator

    # --dp-aware: SMG registers one worker per attention-DP rank (it reads attn_dp_size = 2 from /server_info) and
    # stamps each request with its rank; sglang-router 0.3.2 read dp_size = 1 and sent every request to rank 0.
    # DP rank 0's scheduler reports on the leader's /metrics, rank 1's on the worker's; requests a rank's scheduler
    # admitted are its queue-time histogram's count (SchedulerMetricsCollector, per DP rank; num_requests_total is the
    # tokenizer's, on the leader, for every rank)
    async def per_rank() -> tuple[float, float]:
        async with http.get(f"{leader}/metrics") as r0, http.get(f"{worker}/metrics") as r1:
            return (sum(v for _, v in _metric(await r0.text(), "sglang:queue_time_seconds_count")),
                    sum(v for _, v in _metric(await r1.text(), "sglang:queue_time_seconds_count")))

    async def rank_workers() -> bool:
        async with http.get(f"{router}/workers") as r:
            ws = (await r.json()).get("workers") or []
        return sorted(w.get("dp_rank") for w in ws if w.get("is_healthy")) == [0, 1]

    await wait_for(rank_workers, timeout=60, what="SMG lists both DP ranks as healthy workers", describe=router_log)
    r0, r1 = await per_rank()
    prompts = [{**body, "messages": [{"role": "user", "content": f"task {i}: " + "lorem ipsum " * (20 + 7 * i)}]}
               for i in range(12)]
    for b in prompts:  # one at a time: the policy sees each rank's tree and load as the previous request left them
        async with http.post(f"{router}/v1/chat/completions", json=b, timeout=aiohttp.ClientTimeout(total=30)) as r:
            assert r.status == 200, await r.text()
    s0, s1 = await per_rank()
    assert s0 + s1 == r0 + r1 + len(prompts)
    assert s0 > r0 and s1 > r1, f"requests per DP rank: rank 0 +{s0 - r0}, rank 1 +{s1 - r1}"
    await core.delete_namespaced_pod("router", ns)
    await wait_for(lambda: _closed(http, f"{router}/health"), timeout=30, what="router stopped",
                   describe=router_log)
