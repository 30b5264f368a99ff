"""Watch-backed stores of the objects the operator creates (client-go's reflector + indexer, in a few lines).

One LIST + WATCH per kind, cluster-wide, narrowed on the server to objects with our deployment label; a store keyed
by (namespace, owning deployment) so a reconcile finds a deployment's objects without a scan. A watch that ends
(its timeoutSeconds) resumes from the last resourceVersion it saw (bookmarks keep that current); one the server
refuses as too old (410 Gone) starts over with a LIST, and the objects that changed or vanished in the gap are
reported as events, so nothing a reconcile should hear of is lost.

Why not kopf indexes for these: kopf runs every watched object through a per-object worker that waits on one
operator-wide condition until all indexes are filled, and each object filled wakes every waiter: its start-up is
quadratic in the number of objects (82 s for 2,000 Services on the rig, 55 s for a 200-deployment fleet). The
operator has no kopf handler on these kinds, so they stay out of kopf; kopf keeps the MoEDeployments and pools."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable
from typing import Any

from moe_operator.cache import DEPLOYMENT_LABEL, NODE, owner_key, slim, slim_node
from moe_operator.kube import Kube, KubeError, resource_path

log = logging.getLogger(__name__)
WATCH_SECONDS = 240  # server-side timeoutSeconds of one watch request (then it resumes)
PAGE = 500
OnEvent = Callable[[str, dict[str, Any]], None]  # ("ADDED" | "MODIFIED" | "DELETED", object)
Key = tuple[str, str]


class Gone(Exception):
    """The watch's resourceVersion is too old: LIST again."""


