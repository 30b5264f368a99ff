"""Taking a group out of the router's rotation and putting it back, for drains (scale-down, rollouts).

The router (SMG 1.13.0, the continuation of sgl-model-gateway / sglang-router) discovers workers by watching the
namespace's pods and filtering them by `--selector` on its side. sglang-router 0.3.2 (service_discovery.rs:
`watcher(...).applied_objects()` filtered by `PodInfo::should_include`) removed a tracked worker only when its pod got
a deletionTimestamp, so flipping the leader's routable label (which we still do: a router restarting meanwhile then
skips it) did not stop traffic; the operator does not rely on discovery for a drain with either router. The
router's worker API does: `GET /workers` lists {id, url}, `DELETE /workers/{id}` removes one, `POST /workers {"url"}`
adds one (all 202, applied in the background; tests/conformance/test_smg_conformance.py checks it on SMG).
SMG 1.13 runs a removal as a workflow: the worker turns unhealthy at once (no new requests), then after its drain step
it leaves the registry; a POST racing that workflow is lost with it, so a re-add waits (bounded) until the removal
is done. With `--dp-aware` SMG registers one worker per attention-DP rank, `<url>@<rank>` with `dp_base_url` = the
server's URL, and one POST of the server URL adds them all; a group is matched by either spelling. Every router
replica keeps its own registry, so each is told.

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


def server_url(worker: Mapping[str, Any]) -> str | None:
    """The SGLang server a router worker stands for: `dp_base_url` for a DP-aware rank worker, else its URL."""
    return worker.get("dp_base_url") or worker.get("url")


async def _workers(http: aiohttp.ClientSession, router: str) -> list[dict[str, Any]]:
    async with http.get(f"{router}/workers", timeout=TIMEOUT) as r:
        r.raise_for_status()
        return list((await r.json()).get("workers") or [])


#: how long a re-add waits for SMG's removal workflow of the same URL to finish (its drain step took 5 s on SMG 1.13)
READD_WAIT_SECONDS, READD_POLL_SECONDS = 12.0, 1.0


async def _one(http: aiohttp.ClientSession, router: str, url: str, routable: bool,
               worker: Mapping[str, Any] | None = None) -> bool:
    mine = [w for w in await _workers(http, router) if server_url(w) == url]
    if not routable:
        for wid in [w.get("id") for w in mine]:
            async with http.delete(f"{router}/workers/{wid}", timeout=TIMEOUT) as r:
                r.raise_for_status()
        return bool(mine)
    # an unhealthy entry may be a removal still in progress: a POST now would be lost with it, so wait it out
    waited = 0.0
    while mine and not any(w.get("is_healthy") for w in mine) and waited < READD_WAIT_SECONDS:
        await asyncio.sleep(READD_POLL_SECONDS)
        waited += READD_POLL_SECONDS
        mine = [w for w in await _workers(http, router) if server_url(w) == url]
    if mine:
        return False
    async with http.post(f"{router}/workers", json={"url": url, **(worker or {})}, timeout=TIMEOUT) as r:
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
        # a server counts once every worker the router has for it (one per DP rank with --dp-aware) is healthy
        servers = {u for w in workers if (u := server_url(w))}
        sick = {u for w in workers if (u := server_url(w)) and not w.get("is_healthy")}
        urls = servers - sick
        healthy = urls if healthy is None else healthy & urls
    routed = set()
    for p in pods:  # each group's leader, with the URL the routers know it by
        labels = (p.get("metadata") or {}).get("labels") or {}
        ip = (p.get("status") or {}).get("podIP")
        if labels.get(WORKER_INDEX) == "0" and labels.get(GROUP_INDEX, "").isdigit() and ip \
                and f"http://{ip}:{port}" in (healthy or set()):
            routed.add(int(labels[GROUP_INDEX]))
    return routed


def pd_worker(pd_role: str, bootstrap_port: int | None = None) -> dict[str, Any]:
    """What SMG needs besides the URL to re-add a PD worker (crates/protocols/src/worker.rs `WorkerSpec`:
    worker_type regular|prefill|decode, bootstrap_port of a prefill worker); {} for an aggregated one."""
    if pd_role == "prefill":
        return {"worker_type": "prefill", "bootstrap_port": bootstrap_port}
    return {"worker_type": "decode"} if pd_role == "decode" else {}


async def set_in_rotation(http: aiohttp.ClientSession | None, routers: Sequence[str], url: str | None,
                          routable: bool, worker: Mapping[str, Any] | None = None) -> int:
    """Remove `url` from (routable=False) or add it to every router; returns how many routers changed. Best effort:
    a router that does not answer is logged and skipped (the drain's timeout still bounds the wait). `worker`: the
    rest of SMG's worker spec for a re-add (pd_worker)."""
    if http is None or url is None or not routers:
        return 0
    results = await asyncio.gather(*(_one(http, r, url, routable, worker) for r in routers), return_exceptions=True)
    for r, res in zip(routers, results, strict=True):
        if isinstance(res, BaseException):
            log.warning("router %s: could not %s worker %s: %s", r, "add" if routable else "remove", url, res)
    return sum(1 for res in results if res is True)
