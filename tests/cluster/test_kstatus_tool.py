"""The kstatus tool (hack/kstatus, built by hack/build-rig) on objects given by hand: no cluster is needed, but the
test lives in the cluster tier because the rig builds the binary. Without the binary it is skipped loudly, except
under CI (CI=true) or MOE_REQUIRE_CLUSTER=1, where that is a failure (as tests/cluster/conftest.py does)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from kstatus import kstatus, kstatus_bin


@pytest.fixture(autouse=True)
def _binary() -> None:
    if kstatus_bin().is_file():
        return
    msg = f"KSTATUS TOOL NOT BUILT: {kstatus_bin()} is missing (run hack/build-rig kstatus)"
    if os.environ.get("CI", "").lower() == "true" or os.environ.get("MOE_REQUIRE_CLUSTER") == "1":
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def _moedeployment(generation: int, observed: int, conditions: list[dict[str, str]]) -> dict[str, Any]:
    return {"apiVersion": "moe-operator.io/v1alpha1", "kind": "MoEDeployment",
            "metadata": {"name": "m", "namespace": "d", "generation": generation},
            "status": {"observedGeneration": observed, "conditions": conditions}}


@pytest.mark.parametrize(("obj", "want"), [
    pytest.param({"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": "x", "namespace": "d", "generation": 2}, "status": {"observedGeneration": 1}},
                 "InProgress", id="deployment-generation-not-observed"),
    pytest.param(_moedeployment(1, 1, [{"type": "Reconciling", "status": "True", "message": "rolling"}]),
                 "InProgress", id="cr-reconciling"),
    pytest.param(_moedeployment(1, 1, [{"type": "Stalled", "status": "True", "message": "no capacity"}]),
                 "Failed", id="cr-stalled"),
    pytest.param(_moedeployment(3, 3, [{"type": "Ready", "status": "True"}]), "Current", id="cr-ready-observed"),
])
def test_status(obj: dict[str, Any], want: str) -> None:
    [got] = kstatus([obj])
    assert got["status"] == want, got
    meta = obj["metadata"]
    assert (got["kind"], got["name"], got["namespace"]) == (obj["kind"], meta["name"], meta["namespace"])


def test_list_and_malformed_input() -> None:
    got = kstatus([{"kind": "List", "items": [_moedeployment(2, 1, []), _moedeployment(1, 1, [])]}])
    assert [g["status"] for g in got] == ["InProgress", "Current"], got
    with pytest.raises(RuntimeError, match="not an object"):
        kstatus([1])  # type: ignore[list-item]
