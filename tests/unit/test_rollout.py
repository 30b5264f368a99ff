"""Drain-aware rollouts (moe_operator.rollout): the partition holds the groups, one is drained, then replaced."""

from __future__ import annotations

from typing import Any

from moe_operator.rollout import TEMPLATE_HASH, plan_rollout, unroutable_leaders

NOW, ISO = 1000.0, "1970-01-01T00:16:40Z"


def lws(h: str, partition: int, updated: int, ready: int, replicas: int = 3) -> dict[str, Any]:
    return {"metadata": {"annotations": {TEMPLATE_HASH: h}},
            "spec": {"replicas": replicas, "rolloutStrategy": {"rollingUpdateConfiguration": {"partition": partition}}},
            "status": {"replicas": replicas, "updatedReplicas": updated, "readyReplicas": ready}}


def step(cur: dict[str, Any] | None, new: str = "new", status: dict[str, Any] | None = None,
         idle: dict[int, bool] | None = None, unroutable: set[int] | None = None, now: float = NOW) -> Any:
    return plan_rollout(now=now, now_iso=ISO, lws=cur, template_hash=new, replicas=3, status=status or {},
                        idle=idle or {}, unroutable=unroutable or set(), drain_timeout=600)


def test_creation_and_steady_state_hold_nothing() -> None:
    assert step(None).partition == 0
    s = step(lws("new", 0, 3, 3))
    assert s.partition == 0 and s.rollout is None and s.unroute is None


def test_a_new_template_holds_every_group_first() -> None:
    s = step(lws("old", 0, 3, 3))
    assert s.partition == 3 and s.unroute is None and "one at a time" in s.message
    # a newer template mid-rollout starts over and routes the group it was draining again
    again = step(lws("old", 3, 0, 3), status={"rollout": {"group": 2, "startedAt": ISO}}, unroutable={2})
    assert again.partition == 3 and again.rollout is None and again.reroute == (2,)


def test_one_group_at_a_time_each_drained_before_it_is_replaced() -> None:
    held = lws("new", 3, 0, 3)
    s = step(held)  # all Ready, nothing updated yet: drain the highest group
    assert (s.partition, s.unroute, s.rollout) == (3, 2, {"group": 2, "startedAt": ISO})
    busy = step(held, status={"rollout": s.rollout}, idle={2: False}, now=NOW + 5)
    assert busy.partition == 3 and busy.rollout == s.rollout and busy.unroute is None  # still draining
    done = step(held, status={"rollout": s.rollout}, idle={2: True}, now=NOW + 5)
    assert done.partition == 2 and done.rollout is None and "0 running requests" in done.message
    # group 2 is being replaced (not Ready yet): wait
    assert step(lws("new", 2, 1, 2)).unroute is None
    nxt = step(lws("new", 2, 1, 3))
    assert nxt.unroute == 1 and nxt.partition == 2


def test_the_next_group_waits_until_the_replaced_one_is_back_in_every_router() -> None:
    after_first = lws("new", 2, 1, 3)  # group 2 replaced and Ready in LWS's eyes
    assert step(after_first).unroute == 1  # routers unknown: go on
    held = plan_rollout(now=NOW, now_iso=ISO, lws=after_first, template_hash="new", replicas=3, status={}, idle={},
                        unroutable=set(), drain_timeout=600, routed={0, 1})
    assert held.unroute is None and held.partition == 2  # group 2 not yet a healthy worker of every router
    go = plan_rollout(now=NOW, now_iso=ISO, lws=after_first, template_hash="new", replicas=3, status={}, idle={},
                      unroutable=set(), drain_timeout=600, routed={0, 1, 2})
    assert go.unroute == 1


def test_updated_groups_come_from_the_pods_template_hash() -> None:
    from moe_operator.rollout import updated_groups

    def pod(g: str, h: str, gone: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"labels": {"leaderworkerset.sigs.k8s.io/group-index": g},
                                "annotations": {TEMPLATE_HASH: h}}
        if gone:
            meta["deletionTimestamp"] = "x"
        return {"metadata": meta}

    pods = [pod("0", "old"), pod("0", "old"), pod("1", "new"), pod("1", "old", gone=True), pod("2", "new"),
            pod("2", "old")]
    assert updated_groups(pods, "new") == {1}  # group 2 has an old pod left; group 1's old one is terminating
    assert updated_groups(pods, None) is None
    # with the pods' view, a partition LWS counts as updated does not fool the plan
    s = plan_rollout(now=NOW, now_iso=ISO, lws=lws("new", 2, 3, 3), template_hash="new", replicas=3, status={},
                     idle={}, unroutable=set(), drain_timeout=600, updated={0, 1})
    assert s.unroute is None


def test_drain_timeout_replaces_a_group_that_never_idles() -> None:
    held = lws("new", 3, 0, 3)
    s = step(held, status={"rollout": {"group": 2, "startedAt": ISO}}, idle={}, now=NOW + 601)
    assert s.partition == 2 and "timeout" in s.message


def test_a_scale_down_drain_holds_the_rollout() -> None:
    s = step(lws("new", 3, 0, 3), status={"drain": {"group": 2}})
    assert s.unroute is None and s.partition == 3


def test_an_updated_group_left_unroutable_is_routed_again() -> None:
    """A step whose template did not change a group's revision leaves its pods (and their label) in place."""
    s = step(lws("new", 1, 2, 3), unroutable={1, 0})
    assert s.reroute == (1,)  # group 0 is below the partition: not yet replaced, not ours to route
    assert step(lws("new", 0, 3, 3), unroutable={0}).reroute == (0,)


def test_unroutable_leaders() -> None:
    def pod(g: str, w: str, r: str) -> dict[str, Any]:
        return {"metadata": {"labels": {"leaderworkerset.sigs.k8s.io/group-index": g,
                                        "leaderworkerset.sigs.k8s.io/worker-index": w, "moe-operator.io/routable": r}}}
    assert unroutable_leaders([pod("0", "0", "true"), pod("1", "0", "false"), pod("2", "1", "false")]) == {1}
