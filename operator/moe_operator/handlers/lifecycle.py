"""Operator start-up: kopf settings under our own prefix, the shared API client, metrics."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import kopf

from moe_operator.cache import STORED_KINDS
from moe_operator.handlers import leadership
from moe_operator.informer import Stores
from moe_operator.kube import Kube

PREFIX = "moe-operator.io"


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Finalizer, progress and diff-base annotations under our own prefix, not kopf.zalando.org.
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX, v1=False)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration", v1=False)
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "moe-operator"
    settings.networking.request_timeout = 30
    settings.execution.max_workers = 4
    settings.batching.error_delays = (1, 2, 5, 10, 30)  # type: ignore[assignment]
    # kopf keeps its finalizer until the object's timers (resync, autoscale) have stopped, and re-checks a timer that
    # was mid-run when the deletion came only every `cancellation_polling` seconds (default 60): a deleted
    # MoEDeployment then waited up to a minute for its children to be garbage-collected on a busy operator
    settings.background.cancellation_polling = 1
    memo.settings = settings  # for loggers of an owner from a child's handler (those get no settings kwarg)
    memo.kube = await Kube.connect(os.environ.get("MOE_OPERATOR_KUBECONFIG") or None)
    # watch-backed stores of every kind the operator creates, narrowed to our label on the server; their events
    # reach handlers.children (which sets memo.on_child_event)
    memo.stores = Stores(memo.kube, STORED_KINDS,
                         on_event=lambda kind, obj: getattr(memo, "on_child_event", _ignore)(kind, obj), nodes=True,
                         namespaces=getattr(memo, "namespaces", None))
    memo.stores.start()
    memo.locks = {}
    memo.caches_ready = asyncio.Event()  # set by the first resource handler call (handlers.deployment)
    memo.queued = set()  # MoEDeployments with a pass waiting behind the running one (coalesced triggers)
    memo.repairs = {}  # (namespace, name) -> group -> when its placement was last repaired
    memo.written = {}  # (namespace, name) -> the object as our last status write left it
    await leadership.start(memo)
    webhook = getattr(memo, "webhook", None)
    if webhook is not None:  # set by `moe-operator run`
        settings.admission.server = webhook.server
        settings.admission.managed = webhook.managed


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    stores = getattr(memo, "stores", None)
    if stores is not None:
        await stores.stop()
    kube = getattr(memo, "kube", None)
    if kube is not None:
        await leadership.release(memo)
        await kube.close()


def _ignore(kind: str, obj: dict[str, Any]) -> None:
    return None


def lock_for(memo: kopf.Memo, namespace: str, name: str) -> asyncio.Lock:
    """Serialize reconciles of one MoEDeployment across its own handlers, its timer and pod events."""
    locks: dict[tuple[str, str], asyncio.Lock] = memo.locks
    return locks.setdefault((namespace, name), asyncio.Lock())


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's own kubeconfig / service-account readers, not its piggyback on an installed Kubernetes client (which
    reads client configuration fields the asyncio clients no longer fill in for client-certificate kubeconfigs)."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        return kopf.login_with_service_account(**kwargs)
    return kopf.login_with_kubeconfig(**kwargs)
