"""Leader election on a Lease (the official client's `kubernetes.aio.leaderelection`), so the operator can run as
several replicas: every replica serves the admission webhook (a write is never refused because one pod restarts),
only the leader reconciles, autoscales and writes pool status. Everything it does is level-based, so a new leader
picks up at its next resync; a replica that loses the Lease stops acting at once.

Identity is the pod name (stable across container restarts, so a restarted leader re-acquires at once); a replica
that shuts down gracefully hands the Lease back, so the next one does not wait for it to expire."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
from typing import Any

import kopf

from moe_operator import metrics

LEASE_NAME = "moe-operator-leader"
# the apiserver's own defaults are 15/10/2 s; 10/8/2 keeps failover (expiry + one retry) near 12 s
LEASE_SECONDS, RENEW_DEADLINE_SECONDS, RETRY_SECONDS = 10, 8, 2  # ints: the Lease stores whole seconds
SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
log = logging.getLogger(__name__)


def identity() -> str:
    return os.environ.get("MOE_LEADER_ID") or os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def lease_namespace() -> str:
    if os.environ.get("MOE_LEADER_NAMESPACE"):
        return os.environ["MOE_LEADER_NAMESPACE"]
    with contextlib.suppress(OSError):
        with open(SA_NAMESPACE, encoding="utf-8") as fh:
            return fh.read().strip()
    return "default"


def is_leader(memo: kopf.Memo) -> bool:
    leader: asyncio.Event | None = getattr(memo, "leader", None)
    return leader is None or leader.is_set()


def _lease_lock(name: str, namespace: str, ident: str, api: Any) -> Any:
    from kubernetes.aio import client
    from kubernetes.aio.client.rest import ApiException
    from kubernetes.aio.leaderelection.resourcelock.leaselock import LeaseLock

    class Lock(LeaseLock):  # type: ignore[misc]
        """kubernetes 37.0.2's aio LeaseLock.create passes pretty=True, which its own pydantic-validated
        CoordinationV1Api refuses (pretty must be a string): no Lease could ever be created. Same call without it."""

        async def create(self, name: str, namespace: str, election_record: Any) -> bool:
            body = client.V1Lease(metadata=client.V1ObjectMeta(name=name), spec=self.update_lease(election_record))
            try:
                await self.api_instance.create_namespaced_lease(namespace, body)
                return True
            except ApiException:
                return False

    return Lock(name, namespace, ident, api)


async def _elect(memo: kopf.Memo) -> None:
    from kubernetes.aio.leaderelection import electionconfig, leaderelection

    leader: asyncio.Event = memo.leader

    async def started() -> None:
        leader.set()
        metrics.LEADER.set(1)
        log.info("leading as %s (Lease %s/%s)", identity(), lease_namespace(), LEASE_NAME)
        on_leading = getattr(memo, "on_leading", None)
        if on_leading is not None:  # a pass over every MoEDeployment (handlers.children)
            memo.leading_pass = asyncio.create_task(on_leading())

    async def stopped() -> None:
        leader.clear()
        metrics.LEADER.set(0)
        log.warning("lost the Lease %s/%s: standing by", lease_namespace(), LEASE_NAME)

    lock = _lease_lock(LEASE_NAME, lease_namespace(), identity(), memo.kube.api)
    while True:  # run() returns when the Lease is lost: stand for election again
        cfg = electionconfig.Config(lock, LEASE_SECONDS, RENEW_DEADLINE_SECONDS, RETRY_SECONDS, started, stopped)
        try:
            await leaderelection.LeaderElection(cfg).run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - an API hiccup must not end the election loop
            leader.clear()
            metrics.LEADER.set(0)
            log.warning("leader election: %s: %s", type(exc).__name__, exc)
        await asyncio.sleep(RETRY_SECONDS)


async def start(memo: kopf.Memo) -> None:
    """Called by lifecycle.configure once memo.kube exists."""
    if os.environ.get("MOE_LEADER_ELECTION", "true").lower() in ("0", "false", "no"):
        return  # a single replica that always acts (memo.leader unset)
    memo.leader = asyncio.Event()
    memo.election = asyncio.create_task(_elect(memo))


async def release(memo: kopf.Memo) -> None:
    """Called by lifecycle.close before the API client closes: stop standing and hand the Lease back, so the next
    replica takes it at its next retry instead of after expiry."""
    task: asyncio.Task[None] | None = getattr(memo, "election", None)
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    if memo.leader.is_set():
        memo.leader.clear()
        past = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=LEASE_SECONDS * 2)).isoformat().replace("+00:00", "Z")
        with contextlib.suppress(Exception):
            await memo.kube.patch("coordination.k8s.io/v1", "Lease", LEASE_NAME,
                                  {"spec": {"holderIdentity": None, "renewTime": past}}, lease_namespace())
