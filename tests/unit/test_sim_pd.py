"""PD disaggregation in the simulator (moe_sim.pd_serve): role parsing, the room handshake, both roles driven
directly, and the real router (SMG 1.13.0, `--pd-disaggregation`) routing through a simulated prefill and decode.

No timed assertions: everything waits by polling with generous timeouts; the only time comparisons are lower bounds
(a KV transfer cannot take less than its bytes over the link)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from moe_sim.engine import SimConfig
from moe_sim.pd_serve import KVPoll, PDError, RoomTable, parse_pd_args, pd_request, transfer_seconds
from moe_sim.server import TOKEN_TEXT, SimServer

ROOT = Path(__file__).resolve().parents[2]
SMG_PYTHON = Path(os.environ.get("SMG_PYTHON") or ROOT / ".testcluster/venv-router/bin/python")
HAVE_SMG = SMG_PYTHON.exists()
FIXTURE = ROOT / "tests" / "fixtures" / "sglang_metrics_0.5.23.txt"
TIMEOUT = 120.0  # generous: a busy 2-core CI box
BYTES_PER_TOKEN = 70272
LINK_GBPS = 1.0  # slow link: 1000 tokens = 0.56 s of transfer


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def _until(cond: Any, timeout: float = TIMEOUT, what: str = "condition") -> Any:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        v = await cond()
        if v:
            return v
        assert loop.time() < end, f"{what} not reached within {timeout}s"
        await asyncio.sleep(0.05)


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(fams: dict[str, Any], family: str, sample: str | None = None, **labels: str) -> float:
    sample = sample or family
    f = fams.get(family)
    if f is None:
        return 0.0
    return sum(s.value for s in f.samples if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


# ---- pure units ----------------------------------------------------------------------------------------------------

def test_role_parsing() -> None:
    assert parse_pd_args(["--model-path", "m"]).mode == "null"
    a = parse_pd_args(["--disaggregation-mode", "prefill"])
    assert (a.mode, a.bootstrap_port, a.transfer_backend) == ("prefill", 8998, "mooncake")  # SGLang's defaults
    a = parse_pd_args(["--disaggregation-mode=decode", "--disaggregation-bootstrap-port=9001",
                       "--disaggregation-transfer-backend", "nixl"])
    assert (a.mode, a.bootstrap_port, a.transfer_backend) == ("decode", 9001, "nixl")
    with pytest.raises(ValueError, match="disaggregation-mode"):
        parse_pd_args(["--disaggregation-mode", "encode"])
    with pytest.raises(ValueError, match="bootstrap-port"):
        parse_pd_args(["--disaggregation-bootstrap-port", "x"])
    with pytest.raises(ValueError):
        SimConfig(disaggregation_mode="both")


def test_request_bootstrap_fields() -> None:
    cfg = SimConfig(disaggregation_mode="decode", disaggregation_bootstrap_port=8999)
    with pytest.raises(ValueError, match="without bootstrap room id"):
        pd_request({"text": "x"}, cfg)
    p = pd_request({"bootstrap_host": "10.0.0.1", "bootstrap_port": None, "bootstrap_room": 7}, cfg)
    assert (p.host, p.port, p.room, p.fake) == ("10.0.0.1", 8999, 7, False)  # null port -> own bootstrap port
    p = pd_request({"bootstrap_host": ["h"], "bootstrap_port": [1234], "bootstrap_room": [5],
                    "disagg_prefill_dp_rank": 1}, cfg)
    assert (p.host, p.port, p.room, p.prefill_dp_rank) == ("h", 1234, 5, 1)
    assert pd_request({"bootstrap_host": "2.2.2.2", "bootstrap_room": 0}, cfg).fake
    assert transfer_seconds(1000, BYTES_PER_TOKEN, 1.0) == pytest.approx(0.562176)


async def test_room_handshake_either_side_first() -> None:
    rooms = RoomTable(timeout=30)
    owner: Any = object()
    # decode registers before the prefill has the request (the router sends both at once)
    r = rooms.register(1, "d:1", 0, 100.0)
    assert r.state == KVPoll.WaitingForInput
    assert rooms.open(1, owner) is r
    with pytest.raises(PDError):
        rooms.open(1, object())  # one owner per room
    # prefill first: the waiter wakes when the destination arrives
    r2 = rooms.open(2, owner)
    assert r2.state == KVPoll.Bootstrapping
    waiter = asyncio.create_task(r2.wait(lambda: r2.state != KVPoll.Bootstrapping, 30))
    await asyncio.sleep(0)
    rooms.register(2, "d:1", 0, 100.0)
    assert await waiter
    with pytest.raises(PDError):
        rooms.register(2, "other:2", 0, 100.0)  # a second receiver is rejected
    rooms.set_state(r2, KVPoll.Success)
    rooms.set_state(r2, KVPoll.Failed)  # terminal states stick
    assert r2.view()["state"] == "Success"
    assert not await r2.wait(lambda: False, 0.01)


ARGV = ["--model-path", "/models/dsv3", "--tp-size", "8", "--port", "31000"]


async def _pod(args: list[str], annotations: dict[str, str] | None = None) -> Any:
    from kubernetes.aio.client import V1Pod

    raw = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "g-0", "namespace": "ns", "uid": "u1", "annotations": annotations or {},
                        "labels": {"leaderworkerset.sigs.k8s.io/name": "g",
                                   "leaderworkerset.sigs.k8s.io/worker-index": "0"}},
           "spec": {"nodeName": "h200-000", "containers": [{
               "name": "sglang", "image": "x", "command": ["python3", "-m", "sglang.launch_server"], "args": args}]},
           "status": {"phase": "Running", "podIP": "127.1.2.3"}}
    return V1Pod.from_dict(raw)


def _opts(*argv: str) -> Any:
    import argparse

    from moe_sim.runner import add_runner_args

    p = argparse.ArgumentParser()
    add_runner_args(p)
    return p.parse_args(list(argv))


async def test_runner_reads_the_pd_role() -> None:
    from moe_sim.runner import sim_config

    pod = await _pod([*ARGV, "--disaggregation-mode", "prefill", "--disaggregation-bootstrap-port", "8999",
                      "--kv-cache-dtype", "fp8_e4m3"], annotations={"moe-operator.io/sim-kv-link-gbps": "200"})
    cfg, role = sim_config(pod, pod.spec.containers[0], _opts())
    assert role == "leader" and cfg.disaggregation_mode == "prefill"
    assert (cfg.host, cfg.disaggregation_bootstrap_port) == ("127.1.2.3", 8999)
    assert cfg.kv_bytes_per_token == BYTES_PER_TOKEN // 2 and cfg.kv_link_gbps == 200.0
    pod = await _pod([*ARGV, "--disaggregation-mode", "decode"],
                     annotations={"moe-operator.io/sim-kv-bytes-per-token": "1000"})
    cfg, _ = sim_config(pod, pod.spec.containers[0], _opts("--kv-link-gbps", "50"))
    assert (cfg.disaggregation_mode, cfg.disaggregation_bootstrap_port) == ("decode", 8998)
    assert (cfg.kv_bytes_per_token, cfg.kv_link_gbps) == (1000, 50.0)
    cfg, _ = sim_config(await _pod(ARGV), (await _pod(ARGV)).spec.containers[0], _opts())
    assert cfg.disaggregation_mode == "null"  # aggregated unless told


# ---- both roles, driven directly (as the router would) --------------------------------------------------------------

class Pair:
    def __init__(self, prefill: SimServer, decode: SimServer, session: aiohttp.ClientSession):
        self.prefill, self.decode, self.session = prefill, decode, session
        self.room = 1000

    def url(self, s: SimServer, path: str) -> str:
        return f"http://{s.cfg.host}:{s.cfg.port}{path}"

    @property
    def bootstrap(self) -> str:
        c = self.prefill.cfg
        return f"http://{c.host}:{c.disaggregation_bootstrap_port}"

    async def metrics(self, s: SimServer) -> dict[str, Any]:
        async with self.session.get(self.url(s, "/metrics")) as r:
            return _families(await r.text())

    async def loads(self, s: SimServer) -> dict[str, Any]:
        async with self.session.get(self.url(s, "/v1/loads")) as r:
            return dict((await r.json())["loads"][0])

    async def post(self, s: SimServer, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with self.session.post(self.url(s, path), json=body) as r:
            return r.status, (await r.json() if not body.get("stream") else await r.text())

    async def both(self, path: str, body: dict[str, Any]) -> tuple[tuple[int, Any], tuple[int, Any]]:
        """What the router does: the same body plus bootstrap fields to both, at once."""
        self.room += 1
        c = self.prefill.cfg
        b = {**body, "bootstrap_host": c.host, "bootstrap_port": c.disaggregation_bootstrap_port,
             "bootstrap_room": self.room}
        p, d = await asyncio.gather(self.post(self.prefill, path, b), self.post(self.decode, path, b))
        return p, d


def _pair_fixture(decode_tokens: int = 100_000, bootstrap_timeout: float = 300.0) -> Any:
    @pytest_asyncio.fixture(loop_scope="session")
    async def fx() -> AsyncIterator[Pair]:
        ph, dh = "127.0.0.2", "127.0.0.3"
        prefill = SimServer(SimConfig(model_name="m", host=ph, port=_free_port(ph), disaggregation_mode="prefill",
                                      disaggregation_bootstrap_port=_free_port(ph), max_total_tokens=100_000,
                                      prefill_tps=50_000.0, kv_bytes_per_token=BYTES_PER_TOKEN,
                                      kv_link_gbps=LINK_GBPS, bootstrap_timeout_s=bootstrap_timeout),
                            name="prefill")
        decode = SimServer(SimConfig(model_name="m", host=dh, port=_free_port(dh), disaggregation_mode="decode",
                                     max_total_tokens=decode_tokens, decode_tps=100.0, kv_link_gbps=400.0,
                                     bootstrap_timeout_s=bootstrap_timeout), name="decode")
        await prefill.start()
        await decode.start()
        await prefill.up.wait()
        await decode.up.wait()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as s:
            yield Pair(prefill, decode, s)
        await prefill.close()
        await decode.close()
    return fx


pair = _pair_fixture()
small_decode = _pair_fixture(decode_tokens=1500)
impatient = _pair_fixture(bootstrap_timeout=0.3)


async def test_bootstrap_server_routes(pair: Pair) -> None:
    s = pair.session
    async with s.get(pair.bootstrap + "/health") as r:
        assert (r.status, await r.text()) == (200, "OK")
    async with s.get(pair.bootstrap + "/route?prefill_dp_rank=-1&prefill_cp_rank=-1&target_tp_rank=-1"
                                      "&target_pp_rank=-1") as r:
        info = await r.json()
    assert info["dp_size"] == 1 and info["follow_bootstrap_room"] is True
    assert info["prefill_http_port"] == pair.prefill.cfg.port
    async with s.get(pair.bootstrap + "/route?prefill_dp_rank=0&prefill_cp_rank=0&target_tp_rank=0"
                                      "&target_pp_rank=0") as r:
        assert (await r.json())["rank_ip"] == pair.prefill.cfg.host
    async with s.get(pair.bootstrap + "/route?prefill_dp_rank=0") as r:
        assert r.status == 400
    async with s.get(pair.bootstrap + "/route?prefill_dp_rank=5&prefill_cp_rank=0&target_tp_rank=0"
                                      "&target_pp_rank=0") as r:
        assert r.status == 404
    async with s.get(pair.bootstrap + "/sim/kv/424242") as r:
        assert r.status == 404 and (await r.json())["state"] == "Failed"
    async with s.get(pair.url(pair.prefill, "/server_info")) as r:
        si = await r.json()
    assert si["disaggregation_mode"] == "prefill"
    assert si["disaggregation_bootstrap_port"] == pair.prefill.cfg.disaggregation_bootstrap_port


async def test_requests_without_a_room_are_rejected(pair: Pair) -> None:
    for server in (pair.prefill, pair.decode):
        status, body = await pair.post(server, "/generate", {"text": "hi"})
        assert status == 400 and "without bootstrap room id" in body["message"]


async def test_direct_pd_request_prefills_transfers_and_decodes(pair: Pair) -> None:
    tokens, out = 1000, 6
    before_p, before_d = await pair.metrics(pair.prefill), await pair.metrics(pair.decode)
    (ps, pb), (ds, db) = await pair.both("/generate", {"text": "x", "sampling_params": {"max_new_tokens": out},
                                                       "sim": {"input_tokens": tokens}})
    assert (ps, ds) == (200, 200)
    assert pb["meta_info"]["finish_reason"] == {"type": "length", "length": 0}  # FINISH_LENGTH(length=0)
    assert pb["meta_info"]["completion_tokens"] == 1 and pb["text"] == TOKEN_TEXT
    assert db["text"] == TOKEN_TEXT * out and db["meta_info"]["prompt_tokens"] == tokens
    after_p, after_d = await pair.metrics(pair.prefill), await pair.metrics(pair.decode)
    lat = "sglang:kv_transfer_latency_ms"
    assert _value(after_p, lat, lat + "_count") == _value(before_p, lat, lat + "_count") + 1
    delta_ms = _value(after_p, lat, lat + "_sum") - _value(before_p, lat, lat + "_sum")
    assert delta_ms >= 0.95 * transfer_seconds(tokens, BYTES_PER_TOKEN, LINK_GBPS) * 1000  # bytes over the link
    mb = "sglang:kv_transfer_total_mb"
    assert _value(after_p, mb, mb + "_sum") - _value(before_p, mb, mb + "_sum") == pytest.approx(
        tokens * BYTES_PER_TOKEN / 2 ** 20)
    # both sides' tokenizers counted the request; the prefill produced one token, the decode the rest
    gen = "sglang:generation_tokens"
    assert _value(after_p, gen, gen + "_total") - _value(before_p, gen, gen + "_total") == 1
    assert _value(after_d, gen, gen + "_total") - _value(before_d, gen, gen + "_total") == out
    # the KV is handed back on both sides
    for s in (pair.prefill, pair.decode):
        assert (await pair.loads(s))["num_used_tokens"] == 0


async def test_decode_pool_full_holds_the_prefill_in_its_bootstrap_queue(small_decode: Pair) -> None:
    """decode KV 1500 tokens: the second 1000-token prompt waits in decode's prealloc queue, so the prefill keeps it
    in its bootstrap queue (no optimistic prefill by default); both finish once the first frees its KV."""
    p = small_decode
    body = {"text": "x", "sampling_params": {"max_new_tokens": 50}, "sim": {"input_tokens": 1000}}
    first = asyncio.create_task(p.both("/generate", body))

    async def first_running() -> bool:
        return (await p.loads(p.decode))["num_running_reqs"] == 1

    await _until(first_running, what="first request decoding")
    second = asyncio.create_task(p.both("/generate", body))

    async def held() -> bool:
        pm, dm = await p.metrics(p.prefill), await p.metrics(p.decode)
        return (_value(pm, "sglang:num_prefill_bootstrap_queue_reqs") == 1
                and _value(dm, "sglang:num_decode_prealloc_queue_reqs") == 1)

    await _until(held, what="second request held in prealloc + bootstrap queues")
    d = (await p.loads(p.decode))["disaggregation"]
    assert d["mode"] == "decode" and d["decode_prealloc_queue_reqs"] == 1
    for t in (first, second):
        (ps, _), (ds, db) = await asyncio.wait_for(t, TIMEOUT)
        assert (ps, ds) == (200, 200) and db["meta_info"]["completion_tokens"] == 50


async def test_prefill_bootstrap_timeout(impatient: Pair) -> None:
    p = impatient
    before = _value(await p.metrics(p.prefill), "sglang:num_bootstrap_failed_reqs",
                    "sglang:num_bootstrap_failed_reqs_total")
    status, body = await p.post(p.prefill, "/generate", {"text": "x", "bootstrap_host": p.prefill.cfg.host,
                                                         "bootstrap_room": 99})
    assert status == 500 and "Prefill bootstrap failed" in body["message"]
    after = _value(await p.metrics(p.prefill), "sglang:num_bootstrap_failed_reqs",
                   "sglang:num_bootstrap_failed_reqs_total")
    assert after == before + 1


async def test_pd_metrics_conform_to_sglang_0_5_23(pair: Pair) -> None:
    if not FIXTURE.exists():
        pytest.skip(f"{FIXTURE} missing")
    ref = _families(FIXTURE.read_text(encoding="utf-8"))
    await pair.both("/generate", {"text": "x", "sampling_params": {"max_new_tokens": 2}})
    for server in (pair.prefill, pair.decode):
        ours = await pair.metrics(server)
        for name in ("sglang:num_prefill_bootstrap_queue_reqs", "sglang:num_decode_transfer_queue_reqs",
                     "sglang:prealloc_full_token_usage"):
            assert name in ours
        for name, f in ours.items():
            assert name in ref, f"{name} is not an SGLang 0.5.23 metric"
            assert (f.type, f.documentation) == (ref[name].type, ref[name].documentation), name
            if ref[name].samples:
                assert ({frozenset(set(s.labels) - {"le"}) for s in f.samples}
                        == {frozenset(set(s.labels) - {"le"}) for s in ref[name].samples}), name


# ---- the real router ---------------------------------------------------------------------------------------------

class Routed:
    def __init__(self, pair: Pair, url: str):
        self.pair, self.url = pair, url


def _tail(path: str) -> str:
    return Path(path).read_text(errors="replace")[-3000:]


@pytest_asyncio.fixture(loop_scope="session")
async def routed(pair: Pair) -> AsyncIterator[Routed]:
    if not HAVE_SMG:
        pytest.skip(f"SMG not installed: no router interpreter at {SMG_PYTHON} (set SMG_PYTHON, or run "
                    "hack/setup-router)")
    host = "127.0.0.1"
    port, mport = _free_port(host), _free_port(host)
    p, d = pair.prefill.cfg, pair.decode.cfg
    argv = [str(SMG_PYTHON), "-m", "smg.launch_router", "--pd-disaggregation",
            "--prefill", f"http://{p.host}:{p.port}", str(p.disaggregation_bootstrap_port),
            "--decode", f"http://{d.host}:{d.port}", "--policy", "round_robin",
            "--host", host, "--port", str(port), "--prometheus-host", host, "--prometheus-port", str(mport),
            "--log-level", "warn"]
    log = tempfile.NamedTemporaryFile(prefix="smg-pd-", suffix=".log")  # noqa: SIM115
    env = {**os.environ, "NO_COLOR": "1", "HF_HUB_OFFLINE": "1"}
    proc = await asyncio.create_subprocess_exec(*argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://{host}:{port}"
    s = pair.session

    async def workers_ready() -> bool:
        assert proc.returncode is None, f"smg exited rc={proc.returncode}: {_tail(log.name)}"
        with contextlib.suppress(aiohttp.ClientError):
            async with s.get(url + "/workers") as r:
                if r.status != 200:
                    return False
                text = await r.text()
                return '"prefill"' in text and '"decode"' in text and text.count('"is_healthy":true') >= 2
        return False

    try:
        await _until(workers_ready, what="SMG with its prefill and decode workers")
        yield Routed(pair, url)
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


async def _sse(resp: aiohttp.ClientResponse) -> list[Any]:
    events = []
    async for raw in resp.content:
        line = raw.decode().strip()
        if line.startswith("data: "):
            data = line[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


async def test_smg_routes_pd_requests_through_the_simulated_pair(routed: Routed) -> None:
    pair, s = routed.pair, routed.pair.session
    before_p, before_d = await pair.metrics(pair.prefill), await pair.metrics(pair.decode)
    out = 5
    prompt = {"sim": {"input_tokens": 300}}

    async def generate(stream: bool) -> str:
        body = {"text": "hello", "sampling_params": {"max_new_tokens": out}, "stream": stream, **prompt}
        async with s.post(routed.url + "/generate", json=body) as r:
            assert r.status == 200, await r.text()
            if not stream:
                j = await r.json()
                assert j["meta_info"]["completion_tokens"] == out  # the decode's answer, not the prefill's
                return str(j["text"])
            ev = await _sse(r)
            assert ev[-1] == "[DONE]" and ev[-2]["meta_info"]["finish_reason"]["length"] == out
            return str(ev[-2]["text"])

    async def chat(stream: bool) -> str:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": out, "stream": stream,
                **prompt}
        async with s.post(routed.url + "/v1/chat/completions", json=body) as r:
            assert r.status == 200, await r.text()
            if not stream:
                j = await r.json()
                assert j["usage"]["completion_tokens"] == out
                return str(j["choices"][0]["message"]["content"])
            ev = await _sse(r)
            assert ev[-1] == "[DONE]" and ev[-2]["choices"][0]["finish_reason"] == "length"
            return "".join(e["choices"][0]["delta"].get("content") or "" for e in ev[:-1])

    texts = await asyncio.gather(generate(False), generate(True), chat(False), chat(True))
    assert texts == [TOKEN_TEXT * out] * 4

    after_p, after_d = await pair.metrics(pair.prefill), await pair.metrics(pair.decode)

    def delta(fam: str, sample: str, **labels: str) -> float:
        return _value(after_d, fam, sample, **labels) - _value(before_d, fam, sample, **labels)

    def pdelta(fam: str, sample: str) -> float:
        return _value(after_p, fam, sample) - _value(before_p, fam, sample)

    # the decode's KV pool admitted every request (one queue-time observation at admission), it decoded them all
    assert delta("sglang:queue_time_seconds", "sglang:queue_time_seconds_count") == 4
    assert delta("sglang:num_requests", "sglang:num_requests_total") == 4
    assert delta("sglang:generation_tokens", "sglang:generation_tokens_total") == 4 * out
    assert delta("sglang:num_requests", "sglang:num_requests_total", is_streaming="true") == 2
    # the prefill prefilled them (one token each) and sent each KV over the link
    assert pdelta("sglang:num_requests", "sglang:num_requests_total") == 4
    assert pdelta("sglang:generation_tokens", "sglang:generation_tokens_total") == 4
    assert pdelta("sglang:prompt_tokens", "sglang:prompt_tokens_total") == 4 * 300
    lat = "sglang:kv_transfer_latency_ms"
    assert pdelta(lat, lat + "_count") == 4
    assert pdelta(lat, lat + "_sum") >= 0.95 * 4 * transfer_seconds(300, BYTES_PER_TOKEN, LINK_GBPS) * 1000
    boot = "sglang:kv_transfer_bootstrap_ms"
    assert delta(boot, boot + "_count") == 4 and pdelta(boot, boot + "_count") == 4


async def test_smg_pd_transfer_is_seen_in_both_queues(routed: Routed) -> None:
    """A 5000-token prompt over a 1 Gb/s link: 2.8 s in the prefill's inflight queue and the decode's transfer queue
    (KV preallocated, prealloc_full_token_usage > 0) before the decode starts."""
    pair, s = routed.pair, routed.pair.session
    body = {"text": "long", "sampling_params": {"max_new_tokens": 3}, "sim": {"input_tokens": 5000}}

    async def send() -> Any:
        async with s.post(routed.url + "/generate", json=body) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    t = asyncio.create_task(send())

    async def in_transfer() -> bool:
        dm, pm = await pair.metrics(pair.decode), await pair.metrics(pair.prefill)
        return (_value(dm, "sglang:num_decode_transfer_queue_reqs") == 1
                and _value(dm, "sglang:prealloc_full_token_usage") > 0
                and _value(pm, "sglang:num_prefill_inflight_queue_reqs") == 1)

    await _until(in_transfer, what="the request in the transfer queues")
    assert (await pair.loads(pair.prefill))["disaggregation"]["prefill_inflight_queue_reqs"] == 1
    j = await asyncio.wait_for(t, TIMEOUT)
    assert j["meta_info"]["completion_tokens"] == 3
    assert j["meta_info"]["e2e_latency"] >= 0.95 * transfer_seconds(5000, BYTES_PER_TOKEN, LINK_GBPS)

    async def drained() -> bool:
        dm, pm = await pair.metrics(pair.decode), await pair.metrics(pair.prefill)
        return (_value(dm, "sglang:num_decode_transfer_queue_reqs") == 0
                and _value(pm, "sglang:num_prefill_inflight_queue_reqs") == 0
                and _value(pm, "sglang:kv_used_tokens") == 0 and _value(dm, "sglang:kv_used_tokens") == 0)

    await _until(drained, what="queues and KV drained")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
