"""aiohttp front end of the simulator: an SGLang 0.5.23 leader (rank 0: tokenizer manager + HTTP API) or the dummy
health server of node ranks > 0 (sglang.md §2).

Leader: `/ready` and `/health[_generate]` are 503 during the cold start (`ServerStatus.Starting`) and after SIGTERM
(`gracefully_exit`); SIGTERM does not reject new requests (SGLang only flips the health endpoints), and the server
exits once no request is in flight (SGLang's `sigterm_watchdog`, polling every `drain_poll_s`). `/health` answers
without running a generation (SGLang's 1-token probe would not touch the KV pool noticeably).

Worker (node rank > 0): `/ping`, `/health`, `/health_generate` always 200; `/metrics` carries the scheduler series
of the DP ranks living on this node (read from the group's engine when the pod runner shares it, idle otherwise).
SIGTERM on a worker waits for the leader's shutdown (SGLang: "waiting for the rank-0 ShutdownReq broadcast") when a
leader is linked, else the worker exits at once.

PD disaggregation (`SimConfig.disaggregation_mode` prefill|decode, from `--disaggregation-mode`): the leader plays
SGLang's prefill or decode server (pd_serve.py: bootstrap server, per-room handshake, KV transfer, per-role queues and
metrics); aggregated servers (mode "null") are unchanged.

Non-SGLang extension: a request body may carry `"sim": {"input_tokens": N, "hash_ids": [...]}` so a trace replayer
drives exact prompt sizes and prefix blocks (512 tokens per hash id).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .clock import Clock
from .engine import VERSION, AdmissionError, Engine, SimConfig, SimRequest
from .metrics import SimMetrics
from .pd_serve import PDError, make_role

log = logging.getLogger("moe_sim")

TOKEN_TEXT = " sim"  # every generated token renders as this text


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, separators=(",", ":")))


def _error(message: str, status: int = 400) -> web.Response:
    # OpenAI-style error body, as SGLang's serving layer returns it
    err = ("BadRequestError" if status == 400 else "InternalServerError" if status == 500
           else "ServiceUnavailableError")
    return _json({"object": "error", "message": message, "type": err, "param": None, "code": status}, status)


def _content_text(messages: Any) -> str:
    parts: list[str] = []
    for m in messages or []:
        if not isinstance(m, dict):
            continue
        c = m.get("content")
        if isinstance(c, str):
            parts.append(c)
        elif isinstance(c, list):
            parts += [p.get("text", "") for p in c if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return "\n".join(parts)


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


class SimServer:
    def __init__(self, cfg: SimConfig, *, role: str = "leader", engine: Engine | None = None,
                 leader_exited: asyncio.Event | None = None, name: str = "", clock: Clock | None = None):
        """`clock`: the engine's time (clock.py); default the real clock, or the given engine's."""
        if role not in ("leader", "worker"):
            raise ValueError(f"role must be leader or worker, not {role!r}")
        self.cfg, self.role, self.name = cfg, role, name or f"{cfg.host}:{cfg.port}"
        if engine is not None and clock is not None and engine.clock is not clock:
            raise ValueError("the server and its engine must share one clock")
        self.engine = engine if engine is not None else Engine(cfg) if clock is None else Engine(cfg, clock)
        self.clock = self.engine.clock
        self.engine.admit_listeners.append(self._on_admit)
        self.metrics = SimMetrics(cfg, scheduler_ranks=cfg.ranks_of_node(cfg.node_rank), tokenizer=role == "leader")
        self.status = "Starting"
        self.gracefully_exit = False
        self.leader_exited = leader_exited
        self.exited = asyncio.Event()
        self.up = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.app = self._make_app()
        # PD role of the leader (None: aggregated, or a node rank > 0)
        self.pd = make_role(self) if role == "leader" else None
        self.created = self.clock.now()
        # fault injection for tests: "" (answer), "hang" (accept, never answer), "error" (HTTP 500)
        self.metrics_fault = ""

    # ---- lifecycle --------------------------------------------------------------------------------------------
    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        r = app.router
        r.add_get("/ping", self.ok)
        if self.role == "worker":
            r.add_get("/health", self.ok)
            r.add_get("/health_generate", self.ok)
            r.add_get("/metrics", self.metrics_endpoint)
            return app
        r.add_get("/health", self.health)
        r.add_get("/health_generate", self.health)
        r.add_get("/ready", self.ready)
        r.add_get("/metrics", self.metrics_endpoint)
        r.add_get("/server_info", self.server_info)
        r.add_get("/get_server_info", self.server_info)
        r.add_get("/model_info", self.model_info)
        r.add_get("/get_model_info", self.model_info)
        r.add_get("/v1/models", self.models)
        r.add_get("/v1/loads", self.loads)
        r.add_route("*", "/flush_cache", self.flush_cache)
        r.add_post("/v1/chat/completions", self.chat_completions)
        r.add_post("/v1/completions", self.completions)
        r.add_post("/generate", self.generate)
        return app

    def start_background(self) -> None:
        """Begin the cold start (for in-process use with an aiohttp test client)."""
        self._spawn(self._cold_start())

    async def start(self) -> None:
        """Bind host:port and begin the cold start."""
        self._runner = web.AppRunner(self.app, handle_signals=False, handler_cancellation=True,
                                     access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.cfg.host, self.cfg.port, reuse_address=True)
        try:
            await site.start()
            if self.pd is not None:
                await self.pd.start()  # the prefill's bootstrap server, at the same host
        except OSError:
            runner, self._runner = self._runner, None
            await runner.cleanup()
            raise
        self.start_background()

    async def _cold_start(self) -> None:
        await self.clock.sleep(self.cfg.cold_start)
        if not self.gracefully_exit:
            self.status = "Up"
            if self.pd is not None:
                self.pd.up()
            self.up.set()
            self.metrics.set_startup_time(self.clock.now() - self.created)
            log.info("%s: %s up", self.name, self.role)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    def sigterm(self) -> None:
        """SIGTERM semantics (sglang.md §2): leader flips health to 503, drains, exits; worker waits for rank 0."""
        if self.gracefully_exit:
            return
        self.gracefully_exit = True
        log.info("%s: SIGTERM, %d request(s) in flight", self.name, len(self.engine.in_flight))
        self._spawn(self._watchdog())

    async def _watchdog(self) -> None:
        if self.role == "leader":
            # polled like SGLang's sigterm_watchdog (every 5 s there), not event-driven
            while self.engine.in_flight or (self.pd is not None and self.pd.pending):  # noqa: ASYNC110
                await self.clock.sleep(self.cfg.drain_poll_s)
        elif self.leader_exited is not None:
            await self.leader_exited.wait()
        await self.close()

    async def close(self) -> None:
        """Stop serving now (after a drain, or a hard kill)."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        if self.pd is not None:
            await self.pd.close()
        for t in list(self._tasks):
            if t is not asyncio.current_task():
                t.cancel()
        self.status = "Exited"
        self.exited.set()
        log.info("%s: %s exited", self.name, self.role)

    # ---- health -----------------------------------------------------------------------------------------------
    async def ok(self, _: web.Request) -> web.Response:
        return web.Response(status=200)

    def _serving(self) -> bool:
        return self.status == "Up" and not self.gracefully_exit

    async def health(self, _: web.Request) -> web.Response:
        return web.Response(status=200 if self._serving() else 503)

    async def ready(self, _: web.Request) -> web.Response:
        return web.Response(status=200 if self._serving() else 503)

    # ---- info -------------------------------------------------------------------------------------------------
    def _internal_states(self) -> list[dict[str, Any]]:
        out = []
        for d in range(self.cfg.dp_size):
            st = self.engine.rank_stats(d)
            out.append({"dp_rank": d, "max_total_num_tokens": st["max_total_num_tokens"],
                        "max_running_requests": st["max_running_requests"], "last_gen_throughput":
                        st["gen_throughput"], "num_running_reqs": st["num_running_reqs"],
                        "num_waiting_reqs": st["num_waiting_reqs"], "num_used_tokens": st["num_used_tokens"],
                        "token_usage": round(st["token_usage"], 4)})
        return out

    async def server_info(self, _: web.Request) -> web.Response:
        c = self.cfg
        return _json({
            "model_path": c.model_path, "served_model_name": c.model_name, "tokenizer_path": c.model_path,
            "host": c.host, "port": c.port, "tp_size": c.tp_size, "pp_size": 1, "ep_size": c.ep_size,
            # 0.5.23 resolves `--attn-dp-size N` to dp_size=1 (model replicas), attn_dp_size=N
            "dp_size": 1, "attn_dp_size": c.dp_size, "enable_dp_attention": False,
            "nnodes": c.nnodes, "node_rank": c.node_rank,
            "load_balance_method": "follow_bootstrap_room" if c.disaggregation_mode == "prefill" else "round_robin",
            "disaggregation_mode": c.disaggregation_mode, **self._pd_info(), "context_length": c.context_length,
            "page_size": 1,
            "max_running_requests": c.max_running_requests, "max_total_tokens": c.max_total_tokens,
            "enable_metrics": True, "skip_server_warmup": False, "model_type": "deepseek_v3",
            "architectures": ["DeepseekV3ForCausalLM"],
            "launch_command": ["python3", "-m", "sglang.launch_server", "--model-path", c.model_path],
            # scheduler info
            "max_total_num_tokens": c.max_total_tokens, "max_req_input_len": c.context_length - 1,
            "status": self.status,
            "startup_time": self.engine.startup_time,
            "internal_states": self._internal_states(),
            "version": VERSION,
            "frontend": "python",
            "kv_events": None,
            "simulated": True,
        })

    def _pd_info(self) -> dict[str, Any]:
        c = self.cfg
        if c.disaggregation_mode == "null":
            return {}
        return {"disaggregation_bootstrap_port": c.disaggregation_bootstrap_port,
                "disaggregation_transfer_backend": c.disaggregation_transfer_backend}

    async def model_info(self, _: web.Request) -> web.Response:
        c = self.cfg
        return _json({
            "model_path": c.model_path, "served_model_name": c.model_name, "tokenizer_path": c.model_path,
            "is_generation": True, "preferred_sampling_params": None, "weight_version": "default",
            "load_format": "auto", "reasoning_parser": None, "tool_call_parser": None,
            "disaggregation_mode": c.disaggregation_mode, "has_image_understanding": False,
            "has_audio_understanding": False,
            "model_type": "deepseek_v3", "architectures": ["DeepseekV3ForCausalLM"],
        })

    async def models(self, _: web.Request) -> web.Response:
        c = self.cfg
        return _json({"object": "list", "data": [{
            "id": c.model_name, "object": "model", "created": int(self.engine.startup_time), "owned_by": "sglang",
            "root": c.model_name, "parent": None, "max_model_len": c.context_length}]})

    async def loads(self, request: web.Request) -> web.Response:
        q = request.query
        ranks = range(self.cfg.dp_size)
        if "dp_rank" in q:
            try:
                d = int(q["dp_rank"])
            except ValueError:
                return _error("dp_rank must be an integer")
            if not 0 <= d < self.cfg.dp_size:
                return _error(f"Invalid dp_rank {d}")
            ranks = range(d, d + 1)
        now = self.clock.now()
        loads = []
        for d in ranks:
            st = self.engine.rank_stats(d, now)
            loads.append({
                "timestamp": self.clock.wall(), "dp_rank": d, "num_running_reqs": st["num_running_reqs"],
                "num_waiting_reqs": st.get("loads_num_waiting_reqs", st["num_waiting_reqs"]),
                "num_waiting_uncached_tokens": st["num_waiting_uncached_tokens"],
                "num_used_tokens": st["num_used_tokens"], "num_total_tokens": st["num_used_tokens"],
                "num_active_tokens": st["num_used_tokens"], "num_prealloc_ready_tokens": 0,
                "max_total_num_tokens": st["max_total_num_tokens"],
                "max_running_requests": st["max_running_requests"],
                "token_usage": round(st["token_usage"], 4), "gen_throughput": st["gen_throughput"],
                "cache_hit_rate": st["cache_hit_rate"], "utilization": round(st["token_usage"], 4),
                "total_prefill_uncached_tokens": 0, "total_prefill_busy_us": 0, "decode_moments": None,
                "memory": {"weight_gb": 0.0, "kv_cache_gb": 0.0, "graph_gb": 0.0,
                           "token_capacity": st["max_total_num_tokens"]},
                "queues": {"waiting": st["num_waiting_reqs"], "grammar": 0, "paused": 0, "retracted": 0,
                           "prealloc_ready": 0},
            })
            if self.pd is not None:
                loads[-1]["disaggregation"] = self.pd.disaggregation(st)
        if q.get("format") == "prometheus":
            lines: list[str] = []
            for key in ("num_running_reqs", "num_waiting_reqs", "num_used_tokens", "num_total_tokens",
                        "max_total_num_tokens", "max_running_requests", "token_usage", "gen_throughput",
                        "cache_hit_rate", "utilization"):
                lines.append(f"# TYPE sglang_{key} gauge")
                lines += [f'sglang_{key}{{dp_rank="{ld["dp_rank"]}"}} {ld[key]}' for ld in loads]
            return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(self.clock.wall()))
        return _json({"timestamp": stamp, "version": VERSION,
                      "accelerator": "sim", "num_accelerators": max(1, self.cfg.tp_size // self.cfg.dp_size),
                      "loads": loads})

    async def flush_cache(self, _: web.Request) -> web.Response:
        for rank in self.engine.ranks:
            rank.kv.flush()
        return web.Response(text="Cache flushed.\n")

    async def metrics_endpoint(self, _: web.Request) -> web.Response:
        if self.metrics_fault == "hang":
            # a wedged exporter: the connection is accepted and never answered (the handler is cancelled when
            # the scraper gives up and disconnects)
            await self.clock.sleep(3600)
        if self.metrics_fault == "error":
            return web.Response(status=500, text="metrics fault injected\n")
        body = self.metrics.exposition(self.engine)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    # ---- generation -------------------------------------------------------------------------------------------
    def _on_admit(self, r: SimRequest) -> None:
        self.metrics.observe_queue_time(r.rank, r.admit_time - r.arrival)

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise web.HTTPBadRequest(text=f"invalid JSON: {e}") from e
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="the request body must be a JSON object")
        return body

    def _request(self, body: dict[str, Any], *, text: str | None, input_ids: Any, max_new: Any,
                 stream: bool) -> SimRequest:
        raw = body.get("sim")
        sim: dict[str, Any] = raw if isinstance(raw, dict) else {}
        routed = body.get("routed_dp_rank", body.get("data_parallel_rank"))
        r = self.engine.make_request(
            text=text, input_ids=input_ids, input_tokens=_opt_int(sim.get("input_tokens")),
            hash_ids=sim.get("hash_ids"), max_new_tokens=_opt_int(max_new), stream=stream,
            routed_dp_rank=_opt_int(routed))
        if self.pd is not None:
            self.pd.prepare(r, body)  # bootstrap fields (400 without a room), the role's request shape
        return r

    def _unavailable(self) -> web.Response | None:
        if self.status != "Up":
            return _error("The server is not ready (starting up).", 503)
        return None

    def _finished(self, r: SimRequest, completed: bool) -> None:
        if completed:
            self.metrics.observe_finished(prompt=r.input_tokens, generated=r.max_new_tokens, cached=r.cached_tokens,
                                          stream=r.stream, arrival=r.arrival, first_token=r.first_token_time,
                                          finished=self.clock.now())
        else:
            self.metrics.observe_aborted()

    async def _run_plain(self, r: SimRequest) -> None:
        completed = False
        try:
            await (self.engine.complete(r) if self.pd is None else self.pd.complete(r))
            completed = True
        finally:
            self._finished(r, completed)

    async def _stream(self, request: web.Request, r: SimRequest,
                      render: Callable[[int, int], list[dict[str, Any]]],
                      tail: Callable[[], list[dict[str, Any]]]) -> web.StreamResponse:
        """SSE: `data: {json}` per token chunk, then the tail chunks and `data: [DONE]`."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        completed = False
        total = 0
        try:
            source = self.engine.run(r) if self.pd is None else self.pd.run(r)
            try:
                async with contextlib.aclosing(source) as tokens:
                    async for n in tokens:
                        total += n
                        for chunk in render(n, total):
                            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            except PDError as e:  # SGLang streams an abort as an error object, then [DONE]
                err = {"error": {"message": e.message, "type": "InternalServerError", "code": e.status}}
                await resp.write(b"data: " + json.dumps(err).encode() + b"\n\ndata: [DONE]\n\n")
                await resp.write_eof()
                return resp
            completed = True
            for chunk in tail():
                await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        finally:
            self._finished(r, completed)
        return resp

    def _usage(self, r: SimRequest) -> dict[str, Any]:
        return {"prompt_tokens": r.input_tokens, "total_tokens": r.input_tokens + r.max_new_tokens,
                "completion_tokens": r.max_new_tokens, "prompt_tokens_details": {"cached_tokens": r.cached_tokens},
                "reasoning_tokens": 0}

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._openai(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._openai(request, chat=False)

    async def _openai(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        if (bad := self._unavailable()) is not None:
            return bad
        body = await self._body(request)
        stream = bool(body.get("stream"))
        if chat:
            text = _content_text(body.get("messages"))
        else:
            p = body.get("prompt", "")
            text = p if isinstance(p, str) else " ".join(map(str, p)) if isinstance(p, list) else str(p)
        max_new = body.get("max_completion_tokens", body.get("max_tokens"))
        try:
            r = self._request(body, text=text, input_ids=None, max_new=max_new, stream=stream)
        except (AdmissionError, ValueError, TypeError) as e:
            return _error(str(e))
        rid = uuid.uuid4().hex
        created = int(self.clock.wall())
        model = self.cfg.model_name
        obj = "chat.completion" if chat else "text_completion"
        if not stream:
            try:
                await self._run_plain(r)
            except PDError as e:
                return _error(e.message, e.status)
            choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": "length", "matched_stop": None}
            content = TOKEN_TEXT * r.max_new_tokens
            if chat:
                choice["message"] = {"role": "assistant", "content": content, "reasoning_content": None,
                                     "tool_calls": None}
            else:
                choice["text"] = content
            return _json({"id": rid, "object": obj, "created": created, "model": model, "choices": [choice],
                          "usage": self._usage(r), "metadata": {"weight_version": "default"}})
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        chunk_obj = "chat.completion.chunk" if chat else "text_completion"
        first = [True]

        def chunk(delta_text: str, finish: str | None) -> dict[str, Any]:
            c: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish, "matched_stop": None}
            if chat:
                delta: dict[str, Any] = {"content": delta_text} if delta_text or finish is None else {}
                if first[0]:
                    delta = {"role": "assistant", **delta}
                    first[0] = False
                c["delta"] = delta
            else:
                c["text"] = delta_text
            return {"id": rid, "object": chunk_obj, "created": created, "model": model, "choices": [c],
                    "usage": None}

        def render(n: int, _total: int) -> list[dict[str, Any]]:
            return [chunk(TOKEN_TEXT * n, None)]

        def tail() -> list[dict[str, Any]]:
            out = [chunk("", "length")]
            if include_usage:
                out.append({"id": rid, "object": chunk_obj, "created": created, "model": model, "choices": [],
                            "usage": self._usage(r)})
            return out

        return await self._stream(request, r, render, tail)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        """SGLang native `/generate` (single request; `text` or `input_ids`)."""
        if (bad := self._unavailable()) is not None:
            return bad
        body = await self._body(request)
        stream = bool(body.get("stream"))
        text, ids = body.get("text"), body.get("input_ids")
        if isinstance(text, list) or (isinstance(ids, list) and ids and isinstance(ids[0], list)):
            return _error("batched /generate is not simulated")
        sp = body.get("sampling_params") or {}
        try:
            r = self._request(body, text=text, input_ids=ids, max_new=sp.get("max_new_tokens"), stream=stream)
        except (AdmissionError, ValueError, TypeError) as e:
            return _error(str(e))
        rid = str(body.get("rid") or uuid.uuid4().hex)
        start = self.clock.now()

        def meta(done: bool, total: int) -> dict[str, Any]:
            # a PD prefill finishes with FINISH_LENGTH(length=0) (prefill.py process_disagg_prefill_inflight_queue)
            length = 0 if self.cfg.disaggregation_mode == "prefill" else total
            m: dict[str, Any] = {"id": rid, "finish_reason": {"type": "length", "length": length} if done else None,
                                 "prompt_tokens": r.input_tokens, "weight_version": "default",
                                 "completion_tokens": total, "cached_tokens": r.cached_tokens}
            if done:
                m["e2e_latency"] = self.clock.now() - start
            return m

        if not stream:
            try:
                await self._run_plain(r)
            except PDError as e:
                return _error(e.message, e.status)
            n = r.max_new_tokens
            return _json({"text": TOKEN_TEXT * n, "output_ids": [0] * n, "meta_info": meta(True, n)})

        def render(_n: int, total: int) -> list[dict[str, Any]]:
            # SGLang streams the cumulative text; the last token chunk carries the finish reason
            done = total >= r.max_new_tokens
            return [{"text": TOKEN_TEXT * total, "output_ids": [0] * total, "meta_info": meta(done, total)}]

        return await self._stream(request, r, render, lambda: [])


__all__ = ["SimServer"]
