"""A change of an object the operator made triggers its MoEDeployment's reconcile at once, from the caches: a group
pod failing or turning Ready, an LWS rolling or scaling, any child deleted out of band. This replaces the fast
periodic pass (the drift timer in handlers.deployment only backs it up)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import kopf

from moe_operator.cache import LWS, NODE, POD, Cache, node_problem, owner_key
from moe_operator.events import post_event
from moe_operator.handlers.deployment import run_reconcile
from moe_operator.handlers.leadership import is_leader
from moe_operator.restarts import RestartTracker

# kinds whose status the MoEDeployment's status is computed from: every change counts; of the others, a deletion
OBSERVED = {LWS, POD}


def matters(api_version: str, kind: str, event: str, obj: dict[str, Any]) -> bool:
    return (api_version, kind) in OBSERVED or event == "DELETED" or \
        bool((obj.get("metadata") or {}).get("deletionTimestamp"))


async def reconcile_owner(memo: kopf.Memo, cache: Cache, owner: dict[str, Any]) -> None:
    # log (and post warnings as events) on the MoEDeployment, not on the pod or Service that changed
    logger = kopf.ObjectLogger(body=kopf.Body(cast(Any, owner)), settings=memo.settings)
    try:
        await run_reconcile(memo, cache, owner["metadata"]["namespace"], owner["metadata"]["name"], logger)
    except kopf.TemporaryError as exc:  # events are not retried; the next event or the drift timer comes back
        logger.warning(str(exc))


async def child_changed(memo: kopf.Memo, cache: Cache, obj: dict[str, Any]) -> None:
    key = owner_key(obj)
    owner = cache.moed(*key) if key else None
    if owner is not None:
        await reconcile_owner(memo, cache, owner)


@kopf.on.startup()
async def route_child_events(memo: kopf.Memo, **kwargs: Any) -> None:
    """The informer stores (handlers.lifecycle) report every event of a child; the ones that matter run the owner's
    reconcile in a task of its own (coalesced per owner by run_reconcile)."""
    indices = dict(kwargs)  # kopf's indexes are live objects: the same ones for the life of the process
    tasks: set[asyncio.Task[None]] = set()
    restarts, node_seen = RestartTracker(), cast(dict[str, str | None], {})

    def spawn(obj: dict[str, Any]) -> None:
        task = asyncio.create_task(child_changed(memo, Cache.of(memo, indices), obj))
        tasks.add(task)  # keep a reference until done (the loop holds only weak ones)
        task.add_done_callback(tasks.discard)

    def on_child_event(event: str, obj: dict[str, Any]) -> None:
        kind = (obj.get("apiVersion", ""), obj.get("kind", ""))
        if kind == NODE:
            return on_node_event(event, obj)
        if kind == POD and (msg := restarts.observe(event, obj)):
            task = asyncio.create_task(report_restart(memo, Cache.of(memo, indices), obj, msg))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if matters(*kind, event, obj):
            spawn(obj)

    def on_node_event(event: str, node: dict[str, Any]) -> None:
        """A node turning NotReady / unreachable (or back): the deployments with pods on it recompute their status."""
        name = node["metadata"]["name"]
        problem = node_problem(None if event == "DELETED" else node)
        if node_seen.get(name, None) == problem:
            return
        node_seen[name] = problem
        for pod in list(memo.stores.by_kind[POD].objects.values()):
            if (pod.get("spec") or {}).get("nodeName") == name:
                spawn(pod)

    memo.on_child_event = on_child_event


async def report_restart(memo: kopf.Memo, cache: Cache, pod: dict[str, Any], message: str) -> None:
    """A Warning event on the MoEDeployment (the leader posts; every replica tracks, so a new leader knows). Posted
    with our client: kopf's event queue exists only in the context of kopf's own handler tasks, and the stores'
    watch tasks are not among them."""
    key = owner_key(pod)
    owner = cache.moed(*key) if key else None
    if owner is None or not is_leader(memo):
        return
    try:
        await post_event(memo.kube, owner, "Warning", "GroupRestarted", message)
    except Exception as exc:  # noqa: BLE001 - an event is best effort
        logging.getLogger(__name__).warning("could not post GroupRestarted event: %s", exc)


def _pool_event(type: str | None, **_: Any) -> bool:
    return type is not None  # not the initial listing: the MoEDeployments' own resume passes cover a restart


@kopf.on.event("moe-operator.io", "v1alpha1", "acceleratorpools", when=_pool_event, id="pool-changed-dependents")
async def pool_changed_dependents(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """A pool created (a MoEDeployment was waiting for it), edited, deleted or with new nodes: re-plan the
    MoEDeployments that name it (each pass keeps its groups untouched if the new plan is refused)."""
    name, cache = body["metadata"]["name"], Cache.of(memo, kwargs)
    for moed in cache.all_moeds():
        spec = moed.get("spec") or {}
        if spec.get("pool") == name or name in (spec.get("pools") or []):
            await reconcile_owner(memo, cache, moed)


async def reconcile_all(memo: kopf.Memo, cache: Cache) -> None:
    """Every cached MoEDeployment once: what a replica does when it becomes the leader, so drift that happened while
    nobody led (a child deleted as the old leader died) is repaired at once, not at the next drift pass. Waits until
    kopf has filled the caches (its resource handlers only run after that): a pass over a half-filled cache would
    re-apply children it does not see yet."""
    await memo.caches_ready.wait()
    for moed in cache.all_moeds():
        await reconcile_owner(memo, cache, moed)


@kopf.on.startup()
async def reconcile_all_on_leading(memo: kopf.Memo, **kwargs: Any) -> None:
    indices = dict(kwargs)  # live: the same index objects follow the watches for the process' life
    memo.on_leading = lambda: reconcile_all(memo, Cache.of(memo, indices))
