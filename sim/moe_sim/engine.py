"""The simulated SGLang scheduler side: DP ranks, each with a KV pool, a block radix cache and a FIFO queue.

Model (what the operator and the router can observe; no tokens are really computed):

* A server has `dp_size` attention-DP ranks of `max_total_tokens` KV tokens each (the planner's
  `max_total_tokens_per_dp`). A request lives in ONE rank from admission to finish. Without `routed_dp_rank`
  (`data_parallel_rank`, deprecated spelling) ranks are picked round-robin, SGLang 0.5.23's default
  `load_balance_method` for non-PD servers (`arg_groups/serving_hook.py`).
* Admission reserves the uncached prompt plus the WHOLE output (`max_new_tokens`), so an admitted request never
  needs retraction (SGLang reserves an estimate and retracts; not modelled). While the head of a rank's queue does
  not fit, it and everything behind it wait (`num_queue_reqs`). `max_running_requests` (per server, split evenly over
  the ranks like SGLang) caps the running batch too.
* KV held by a request = its prompt + the tokens generated so far (`kv_used_tokens`, sglang.md §3.2); reserved
  but not yet generated tokens count as available, like SGLang's allocator.
* Prefix reuse in blocks of 512 tokens (the Mooncake `hash_ids` granularity): a request's blocks are the
  `hash_ids` given by a trace replayer, or digests of its text / input_ids in 512-token blocks. A new request reuses
  the longest run of leading blocks resident in its rank; blocks of running requests are locked (counted once);
  blocks of finished requests stay cached as *evictable* (not "used": used = total − available − evictable) and are
  evicted LRU when a rank needs room. The tail shorter than a block is private to the request. The KV pool, the
  block cache and admission are `kvcache.KVPool`, the model the offline replay shares (its docstring has the SGLang
  sources).
* Timing: prefill of the uncached prompt at `prefill_tps`, the first token at the end of prefill, then one token
  every 1/`decode_tps` s per request, independent of load (compute is not modelled). Time is the engine's `Clock`
  (clock.py): the real clock by default (the rig), a VirtualClock in tests.
* PD disaggregation (`disaggregation_mode` prefill|decode; the flows are in `pd_serve.py`): a prefill server's rank
  runs one prefill at a time, FIFO (`prefill_busy_until`), so a prompt's time to first token includes the prompts
  prefilled before it; a decode server's requests are admitted (KV preallocated) before their KV arrives and start
  decoding when `start_decode` is called (`SimRequest.deferred_start`, `before_start`). Aggregated servers are
  unchanged.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .clock import REAL_CLOCK, Clock
from .kvcache import KVPool, generated_tokens

BLOCK_TOKENS = 512
CHARS_PER_TOKEN = 4.0
VERSION = "0.5.23"


class AdmissionError(ValueError):
    """The request can never be served by this server (SGLang answers 400)."""


@dataclass
class SimConfig:
    model_name: str = "sim-model"
    model_path: str = ""
    max_total_tokens: int = 65536  # KV tokens per DP rank
    dp_size: int = 1
    tp_size: int = 0  # 0: = dp_size
    ep_size: int = 0  # 0: = tp_size
    nnodes: int = 1
    node_rank: int = 0
    decode_tps: float = 20.0
    prefill_tps: float = 8192.0
    cold_start: float = 0.0
    max_running_requests: int = 0  # per server; 0: 2048 per rank (a generous SGLang-like cap)
    context_length: int = 163840
    default_max_tokens: int = 128  # SGLang SamplingParams.max_new_tokens default
    block_tokens: int = BLOCK_TOKENS
    chars_per_token: float = CHARS_PER_TOKEN
    drain_poll_s: float = 1.0  # SGLang's sigterm_watchdog polls every 5 s
    engine_type: str = "unified"
    port: int = 30000
    host: str = "127.0.0.1"
    # PD disaggregation (SGLang `--disaggregation-mode`, `--disaggregation-bootstrap-port`,
    # `--disaggregation-transfer-backend`: srt/arg_groups/fields/disagg.py); pd_serve.py has the defaults' sources
    disaggregation_mode: str = "null"  # "null" (aggregated) | "prefill" | "decode"
    disaggregation_bootstrap_port: int = 8998
    disaggregation_transfer_backend: str = "mooncake"
    kv_bytes_per_token: int = 70272  # DeepSeek-V3 MLA, bf16: (512 + 64) x 61 layers x 2 bytes
    kv_link_gbps: float = 400.0  # one ConnectX-7 NDR port per GPU
    bootstrap_timeout_s: float = 300.0  # SGLANG_DISAGGREGATION_BOOTSTRAP_TIMEOUT

    def __post_init__(self) -> None:
        if self.dp_size < 1 or self.max_total_tokens < 1:
            raise ValueError("dp_size and max_total_tokens must be >= 1")
        if not self.tp_size:
            self.tp_size = self.dp_size
        if not self.ep_size:
            self.ep_size = self.tp_size
        if self.tp_size % self.dp_size:
            raise ValueError(f"tp_size {self.tp_size} is not a multiple of dp_size {self.dp_size}")
        if not self.max_running_requests:
            self.max_running_requests = 2048 * self.dp_size
        if not self.model_path:
            self.model_path = self.model_name
        if self.nnodes < 1 or not 0 <= self.node_rank < self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} outside nnodes {self.nnodes}")
        if self.disaggregation_mode not in ("null", "prefill", "decode"):
            raise ValueError(f"disaggregation_mode must be null, prefill or decode, not {self.disaggregation_mode!r}")
        if self.kv_bytes_per_token < 1 or self.kv_link_gbps <= 0:
            raise ValueError("kv_bytes_per_token and kv_link_gbps must be > 0")

    def rank_labels(self, dp_rank: int) -> dict[str, str]:
        """Scheduler labels of DP rank `dp_rank`'s stats-logging scheduler (attn_tp_rank 0 of that DP group)."""
        tp_rank = dp_rank * (self.tp_size // self.dp_size)
        moe_ep_rank = tp_rank * self.ep_size // self.tp_size
        return {"model_name": self.model_name, "engine_type": self.engine_type, "tp_rank": str(tp_rank),
                "pp_rank": "0", "moe_ep_rank": str(moe_ep_rank), "dp_rank": str(dp_rank)}

    def node_of_rank(self, dp_rank: int) -> int:
        """The node whose /metrics carries DP rank `dp_rank` (DP groups are laid out contiguously over nodes)."""
        return dp_rank * self.nnodes // self.dp_size

    def ranks_of_node(self, node_rank: int) -> list[int]:
        return [d for d in range(self.dp_size) if self.node_of_rank(d) == node_rank]


@dataclass(eq=False)
class SimRequest:
    rid: str
    input_tokens: int
    max_new_tokens: int
    blocks: list[tuple[Any, int]]  # (block key, tokens), leading blocks in order
    private_tokens: int  # prompt tokens outside blocks
    stream: bool = False
    routed_dp_rank: int | None = None
    arrival: float = 0.0  # set by Engine.make_request from the engine's clock
    rank: int = -1
    cached_tokens: int = 0
    admit_time: float = 0.0
    first_token_time: float = math.inf  # not before admission (time 0 is a valid instant on a virtual clock)
    finish_time: float = 0.0
    finished: bool = False
    admitted: asyncio.Future[None] | None = None
    # PD disaggregation (pd_serve.py); unused by aggregated servers
    deferred_start: bool = False  # decode: admitted (KV preallocated) now, decoding starts at start_decode()
    before_start: Callable[[], Awaitable[None]] | None = None  # awaited by run()/complete() after admission
    prefill_start: float = 0.0  # prefill: when this prompt's (serial) prefill began
    wait_queue_entry: float = 0.0  # when the request entered the waiting queue (0: at arrival)
    pd: Any = None  # pd_serve.PDRequest
    # `blocks` split for the KV pool, set by Engine.submit (after a PD role may have replaced the blocks)
    keys: list[Any] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)

    def generated(self, now: float, tps: float) -> int:
        return generated_tokens(now, self.first_token_time, self.max_new_tokens, tps)

    def token_time(self, i: int, tps: float) -> float:
        """When token i (1-based) is produced."""
        return self.first_token_time + (i - 1) / tps


