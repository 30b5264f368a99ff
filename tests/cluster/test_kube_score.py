"""kube-score (github.com/zegl/kube-score, pinned in hack/versions.env, built by hack/build-rig) over the Helm chart and
over what the operator renders for every shipped example. Each finding left is listed, with the reason it does not
apply, in tests/kube_score_accepted.yaml; a finding not listed there fails this test (and one listed but no longer
found fails too, so the list cannot rot).

The LWS pod templates are wrapped in Deployments (a kind the scanner understands); the examples are rendered by the
operator's own desired_state against the example pools, with the rig's node sizes as their observed status."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from kube import Cluster

ROOT = Path(__file__).resolve().parents[2]
ACCEPTED = ROOT / "tests/kube_score_accepted.yaml"
NODE = {"cpu": "224", "memory": "2048Gi", "ephemeralStorage": "4096Gi"}  # the rig's GPU nodes (hack/rig)
ASCEND_NODE = {"cpu": "320", "memory": "1536Gi", "ephemeralStorage": "4096Gi"}


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def rendered_examples() -> list[dict[str, Any]]:
    from moe_operator.desired import desired_state

    pools = {d["metadata"]["name"]: d for p in sorted((ROOT / "examples/pools").glob("*.yaml")) for d in _docs(p)}
    for name, pool in pools.items():
        pool["status"] = {"observedGeneration": 1,
                          "nodeAllocatable": ASCEND_NODE if "ascend" in name else NODE}

    async def get_pool(name: str) -> dict[str, Any] | None:
        return pools.get(name)

    out: list[dict[str, Any]] = []
    for f in sorted((ROOT / "examples").glob("*.yaml")):
        for body in _docs(f):
            if body.get("kind") != "MoEDeployment":
                continue
            body["metadata"].setdefault("uid", "00000000-0000-0000-0000-000000000001")
            want = asyncio.run(desired_state(body, get_pool))
            for obj in want.children:
                if obj["kind"] == "LeaderWorkerSet":
                    tmpl = obj["spec"]["leaderWorkerTemplate"]
                    for role in ("leaderTemplate", "workerTemplate"):
                        labels = tmpl[role]["metadata"]["labels"]
                        out.append({"apiVersion": "apps/v1", "kind": "Deployment",
                                    "metadata": {"name": f"{obj['metadata']['name']}-{role[:-8]}",
                                                 "namespace": obj["metadata"]["namespace"]},
                                    "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                                             "template": tmpl[role]}})
                else:
                    out.append(obj)
    return out


def findings(cluster: Cluster, manifests: str) -> set[str]:
    r = subprocess.run([str(cluster.bin_dir / "kube-score"), "score", "--output-format", "ci", "-"],
                       input=manifests, capture_output=True, text=True)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(("[CRITICAL]", "[WARNING]"))]
    # names carry example-specific parts; keep them: the accepted list says which object each finding is about
    return {re.sub(r"\s+", " ", ln).strip() for ln in lines}


def test_no_scanner_finding_but_the_accepted_ones(cluster: Cluster) -> None:
    chart = subprocess.run([str(cluster.bin_dir / "helm"), "template", "moe", str(ROOT / "charts/moe-operator"),
                            "-n", "moe-system", "--kube-version", "1.36.3"], capture_output=True, text=True,
                           check=True).stdout
    operator = yaml.safe_dump_all(rendered_examples(), sort_keys=False)
    found = findings(cluster, chart) | findings(cluster, operator)
    accepted = yaml.safe_load(ACCEPTED.read_text())["accepted"]
    patterns = [(re.compile(a["finding"]), a) for a in accepted]
    new = sorted(f for f in found if not any(p.search(f) for p, _ in patterns))
    stale = sorted(a["finding"] for p, a in patterns if not any(p.search(f) for f in found))
    assert not new, "kube-score findings not in tests/kube_score_accepted.yaml:\n" + "\n".join(new)
    assert not stale, "accepted findings kube-score no longer reports (remove them):\n" + "\n".join(stale)
