"""Status is a pure function of observed state: conditions, reasons and kstatus semantics."""

from __future__ import annotations

from moe_operator.status import Capacity, Observed, compute_status, status_changed

PLAN = {"sessionsPerGroup": 50, "nodesPerGroup": 2}


def pod(phase: str = "Running", ready: bool = True, unschedulable: bool | str = False, failed: bool = False,
        waiting: str | None = None) -> dict:
    conds = [{"type": "Ready", "status": "True" if ready else "False"}]
    if unschedulable:
        msg = (unschedulable if isinstance(unschedulable, str)
               else "0/23 nodes are available: 8 Insufficient nvidia.com/gpu")
        conds.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg})
    st: dict = {"phase": "Failed" if failed else phase, "conditions": conds}
    if waiting:
        st["containerStatuses"] = [{"image": "img:1", "state": {"waiting": {"reason": waiting, "message": "nope"}}}]
    return {"metadata": {"name": "p"}, "status": st}


def lws(ready: int, replicas: int, gen: int = 1, observed: int = 1, updated: int | None = None) -> dict:
    st = {"readyReplicas": ready, "replicas": replicas, "observedGeneration": observed}
    if updated is not None:
        st["updatedReplicas"] = updated
    return {"metadata": {"generation": gen}, "status": st}


def group_pod(group: int, node: str, ready: bool = True) -> dict:
    p = pod(ready=ready)
    p["metadata"] = {"name": f"x-{group}", "labels": {"leaderworkerset.sigs.k8s.io/group-index": str(group)}}
    p["spec"] = {"nodeName": node}
    return p


def conds(status: dict) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_all_groups_ready_is_ready_and_reconciled() -> None:
    s = compute_status(Observed(generation=3, plan=PLAN, desired_groups=2, lws=lws(2, 2), pods=[pod()] * 4))
    c = conds(s)
    assert c["Ready"] == ("True", "AllGroupsReady")
    assert c["Progressing"] == ("False", "Reconciled") and c["Reconciling"] == c["Progressing"]
    assert c["Stalled"][0] == "False" and c["Degraded"][0] == "False"
    assert s["sessionCapacity"] == 100 and s["groupSummary"] == "2/2" and s["observedGeneration"] == 3
    assert all(x["observedGeneration"] == 3 for x in s["conditions"])


def test_plan_infeasible_is_stalled_with_the_message() -> None:
    s = compute_status(Observed(generation=2, problem=("PlanInfeasible", "spec.sessions.target: needs 12 groups > 4")))
    c = conds(s)
    assert c["Ready"] == ("False", "PlanInfeasible") and c["Stalled"] == ("True", "PlanInfeasible")
    assert "12 groups" in next(x["message"] for x in s["conditions"] if x["type"] == "Stalled")


def test_infeasible_update_keeps_serving_and_says_so() -> None:
    prev = compute_status(Observed(generation=1, plan=PLAN, desired_groups=2, lws=lws(2, 2)))
    s = compute_status(Observed(generation=2, problem=("PlanInfeasible", "x"), desired_groups=2, lws=lws(1, 2)), prev)
    assert conds(s)["Degraded"] == ("True", "ServingPreviousSpec")
    assert s["plan"] == prev["plan"]  # the last good plan is still what runs


def test_unschedulable_pods_report_insufficient_capacity_with_numbers() -> None:
    cap = Capacity(pool="h200", resource="nvidia.com/gpu", nodes=8, devices_per_node=8, free_devices=8,
                   nodes_with_room=1)
    s = compute_status(Observed(generation=1, plan=PLAN, desired_groups=1, lws=lws(0, 1),
                                pods=[pod("Pending", False, unschedulable=True)], capacity=cap))
    c = conds(s)
    assert c["Stalled"] == ("True", "InsufficientCapacity") and c["Ready"] == ("False", "InsufficientCapacity")
    msg = next(x["message"] for x in s["conditions"] if x["type"] == "Stalled")
    assert "8 free nvidia.com/gpu" in msg and "8 node(s)" in msg and "1 can take" in msg


def test_other_scheduling_failures_quote_the_scheduler() -> None:
    s = compute_status(Observed(generation=1, plan=PLAN, desired_groups=1, lws=lws(0, 1), pods=[
        pod("Pending", False, unschedulable='0/23 nodes are available: persistentvolumeclaim "w" not found.')]))
    assert conds(s)["Stalled"] == ("True", "Unschedulable")
    stalled = next(x["message"] for x in s["conditions"] if x["type"] == "Stalled")
    assert 'persistentvolumeclaim "w" not found' in stalled


def test_image_pull_failure_is_stalled() -> None:
    s = compute_status(Observed(generation=1, plan=PLAN, desired_groups=1, lws=lws(0, 1),
                                pods=[pod("Pending", False, waiting="ImagePullBackOff")]))
    assert conds(s)["Stalled"] == ("True", "ImagePullFailed")


def test_failed_pod_is_degraded_group_restarting_then_recovers() -> None:
    ok = compute_status(Observed(generation=1, plan=PLAN, desired_groups=1, lws=lws(1, 1), pods=[pod()]))
    bad = compute_status(Observed(generation=1, plan=PLAN, desired_groups=1, lws=lws(0, 1),
                                  pods=[pod(failed=True, ready=False)]), ok)
    assert conds(bad)["Degraded"] == ("True", "GroupRestarting") and conds(bad)["Ready"][0] == "False"
    back = compute_status(Observed(generation=1, plan=PLAN, desired_groups=1, lws=lws(1, 1), pods=[pod()]), bad)
    assert conds(back)["Degraded"][0] == "False" and conds(back)["Ready"][0] == "True"