class Store:
    """The objects of one kind carrying our deployment label, kept current by LIST + WATCH."""

    def __init__(self, kube: Kube, api_version: str, kind: str, on_event: OnEvent | None = None,
                 selector: str | None = DEPLOYMENT_LABEL, transform: Callable[[Any], dict[str, Any]] = slim,
                 namespace: str | None = None):
        self.kube, self.api_version, self.kind = kube, api_version, kind
        self.on_event = on_event
        self.selector, self.transform = selector, transform
        self.objects: dict[Key, dict[str, Any]] = {}  # (namespace, name) -> object (without managedFields)
        self._owned: dict[Key, dict[str, dict[str, Any]]] = {}  # (namespace, deployment) -> name -> object
        self.synced = asyncio.Event()  # the first LIST is in
        self.path = resource_path(api_version, kind, namespace)  # namespace: one watched namespace only
        self.resource_version = ""

    def owned(self, namespace: str, deployment: str) -> Iterable[dict[str, Any]]:
        return list(self._owned.get((namespace, deployment), {}).values())

    # ------------------------------------------------------------------------------------------------ store
    def _put(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        key = (meta.get("namespace") or "", meta["name"])
        self._drop(key)
        self.objects[key] = obj
        owner = owner_key(obj)
        if owner:
            self._owned.setdefault(owner, {})[meta["name"]] = obj

    def _drop(self, key: Key) -> dict[str, Any] | None:
        old = self.objects.pop(key, None)
        owner = owner_key(old) if old else None
        if owner and owner in self._owned:
            self._owned[owner].pop(key[1], None)
            if not self._owned[owner]:
                del self._owned[owner]
        return old

    def _emit(self, kind: str, obj: dict[str, Any]) -> None:
        if self.on_event is not None and self.synced.is_set():
            try:
                self.on_event(kind, obj)
            except Exception:  # noqa: BLE001 - a consumer's bug must not stop the watch
                log.exception("store %s: event consumer failed", self.kind)

    # -------------------------------------------------------------------------------------------- list, watch
    async def _list(self) -> None:
        fresh: dict[Key, dict[str, Any]] = {}
        query: dict[str, Any] = {"limit": PAGE, **({"labelSelector": self.selector} if self.selector else {})}
        while True:
            page = await self.kube.request("GET", self.path, query=query)
            for item in page.get("items") or []:
                item.setdefault("apiVersion", self.api_version)
                item.setdefault("kind", self.kind)
                obj = self.transform(item)
                fresh[(obj["metadata"].get("namespace") or "", obj["metadata"]["name"])] = obj
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                self.resource_version = meta.get("resourceVersion", "")
                break
            query = {**query, "continue": meta["continue"]}
        # a re-list after a gap: report what changed or vanished meanwhile
        for key in list(self.objects):
            if key not in fresh:
                gone = self._drop(key)
                if gone is not None:
                    self._emit("DELETED", gone)
        for key, obj in fresh.items():
            old = self.objects.get(key)
            self._put(obj)
            if old is None or old["metadata"].get("resourceVersion") != obj["metadata"].get("resourceVersion"):
                self._emit("ADDED" if old is None else "MODIFIED", obj)

    async def _watch(self) -> None:
        query = {"watch": "1", "allowWatchBookmarks": "true", "timeoutSeconds": WATCH_SECONDS,
                 "resourceVersion": self.resource_version,
                 **({"labelSelector": self.selector} if self.selector else {})}
        async for event in self.kube.stream(self.path, query, timeout=WATCH_SECONDS + 30):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise Gone()
                raise KubeError(int(obj.get("code") or 0), obj.get("reason", ""), obj)
            meta = obj.get("metadata") or {}
            if meta.get("resourceVersion"):
                self.resource_version = meta["resourceVersion"]
            if kind == "BOOKMARK":
                continue
            obj = self.transform(obj)
            key = (meta.get("namespace") or "", meta["name"])
            if kind == "DELETED":
                self._drop(key)
            else:
                self._put(obj)
            self._emit(str(kind), obj)

    async def run(self) -> None:
        """LIST, then WATCH for ever; LIST again when the watch is too old, back off on errors."""
        delay = 0.5
        listed = False
        while True:
            try:
                if not listed:
                    await self._list()
                    self.synced.set()
                    listed = True
                await self._watch()
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except Gone:
                listed = False
            except Exception as exc:  # noqa: BLE001 - the apiserver restarting, a network blip
                log.warning("store %s: %s: %s; retrying in %.1fs", self.kind, type(exc).__name__, exc, delay)
                await asyncio.sleep(delay * (1 + random.random() / 2))
                delay = min(delay * 2, 30.0)
                if isinstance(exc, KubeError) and exc.status == 410:
                    listed = False


class Namespaced:
    """One kind's stores of the watched namespaces, read as one (the operator's namespaced mode: its Roles allow no
    cluster-wide LIST)."""

    def __init__(self, stores: dict[str, Store]):
        self.stores = stores

    def owned(self, namespace: str, deployment: str) -> Iterable[dict[str, Any]]:
        s = self.stores.get(namespace)
        return s.owned(namespace, deployment) if s is not None else []

    @property
    def objects(self) -> dict[Key, dict[str, Any]]:
        return {k: v for s in self.stores.values() for k, v in s.objects.items()}


class Stores:
    """Every kind the operator creates, as stores; started with the operator, ready when all first LISTs are in.
    `namespaces`: watch only these (one LIST + WATCH per kind and namespace), else the whole cluster."""

    def __init__(self, kube: Kube, kinds: Iterable[tuple[str, str]], on_event: OnEvent | None = None,
                 nodes: bool = False, namespaces: Iterable[str] | None = None):
        self.all: list[Store] = []
        self.by_kind: dict[tuple[str, str], Store | Namespaced] = {}
        watched = sorted(set(namespaces or ()))
        for a, k in kinds:
            if watched:
                per = {ns: Store(kube, a, k, on_event, namespace=ns) for ns in watched}
                self.all += per.values()
                self.by_kind[(a, k)] = Namespaced(per)
            else:
                self.all.append(store := Store(kube, a, k, on_event))
                self.by_kind[(a, k)] = store
        if nodes:  # every node (they carry no label of ours, and are cluster-scoped), slimmed
            self.all.append(node_store := Store(kube, *NODE, on_event, selector=None, transform=slim_node))
            self.by_kind[NODE] = node_store
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(s.run(), name=f"store-{s.kind}") for s in self.all]

    async def synced(self) -> None:
        await asyncio.gather(*(s.synced.wait() for s in self.all))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
