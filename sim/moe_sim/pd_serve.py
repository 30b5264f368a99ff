"""Prefill/decode (PD) disaggregation of the simulator: both SGLang 0.5.23 roles, driven by a real PD router (SMG).

Role: `SimConfig.disaggregation_mode` from the pod's `--disaggregation-mode prefill|decode` (absent or `null`:
aggregated, nothing here runs). `parse_pd_args` reads the three SGLang flags (srt/arg_groups/fields/disagg.py:
`--disaggregation-mode` default "null", `--disaggregation-bootstrap-port` default 8998,
`--disaggregation-transfer-backend` default "mooncake").

What the router does (SMG, lightseekorg/smg model_gateway/src/routers/http/pd_router.rs): picks a (prefill, decode)
pair, adds `bootstrap_host` (the prefill URL's host), `bootstrap_port` (the worker's bootstrap port: `--prefill URL
PORT`, or the pod annotation `sglang.ai/bootstrap-port` under Kubernetes discovery; null if none) and a random
`bootstrap_room` (63-bit) to the JSON body (`inject_bootstrap_into_value`), POSTs the same body to the same route
(/generate, /v1/chat/completions, /v1/completions) of both workers at once (`execute_dual_dispatch_internal`,
`try_join!` on both response heads), then returns the DECODE response (streamed through, or passed through when not
streaming) and only drains the prefill's body (`process_prefill_response`; a prefill error status becomes the
client's error).

Prefill server (srt/disaggregation/prefill.py module docstring; one room per request):
  1. bootstrap queue (`PrefillBootstrapQueue`): waits until the decode side has preallocated KV for the room and
     sent its destination (Mooncake `start_prefill_thread.bootstrap_thread`: KVPoll.Bootstrapping ->
     WaitingForInput). The default `--disaggregation-decode-allocation-policy early` with
     `optimistic_prefill_attempts` 0 never prefills before that (`can_prefill_before_bootstrap`). Times out after
     `bootstrap_timeout_s` (SGLANG_DISAGGREGATION_BOOTSTRAP_TIMEOUT, 300 s): HTTP 500 "Prefill bootstrap failed ..."
     and `sglang:num_bootstrap_failed_reqs_total` (`handle_bootstrap_failure`).
  2. waiting queue + prefill: KV admission against the prefill's own pool (the request is cut to
     max_new_tokens=1: `PrefillBootstrapQueue._process_req`), DP rank `bootstrap_room % dp_size`
     (`load_balance_method` auto = follow_bootstrap_room for prefill: arg_groups/serving_hook.py
     `handle_load_balance_method`, data_parallel_controller.py `follow_bootstrap_room_scheduler`), prefill at
     `prefill_tps`, one prompt at a time per rank (engine.py), radix prefix reuse as in aggregated mode.
  3. inflight queue (`process_disagg_prefill_inflight_queue`): the KV is held while it is sent, for
     `input_tokens * kv_bytes_per_token * 8 / (min(prefill, decode kv_link_gbps) * 1e9)` s (the sender moves the
     bytes: Mooncake `MooncakeKVManager.transfer_worker`); then the KV is released (`release_kv_cache`: blocks stay in
     the radix cache), the transfer is observed (`req_time_stats.py compute_and_observe_kv_transfer_metrics`:
     sglang:kv_transfer_latency_ms, _total_mb, _speed_gb_s, _bootstrap_ms, _alloc_ms) and the request finishes with
     its one token (FINISH_LENGTH(length=0)): that is the prefill's HTTP answer to the router.

Decode server (srt/disaggregation/decode.py module docstring):
  1. prealloc queue (`DecodePreallocQueue`): handshake with the prefill's bootstrap server (`CommonKVReceiver`:
     GET /route with all ranks -1 for the PrefillServerInfo, then GET /route for the prefill DP rank's address;
     prefill DP rank = body `disagg_prefill_dp_rank`, else 0 when dp_size is 1, else `bootstrap_room % dp_size`:
     `_resolve_prefill_dp_rank`), then KV admission against the decode's own pool (queueing while full), no prefix
     reuse (the decode radix cache is off by default: arg_groups/pd_disaggregation_hook.py). A failed handshake:
     HTTP 500 and sglang:num_bootstrap_failed_reqs_total.
  2. transfer queue (`DecodeTransferQueue`): sends its destination to the prefill (sim route below, standing in for
     Mooncake's ZMQ message) and waits until the prefill reports the room's KV sent (KVPoll.Success); Failed ->
     HTTP 500 and sglang:num_transfer_failed_reqs_total (`_record_transfer_failure`). Waiting timeout
     SGLANG_DISAGGREGATION_WAITING_TIMEOUT (300 s).
  3. running: the first token (computed by the prefill) is out at once, then one token per 1/`decode_tps` s.
  `bootstrap_port` null in the body -> the decode's own `--disaggregation-bootstrap-port` (scheduler.py
  `_handle_generate_request`). A request without `bootstrap_room` gets 400 "Invalid request: Disaggregated request
  received without bootstrap room id." (same function) on both roles. `bootstrap_host` 2.2.2.2
  (FAKE_BOOTSTRAP_HOST, SGLang's own health checks/warmup) skips the transfer.

Bootstrap server (on the prefill, `--disaggregation-bootstrap-port` at the server's host; SGLang's
`CommonKVBootstrapServer`, common/conn.py, started by managers/disagg_service.py): `GET /health`, `PUT /route`
(rank registration; the simulator registers its own DP ranks when it is up, 503 before), `GET /route` (all -1:
PrefillServerInfo; else the rank's `{"rank_ip", "rank_port"}`, the rank port being this bootstrap port since the
simulator's transfer channel is HTTP), `POST /register_dp_rank`, `POST /query_dp_ranks`, as in SGLang. Sim-only
routes (no SGLang equivalent; they replace Mooncake's ZMQ messages and RDMA writes):
  * `POST /sim/kv/{room}` `{"decode": "host:port", "decode_dp_rank": d, "tokens": n, "link_gbps": g}`: the decode
    has preallocated KV for the room (its destination message) -> the prefill may prefill it.
  * `GET /sim/kv/{room}?wait=S`: the room's state `{"room", "state": Bootstrapping|WaitingForInput|Transferring|
    Success|Failed, "poll": KVPoll int, "tokens", "bytes", "transfer_s", "error"}`, long-polled up to S seconds
    until Success or Failed ("is room R's KV ready, how many tokens"); 404 with state Failed for an unknown room.
  * `POST /sim/kv/{room}/abort`: the decode gave the request up (client gone) -> the prefill's request fails.

Transfer defaults (SimConfig): `kv_bytes_per_token` 70272 = DeepSeek-V3's MLA cache, (kv_lora_rank 512 +
qk_rope_head_dim 64) x 61 layers x 2 bytes (bf16) (config.json of deepseek-ai/DeepSeek-V3; SGLang
`MLATokenToKVPool.kv_cache_dim = kv_lora_rank + qk_rope_head_dim`, mem_cache/memory_pool.py; half with an fp8 KV
cache); `kv_link_gbps` 400 = one 400 Gb/s ConnectX-7 NDR port per GPU (NVIDIA DGX H200 / HGX H200 reference: 8x
ConnectX-7 for the compute fabric). Not modelled: chunked-prefill/transfer overlap (SGLang sends each chunk's KV as
soon as it is computed: prefill.py `send_kv_chunk`), per-TP-rank transfers, retraction, staging buffers.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from .clock import REAL_CLOCK
from .engine import SimConfig, SimRequest

if TYPE_CHECKING:
    from .server import SimServer

FAKE_BOOTSTRAP_HOST = "2.2.2.2"  # srt/disaggregation/utils.py
ROOM_TTL_S = 60.0  # how long a finished room still answers GET /sim/kv/{room}
POLL_WAIT_S = 10.0  # decode's long-poll slice
MODES = ("null", "prefill", "decode")


class KVPoll:
    """srt/disaggregation/base/conn.py."""

    Failed = 0
    Bootstrapping = 1
    WaitingForInput = 2
    Transferring = 3
    Success = 4
    NAMES = {0: "Failed", 1: "Bootstrapping", 2: "WaitingForInput", 3: "Transferring", 4: "Success"}


class PDError(Exception):
    """A PD failure answered with `status` (SGLang's prepare_abort status code)."""

    def __init__(self, message: str, status: int = 500):
        super().__init__(message)
        self.message, self.status = message, status


# ---- role parsing ------------------------------------------------------------------------------------------------

def _flag(argv: list[str], name: str) -> str | None:
    for i, t in enumerate(argv):
        if t == name and i + 1 < len(argv):
            return argv[i + 1]
        if t.startswith(name + "="):
            return t.split("=", 1)[1]
    return None


@dataclass(frozen=True)
class PDArgs:
    mode: str = "null"
    bootstrap_port: int = 8998
    transfer_backend: str = "mooncake"


def parse_pd_args(argv: list[str]) -> PDArgs:
    """The PD role of an SGLang command line (defaults as in srt/arg_groups/fields/disagg.py)."""
    mode = _flag(argv, "--disaggregation-mode") or "null"
    if mode not in MODES:
        raise ValueError(f"--disaggregation-mode must be one of {', '.join(MODES)}, not {mode!r}")
    port = _flag(argv, "--disaggregation-bootstrap-port")
    try:
        bport = int(port) if port is not None else 8998
    except ValueError:
        raise ValueError(f"--disaggregation-bootstrap-port must be an integer, not {port!r}") from None
    if not 0 < bport < 65536:
        raise ValueError(f"--disaggregation-bootstrap-port {bport} is not a port")
    return PDArgs(mode=mode, bootstrap_port=bport,
                  transfer_backend=_flag(argv, "--disaggregation-transfer-backend") or "mooncake")


def transfer_seconds(tokens: int, bytes_per_token: int, gbps: float) -> float:
    return tokens * bytes_per_token * 8 / (gbps * 1e9)


# ---- per-request PD fields ----------------------------------------------------------------------------------------

@dataclass
class PDRequest:
    room: int
    host: str
    port: int
    prefill_dp_rank: int | None = None
    fake: bool = False
    entry: float = 0.0  # set by pd_request on the server's clock
    bootstrap_done: float = 0.0
    rank_addr: str = ""  # decode: the prefill rank's address (GET /route)


def _scalar(v: Any, name: str) -> Any:
    if isinstance(v, list):
        if len(v) != 1:
            raise ValueError(f"batched {name} is not simulated")
        return v[0]
    return v


def pd_request(body: dict[str, Any], cfg: SimConfig, now: float | None = None) -> PDRequest:
    """Bootstrap fields of a request to a PD server; ValueError (HTTP 400) as SGLang's scheduler answers. `now`: its
    entry time on the server's clock (default the real clock)."""
    room = _scalar(body.get("bootstrap_room"), "bootstrap_room")
    if room is None:
        raise ValueError("Invalid request: Disaggregated request received without bootstrap room id.")
    host = _scalar(body.get("bootstrap_host"), "bootstrap_host")
    port = _scalar(body.get("bootstrap_port"), "bootstrap_port")
    pdr = body.get("disagg_prefill_dp_rank")
    try:
        room = int(room)
        port = int(port) if port is not None else cfg.disaggregation_bootstrap_port
        pdr = int(pdr) if pdr is not None else None
    except (TypeError, ValueError):
        raise ValueError("bootstrap_room, bootstrap_port and disagg_prefill_dp_rank must be integers") from None
    host = str(host) if host else FAKE_BOOTSTRAP_HOST if cfg.disaggregation_transfer_backend == "fake" else ""
    if not host:
        raise ValueError("Invalid request: Disaggregated request received without bootstrap host.")
    return PDRequest(room=room, host=host, port=port, prefill_dp_rank=pdr, fake=host == FAKE_BOOTSTRAP_HOST,
                     entry=REAL_CLOCK.now() if now is None else now)


# ---- rooms (prefill side) -----------------------------------------------------------------------------------------

@dataclass
class Room:
    room: int
    state: int = KVPoll.Bootstrapping
    owner: SimRequest | None = None
    decode: str = ""
    decode_dp_rank: int | None = None
    link_gbps: float = math.inf
    tokens: int = 0
    bytes: int = 0
    transfer_s: float = 0.0
    error: str = ""
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def bump(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    @property
    def terminal(self) -> bool:
        return self.state in (KVPoll.Success, KVPoll.Failed)

    async def wait(self, pred: Callable[[], bool], timeout: float) -> bool:
        """Wait until pred() (re-checked at every change of the room) or the timeout; returns pred()."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not pred():
            left = end - loop.time()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)
        return True

    def view(self) -> dict[str, Any]:
        return {"room": self.room, "state": KVPoll.NAMES[self.state], "poll": self.state, "tokens": self.tokens,
                "bytes": self.bytes, "transfer_s": self.transfer_s, "error": self.error}


class RoomTable:
    """Either side may come first (the router sends to both at once): a room is created by whichever arrives first,
    like SGLang's `DeferredBootstrap._room` (common/bootstrap.py) and Mooncake's `transfer_infos`; one owner and one
    receiver per room (a second is rejected, `DeferredBootstrap.open` / `register`); finished rooms linger
    ROOM_TTL_S, unclaimed ones expire after the bootstrap timeout."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.rooms: dict[int, Room] = {}

    def _expire_later(self, room: Room, after: float) -> None:
        def drop() -> None:
            if self.rooms.get(room.room) is room and (room.terminal or room.owner is None):
                del self.rooms[room.room]
        asyncio.get_running_loop().call_later(after, drop)

    def get(self, room: int) -> Room:
        r = self.rooms.get(room)
        if r is None:
            r = self.rooms[room] = Room(room)
            self._expire_later(r, self.timeout + ROOM_TTL_S)
        return r

    def open(self, room: int, owner: SimRequest) -> Room:
        r = self.get(room)
        if r.owner is not None or r.terminal:
            raise PDError(f"bootstrap room {room} is already in use")
        r.owner = owner
        return r

    def register(self, room: int, decode: str, decode_dp_rank: int | None, link_gbps: float) -> Room:
        r = self.get(room)
        if r.decode and r.decode != decode:
            raise PDError(f"bootstrap room {room} already has a receiver", 409)
        if r.state == KVPoll.Bootstrapping:
            r.decode, r.decode_dp_rank, r.link_gbps = decode, decode_dp_rank, link_gbps
            r.state = KVPoll.WaitingForInput
            r.bump()
        return r

    def set_state(self, room: Room, state: int, error: str = "") -> None:
        if room.terminal:
            return
        room.state, room.error = state, error or room.error
        room.bump()
        if room.terminal:
            self._expire_later(room, ROOM_TTL_S)


# ---- bootstrap HTTP server (prefill side) -------------------------------------------------------------------------

class BootstrapServer:
    """SGLang's CommonKVBootstrapServer routes plus the sim-only /sim/kv routes (module docstring)."""

    def __init__(self, role: PrefillRole):
        self.role = role
        self.cfg = role.cfg
        self.prefill_port_table: dict[int, dict[int, dict[int, dict[int, dict[str, Any]]]]] = {}
        self.registered = 0
        self.info: dict[str, Any] = {}
        self.room_to_dp_rank: dict[int, int] = {}
        self.app = web.Application()
        r = self.app.router
        r.add_route("*", "/route", self.route)
        r.add_post("/register_dp_rank", self.register_dp_rank)
        r.add_post("/query_dp_ranks", self.query_dp_ranks)
        r.add_get("/health", self.health)
        r.add_post("/sim/kv/{room}", self.sim_register)
        r.add_get("/sim/kv/{room}", self.sim_state)
        r.add_post("/sim/kv/{room}/abort", self.sim_abort)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        runner = web.AppRunner(self.app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.cfg.host, self.cfg.disaggregation_bootstrap_port,
                              reuse_address=True).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def register_self(self) -> None:
        """What each prefill scheduler's KV manager PUTs on /route at startup (CommonKVManager registration)."""
        c = self.cfg
        for d in range(c.dp_size):
            self._put({"attn_tp_size": 1, "attn_tp_rank": 0, "attn_cp_size": 1, "attn_cp_rank": 0,
                       "attn_dp_size": c.dp_size, "attn_dp_rank": d, "pp_size": 1, "pp_rank": 0,
                       "system_dp_size": 1, "system_dp_rank": 0, "rank_ip": c.host,
                       "rank_port": c.disaggregation_bootstrap_port, "page_size": 1, "kv_cache_dtype": "auto",
                       "prefill_http_port": c.port, "load_balance_method": "follow_bootstrap_room"})

    def _put(self, data: dict[str, Any]) -> None:
        # CommonKVBootstrapServer._handle_route_put (first registration fixes the topology)
        if not self.info:
            dp = data["attn_dp_size"] if data["system_dp_size"] == 1 else data["system_dp_size"]
            self.info = {"attn_tp_size": int(data["attn_tp_size"]), "attn_cp_size": int(data["attn_cp_size"]),
                         "dp_size": int(dp), "pp_size": int(data["pp_size"]), "page_size": int(data["page_size"]),
                         "kv_cache_dtype": data.get("kv_cache_dtype"),
                         "follow_bootstrap_room": data.get("load_balance_method", "follow_bootstrap_room")
                         == "follow_bootstrap_room",
                         "enable_dsa_cache_layer_split": bool(data.get("enable_dsa_cache_layer_split", False)),
                         "decode_allocation_policy": data.get("decode_allocation_policy", "early"),
                         "enable_kv_cache_sharding": bool(data.get("enable_kv_cache_sharding", False)),
                         "prefill_http_port": data.get("prefill_http_port"),
                         "target_tp_rank": None, "target_tp_ranks": None, "target_cp_ranks": None,
                         "target_pp_ranks": None, "required_dst_info_num": None,
                         "required_prefill_response_num": None}
        group = data["attn_dp_rank"] if data["system_dp_size"] == 1 else data["system_dp_rank"]
        self.prefill_port_table.setdefault(int(group), {}).setdefault(int(data["attn_cp_rank"]), {}).setdefault(
            int(data["attn_tp_rank"]), {})[int(data["pp_rank"])] = {"rank_ip": str(data["rank_ip"]),
                                                                    "rank_port": int(data["rank_port"])}
        self.registered += 1

    def _ready(self) -> bool:
        i = self.info
        return bool(i) and self.registered >= i["dp_size"] * i["attn_cp_size"] * i["attn_tp_size"] * i["pp_size"]

    async def health(self, _: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def route(self, request: web.Request) -> web.Response:
        if request.method == "PUT":
            try:
                self._put(await request.json())
            except (KeyError, TypeError, ValueError) as e:
                return web.Response(text=f"bad registration: {e}", status=400)
            return web.Response(text="OK")
        if request.method != "GET":
            return web.Response(text="Method not allowed", status=405, content_type="application/json")
        q = request.query
        keys = ("prefill_dp_rank", "prefill_cp_rank", "target_tp_rank", "target_pp_rank")
        if not all(q.get(k) for k in keys):
            return web.Response(text="Missing inputs for bootstrap server.", status=400)
        try:
            dp, cp, tp, pp = (int(q[k]) for k in keys)
        except ValueError:
            return web.Response(text="Missing inputs for bootstrap server.", status=400)
        if not self._ready():
            return web.Response(text=f"Prefill server not fully registered yet ({self.registered} workers "
                                     "registered).", status=503)
        if (dp, cp, tp, pp) == (-1, -1, -1, -1):
            return web.json_response(self.info)
        try:
            return web.json_response(self.prefill_port_table[dp][cp][tp][pp])
        except KeyError:
            return web.Response(text=f"Bootstrap info not found for dp_rank={dp} cp_rank={cp} tp_rank={tp} "
                                     f"pp_rank={pp}", status=404)

    async def register_dp_rank(self, request: web.Request) -> web.Response:
        data = await request.json()
        self.room_to_dp_rank[int(data["bootstrap_room"])] = int(data["dp_rank"])
        return web.Response(text="OK")

    async def query_dp_ranks(self, request: web.Request) -> web.Response:
        data = await request.json()
        rooms = (int(r) for r in data["bootstrap_rooms"])
        return web.json_response({str(r): self.room_to_dp_rank[r] for r in rooms if r in self.room_to_dp_rank})

    def _room_id(self, request: web.Request) -> int:
        try:
            return int(request.match_info["room"])
        except ValueError:
            raise web.HTTPBadRequest(text="room must be an integer") from None

    async def sim_register(self, request: web.Request) -> web.Response:
        room = self._room_id(request)
        try:
            data = await request.json()
            link = float(data.get("link_gbps") or math.inf)
            dpr = data.get("decode_dp_rank")
            r = self.role.rooms.register(room, str(data.get("decode", "")), None if dpr is None else int(dpr), link)
        except PDError as e:
            return web.json_response({"room": room, "state": "Failed", "error": e.message}, status=e.status)
        except (TypeError, ValueError) as e:
            return web.json_response({"room": room, "state": "Failed", "error": str(e)}, status=400)
        return web.json_response(r.view())

    async def sim_state(self, request: web.Request) -> web.Response:
        room = self._room_id(request)
        r = self.role.rooms.rooms.get(room)
        if r is None:
            return web.json_response({"room": room, "state": "Failed", "poll": KVPoll.Failed,
                                      "error": "unknown bootstrap room"}, status=404)
        try:
            wait = min(float(request.query.get("wait", "0")), 60.0)
        except ValueError:
            wait = 0.0
        if wait > 0:
            await r.wait(lambda: r.terminal, wait)
        return web.json_response(r.view())

    async def sim_abort(self, request: web.Request) -> web.Response:
        room = self._room_id(request)
        r = self.role.rooms.rooms.get(room)
        if r is not None:
            self.role.rooms.set_state(r, KVPoll.Failed, "aborted by the decode side")
            return web.json_response(r.view())
        return web.json_response({"room": room, "state": "Failed", "poll": KVPoll.Failed}, status=404)


# ---- the two roles ------------------------------------------------------------------------------------------------

class _Role:
    mode = "null"

    def __init__(self, server: SimServer):
        self.server = server
        self.cfg = server.cfg
        self.engine = server.engine
        self.clock = server.engine.clock
        self.metrics = server.metrics
        self.pending: set[SimRequest] = set()  # before engine admission: bootstrap queue / decode handshake
        self.engine.stats_hook = self.stats
        self.last_transfer_speed_gb_s = 0.0
        self.last_transfer_latency_ms = 0.0

    def _pending_on(self, d: int) -> int:
        return sum(1 for r in self.pending if r.rank == d)

    def stats(self, d: int, now: float, st: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def disaggregation(self, st: dict[str, Any]) -> dict[str, Any]:
        """The /v1/loads `disaggregation` section (managers/load_snapshot.py DisaggregationMetrics)."""
        return {"mode": self.mode,
                "prefill_bootstrap_queue_reqs": st.get("num_prefill_bootstrap_queue_reqs", 0),
                "prefill_inflight_queue_reqs": st.get("num_prefill_inflight_queue_reqs", 0),
                "decode_prealloc_queue_reqs": st.get("num_decode_prealloc_queue_reqs", 0),
                "decode_transfer_queue_reqs": st.get("num_decode_transfer_queue_reqs", 0),
                "decode_retracted_queue_reqs": 0,
                "kv_transfer_speed_gb_s": self.last_transfer_speed_gb_s,
                "kv_transfer_latency_ms": self.last_transfer_latency_ms}

    async def start(self) -> None:
        pass

    def up(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def prepare(self, r: SimRequest, body: dict[str, Any]) -> None:
        r.pd = pd_request(body, self.cfg, self.clock.now())

    async def complete(self, r: SimRequest) -> None:
        raise NotImplementedError

    async def run(self, r: SimRequest) -> AsyncGenerator[int, None]:
        raise NotImplementedError
        yield 0  # pragma: no cover


class PrefillRole(_Role):
    mode = "prefill"

    def __init__(self, server: SimServer):
        super().__init__(server)
        self.rooms = RoomTable(self.cfg.bootstrap_timeout_s)
        self.bootstrap = BootstrapServer(self)

    async def start(self) -> None:
        await self.bootstrap.start()

    def up(self) -> None:
        self.bootstrap.register_self()

    async def close(self) -> None:
        await self.bootstrap.close()

    def prepare(self, r: SimRequest, body: dict[str, Any]) -> None:
        super().prepare(r, body)
        r.max_new_tokens = 1  # PrefillBootstrapQueue._process_req
        if r.routed_dp_rank is None:  # follow_bootstrap_room_scheduler
            r.routed_dp_rank = r.pd.room % self.cfg.dp_size
        r.rank = r.routed_dp_rank

    def stats(self, d: int, now: float, st: dict[str, Any]) -> dict[str, Any]:
        rank = self.engine.ranks[d]
        admitted = list(rank.running.values())
        computing = sum(1 for r in admitted if r.prefill_start <= now < r.first_token_time)
        queued = sum(1 for r in admitted if now < r.prefill_start)
        inflight = sum(1 for r in admitted if now >= r.first_token_time)
        bootstrap = self._pending_on(d)
        return {"num_running_reqs": computing, "num_waiting_reqs": len(rank.waiting) + queued,
                "num_prefill_bootstrap_queue_reqs": bootstrap, "num_prefill_inflight_queue_reqs": inflight,
                "gen_throughput": 0.0, "decode_sum_seq_lens": 0,
                "loads_num_waiting_reqs": len(rank.waiting) + queued + bootstrap}

    async def complete(self, r: SimRequest) -> None:
        p: PDRequest = r.pd
        if p.fake:
            await self.engine.complete(r)
            return
        room = self.rooms.open(p.room, r)
        ok = False
        try:
            self.pending.add(r)
            try:
                ready = await room.wait(lambda: room.state != KVPoll.Bootstrapping, self.cfg.bootstrap_timeout_s)
            finally:
                self.pending.discard(r)
            if not ready or room.state == KVPoll.Failed:
                self.metrics.inc_bootstrap_failed(r.rank)
                raise PDError(f"Prefill bootstrap failed for request rank=0 req.rid='{r.rid}' "
                              f"req.bootstrap_room={p.room}" + (f" with exception {room.error}" if room.error else ""))
            p.bootstrap_done = r.wait_queue_entry = self.clock.now()
            self.engine.submit(r)
            try:
                assert r.admitted is not None
                await r.admitted
                await self.clock.sleep(max(0.0, r.first_token_time - self.clock.now()))  # the prefill forward
                self.rooms.set_state(room, KVPoll.Transferring)
                start = self.clock.now()
                room.tokens = r.input_tokens  # decode has no radix cache: the whole prompt's KV goes over
                room.bytes = r.input_tokens * self.cfg.kv_bytes_per_token
                room.transfer_s = transfer_seconds(r.input_tokens, self.cfg.kv_bytes_per_token,
                                                   min(self.cfg.kv_link_gbps, room.link_gbps))
                await room.wait(lambda: room.state == KVPoll.Failed, room.transfer_s)
                if room.state == KVPoll.Failed:
                    raise PDError(f"KV transfer failed for request rank=0 req.rid='{r.rid}' "
                                  f"req.bootstrap_room={p.room}: {room.error}")
                now = self.clock.now()
                self.rooms.set_state(room, KVPoll.Success)
                self.engine.set_first_token_time(r, now)  # its one token reaches the tokenizer after the transfer
                self.metrics.observe_kv_transfer(r.rank, latency_s=now - start, total_bytes=room.bytes)
                self.metrics.observe_kv_bootstrap(r.rank, bootstrap_s=p.bootstrap_done - p.entry,
                                                  alloc_s=r.wait_queue_entry - p.bootstrap_done)
                if now > start:
                    self.last_transfer_latency_ms = (now - start) * 1000
                    self.last_transfer_speed_gb_s = room.bytes / 1024 ** 3 / (now - start)
                ok = True
            finally:
                self.engine.finish(r)  # release_kv_cache: the prompt's blocks stay in the radix cache
        finally:
            if not ok:
                self.rooms.set_state(room, KVPoll.Failed, room.error or "prefill request failed")

    async def run(self, r: SimRequest) -> AsyncGenerator[int, None]:
        await self.complete(r)
        yield 1


class DecodeRole(_Role):
    mode = "decode"

    def __init__(self, server: SimServer):
        super().__init__(server)
        self.prefill_info: dict[str, dict[str, Any]] = {}  # bootstrap addr -> PrefillServerInfo
        self._session: aiohttp.ClientSession | None = None
        self._aborts: set[asyncio.Task[Any]] = set()

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=POLL_WAIT_S + 30))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def prepare(self, r: SimRequest, body: dict[str, Any]) -> None:
        super().prepare(r, body)
        # no decode radix cache (pd_disaggregation_hook.py): the whole prompt is private KV
        r.blocks, r.private_tokens = [], r.input_tokens
        if r.routed_dp_rank is None:  # round_robin (handle_load_balance_method), picked now for per-rank queues
            r.routed_dp_rank = next(self.engine._rr)
        r.rank = r.routed_dp_rank
        r.deferred_start = True

    def stats(self, d: int, now: float, st: dict[str, Any]) -> dict[str, Any]:
        rank = self.engine.ranks[d]
        transfer = [r for r in rank.running.values() if r.first_token_time == math.inf]
        prealloc = len(rank.waiting) + self._pending_on(d)
        return {"num_running_reqs": len(rank.running) - len(transfer), "num_waiting_reqs": 0,
                "num_decode_prealloc_queue_reqs": prealloc, "num_decode_transfer_queue_reqs": len(transfer),
                "prealloc_full_token_usage": sum(r.input_tokens for r in transfer) / rank.cap,
                "num_waiting_uncached_tokens": 0, "loads_num_waiting_reqs": prealloc + len(transfer)}

    async def _get_json(self, url: str, deadline: float) -> dict[str, Any]:
        """GET with retries while the prefill is not up / not registered (503, connection refused)."""
        last = ""
        while True:
            try:
                async with self.session().get(url) as resp:
                    if resp.status == 200:
                        data: dict[str, Any] = await resp.json()
                        return data
                    last = f"HTTP {resp.status}: {(await resp.text())[:200]}"
                    if resp.status != 503:
                        break
            except (aiohttp.ClientError, TimeoutError) as e:
                last = repr(e)
            if self.clock.now() >= deadline:
                break
            await self.clock.sleep(0.2)
        raise PDError(f"bootstrap server {url}: {last}")

    async def _handshake(self, r: SimRequest) -> None:
        """Prealloc queue, first half: CommonKVReceiver's bootstrap queries."""
        p: PDRequest = r.pd
        addr = f"http://{p.host}:{p.port}"
        deadline = p.entry + self.cfg.bootstrap_timeout_s
        info = self.prefill_info.get(addr)
        if info is None:
            info = self.prefill_info[addr] = await self._get_json(
                f"{addr}/route?prefill_dp_rank=-1&prefill_cp_rank=-1&target_tp_rank=-1&target_pp_rank=-1", deadline)
        dp_size = int(info.get("dp_size", 1))
        if p.prefill_dp_rank is not None:
            prank = p.prefill_dp_rank
        elif dp_size == 1:
            prank = 0
        elif info.get("follow_bootstrap_room", True):
            prank = p.room % dp_size
        else:
            async with self.session().post(f"{addr}/query_dp_ranks", json={"bootstrap_rooms": [p.room]}) as resp:
                prank = int((await resp.json()).get(str(p.room), 0))
        rank_info = await self._get_json(
            f"{addr}/route?prefill_dp_rank={prank}&prefill_cp_rank=0&target_tp_rank=0&target_pp_rank=0", deadline)
        p.rank_addr = f"http://{rank_info['rank_ip']}:{rank_info['rank_port']}"

    async def _receive(self, r: SimRequest) -> None:
        """Admitted (KV preallocated): send the destination, then the transfer queue until the KV is in."""
        p: PDRequest = r.pd
        now = self.clock.now()
        self.metrics.observe_kv_bootstrap(r.rank, bootstrap_s=p.bootstrap_done - p.entry,
                                          alloc_s=now - p.bootstrap_done)  # set_decode_transfer_queue_entry_time
        if p.fake:
            self.engine.start_decode(r)
            return
        url = f"{p.rank_addr}/sim/kv/{p.room}"
        done = False
        try:
            try:
                async with self.session().post(url, json={
                        "decode": f"{self.cfg.host}:{self.cfg.port}", "decode_dp_rank": r.rank,
                        "tokens": r.input_tokens, "link_gbps": self.cfg.kv_link_gbps}) as resp:
                    state = await resp.json()
                deadline = now + self.cfg.bootstrap_timeout_s  # SGLANG_DISAGGREGATION_WAITING_TIMEOUT
                while state.get("state") not in ("Success", "Failed") and self.clock.now() < deadline:
                    try:
                        async with self.session().get(url, params={"wait": str(POLL_WAIT_S)}) as resp:
                            state = await resp.json()
                    except (aiohttp.ClientError, TimeoutError):
                        await self.clock.sleep(0.5)
            except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                state = {"state": "Failed", "error": repr(e)}
            if state.get("state") != "Success":
                self.metrics.inc_transfer_failed(r.rank)
                raise PDError(f"Decode transfer failed for request rank=0 req.rid='{r.rid}' "
                              f"req.bootstrap_room={p.room}: {state.get('error') or state.get('state', 'timeout')}")
            done = True
            self.engine.start_decode(r)
        finally:
            if not done:
                self._abort_remote(url)

    def _abort_remote(self, url: str) -> None:
        async def go() -> None:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self.session().post(url + "/abort") as resp:
                    await resp.read()
        t = asyncio.get_running_loop().create_task(go())
        self._aborts.add(t)
        t.add_done_callback(self._aborts.discard)

    async def _prealloc(self, r: SimRequest) -> None:
        p: PDRequest = r.pd
        self.pending.add(r)
        try:
            if not p.fake:
                try:
                    await self._handshake(r)
                except PDError as e:
                    self.metrics.inc_bootstrap_failed(r.rank)
                    raise PDError(f"Decode bootstrap failed for request rank=0 req.rid='{r.rid}' "
                                  f"req.bootstrap_room={p.room}: {e.message}") from None
        finally:
            self.pending.discard(r)
        p.bootstrap_done = self.clock.now()
        r.before_start = lambda: self._receive(r)

    async def complete(self, r: SimRequest) -> None:
        await self._prealloc(r)
        await self.engine.complete(r)

    async def run(self, r: SimRequest) -> AsyncGenerator[int, None]:
        await self._prealloc(r)
        async with contextlib.aclosing(self.engine.run(r)) as tokens:
            async for n in tokens:
                yield n


def make_role(server: SimServer) -> _Role | None:
    mode = server.cfg.disaggregation_mode
    if mode == "prefill":
        return PrefillRole(server)
    if mode == "decode":
        return DecodeRole(server)
    return None


__all__ = ["FAKE_BOOTSTRAP_HOST", "KVPoll", "PDArgs", "PDError", "PDRequest", "Room", "RoomTable", "make_role",
           "parse_pd_args", "pd_request", "transfer_seconds"]
