"""The admission webhook on its own thread and event loop.

kopf serves webhooks on the operator's one event loop. Under a burst of creates every review then waits behind the
reconciles of the objects just created (webhook p99 0.67-0.91 s in bench/control_plane.py, ~5 ms of work each), and
the apiserver holds each write for that long. controller-runtime serves webhooks from their own goroutines for the
same reason. Here kopf's own server (TLS, certificate reload, the client config kopf registers) runs unchanged on a
second loop in a thread and calls the same kopf admission function — the same handlers, memo and indexes — so a
review waits for the interpreter at most a switch interval at a time, not for a queue of reconciles.

What a handler needs from the operator's loop (its API client lives there) goes through `on_operator_loop`; the
handlers read the caches (plain dicts the operator's loop updates) directly."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import kopf

from moe_operator import metrics

T = TypeVar("T")

#: the operator's event loop, set by the server when it starts (None: handlers run on it, as in unit tests)
_OPERATOR_LOOP: asyncio.AbstractEventLoop | None = None


async def on_operator_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Await `coro` on the operator's event loop (where the API client's connections live) from either loop."""
    loop = _OPERATOR_LOOP
    if loop is None or loop is asyncio.get_running_loop():
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))


def timed(fn: Any) -> Any:
    """kopf's webhook function, observed into moe_operator_admission_duration_seconds."""

    async def review(request: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await fn(request, **kwargs)
        finally:
            metrics.ADMISSION_SECONDS.labels(kwargs.get("webhook") or "").observe(time.perf_counter() - start)

    return review


def schedstat(native_id: int) -> tuple[float, float] | None:
    """(seconds on a CPU, seconds waiting in the run queue) of one of this process's threads; None off Linux."""
    try:
        run_ns, wait_ns, _ = Path(f"/proc/self/task/{native_id}/schedstat").read_text().split()
    except (OSError, ValueError):
        return None
    return int(run_ns) / 1e9, int(wait_ns) / 1e9


def observe_thread(native_id: int) -> None:
    def field(i: int) -> Callable[[], float]:
        return lambda: (schedstat(native_id) or (0.0, 0.0))[i]

    for i, state in enumerate(("running", "runqueue")):
        metrics.ADMISSION_THREAD_SECONDS.labels(state).set_function(field(i))


class ThreadedWebhookServer(kopf.WebhookServer):
    """kopf.WebhookServer serving from a thread of its own (same arguments)."""

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        global _OPERATOR_LOOP
        operator_loop = _OPERATOR_LOOP = asyncio.get_running_loop()
        configs: asyncio.Queue[Any] = asyncio.Queue()
        loop = asyncio.new_event_loop()

        async def serve() -> None:
            observe_thread(threading.get_native_id())
            try:
                async for config in kopf.WebhookServer.__call__(self, timed(fn)):
                    operator_loop.call_soon_threadsafe(configs.put_nowait, config)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # noqa: BLE001 - handed to the operator's loop, which raises it
                operator_loop.call_soon_threadsafe(configs.put_nowait, exc)

        task = loop.create_task(serve())

        def main() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(task)
            except asyncio.CancelledError:
                pass
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        thread = threading.Thread(target=main, name="admission-webhook", daemon=True)
        thread.start()
        try:
            while True:
                item = await configs.get()
                if isinstance(item, BaseException):
                    raise item
                yield item  # kopf registers this client config (URL, CA bundle) as it would its own server's
        finally:
            loop.call_soon_threadsafe(task.cancel)
            await asyncio.to_thread(thread.join, 10)
            _OPERATOR_LOOP = None
