"""Every example MoEDeployment goes through the admission path (admission.check_moedeployment, then
desired.desired_state, what the webhook and reconcile run) against its example pool, without a cluster: a shipped
example that the operator would refuse, or render differently than it says, fails here. (The cluster tier also
dry-runs them against the rig's apiserver and kube-scores what they render.)"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# the rig's node sizes as the pools' observed status (hack/rig/testcluster.py POOLS), as tests/cluster/test_kube_score
NODE = {"cpu": "224", "memory": "2048Gi", "ephemeralStorage": "4096Gi"}
ASCEND_NODE = {"cpu": "320", "memory": "1536Gi", "ephemeralStorage": "4096Gi"}


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


POOLS = {d["metadata"]["name"]: d for p in sorted((ROOT / "examples/pools").glob("*.yaml")) for d in _docs(p)
         if d.get("kind") == "AcceleratorPool"}
DEPLOYMENTS = {f"{p.name}/{d['metadata']['name']}": d for p in sorted((ROOT / "examples").glob("*.yaml"))
               for d in _docs(p) if d.get("kind") == "MoEDeployment"}


async def get_pool(name: str) -> dict[str, Any] | None:
    pool = POOLS.get(name)
    if pool is None:
        return None
    return {**pool, "status": {"observedGeneration": 1, "nodeAllocatable": ASCEND_NODE if "ascend" in name else NODE}}


def test_every_example_is_listed() -> None:
    assert {k.split("/")[0] for k in DEPLOYMENTS} >= {"kimi-k2.5-h200.yaml", "glm-5-b200.yaml", "glm-4.7-ascend.yaml",
                                                       "kimi-k2.5-h200-pd.yaml", "glm-5-ascend-pd.yaml"}
    assert {"h200", "b200", "ascend-910c", "ascend-910c-rdma"} <= set(POOLS)


@pytest.mark.parametrize("key", sorted(DEPLOYMENTS))
def test_example_passes_admission_and_renders(key: str) -> None:
    from moe_operator.admission import check_moedeployment
    from moe_operator.desired import desired_state

    meta = {**DEPLOYMENTS[key]["metadata"], "uid": "00000000-0000-0000-0000-00000000e001"}
    body = {**DEPLOYMENTS[key], "metadata": meta}
    assert body["spec"].get("pool") in POOLS or set(body["spec"].get("pools") or []) <= set(POOLS), key
    assert asyncio.run(check_moedeployment(body, get_pool)) is None
    d = asyncio.run(desired_state(body, get_pool))
    name = body["metadata"]["name"]
    lws = {o["metadata"]["name"]: o for o in d.children if o["kind"] == "LeaderWorkerSet"}
    pdbs = [o for o in d.children if o["kind"] == "PodDisruptionBudget"]
    if body["spec"].get("disaggregation") is None:
        assert set(lws) == {name} and d.prefill is None
        return
    # disaggregated: a decode LWS <name> and a prefill LWS <name>-prefill, a PDB per role, SMG in PD mode
    assert set(lws) == {name, f"{name}-prefill"} and d.prefill is not None
    assert len(pdbs) >= 2, [p["metadata"]["name"] for p in pdbs]
    for lws_name, role in ((name, "decode"), (f"{name}-prefill", "prefill")):
        leader = lws[lws_name]["spec"]["leaderWorkerTemplate"]["leaderTemplate"]
        argv = leader["spec"]["containers"][0]["args"]
        assert argv[argv.index("--disaggregation-mode") + 1] == role
        backend = body["spec"]["disaggregation"].get("transferBackend")
        if backend:
            assert argv[argv.index("--disaggregation-transfer-backend") + 1] == backend
    router = next(o for o in d.children if o["kind"] == "Deployment" and o["metadata"]["name"] == f"{name}-router")
    assert "--pd-disaggregation" in router["spec"]["template"]["spec"]["containers"][0]["args"]
    assert d.planned.prefill is not None and d.prefill.replicas >= 1
