"""The operator's watch-backed caches as kopf indexes: MoEDeployments, AcceleratorPools, and every kind it creates
for a MoEDeployment (the latter watched with our deployment label as a server-side selector, set in
handlers.lifecycle). kopf fills them before any other handler runs, so the first pass after a restart already
reads complete caches (docs/indexing.rst)."""

from __future__ import annotations

from typing import Any

import kopf

from moe_operator.cache import DEPLOYMENT_LABEL, LABELLED_RESOURCES, MOED_INDEX, POOL_INDEX, index_name, owner_key, slim


@kopf.index("moe-operator.io", "v1alpha1", "moedeployments", id=MOED_INDEX)
async def cached_moedeployments(body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(body["metadata"]["namespace"], body["metadata"]["name"]): slim(body)}


@kopf.index("moe-operator.io", "v1alpha1", "acceleratorpools", id=POOL_INDEX)
async def cached_acceleratorpools(body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {body["metadata"]["name"]: slim(body)}


async def cached_child(body: kopf.Body, **_: Any) -> dict[Any, Any]:
    """Keyed by (namespace, owning MoEDeployment): one lookup gives a deployment's objects of that kind."""
    key = owner_key(body)
    return {key: slim(body)} if key else {}


for _resource in LABELLED_RESOURCES:  # async indexers: sync ones would each take a thread (docs/indexing.rst)
    kopf.index(*_resource, labels={DEPLOYMENT_LABEL: kopf.PRESENT}, id=index_name(_resource))(cached_child)
