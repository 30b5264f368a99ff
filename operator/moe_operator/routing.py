"""Taking a group out of the router's rotation and putting it back, for drains (scale-down, rollouts).

The router (sgl-model-gateway, `sglang-router` 0.3.2 / SMG) discovers workers by watching the namespace's pods and
filtering them by `--selector` on its side (service_discovery.rs: `watcher(...).applied_objects()` filtered by
`PodInfo::should_include`); a tracked worker is removed only when its pod gets a deletionTimestamp. A pod whose labels
stop matching is filtered out and never removed, so flipping the leader's routable label (which we still do: a
router restarting meanwhile then skips it) does not stop traffic. The router's worker API does: `GET /workers`
lists {id, url}, `DELETE /workers/{id}` removes one, `POST /workers {"url"}` adds one (all 202, applied in the
background; checked on the rig's router). Every router replica keeps its own registry, so each is told.

With spec.sglang.apiKeySecretRef the router must send the key to a worker it adds; the operator never reads Secrets,
so for such deployments it removes nothing through the API (the drain then ends by timeout, and the group's own
SIGTERM drain still finishes its running requests)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from moe_operator.render.argv import ROUTER_PORT
from moe_operator.render.meta import COMPONENT_ROUTER, L_COMPONENT
from moe_operator.render.meta import LWS_GROUP_INDEX_LABEL as GROUP_INDEX
from moe_operator.render.meta import LWS_WORKER_INDEX_LABEL as WORKER_INDEX

log = logging.getLogger(__name__)
TIMEOUT = aiohttp.ClientTimeout(total=3, connect=1)


def leader_url(pods: Sequence[Mapping[str, Any]], group: int, port: int) -> str | None:
    """The worker URL the router registered for a group: http://<leader pod IP>:<port> (PodInfo::worker_url)."""
    for p in pods:
        labels = (p.get("metadata") or {}).get("labels") or {}
        ip = (p.get("status") or {}).get("podIP")
        if labels.get(GROUP_INDEX) == str(group) and labels.get(WORKER_INDEX) == "0" and ip:
            return f"http://{ip}:{port}"
    return None


def router_endpoints(pods: Sequence[Mapping[str, Any]]) -> list[str]:
    return [f"http://{p['status']['podIP']}:{ROUTER_PORT}" for p in pods
            if ((p.get("metadata") or {}).get("labels") or {}).get(L_COMPONENT) == COMPONENT_ROUTER
            and (p.get("status") or {}).get("phase") == "Running" and (p.get("status") or {}).get("podIP")
            and not (p.get("metadata") or {}).get("deletionTimestamp")]


async def _one(http: aiohttp.ClientSession, router: str, url: str, routable: bool) -> bool:
    async with http.get(f"{router}/workers", timeout=TIMEOUT) as r:
        r.raise_for_status()
        workers = (await r.json()).get("workers") or []
    ids = [w.get("id") for w in workers if w.get("url") == url]
    if not routable:
        for wid in ids:
            async with http.delete(f"{router}/workers/{wid}", timeout=TIMEOUT) as r:
                r.raise_for_status()
        return bool(ids)
    if ids:
        return False
    async with http.post(f"{router}/workers", json={"url": url}, timeout=TIMEOUT) as r:
        r.raise_for_status()
    return True


async def routed_groups(http: aiohttp.ClientSession | None, routers: Sequence[str],
                        pods: Sequence[Mapping[str, Any]], port: int) -> set[int] | None:
    """Groups whose leader every router lists as a healthy worker; None when there is nothing to ask (no router,
    no session) or a router does not answer (a rollout then goes on without this check rather than stall)."""
    if http is None or not routers:
        return None
    healthy: set[str] | None = None
    for r in routers:
        try:
            async with http.get(f"{r}/workers", timeout=TIMEOUT) as resp:
                resp.raise_for_status()
                workers = (await resp.json()).get("workers") or []
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("router %s: cannot list workers: %s", r, exc)
            return None
        urls = {w.get("url") for w in workers if w.get("is_healthy")}
        healthy = urls if healthy is None else healthy & urls
    routed = set()
    for p in pods:  # each group's leader, with the URL the routers know it by
        labels = (p.get("metadata") or {}).get("labels") or {}
        ip = (p.get("status") or {}).get("podIP")
        if labels.get(WORKER_INDEX) == "0" and labels.get(GROUP_INDEX, "").isdigit() and ip \
                and f"http://{ip}:{port}" in (healthy or set()):
            routed.add(int(labels[GROUP_INDEX]))
    return routed


async def set_in_rotation(http: aiohttp.ClientSession | None, routers: Sequence[str], url: str | None,
                          routable: bool) -> int:
    """Remove `url` from (routable=False) or add it to every router; returns how many routers changed. Best effort:
    a router that does not answer is logged and skipped (the drain's timeout still bounds the wait)."""
    if http is None or url is None or not routers:
        return 0
    results = await asyncio.gather(*(_one(http, r, url, routable) for r in routers), return_exceptions=True)
    for r, res in zip(routers, results, strict=True):
        if isinstance(res, BaseException):
            log.warning("router %s: could not %s worker %s: %s", r, "add" if routable else "remove", url, res)
    return sum(1 for res in results if res is True)
