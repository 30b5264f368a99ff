"""A change of an object the operator made triggers its MoEDeployment's reconcile at once, from the caches: a group
pod failing or turning Ready, an LWS rolling or scaling, any child deleted out of band. This replaces the fast
periodic pass (the drift timer in handlers.deployment only backs it up)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import kopf

from moe_operator.cache import LWS, POD, Cache, owner_key
from moe_operator.handlers.deployment import run_reconcile

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

    def on_child_event(event: str, obj: dict[str, Any]) -> None:
        if not matters(obj.get("apiVersion", ""), obj.get("kind", ""), event, obj):
            return
        task = asyncio.create_task(child_changed(memo, Cache.of(memo, indices), obj))
        tasks.add(task)  # keep a reference until done (the loop holds only weak ones)
        task.add_done_callback(tasks.discard)

    memo.on_child_event = on_child_event


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
