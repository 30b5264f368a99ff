"""The admission webhook answers from its own thread and loop: a review is served while the operator's event loop
is blocked (kopf's own server queued it behind every reconcile), and what a handler awaits on the operator's loop
runs there."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from moe_operator import webhook_server
from moe_operator.webhook_certs import ensure_self_signed
from moe_operator.webhook_server import ThreadedWebhookServer, on_operator_loop


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _review(url: str, ca: Path, uid: str) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps({"request": {"uid": uid}}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=str(ca)), timeout=30) as resp:
        return dict(json.loads(resp.read()))


async def _thread_name() -> str:
    return threading.current_thread().name


async def _fn(request: dict[str, Any], **_: Any) -> dict[str, Any]:
    """A stand-in for kopf's admission function: "loop" reviews await something on the operator's loop."""
    uid = request["request"]["uid"]
    ran_on = await on_operator_loop(_thread_name()) if uid == "loop" else None
    return {"response": {"uid": uid, "allowed": True}, "served on": threading.current_thread().name,
            "awaited on": ran_on}


def test_reviews_are_served_from_their_own_thread_even_while_the_operator_loop_is_blocked(tmp_path: Path) -> None:
    ca, crt, key = ensure_self_signed(tmp_path, ["127.0.0.1", "localhost"])
    port = _free_port()
    url = f"https://127.0.0.1:{port}/validate-moedeployment"
    out: dict[str, Any] = {}
    reviews_before = _reviews()

    async def main() -> None:
        server = ThreadedWebhookServer(addr="127.0.0.1", port=port, host="127.0.0.1", certfile=str(crt),
                                       pkeyfile=str(key), cafile=str(ca))
        gen = server(_fn)
        out["config"] = await gen.__anext__()  # the client config kopf registers

        answered: dict[str, float] = {}

        def client() -> None:
            out["fast"] = _review(url, ca, "fast")
            answered["at"] = time.monotonic()

        t = threading.Thread(target=client)
        t.start()
        time.sleep(3)  # noqa: ASYNC251 - blocks the operator loop on purpose, as a long reconcile step would
        out["answered while blocked"] = "at" in answered
        await asyncio.to_thread(t.join, 30)
        out["loop"] = await asyncio.to_thread(_review, url, ca, "loop")
        out["thread cpu"] = _sample("moe_operator_admission_thread_seconds", state="running")
        await gen.aclose()

    asyncio.run(main())
    assert out["config"]["url"] == f"https://127.0.0.1:{port}" and out["config"]["caBundle"]
    assert out["answered while blocked"], "the review waited for the operator's event loop"
    assert out["fast"]["response"] == {"uid": "fast", "allowed": True}
    assert out["fast"]["served on"] == "admission-webhook"
    # what a handler awaits through on_operator_loop runs on the operator's loop (the API client's), not the webhook's
    assert out["loop"]["served on"] == "admission-webhook" and out["loop"]["awaited on"] == "MainThread"
    assert webhook_server._OPERATOR_LOOP is None  # cleared when the server stops
    # both reviews were timed inside the server, and the webhook thread's CPU time is read from its schedstat
    assert _reviews() == reviews_before + 2
    assert out["thread cpu"] > 0


def _reviews() -> float:
    return _sample("moe_operator_admission_duration_seconds_count", webhook="validate-moedeployment")


def _sample(name: str, **labels: str) -> float:
    return float(REGISTRY.get_sample_value(name, labels) or 0.0)


def test_on_operator_loop_awaits_directly_without_a_threaded_server() -> None:
    assert asyncio.run(on_operator_loop(_thread_name())) == "MainThread"
