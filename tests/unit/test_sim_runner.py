"""Pod runner (moe_sim.runner): which pods it serves, and how it sizes and binds them."""

from __future__ import annotations

import argparse
import json
from typing import Any

from kubernetes.aio.client import V1Pod

from moe_sim.runner import add_runner_args, classify, container_argv, router_argv, sim_config

ARGV = ["--model-path", "/models/dsv3", "--tp-size", "16", "--attn-dp-size", "4", "--dist-init-addr",
        "$(LWS_LEADER_ADDRESS):20000", "--nnodes", "$(LWS_GROUP_SIZE)", "--node-rank", "$(LWS_WORKER_INDEX)",
        "--host", "0.0.0.0", "--port", "31000", "--enable-metrics"]


async def _pod(args: list[str], *, index: str = "0", annotations: dict[str, str] | None = None,
         command: list[str] | None = None, lws: bool = True) -> Any:
    labels = {"leaderworkerset.sigs.k8s.io/worker-index": index} if lws else {}
    if lws:
        labels["leaderworkerset.sigs.k8s.io/name"] = "g"
    raw = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "g-0", "namespace": "ns", "uid": "u1", "labels": labels,
                     "annotations": annotations or {}},
        "spec": {"nodeName": "h200-000", "containers": [{
            "name": "sglang", "image": "x", "command": command or ["python3", "-m", "sglang.launch_server"],
            "args": args,
            "env": [{"name": "LWS_LEADER_ADDRESS", "value": "g-0.g.ns"}, {"name": "LWS_GROUP_SIZE", "value": "2"},
                    {"name": "LWS_WORKER_INDEX", "valueFrom": {"fieldRef": {
                        "fieldPath": "metadata.labels['leaderworkerset.sigs.k8s.io/worker-index']"}}}]}]},
        "status": {"phase": "Running", "podIP": "127.1.2.3"},
    }

    return V1Pod.from_dict(json.loads(json.dumps(raw)))  # as the official client hands pods to the runner


def _opts(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_runner_args(p)
    return p.parse_args(list(argv))


async def test_classify() -> None:
    assert classify(await _pod(ARGV))[0] == "sglang"
    assert classify(await _pod(ARGV, lws=False)) is None  # only LWS group pods are simulated
    assert classify(await _pod(["-c", "python3 -m sglang.launch_server --port 1"], command=["bash"]))[0] == "sglang"
    assert classify(await _pod(["--port", "8000"], command=["smg"], lws=False))[0] == "router"
    assert classify(await _pod(["launch", "--port", "8000"], command=["/usr/local/bin/smg"], lws=False))[0] == "router"
    assert classify(await _pod(["--port", "8000"], command=["python3", "-m", "smg.launch_router"],
                         lws=False))[0] == "router"
    assert classify(await _pod(["--port", "8000"], command=["python3", "-m", "sglang_router.launch_router"],
                         lws=False)) is None  # the superseded sglang-router is not run any more
    assert classify(await _pod(["x"], command=["sleep"])) is None


async def test_argv_expands_env_and_field_refs() -> None:
    pod = await _pod(ARGV, index="1")
    argv = container_argv(pod, pod.spec.containers[0])
    assert "g-0.g.ns:20000" in argv and argv[argv.index("--nnodes") + 1] == "2"
    assert argv[argv.index("--node-rank") + 1] == "1"
    pod = await _pod(["-c", "python3 -m sglang.launch_server --port 31001"], command=["/bin/sh"])
    assert container_argv(pod, pod.spec.containers[0])[-2:] == ["--port", "31001"]


async def test_sizes_from_argv_and_defaults() -> None:
    pod = await _pod(ARGV)
    cfg, role = sim_config(pod, pod.spec.containers[0], _opts("--default-max-total-tokens", "5000"))
    assert role == "leader"
    assert (cfg.host, cfg.port) == ("127.1.2.3", 31000)
    assert (cfg.dp_size, cfg.tp_size, cfg.max_total_tokens, cfg.nnodes, cfg.node_rank) == (4, 16, 5000, 2, 0)
    assert cfg.cold_start == 2.0 and cfg.model_name == "/models/dsv3"


async def test_sizes_from_annotations() -> None:
    pod = await _pod(ARGV, index="1", annotations={"moe-operator.io/sim-max-total-tokens-per-dp": "123456",
                                             "moe-operator.io/sim-dp-size": "8",
                                             "moe-operator.io/sim-cold-start-seconds": "0.5",
                                             "moe-operator.io/sim-decode-tps": "40"})
    cfg, role = sim_config(pod, pod.spec.containers[0], _opts())
    assert role == "worker" and cfg.node_rank == 1
    assert (cfg.dp_size, cfg.max_total_tokens, cfg.cold_start, cfg.decode_tps) == (8, 123456, 0.5, 40.0)
    assert cfg.ranks_of_node(1) == [4, 5, 6, 7]


async def test_default_port_and_deprecated_dp_attention() -> None:
    pod = await _pod(["--model-path", "m", "--tp", "8", "--enable-dp-attention", "--dp-size", "8"])
    cfg, _ = sim_config(pod, pod.spec.containers[0], _opts())
    assert cfg.port == 30000 and cfg.dp_size == 8


async def test_router_is_rebound_to_the_pod_ip() -> None:
    pod = await _pod(["--service-discovery", "--selector", "a=b", "--host", "0.0.0.0", "--port", "8000",
                "--prometheus-host=0.0.0.0", "--prometheus-port", "29000"],
               command=["smg"], lws=False)
    args = router_argv(pod, pod.spec.containers[0])
    assert "0.0.0.0" not in " ".join(args)
    assert args[-4:] == ["--host", "127.1.2.3", "--prometheus-host", "127.1.2.3"]
    assert args[:3] == ["--service-discovery", "--selector", "a=b"]
