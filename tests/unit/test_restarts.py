"""Group restarts are reported from the pod stream, even when the status refresh misses them."""

from __future__ import annotations

from typing import Any

from moe_operator.restarts import RestartTracker


def pod(uid: str = "u1", rev: str = "r1", restarts: int = 0, group: str | None = "1") -> dict[str, Any]:
    labels = {"leaderworkerset.sigs.k8s.io/template-revision-hash": rev}
    if group is not None:
        labels["leaderworkerset.sigs.k8s.io/group-index"] = group
    cs: dict[str, Any] = {"name": "sglang", "restartCount": restarts}
    if restarts:
        cs["lastState"] = {"terminated": {"reason": "Error", "exitCode": 1}}
    return {"metadata": {"namespace": "ns", "name": "kimi-1", "uid": uid, "labels": labels},
            "status": {"containerStatuses": [cs]}}


def test_container_restart_is_reported_with_count_and_reason() -> None:
    t = RestartTracker()
    assert t.observe("ADDED", pod()) is None
    msg = t.observe("MODIFIED", pod(restarts=1))
    assert msg is not None and "group 1" in msg and "restart count 1" in msg and "Error, exit code 1" in msg
    assert t.observe("MODIFIED", pod(restarts=1)) is None  # the same restart once


def test_recreated_group_is_reported_but_not_a_rollout_or_scale_down() -> None:
    t = RestartTracker()
    t.observe("ADDED", pod())
    assert t.observe("DELETED", pod()) is None
    msg = t.observe("ADDED", pod(uid="u2"))
    assert msg is not None and "recreated" in msg
    t.observe("DELETED", pod(uid="u2"))
    assert t.observe("ADDED", pod(uid="u3", rev="r2")) is None  # new revision: a rollout
    assert t.observe("ADDED", pod(group=None)) is None  # not a group pod (the router's)
