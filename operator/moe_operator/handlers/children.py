"""A change of an object the operator made triggers its MoEDeployment's reconcile at once, from the caches: a group
pod failing or turning Ready, an LWS rolling or scaling, any child deleted out of band. This replaces the fast
periodic pass (the drift timer in handlers.deployment only backs it up)."""

from __future__ import annotations

from typing import Any, cast

import kopf

from moe_operator.cache import CHILD_KINDS, DEPLOYMENT_LABEL, POD_RESOURCE, Cache, owner_key
from moe_operator.handlers.deployment import run_reconcile

# kinds whose status the MoEDeployment's status is computed from: every change counts
OBSERVED = {("leaderworkerset.x-k8s.io", "v1", "leaderworkersets"), POD_RESOURCE}


def _matters(resource: tuple[str, str, str]) -> Any:
    observed = resource in OBSERVED

    def when(type: str | None, body: kopf.Body, **_: Any) -> bool:
        # type None: the initial listing after a (re)start, which the resume handlers already cover
        if type is None:
            return False
        return observed or type == "DELETED" or bool(body.get("metadata", {}).get("deletionTimestamp"))
    return when


async def reconcile_owner(memo: kopf.Memo, cache: Cache, owner: dict[str, Any]) -> None:
    # log (and post warnings as events) on the MoEDeployment, not on the pod or Service that changed
    logger = kopf.ObjectLogger(body=kopf.Body(cast(Any, owner)), settings=memo.settings)
    try:
        await run_reconcile(memo, cache, owner["metadata"]["namespace"], owner["metadata"]["name"], logger)
    except kopf.TemporaryError as exc:  # events are not retried; the next event or the drift timer comes back
        logger.warning(str(exc))


async def child_changed(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    key = owner_key(body)
    cache = Cache.of(kwargs)
    owner = cache.moed(*key) if key else None
    if owner is not None:
        await reconcile_owner(memo, cache, owner)


for _resource in (*(r for _, _, r in CHILD_KINDS), POD_RESOURCE):
    kopf.on.event(*_resource, labels={DEPLOYMENT_LABEL: kopf.PRESENT}, when=_matters(_resource),
                  id=f"child-changed-{_resource[2]}")(child_changed)


def _pool_event(type: str | None, **_: Any) -> bool:
    return type is not None  # not the initial listing: the MoEDeployments' own resume passes cover a restart


@kopf.on.event("moe-operator.io", "v1alpha1", "acceleratorpools", when=_pool_event, id="pool-changed-dependents")
async def pool_changed_dependents(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """A pool created (a MoEDeployment was waiting for it), edited, deleted or with new nodes: re-plan the
    MoEDeployments that name it (each pass keeps its groups untouched if the new plan is refused)."""
    name, cache = body["metadata"]["name"], Cache.of(kwargs)
    for store in list(cache.moeds.values()):
        for moed in list(store):
            spec = moed.get("spec") or {}
            if spec.get("pool") == name or name in (spec.get("pools") or []):
                await reconcile_owner(memo, cache, moed)


async def reconcile_all(memo: kopf.Memo, cache: Cache) -> None:
    """Every cached MoEDeployment once: what a replica does when it becomes the leader, so drift that happened while
    nobody led (a child deleted as the old leader died) is repaired at once, not at the next drift pass. Waits until
    kopf has filled the caches (its resource handlers only run after that): a pass over a half-filled cache would
    re-apply children it does not see yet."""
    await memo.caches_ready.wait()
    for store in list(cache.moeds.values()):
        for moed in list(store):
            await reconcile_owner(memo, cache, moed)


@kopf.on.startup()
async def reconcile_all_on_leading(memo: kopf.Memo, **kwargs: Any) -> None:
    cache = Cache.of(kwargs)  # kopf's indexes are live: the same objects follow the watches for the process' life
    memo.on_leading = lambda: reconcile_all(memo, cache)
