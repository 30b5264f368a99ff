"""The read view over the operator's watch-backed caches (moe_operator.cache), with plain dicts standing in for
kopf's indexes (a kopf.Index is a mapping of key -> iterable store)."""

from __future__ import annotations

from typing import Any

from moe_operator.cache import CHILD_KINDS, POD, Cache, newest, owner_key, slim


def obj(kind: str, name: str, owner: str | None = "m", ns: str = "ns", rv: str = "1", **labels: str) -> dict:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "resourceVersion": rv, "labels": dict(labels),
                            "managedFields": [{"manager": "x"}]}
    if owner:
        meta["labels"]["moe-operator.io/deployment"] = owner
        meta["ownerReferences"] = [{"kind": "MoEDeployment", "name": owner}]
    return {"kind": kind, "metadata": meta}


class FakeStore:
    """An informer store's read side (moe_operator.informer.Store.owned)."""

    def __init__(self, objs: list[dict]):
        self.objs = objs

    def owned(self, namespace: str, deployment: str) -> list[dict]:
        return [o for o in self.objs if owner_key(o) == (namespace, deployment)]


def cache(children: dict[tuple[str, str], list[dict]], pods: list[dict]) -> Cache:
    stores = {k: FakeStore(children.get(k, [])) for k in CHILD_KINDS}
    stores[POD] = FakeStore(pods)
    return Cache(moeds={}, pools={"h200": [{"metadata": {"name": "h200"}}]}, stores=stores)


def test_slim_drops_managed_fields_and_detaches_the_copy() -> None:
    body = obj("Pod", "p")
    out = slim(body)
    assert "managedFields" not in out["metadata"] and "managedFields" in body["metadata"]
    out["metadata"]["labels"]["x"] = "y"
    assert "x" not in body["metadata"]["labels"]


def test_children_are_only_those_owned_by_the_deployment() -> None:
    lws = ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet")
    svc = ("v1", "Service")
    stray = obj("Service", "m-router", owner=None)
    stray["metadata"]["labels"]["moe-operator.io/deployment"] = "m"  # labelled, not owned: never ours to delete
    c = cache({lws: [obj("LeaderWorkerSet", "m")], svc: [obj("Service", "m-router"), stray,
                                                         obj("Service", "other", owner="n")]}, [])
    assert set(c.children("ns", "m")) == {(*lws, "m"), (*svc, "m-router")}
    assert c.lws("ns", "m")["metadata"]["name"] == "m" and c.lws("ns", "n") is None
    assert c.pool("h200") == {"metadata": {"name": "h200"}} and c.pool("b200") is None


def test_pods_are_the_groups_pods_not_the_routers() -> None:
    group = [obj("Pod", f"m-{i}", **{"leaderworkerset.sigs.k8s.io/name": "m"}) for i in (1, 0)]
    router = obj("Pod", "m-router-abc")
    c = cache({}, [*group, router])
    assert [p["metadata"]["name"] for p in c.pods("ns", "m")] == ["m-0", "m-1"]


def test_newest_copy_wins_by_resource_version() -> None:
    cached, written = obj("MoEDeployment", "m", rv="41"), obj("MoEDeployment", "m", rv="42")
    assert newest(cached, written) is written and newest(written, cached) is written
    assert newest(None, cached) is cached and newest(None, None) is None
    odd = obj("MoEDeployment", "m", rv="not-a-number")
    assert newest(cached, odd) is cached  # an opaque version never beats a known one


def test_all_moeds_is_a_snapshot_of_every_cached_deployment() -> None:
    a, b = obj("MoEDeployment", "a", owner=None), obj("MoEDeployment", "b", owner=None, ns="other")
    c = Cache(moeds={("ns", "a"): [a], ("other", "b"): [b]}, pools={}, stores={})
    assert c.all_moeds() == [a, b]


def test_node_problem_and_slim_node() -> None:
    from moe_operator.cache import node_problem, slim_node

    def node(status: str, reason: str = "", taints: list | None = None) -> dict:
        return {"metadata": {"name": "n", "labels": {"a": "b"}, "managedFields": [{}]},
                "spec": {"taints": taints or [], "podCIDR": "10.0.0.0/24"},
                "status": {"conditions": [{"type": "Ready", "status": status, "reason": reason}],
                           "images": [{"names": ["x"]}] * 300, "allocatable": {"cpu": "8"}}}

    assert node_problem(node("True")) is None
    assert node_problem(node("False", "KubeletNotReady")) == "Ready=False, KubeletNotReady"
    assert "unreachable" in (node_problem(node("Unknown", "NodeStatusUnknown")) or "")
    assert node_problem(None) == "node no longer exists"
    tainted = node("True", taints=[{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}])
    assert node_problem(tainted) == "tainted node.kubernetes.io/unreachable:NoExecute"
    s = slim_node(node("True"))
    assert "images" not in s["status"] and "managedFields" not in s["metadata"] and "podCIDR" not in s["spec"]
    assert s["status"]["allocatable"] == {"cpu": "8"} and s["metadata"]["labels"] == {"a": "b"}
