"""Cluster tier: a real kube-apiserver/etcd/controller-manager/scheduler, kwok nodes and the LWS controller,
started by hack/testcluster (or reused when already up).

When the rig cannot start, the tier is skipped with a loud reason — except under CI (CI=true) or with
MOE_REQUIRE_CLUSTER=1, where that is a failure: CI must really run this tier."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from kubernetes.aio import client, config

from kube import Cluster, wait_for
from operator_proc import OperatorProcess, paused_demo

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("MOE_TESTCLUSTER_DIR", ROOT / ".testcluster"))
GROUP, VERSION = "moe-operator.io", "v1alpha1"
KWOK_TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}

H200_NODES = {"nvidia.com/gpu.product": "NVIDIA-H200"}
RDMA = {"resourceName": "rdma/ib", "count": 1}
POOLS = {
    "rig-h200": {"accelerator": {"profile": "h200"}, "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H200"},
                 "tolerations": [KWOK_TOLERATION], "rdma": {"resourceName": "rdma/ib", "count": 1},
                 "topologyKey": "moe-operator.io/nvlink-domain", "modelCache": {"hostPathPrefixes": ["/mnt/models"]}},
    "rig-b200": {"accelerator": {"profile": "b200"}, "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-B200"},
                 "tolerations": [KWOK_TOLERATION]},
    "rig-ascend": {"accelerator": {"profile": "ascend-910c"}, "nodeSelector": {"accelerator": "huawei-Ascend910"},
                   "tolerations": [KWOK_TOLERATION]},
    # the rig's H200 nodes as a pool whose nodes have little disk, and one that wants digest-pinned images
    "rig-h200-small-disk": {"accelerator": {"profile": "h200"}, "nodeSelector": H200_NODES,
                            "tolerations": [KWOK_TOLERATION], "node": {"ephemeralStorage": "100Gi"}, "rdma": RDMA},
    "rig-h200-digests": {"accelerator": {"profile": "h200"}, "nodeSelector": H200_NODES,
                         "tolerations": [KWOK_TOLERATION], "requireImageDigests": True, "rdma": RDMA,
                         "sglangImage": "lmsysorg/sglang@sha256:" + "0" * 64},
    # pods leave a NotReady node 5 s after the node controller taints it (the NoExecute eviction path)
    "rig-h200-evict": {"accelerator": {"profile": "h200"}, "nodeSelector": H200_NODES,
                       "tolerations": [KWOK_TOLERATION], "rdma": RDMA, "nodeFailureTolerationSeconds": 5},
    # one node only: a 2-node group cannot be placed
    "rig-h200-one": {"accelerator": {"profile": "h200"}, "nodeSelector": {"kubernetes.io/hostname": "h200-007"},
                     "tolerations": [KWOK_TOLERATION], "rdma": {"resourceName": "rdma/ib", "count": 1}},
}




def _required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("MOE_REQUIRE_CLUSTER") == "1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/cluster/" in str(item.fspath):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    status = subprocess.run([str(ROOT / "hack/testcluster"), "status"], capture_output=True, text=True)
    already_up = status.returncode == 0
    if not already_up:
        r = subprocess.run([str(ROOT / "hack/testcluster"), "up"], capture_output=True, text=True)
        if r.returncode != 0:
            msg = (
                "\n" + "!" * 100 + "\nCLUSTER TIER NOT RUN: `hack/testcluster up` failed "
                f"(exit {r.returncode}).\n{r.stderr[-4000:]}\n" + "!" * 100
            )
            if _required():
                pytest.fail(msg, pytrace=False)
            pytest.skip(msg)
    yield Cluster(kubeconfig=STATE / "kubeconfig", bin_dir=STATE / "bin")
    if not already_up and os.environ.get("MOE_KEEP_CLUSTER") != "1":
        subprocess.run([str(ROOT / "hack/testcluster"), "down"], capture_output=True, text=True)


@pytest.fixture(scope="session", autouse=True)
def demo_paused(cluster: Cluster) -> Iterator[None]:
    """`make demo` leaves an operator and a pod-runner running on the rig; this tier runs its own of both, and two of
    each would fight over the webhook registration, the objects and the pods' IPs (operator_proc.paused_demo)."""
    with paused_demo(STATE):
        yield


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def api(cluster: Cluster) -> AsyncIterator[client.ApiClient]:
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=cfg)
    async with client.ApiClient(cfg) as api_client:
        yield api_client


@pytest_asyncio.fixture(loop_scope="session")
async def namespace(api: client.ApiClient, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh namespace per test, with its default ServiceAccount present; deleted afterwards."""
    core = client.CoreV1Api(api)
    base = request.node.name.lower().replace("_", "-")[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:5]}"
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))

    async def has_sa() -> bool:
        sas = await core.list_namespaced_service_account(name)
        return any(sa.metadata.name == "default" for sa in sas.items)

    await wait_for(has_sa, timeout=30, what=f"default ServiceAccount in {name}")
    yield name
    if os.environ.get("MOE_KEEP_NAMESPACES") != "1":
        await core.delete_namespace(name)
        await asyncio.sleep(0)


@pytest.fixture(scope="session")
def operator(cluster: Cluster) -> Iterator[OperatorProcess]:
    """The operator under test, as a real process with its webhook registered by URL; CRDs and pools applied."""
    for crd in sorted((ROOT / "crds").glob("*.yaml")):
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    for crd in ("moedeployments.moe-operator.io", "acceleratorpools.moe-operator.io"):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=30s")
    proc = OperatorProcess(cluster.kubeconfig, cluster.kubeconfig.parent / "logs")
    proc.start()
    proc.wait_live()
    # it reconciles once it holds the leader Lease (at once, unless another live replica holds it)
    for _ in range(300):
        if cluster.lease_holder() == proc.identity:
            break
        time.sleep(0.2)
    # the operator registers its validating webhook by URL itself; wait for it before creating pools
    for _ in range(100):
        if cluster.kubectl("get", "validatingwebhookconfiguration", "moe-operator.io", check=False).returncode == 0:
            break
        time.sleep(0.2)
    for name, spec in POOLS.items():
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AcceleratorPool", "metadata": {"name": name}, "spec": spec}
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=json.dumps(body))
    for pool in sorted((ROOT / "examples/pools").glob("*.yaml")):  # examples and admission tests use them
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(pool))
    yield proc
    proc.stop()


