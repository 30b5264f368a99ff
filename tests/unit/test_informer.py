"""The informer store against a scripted API: LIST pages, a watch, a 410 Gone and the re-list that reports the gap."""

from __future__ import annotations

import asyncio
from typing import Any

from moe_operator.informer import Store


def obj(name: str, rv: str, owner: str = "m", ns: str = "ns") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": rv, "managedFields": [{}],
                         "labels": {"moe-operator.io/deployment": owner}}}


class ScriptedKube:
    """Answers LISTs from `lists` (one per call, in pages) and watches from `watches` (one list of events each)."""

    def __init__(self, lists: list[list[dict]], watches: list[list[dict]]):
        self.lists, self.watches, self.calls = lists, watches, []

    async def request(self, method: str, path: str, body: Any = None, *, query: dict | None = None) -> dict:
        self.calls.append(("LIST", dict(query or {})))
        items = self.lists.pop(0)
        if not (query or {}).get("continue") and len(items) > 1:  # two pages: the first item, then the rest
            self.lists.insert(0, items[1:])
            return {"metadata": {"continue": "c1"}, "items": items[:1]}
        return {"metadata": {"resourceVersion": "100"}, "items": items}

    async def stream(self, path: str, query: dict, timeout: float) -> Any:
        self.calls.append(("WATCH", dict(query)))
        if not self.watches:
            await asyncio.sleep(3600)
        for event in self.watches.pop(0):
            yield event


async def test_list_watch_gone_relist_reports_every_change() -> None:
    events: list[tuple[str, str]] = []
    kube = ScriptedKube(
        lists=[[obj("a", "1"), obj("b", "2")], [obj("a", "5"), obj("c", "6")]],
        watches=[[{"type": "MODIFIED", "object": obj("a", "3")}, {"type": "BOOKMARK", "object": {
            "metadata": {"resourceVersion": "120"}}}, {"type": "ERROR", "object": {"code": 410}}]],
    )
    store = Store(kube, "v1", "Service", lambda kind, o: events.append((kind, o["metadata"]["name"])))  # type: ignore[arg-type]
    task = asyncio.create_task(store.run())
    for _ in range(200):
        await asyncio.sleep(0.01)
        if len([c for c in kube.calls if c[0] == "WATCH"]) >= 2:
            break
    task.cancel()
    # the initial LIST (two pages) is not reported; the watch's change is; the re-list reports the gap: b gone,
    # a changed again, c new
    assert events == [("MODIFIED", "a"), ("DELETED", "b"), ("MODIFIED", "a"), ("ADDED", "c")]
    assert sorted(o["metadata"]["name"] for o in store.owned("ns", "m")) == ["a", "c"]
    assert "managedFields" not in store.objects[("ns", "a")]["metadata"]
    watches = [q for kind, q in kube.calls if kind == "WATCH"]
    assert watches[0]["resourceVersion"] == "100" and watches[0]["labelSelector"] == "moe-operator.io/deployment"
    assert store.synced.is_set()


class PathKube:
    """Answers each LIST by path with that namespace's objects; watches never end."""

    def __init__(self, by_path: dict[str, list[dict]]):
        self.by_path, self.paths = by_path, []

    async def request(self, method: str, path: str, body: Any = None, *, query: dict | None = None) -> dict:
        self.paths.append((path, dict(query or {})))
        return {"metadata": {"resourceVersion": "1"}, "items": list(self.by_path.get(path, []))}

    async def stream(self, path: str, query: dict, timeout: float) -> Any:
        await asyncio.sleep(3600)
        yield {}


async def test_namespaced_mode_lists_only_the_watched_namespaces_and_reads_as_one() -> None:
    from moe_operator.informer import Stores

    kube = PathKube({"/api/v1/namespaces/a/services": [obj("s1", "1", ns="a")],
                     "/api/v1/namespaces/b/services": [obj("s2", "1", ns="b")],
                     "/api/v1/nodes": [{"metadata": {"name": "n1", "resourceVersion": "1"},
                                        "status": {"images": [{}], "conditions": []}}]})
    stores = Stores(kube, [("v1", "Service")], nodes=True, namespaces=["b", "a"])  # type: ignore[arg-type]
    stores.start()
    await asyncio.wait_for(stores.synced(), 2)
    await stores.stop()
    listed = sorted(p for p, _ in kube.paths)
    assert listed == ["/api/v1/namespaces/a/services", "/api/v1/namespaces/b/services", "/api/v1/nodes"]
    services = stores.by_kind[("v1", "Service")]
    assert [o["metadata"]["name"] for o in services.owned("a", "m")] == ["s1"]
    assert sorted(k[1] for k in services.objects) == ["s1", "s2"]
    node_query = next(q for p, q in kube.paths if p == "/api/v1/nodes")
    assert "labelSelector" not in node_query  # nodes carry no label of ours
    assert "images" not in stores.by_kind[("v1", "Node")].objects[("", "n1")]["status"]
