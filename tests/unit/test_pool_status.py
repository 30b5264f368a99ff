"""AcceleratorPool status as the CRD declares it, refreshed only when it changes."""

from __future__ import annotations

from typing import Any

from moe_operator.api.v1alpha1 import AcceleratorPoolStatus
from moe_operator.handlers.pool import _changed, pool_status


def node(ready: bool, gpus: int = 8, cpu: str = "224", memory: str = "2Ti") -> dict[str, Any]:
    return {"status": {"allocatable": {"nvidia.com/gpu": str(gpus), "cpu": cpu, "memory": memory,
                                       "ephemeral-storage": "3500Gi"},
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_nodes_counts_ready_nodes_and_only_declared_fields_are_written() -> None:
    body = {"metadata": {"generation": 2}, "status": {}}
    st = pool_status(body, [node(True), node(True), node(False)], "nvidia.com/gpu")
    assert st["nodes"] == 2 and st["allocatableDevices"] == 16
    declared = {f.alias or n for n, f in AcceleratorPoolStatus.model_fields.items()}
    assert set(st) <= declared  # nothing the apiserver would prune (and the operator rewrite forever)
    assert st["conditions"][0]["reason"] == "NodesReady" and "2 of 3" in st["conditions"][0]["message"]
    none = pool_status(body, [node(False)], "nvidia.com/gpu")
    assert none["nodes"] == 0 and none["conditions"][0]["status"] == "False"


def test_refresh_writes_only_on_change() -> None:
    body: dict[str, Any] = {"metadata": {"generation": 1}, "status": {}}
    first = pool_status(body, [node(True)], "nvidia.com/gpu")
    assert _changed(body["status"], first)
    body["status"] = first
    assert not _changed(body["status"], pool_status(body, [node(True)], "nvidia.com/gpu"))
    assert _changed(body["status"], pool_status(body, [node(True), node(True)], "nvidia.com/gpu"))


def test_node_allocatable_is_the_smallest_ready_node_rounded_down() -> None:
    body: dict[str, Any] = {"metadata": {"generation": 1}, "status": {}}
    st = pool_status(body, [node(True), node(True, cpu="223500m", memory="2047.5Gi"), node(False, cpu="8")],
                     "nvidia.com/gpu")
    assert st["nodeAllocatable"] == {"cpu": "223", "memory": "2047Gi", "ephemeralStorage": "3500Gi"}
    assert pool_status(body, [], "nvidia.com/gpu")["nodeAllocatable"] is None