def test_rolling_update_is_progressing() -> None:
    s = compute_status(Observed(generation=2, plan=PLAN, desired_groups=2, lws=lws(2, 2, gen=5, observed=4)))
    assert conds(s)["Progressing"] == ("True", "RollingOut") and conds(s)["Ready"][0] == "False"


def test_rollout_lasts_until_every_group_runs_the_new_revision() -> None:
    """LWS bumps observedGeneration at once; with 3/3 groups Ready but 1 of 3 updated the rollout is not over
    (Reconciling=True is what kstatus reads as InProgress)."""
    s = compute_status(Observed(generation=2, plan=PLAN, desired_groups=3, lws=lws(3, 3, gen=5, observed=5,
                                                                                   updated=1)))
    c = conds(s)
    assert c["Progressing"] == ("True", "RollingOut") and c["Reconciling"] == ("True", "RollingOut")
    assert c["Ready"][0] == "False" and s["updatedGroups"] == 1
    msg = next(x["message"] for x in s["conditions"] if x["type"] == "Progressing")
    assert msg.startswith("1/3 groups updated")
    done = compute_status(Observed(generation=2, plan=PLAN, desired_groups=3, lws=lws(3, 3, gen=5, observed=5,
                                                                                      updated=3)), s)
    assert conds(done)["Progressing"] == ("False", "Reconciled") and conds(done)["Ready"][0] == "True"
    assert done["updatedGroups"] == 3
    in_progress = lws(3, 3, gen=5, observed=5, updated=3)
    in_progress["status"]["conditions"] = [{"type": "UpdateInProgress", "status": "True"}]
    assert conds(compute_status(Observed(generation=2, plan=PLAN, desired_groups=3, lws=in_progress)))[
        "Progressing"] == ("True", "RollingOut")


def test_a_group_on_a_not_ready_node_is_degraded_with_the_node_named() -> None:
    pods = [group_pod(0, "h200-001"), group_pod(1, "h200-004")]
    ok = compute_status(Observed(generation=1, plan=PLAN, desired_groups=2, lws=lws(2, 2), pods=pods))
    assert conds(ok)["Ready"][0] == "True" and ok["sessionCapacity"] == 100
    bad = compute_status(Observed(generation=1, plan=PLAN, desired_groups=2, lws=lws(2, 2), pods=pods,
                                  node_problems={"h200-004": "Ready=Unknown (unreachable), NodeStatusUnknown"}), ok)
    c = conds(bad)
    assert c["Degraded"] == ("True", "NodeNotReady") and c["Ready"][0] == "False"
    assert bad["readyGroups"] == 1 and bad["sessionCapacity"] == 50  # no capacity claimed for the lost group
    msg = next(x["message"] for x in bad["conditions"] if x["type"] == "Degraded")
    assert "group 1" in msg and "h200-004" in msg and "unreachable" in msg
    # a bad node with none of our pods changes nothing
    other = compute_status(Observed(generation=1, plan=PLAN, desired_groups=2, lws=lws(2, 2), pods=pods,
                                    node_problems={"h200-007": "Ready=False"}), ok)
    assert conds(other)["Degraded"][0] == "False"


def test_scaling_up_is_progressing() -> None:
    s = compute_status(Observed(generation=1, plan=PLAN, desired_groups=3, lws=lws(2, 2)))
    assert conds(s)["Progressing"] == ("True", "ScalingUp")


def test_transition_time_only_moves_on_change_and_no_write_without_change() -> None:
    a = compute_status(Observed(generation=1, plan=PLAN, desired_groups=1, lws=lws(1, 1)), now="2026-01-01T00:00:00Z")
    b = compute_status(Observed(generation=1, plan=PLAN, desired_groups=1, lws=lws(1, 1)), a,
                       now="2026-01-01T00:05:00Z")
    assert a["conditions"] == b["conditions"]
    assert not status_changed(a, b)
    c = compute_status(Observed(generation=1, plan=PLAN, desired_groups=1, lws=lws(0, 1)), b,
                       now="2026-01-01T00:06:00Z")
    assert status_changed(b, c)
    ready = next(x for x in c["conditions"] if x["type"] == "Ready")
    assert ready["lastTransitionTime"] == "2026-01-01T00:06:00Z"


def test_autoscaler_fields_are_carried() -> None:
    prev = {"kvUtilization": "0.5", "lastScaleTime": "2026-01-01T00:00:00Z", "liveSessions": 9}
    s = compute_status(Observed(generation=1, plan=PLAN, desired_groups=1, lws=lws(1, 1)), prev)
    assert s["kvUtilization"] == "0.5" and s["liveSessions"] == 9



def test_a_partition_held_by_the_operator_is_a_rollout() -> None:
    held = lws(2, 2, gen=3, observed=3, updated=2)
    held["spec"] = {"rolloutStrategy": {"rollingUpdateConfiguration": {"partition": 2}}}
    s = compute_status(Observed(generation=2, plan=PLAN, desired_groups=2, lws=held))
    assert conds(s)["Progressing"] == ("True", "RollingOut") and conds(s)["Ready"][0] == "False"


def test_a_carried_none_is_no_change_after_the_merge_patch_removed_it() -> None:
    # reconcile carries `rollout: None` when no rollout runs; the merge patch removes the field on the server, so
    # the next pass reads a status without it: that must not be a change (it was: one write per pass, forever)
    prev = compute_status(Observed(generation=1, plan=PLAN, desired_groups=1, lws=lws(1, 1)))
    server = {k: v for k, v in prev.items() if v is not None}
    again = compute_status(Observed(generation=1, plan=PLAN, desired_groups=1, lws=lws(1, 1)),
                           {**server, "rollout": None})
    assert again["rollout"] is None
    assert not status_changed(server, again)
    assert status_changed(server, {**again, "rollout": {"group": 1}})