class Rank:
    """One DP rank's scheduler: its KV pool and block radix cache (`kvcache.KVPool`, the model the offline replay
    shares), its FIFO waiting queue and running requests."""

    def __init__(self, index: int, cap: int, max_running: int):
        self.index, self.cap, self.max_running = index, cap, max_running
        self.kv = KVPool(cap, max_running)
        self.running: dict[str, SimRequest] = {}
        self.waiting: deque[SimRequest] = deque()
        self.recent_hits: deque[tuple[int, int]] = deque(maxlen=64)  # (cached, prompt) of recent admissions
        self.prefill_busy_until = 0.0  # PD prefill: the rank's serial prefill queue ends here

    def fits(self, r: SimRequest) -> bool:
        kv = self.kv
        need, _ = kv.need(r.keys, r.sizes, kv.match(r.keys, r.sizes), r.private_tokens, r.max_new_tokens)
        return kv.admissible(need)

    def admit(self, r: SimRequest) -> int:
        """Lock r's blocks, evict LRU cache if needed; returns r's cached prompt tokens."""
        cached = self.kv.admit(r.rid, r.keys, r.sizes, r.private_tokens, r.max_new_tokens)
        self.running[r.rid] = r
        self.recent_hits.append((cached, r.input_tokens))
        return cached

    def release(self, r: SimRequest) -> None:
        del self.running[r.rid]
        self.kv.release(r.rid)

    # ---- observations -----------------------------------------------------------------------------------------
    def used(self, now: float, tps: float) -> int:
        return self.kv.used(now, tps)

    def cache_hit_rate(self) -> float:
        prompt = sum(p for _, p in self.recent_hits)
        return sum(c for c, _ in self.recent_hits) / prompt if prompt else 0.0

    def decoding(self, now: float) -> int:
        return sum(1 for r in self.running.values() if now >= r.first_token_time)

    def waiting_uncached_tokens(self) -> int:
        kv = self.kv
        return sum(kv.need(r.keys, r.sizes, kv.match(r.keys, r.sizes), r.private_tokens, 0)[1] for r in self.waiting)


