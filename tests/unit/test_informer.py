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