class Engine:
    """All DP ranks of one SGLang server (the schedulers behind the leader's tokenizer manager)."""

    def __init__(self, cfg: SimConfig, clock: Clock = REAL_CLOCK):
        self.cfg = cfg
        self.clock = clock  # every time the engine reads or sleeps on (clock.py; tests pass a VirtualClock)
        per_rank = max(1, cfg.max_running_requests // cfg.dp_size)
        self.ranks = [Rank(d, cfg.max_total_tokens, per_rank) for d in range(cfg.dp_size)]
        self._rr = itertools.cycle(range(cfg.dp_size))
        self._ids = itertools.count()
        self.started = clock.now()
        self.startup_time = clock.wall()
        self.in_flight: set[SimRequest] = set()  # submitted and not finished/aborted (SGLang's rid_to_state)
        self.idle = asyncio.Event()
        self.idle.set()
        self.admit_listeners: list[Callable[[SimRequest], None]] = []  # e.g. queue-time histograms
        # PD roles add/override a rank's stats (queues per phase): (rank index, now, base stats) -> overrides
        self.stats_hook: Callable[[int, float, dict[str, Any]], dict[str, Any]] | None = None

    # ---- request construction ---------------------------------------------------------------------------------
    def _blocks_from_digest(self, units: Sequence[str] | Sequence[int], per_block: int, total_tokens: int,
                            kind: str) -> tuple[list[tuple[Any, int]], int]:
        h = hashlib.blake2b(digest_size=12)
        blocks: list[tuple[Any, int]] = []
        full = total_tokens // self.cfg.block_tokens
        for b in range(full):
            chunk = units[b * per_block:(b + 1) * per_block]
            h.update(chunk.encode() if isinstance(chunk, str) else repr(list(chunk)).encode())
            blocks.append(((kind, h.digest()), self.cfg.block_tokens))
        return blocks, total_tokens - full * self.cfg.block_tokens

    def make_request(self, *, text: str | None = None, input_ids: Sequence[int] | None = None,
                     input_tokens: int | None = None, hash_ids: Sequence[Any] | None = None,
                     max_new_tokens: int | None = None, stream: bool = False,
                     routed_dp_rank: int | None = None) -> SimRequest:
        """Prompt size from, in order: `input_tokens` (+ `hash_ids`), `input_ids`, `text` (len/4 tokens)."""
        bt = self.cfg.block_tokens
        blocks: list[tuple[Any, int]]
        if hash_ids:
            n = len(hash_ids)
            tokens = input_tokens if input_tokens is not None else n * bt
            tokens = max(tokens, 1)
            blocks = []
            left = tokens
            for hid in hash_ids:
                s = min(bt, left)
                if s <= 0:
                    break
                blocks.append((("h", hid), s))
                left -= s
            private = left
        elif input_tokens is not None:
            tokens, blocks, private = max(1, int(input_tokens)), [], max(1, int(input_tokens))
        elif input_ids is not None:
            tokens = max(1, len(input_ids))
            blocks, private = self._blocks_from_digest(list(input_ids), bt, len(input_ids), "i")
            private = tokens - sum(s for _, s in blocks)
        else:
            text = text or ""
            cpt = self.cfg.chars_per_token
            tokens = max(1, math.ceil(len(text) / cpt))
            blocks, private = self._blocks_from_digest(text, int(bt * cpt), tokens, "t")
            private = tokens - sum(s for _, s in blocks)
        max_new = self.cfg.default_max_tokens if max_new_tokens is None else int(max_new_tokens)
        if max_new < 1:
            max_new = 1
        if tokens + max_new > self.cfg.context_length:
            raise AdmissionError(
                f"Requested token count exceeds the model's maximum context length of {self.cfg.context_length} "
                f"tokens. You requested a total of {tokens + max_new} tokens: {tokens} tokens from the input messages "
                f"and {max_new} tokens for the completion.")
        if tokens + max_new > self.cfg.max_total_tokens:
            raise AdmissionError(f"input ({tokens}) + max_new_tokens ({max_new}) exceed the KV pool of a DP rank "
                                 f"(max_total_num_tokens={self.cfg.max_total_tokens})")
        if routed_dp_rank is not None and not 0 <= routed_dp_rank < self.cfg.dp_size:
            raise AdmissionError(f"DP rank {routed_dp_rank} is not active.")
        return SimRequest(rid=f"sim-{next(self._ids)}", input_tokens=tokens, max_new_tokens=max_new, blocks=blocks,
                          private_tokens=private, stream=stream, routed_dp_rank=routed_dp_rank,
                          arrival=self.clock.now())

    # ---- scheduling -------------------------------------------------------------------------------------------
    def submit(self, r: SimRequest) -> None:
        r.admitted = asyncio.get_running_loop().create_future()
        r.keys, r.sizes = [k for k, _ in r.blocks], [s for _, s in r.blocks]
        r.rank = r.routed_dp_rank if r.routed_dp_rank is not None else next(self._rr)
        self.in_flight.add(r)
        self.idle.clear()
        self.ranks[r.rank].waiting.append(r)
        self._schedule(self.ranks[r.rank])

    def _schedule(self, rank: Rank) -> None:
        now = self.clock.now()
        while rank.waiting and rank.fits(rank.waiting[0]):
            r = rank.waiting.popleft()
            r.cached_tokens = rank.admit(r)
            r.admit_time = now
            if r.deferred_start:
                r.first_token_time = r.finish_time = math.inf
            elif self.cfg.disaggregation_mode == "prefill":
                # one prefill at a time per rank, FIFO: TTFT includes the prompts queued before this one
                r.prefill_start = max(now, rank.prefill_busy_until)
                r.first_token_time = r.prefill_start + (r.input_tokens - r.cached_tokens) / self.cfg.prefill_tps
                rank.prefill_busy_until = r.first_token_time
                r.finish_time = r.first_token_time
            else:
                r.first_token_time = now + (r.input_tokens - r.cached_tokens) / self.cfg.prefill_tps
                r.finish_time = r.token_time(r.max_new_tokens, self.cfg.decode_tps)
            rank.kv.set_decode_start(r.rid, r.first_token_time)
            assert r.admitted is not None
            if not r.admitted.done():
                r.admitted.set_result(None)
            for listener in self.admit_listeners:
                listener(r)

    def finish(self, r: SimRequest) -> None:
        """Release r (finished or aborted, admitted or still queued); admit what now fits."""
        if r.finished:
            return
        r.finished = True
        rank = self.ranks[r.rank]
        if r.rid in rank.running:
            rank.release(r)
        else:
            try:
                rank.waiting.remove(r)
            except ValueError:
                pass
        if r.admitted is not None and not r.admitted.done():
            r.admitted.cancel()
        self.in_flight.discard(r)
        if not self.in_flight:
            self.idle.set()
        self._schedule(rank)

    def start_decode(self, r: SimRequest, now: float | None = None) -> None:
        """PD decode: r's KV has arrived; its first token (prefill's) is out now, the rest follow at decode_tps."""
        self.set_first_token_time(r, self.clock.now() if now is None else now)
        r.finish_time = r.token_time(r.max_new_tokens, self.cfg.decode_tps)

    def set_first_token_time(self, r: SimRequest, t: float) -> None:
        """r's first token is out at t: its KV pool counts r's generated tokens from then."""
        r.first_token_time = t
        rank = self.ranks[r.rank]
        if r.rid in rank.running:
            rank.kv.set_decode_start(r.rid, t)

    async def run(self, r: SimRequest) -> AsyncGenerator[int, None]:
        """Submit r and yield the number of new tokens each time some are produced; r is released at the end (or on
        cancellation/abort). Yields once per token (coalescing when the consumer is late)."""
        self.submit(r)
        tps = self.cfg.decode_tps
        try:
            assert r.admitted is not None
            await r.admitted
            if r.before_start is not None:
                await r.before_start()
            emitted = 0
            awaited = 0  # the token the last sleep waited for: due once the sleep ends, even if the clock reads a
            # hair before token_time (float rounding, the loop's timer resolution); otherwise a sleep of ~0 s that
            # does not move a virtual clock would repeat forever
            while emitted < r.max_new_tokens:
                now = self.clock.now()
                due = max(r.generated(now, tps), awaited)
                if due > emitted:
                    yield due - emitted
                    emitted = due
                    continue
                awaited = emitted + 1
                await self.clock.sleep(max(0.0, r.token_time(awaited, tps) - now))
        finally:
            self.finish(r)

    async def complete(self, r: SimRequest) -> None:
        """Non-streaming: wait for the whole output."""
        self.submit(r)
        try:
            assert r.admitted is not None
            await r.admitted
            if r.before_start is not None:
                await r.before_start()
            await self.clock.sleep(max(0.0, r.finish_time - self.clock.now()))
        finally:
            self.finish(r)

    # ---- observations -----------------------------------------------------------------------------------------
    def rank_stats(self, d: int, now: float | None = None) -> dict[str, Any]:
        now = self.clock.now() if now is None else now
        rank, cap, tps = self.ranks[d], self.cfg.max_total_tokens, self.cfg.decode_tps
        used = rank.used(now, tps)
        evictable = min(rank.kv.evictable_tokens, cap - used)
        st: dict[str, Any] = {
            "dp_rank": d,
            "num_running_reqs": len(rank.running),
            "num_waiting_reqs": len(rank.waiting),
            "num_used_tokens": used,
            "kv_used_tokens": used,
            "kv_evictable_tokens": evictable,
            "kv_available_tokens": cap - used - evictable,
            "max_total_num_tokens": cap,
            "max_running_requests": rank.max_running,
            "token_usage": used / cap,
            "gen_throughput": rank.decoding(now) * tps,
            "cache_hit_rate": rank.cache_hit_rate(),
            "num_waiting_uncached_tokens": rank.waiting_uncached_tokens(),
            "decode_sum_seq_lens": sum(r.input_tokens + r.generated(now, tps) for r in rank.running.values()
                                       if now >= r.first_token_time),
        }
        if self.stats_hook is not None:
            st.update(self.stats_hook(d, now, st))
        return st
