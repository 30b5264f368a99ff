"""Compute-aware offline replay: aggregated serving vs prefill/decode (PD) disaggregation (issue 13).

Unlike `offline.simulate` (KV only, load-independent speeds), this replay charges compute from the planner's
throughput model (`moe_operator.planner.throughput`): prefill time from the group's FLOP/s, decode step time from
the group's batch and context. Time advances in slices of `slice_s` (default 0.25 s); inside a slice a group's batch
is constant. (The serving-side PD roles of the rig's simulator are `moe_sim.pd_serve`, a different thing.)

* Routing (aggregated, and the PD prefill role): SMG 1.13.0's `cache_aware` policy, the router the operator renders
  (`_Router`: the request goes to the group whose router tree holds the longest share of its prompt above
  `cache_threshold` unless that group's load is far above the fleet's mean (the spill gate), else to the group with
  the fewest requests in flight; groups SMG's load poll finds overloaded are left out while others are not). The
  request is pinned there: it waits in that group's queue, not in a global one, and a group that starts later takes
  only later arrivals. (Until 2026-12-02 this replay had one global FIFO, an ideal never-evicting global prefix cache
  and least-backlog routing: an optimistic router.) One SMG worker per group (`PDConfig.router_ranks` models
  `--dp-aware`'s worker per DP rank; why the benchmarks do not use it: its comment).
* Prefix reuse per group: each group's radix block cache is `kvcache.KVPool` (the offline KV replay's and the rig
  engine's model: locked blocks counted once, released blocks evictable, evicted least recently released first when
  an allocation needs room); a request reuses the leading blocks resident in the group that prefills it. Prefix ids
  are the Mooncake/agent traces' 512-token blocks; the Azure trace has none (no reuse). One pool per group: attention
  DP ranks are not split (their fragmentation is the KV replay's subject). The DECODE role of PD has no prefix cache
  (the prefill side sends the whole prompt's KV).
* SGLang's admission and retraction (aggregated; `try_admit`, `retract`, constants checked against the wheel by
  tests/conformance/test_sim_scheduler.py): a waiting request is admitted, FCFS, when its uncached prompt + min(output
  left, CLIP_MAX_NEW_TOKENS) fits in the pool less what is used and less new_token_ratio x min(left, CLIP) of every
  admitted request (schedule_policy.py PrefillAdder.add_one_req); new_token_ratio starts at 0.7, decays to 0.098 over
  600 decode steps and is reset when the group is idle. The client's max_new_tokens = the trace's output length.
  When the next decode steps do not fit, the requests with the fewest output tokens (then the longest prompt) are
  retracted (schedule_batch.py retract_decode): their KV is freed, they go to the back of the waiting queue and are
  prefilled again with what they generated, and the ratio becomes (decoded + 20 x batch) / (sum of max_new + 1).
  The PD decode role reserves prompt + whole output at admission (pre-allocation; no retraction modelled there).
* aggregated: every group prefills and decodes. While a group has prefill work, each step carries one chunked-
  prefill chunk (`chunk_tokens`, SGLang's chunked_prefill_size) next to the decode batch: the step takes
  decode_step + chunk prefill time, so prefill stalls every running request of that group (and, with no running
  requests, prefill runs at the group's full rate).
* PD: a request is admitted first to a decode group with room (SGLang's decode server pre-allocates the KV before the
  prefill server starts, LMSYS 2025-05-05 "Implementation Details"; a global FIFO waits when none has room), then
  prefilled FIFO by the prefill group SMG's `cache_aware` picks (pure prefill at the group's full rate), then its
  whole prompt KV (cached part included: the decode group has none of it) moves over the RDMA link: TTFT = queue +
  prefill + KV bytes / `link_bytes_per_s`. Decode steps run without prefill interference at
  decode_step_seconds(batch, mean context).
* Metrics, as NVIDIA Dynamo's replay (ai-dynamo/dynamo lib/mocker/src/replay/collector.rs, `SlaThresholds::is_good`
  and `TraceThroughputStats`): TTFT; per-request average ITL = (e2e - TTFT) / (output - 1) (skipped when output <= 1);
  a request is good when TTFT <= the TTFT SLO and its average ITL <= the ITL SLO; goodput = good requests (reported as
  a fraction of all requests and per second); GPU-hours = provisioned workers x GPUs per worker over the whole run
  including the start-up ramp (`cold_start_s` per worker before t = 0, the fleets here are static) and the drain tail
  (to the last completion).
* Fleets: static, the smallest per mode whose goodput fraction reaches `goodput_target` (`smallest_aggregated`,
  `smallest_pd`: all prefill counts, each with the fewest decode groups, the fewest GPUs overall).
* Autoscaled fleets (`replay(..., scaling=Autoscale)`, `autoscale_params`): the operator's own laws, imported, every
  `law.STEP_SECONDS`, on what the operator measures then (no foresight): `law.decide` for the aggregated groups / the
  PD decode groups (KV in use, queue, admissions, service time), `prefill.decide` on `prefill_step.observe` over
  simulated SGLang counters for the PD prefill groups. New groups serve `cold_start_s` after they are asked for;
  removed groups leave routing, finish their work (prefill: its queue and KV sends) and are released at the next
  step; GPU-hours count every group from its request (the initial ones `cold_start_s` before t = 0) to its release.
"""


from __future__ import annotations

import heapq
import math
import time as _time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from moe_operator.autoscale.law import STEP_SECONDS, GroupSample, LawParams, LawState
from moe_operator.autoscale.law import decide as law_decide
from moe_operator.autoscale.prefill import PrefillParams, PrefillState
from moe_operator.autoscale.prefill import decide as prefill_decide
from moe_operator.planner import throughput as tp

from .kvcache import KVPool
from .offline import BLOCK_TOKENS, Request, _pct, prompt_keys

MODES = ("aggregated", "pd")
DEFAULT_TTFT_SLO_S = 2.0  # Dynamo planner goodput-per-GPU sweep: ttft_ms=2000, itl_ms=50
DEFAULT_ITL_SLO_S = 0.05
SLO_BIN_S = 300.0
# SGLang 0.5.23 (python/sglang/srt/), the admission estimate and retraction (tests/conformance check them):
CLIP_MAX_NEW_TOKENS = 4096  # managers/schedule_policy.py CLIP_MAX_NEW_TOKENS (SGLANG_CLIP_MAX_NEW_TOKENS_ESTIMATION)
INIT_NEW_TOKEN_RATIO = 0.7  # environ.py SGLANG_INIT_NEW_TOKEN_RATIO (x schedule_conservativeness, 1.0)
MIN_NEW_TOKEN_RATIO_FACTOR = 0.14  # environ.py SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR
NEW_TOKEN_RATIO_DECAY_STEPS = 600  # environ.py SGLANG_NEW_TOKEN_RATIO_DECAY_STEPS
RETRACT_DECODE_STEPS = 20  # environ.py SGLANG_RETRACT_DECODE_STEPS
MIN_NEW_TOKEN_RATIO = INIT_NEW_TOKEN_RATIO * MIN_NEW_TOKEN_RATIO_FACTOR
NEW_TOKEN_RATIO_DECAY = (INIT_NEW_TOKEN_RATIO - MIN_NEW_TOKEN_RATIO) / NEW_TOKEN_RATIO_DECAY_STEPS
# SMG 1.13.0 cache_aware defaults (smg/router_args.py RouterArgs; the operator renders none of them)
CACHE_THRESHOLD = 0.3
BALANCE_ABS_THRESHOLD = 64
BALANCE_REL_THRESHOLD = 1.5
SPILL_MIN_MARGIN = 4  # --balance-abs-threshold's help: the margin is "never under four unless this value is lower"
# worker overload protection, on by default in 1.13.0 (worker_overload_protection = True): a worker whose engine
# reports this many waiting requests (summed over its DP ranks) or this mean KV token usage is left out of routing
# while another worker is under both; the load monitor polls every load_monitor_interval
WORKER_OVERLOAD_WAITING_REQUESTS = 8
WORKER_OVERLOAD_TOKEN_USAGE = 0.8
LOAD_MONITOR_INTERVAL_S = 10.0
DEFAULT_LINK_GBYTES_PER_S = 50.0  # one 400 Gb/s ConnectX-7 NIC per transfer (LMSYS 96 H100: 400 Gb/s per GPU)


@dataclass(frozen=True)
class PDConfig:
    model: str
    accelerator: str
    precision: str
    gpus: int  # per group (both roles)
    group_kv_tokens: int
    kv_dtype: str = "fp8_e4m3"
    chunk_tokens: int = 8192
    ttft_slo_s: float = DEFAULT_TTFT_SLO_S
    itl_slo_s: float = DEFAULT_ITL_SLO_S
    link_bytes_per_s: float = DEFAULT_LINK_GBYTES_PER_S * 1e9
    cold_start_s: float = 300.0
    slice_s: float = 0.25
    goodput_target: float = 0.99
    max_groups: int = 64
    # SMG workers per aggregated group. With `--dp-aware` (render/argv.py: aggregated plans with attention DP > 1)
    # SMG registers one worker per DP rank (`<url>@<rank>`): load, tree and spill gate per rank. The benchmarks keep
    # 1: this replay has ONE KV pool per group, so per-rank routing would charge its cost (ranks of one group are
    # adjacent in SMG's order, so its (load, processed, idx) rotation sends 8 consecutive arrivals to one group:
    # Mooncake 30 min on 8 groups, goodput 0.953 -> 0.899) without its benefit (each rank's own radix cache, which
    # the shared pool already gives every rank). Per-rank pools would make router_ranks = attn DP the honest
    # setting. The PD roles are one worker per group (no --dp-aware in PD mode).
    router_ranks: int = 1


@dataclass
class ModeResult:
    mode: str
    prefill_groups: int
    decode_groups: int  # aggregated: the groups (they do both)
    gpus: int
    requests: int
    completed: int
    rejected: int
    ttft_p50_s: float
    ttft_p99_s: float
    itl_p50_s: float
    itl_p99_s: float
    goodput: float  # fraction of all requests within both SLOs
    goodput_rps: float
    gpu_hours: float
    end_s: float
    wall_s: float = 0.0
    searched: list[tuple[int, int, float]] = field(default_factory=list)  # (prefill, decode, goodput) tried
    autoscaled: bool = False  # True: prefill_groups / decode_groups / gpus are the peaks
    mean_prefill_groups: float = 0.0  # provisioned group-seconds / (cold start + run)
    mean_decode_groups: float = 0.0
    scale_events: int = 0
    # every law step: (t, prefill groups, decode groups (aggregated: the groups), prefill demand in groups (uncached
    # prompt tokens arrived / s / a group's prompt tokens/s), KV in use in groups, requests waiting for KV);
    # static fleets: the first and the last row only
    timeline: list[tuple[float, int, int, float, float, int]] = field(default_factory=list)
    reasons: list[tuple[float, str, str]] = field(default_factory=list)  # (t, role, the law's reason) on changes
    # (bin start s, requests arrived, of them within both SLOs) per SLO_BIN_S of arrival time: where the misses are
    slo_timeline: list[tuple[float, int, int]] = field(default_factory=list)
    admitted_per_group: list[int] = field(default_factory=list)  # requests each group (by id) took, decode role
    retracted: int = 0  # aggregated: requests SGLang's scheduler retracted (each time)
    cache_hit: float = 0.0  # prompt tokens served from the prefix cache of the group that prefilled them


def uncached_tokens(reqs: Sequence[Request]) -> list[int]:
    """Prompt tokens no earlier request's leading blocks cover (an ideal global prefix cache, arrival order): the
    declared typical prompt of the prefill law (`autoscale_params`), the timeline's prefill demand and the replay's
    initial guess of a request's uncached prompt before a group has prefilled it; routing and prefill use each
    group's own cache."""
    seen: set[int] = set()
    out = []
    for r in reqs:
        pk = prompt_keys(r)  # runs or blocks: the same leading tokens either way (offline.Request)
        if not pk or not pk[0]:
            out.append(r.input_len)
            continue
        hit = 0
        for b, s in zip(*pk, strict=True):
            if b not in seen:
                break
            hit += s
        out.append(r.input_len - hit)
        seen.update(pk[0])
    return out


class _Router:
    """SMG's `cache_aware` policy in front of one role's groups, as the pinned SMG 1.13.0 defines it (the policy the
    operator renders: render/inputs.py `router_policy`). The 1.13.0 wheel ships compiled Rust, so the rules here are
    its own option definitions and help texts (smg/router_args.py `RouterArgs`, `add_cli_args`: --cache-threshold,
    --balance-abs-threshold / --balance-rel-threshold "spill gate", --worker-overload-*; their defaults are checked
    against the wheel by tests/conformance/test_sim_scheduler.py). HTTP workers: an approximate tree of the request
    texts routed to each worker.

    * Workers: the groups, or their DP ranks (`_RankWorker`, PDConfig.router_ranks) where the operator renders
      `--dp-aware`. Load = requests the router sent to a worker and not finished (`Worker::load`).
    * Worker overload protection (on by default in 1.13.0): a worker whose engine reported, at the last load poll
      (every `load_monitor_interval`, 10 s), >= 8 waiting requests summed over its DP ranks or >= 0.8 mean KV token
      usage is left out while another worker is under both; when every worker is over them, all are candidates
      (the request goes to the least loaded; `--worker-overload-shed` is off). Aggregated groups only here.
    * Among the candidates the prefix of the request is matched against each worker's tree: match rate = matched /
      request length; above `cache_threshold` (0.3) the best-matching worker (ties: the least loaded), else the least
      loaded one; equal loads go to the worker that has processed the fewest requests, then the first registered
      (`select_worker`'s (load, processed_requests, idx) key, SMG since #1714: equally loaded workers take turns;
      first-registered alone put every tie on the first group's DP ranks).
    * Spill gate on a matched worker: it is skipped for the least loaded candidate when its load exceeds the
      healthy-fleet mean by the margin AND `balance_rel_threshold` (1.5) x the mean; the margin is
      `balance_abs_threshold` (64) capped at the in-flight count's natural swing at the mean, two standard
      deviations of a count with that mean (2 sqrt(mean)), never under 4. (SMG <= 1.9 compared the fleet's max and
      min load instead and then routed EVERY request to the least loaded worker: one backlogged worker turned cache
      affinity off fleet-wide; this replay modelled that rule until 2026-12-02.)
    * The chosen worker's tree gets the request (`insert_text`), in every branch.
    * Here the tree is per block or run of blocks (offline.prompt_keys; a 512-token block = the text it stands
      for; the match counts tokens, SMG counts characters: the same ratio for text of even density). Trees are not
      evicted: SMG evicts a worker's tree beyond `max_tree_size` (2^26 characters, about 16 M tokens) least recently
      used first, and what ages out here is finished sessions, which no later request matches."""

    __slots__ = ("where",)

    # workers: groups (`_Prefill`) or `_RankWorker`s, in registration order; each has `load`, `processed` and `seq`
    # (its registration order), the min-load key `_load_seq`
    def __init__(self) -> None:
        self.where: dict[Any, dict[Any, None]] = {}  # block -> the workers whose tree holds it

    def pick(self, r: Request, blocks: Sequence[Any], sizes: Sequence[int], workers: Sequence[Any],
             overloaded: set[Any] | None = None) -> Any:
        """The worker for `r` (its prompt keyed by `blocks` and their `sizes`: offline.prompt_keys) among the
        routable `workers`; `overloaded`: the engines (groups) the last load poll found over the overload
        thresholds."""
        cands = workers
        if overloaded:
            cands = [w for w in workers if w.group not in overloaded] or workers
        choice = min(cands, key=_load_seq)
        held = -1  # leading blocks of the request the choice's tree holds (-1: not known)
        if blocks:
            k = self._deepest(blocks, cands)
            if k and r.input_len and sum(sizes[:k]) / r.input_len > CACHE_THRESHOLD:
                h = self.where[blocks[k - 1]]
                best = min((w for w in cands if w in h), key=_load_seq)
                if not _spills(best.load, workers):
                    choice, held = best, k
            if held < 0:
                held = self._held(blocks, choice)
            where = self.where
            for b in blocks[held:]:
                holders = where.get(b)
                if holders is None:
                    where[b] = {choice: None}
                else:
                    holders[choice] = None
        choice.processed += 1
        return choice

    # A tree holds whole prefixes (a request inserts all its leading blocks, and equal block ids mean equal prefixes,
    # the Mooncake hash_ids rule), so "block i is in the tree" is monotone in i: binary searches, not walks.
    def _deepest(self, blocks: Sequence[Any], workers: Sequence[Any]) -> int:
        """The longest run of leading blocks some worker's tree holds."""
        where = self.where
        live = set(workers)
        lo, hi = 0, len(blocks)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            h = where.get(blocks[mid - 1])
            if h is not None and not h.keys().isdisjoint(live):  # (iterates the shorter of the two)
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _held(self, blocks: Sequence[Any], w: Any) -> int:
        where = self.where
        lo, hi = 0, len(blocks)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            h = where.get(blocks[mid - 1])
            if h is not None and w in h:
                lo = mid
            else:
                hi = mid - 1
        return lo


def _load_seq(w: Any) -> tuple[int, int, int]:
    """SMG's min-load order: (load, processed requests, index) — model_gateway/src/policies/cache_aware.rs
    `select_worker` "(load, processed_requests, idx) tie-break (#1714)", so equally loaded workers take turns."""
    return w.load, w.processed, w.seq


def _spills(load: int, workers: Sequence[Any]) -> bool:
    """SMG 1.13.0's spill gate (_Router): a matched worker with this load is skipped for the least loaded one."""
    mean = sum(w.load for w in workers) / len(workers)
    margin = min(BALANCE_ABS_THRESHOLD, max(SPILL_MIN_MARGIN, 2.0 * math.sqrt(mean)))
    return load > mean + margin and load > BALANCE_REL_THRESHOLD * mean


class _RankWorker:
    """One SMG worker of an aggregated group: a DP rank when the operator renders `--dp-aware` (PDConfig.router_ranks;
    SMG's `Worker::load` is this rank's requests in flight). The group's scheduler gets the request: the group keeps
    one waiting queue and one KV pool (module docstring), so a prefix routed to another rank of the same group still
    hits there, where SGLang's per-rank radix caches would miss: optimistic within a group."""

    __slots__ = ("group", "load", "processed", "seq")

    def __init__(self, group: _Decoder, seq: int):
        self.group, self.load, self.processed, self.seq = group, 0, 0, seq


def _make_room(d: _Decoder, extra: float) -> None:
    """Evict least recently released cached blocks until the pool holds what is locked, the private prompts, the
    generated tokens and `extra` more (SGLang evicts when an allocation needs room: `evict_from_tree_cache`)."""
    pool = d.pool
    over = pool.locked_tokens + pool.private_tokens + pool.evictable_tokens + d.generated() + extra - pool.cap
    ev = pool.evictable
    while over > 0 and ev:
        key, s = ev.popitem(last=False)
        del pool.size[key]
        pool.evictable_tokens -= s
        over -= s


class _Decoder:
    """A group's running batch (aggregated: a whole group; PD: a decode group). All running requests advance
    together: `v` counts the tokens each has generated since the group started; a request that joined at v0 with n
    tokens still to make finishes at v0 + n."""

    __slots__ = ("kv_free", "v", "heap", "ctx0", "n", "fifo", "work", "gid", "ready_at", "draining", "pending",
                 "pending_tokens", "lat", "admitted", "pool", "wait", "running", "g0", "rem0", "long", "fifo_rem",
                 "ratio", "workers", "fifo_new")

    def __init__(self, kv: int, gid: int = 0, ready_at: float = 0.0, ranks: int = 1):
        self.kv_free = kv  # PD decode: KV not reserved (prompt + whole output per request)
        self.v = 0.0
        self.heap: list[tuple[float, int]] = []
        self.ctx0 = 0.0  # sum over running of (prompt - v0): the batch's context is ctx0 + n * v
        self.n = 0
        self.fifo: deque[list[float]] = deque()  # aggregated: [rid, remaining prefill group-seconds, s per token]
        self.work = 0.0  # aggregated: prefill backlog, group-seconds
        self.gid = gid
        self.ready_at = ready_at
        self.draining = False
        self.pending = 0  # PD: admitted (KV pre-allocated) requests not decoding yet (in prefill or transfer)
        self.pending_tokens = 0  # their prompts (the pre-allocated KV SGLang counts as used)
        # since the last law step, as SGLang's histograms give them: [sum of running x seconds, sum of running x
        # decode steps] (mean ITL = the first over the second), [sum of TTFTs, first tokens]
        self.lat = [0.0, 0.0, 0.0, 0]
        self.admitted = 0  # requests routed here
        # aggregated (SGLang's scheduler of one group): the KV pool and radix block cache (kvcache.KVPool: blocks and
        # private prompt tokens; the tokens generated in the current stint are `n * v + g0`), the waiting queue of
        # requests the router sent here, the running requests {rid: [v at the end, v at the start, prompt]}, the
        # admission estimate's terms (module docstring: sum of (tokens left at the start + v0) over running, the
        # running requests with more than CLIP_MAX_NEW_TOKENS left, the clipped outputs of admitted requests not
        # decoding yet), new_token_ratio, and the router's load (requests sent here and not finished)
        self.pool = KVPool(kv)
        self.wait: deque[int] = deque()
        self.running: dict[int, list[float]] = {}
        self.g0 = 0.0
        self.rem0 = 0.0
        self.long: dict[int, float] = {}
        self.fifo_rem = 0
        self.fifo_new = 0  # their uncached prompt tokens (the prefill batch SGLang has formed)
        self.ratio = INIT_NEW_TOKEN_RATIO
        self.workers = [_RankWorker(self, gid * ranks + i) for i in range(ranks)]  # the router's view (SMG workers)

    def join(self, rid: int, prompt: int, remaining: int) -> None:
        end = self.v + remaining
        heapq.heappush(self.heap, (end, rid))
        self.running[rid] = [end, self.v, float(prompt)]
        self.ctx0 += prompt - self.v
        self.g0 -= self.v
        self.rem0 += end
        if remaining > CLIP_MAX_NEW_TOKENS:
            self.long[rid] = end
        self.n += 1

    def leave(self, rid: int) -> float:
        """Take a running request out of the batch (finished or retracted); returns the tokens it generated in
        this stint."""
        end, v0, prompt = self.running.pop(rid)
        self.n -= 1
        self.ctx0 -= prompt - v0
        self.g0 += v0
        self.rem0 -= end
        self.long.pop(rid, None)
        if not self.n:
            self.ctx0 = self.g0 = self.rem0 = 0.0
        return min(self.v, end) - v0

    def generated(self) -> float:
        """KV tokens the running requests generated in their current stint (SGLang allocates one per decode step)."""
        return self.n * self.v + self.g0 if self.n else 0.0

    def used(self) -> int:
        """`sglang:kv_used_tokens` (aggregated): locked blocks + private prompt tokens + generated tokens."""
        return int(self.pool.locked_tokens + self.pool.private_tokens + self.generated())

    def reserved(self) -> float:
        """SGLang's admission reserve for what is admitted (schedule_policy.py PrefillAdder
        `_get_running_request_total_token_offset`): new_token_ratio x min(tokens left, CLIP_MAX_NEW_TOKENS) of every
        running request, plus the clipped output of admitted requests still waiting for their prefill."""
        left = self.rem0 - self.n * self.v if self.n else 0.0
        for end in self.long.values():  # only requests with more than CLIP left are clipped
            left -= max(0.0, end - self.v - CLIP_MAX_NEW_TOKENS)
        return self.ratio * (max(0.0, left) + self.fifo_rem)

    def idle(self) -> bool:
        return not self.n and not self.fifo and not self.pending and not self.wait


class _Prefill:
    """A PD prefill group: requests routed to it run FIFO (start, end of prefill, KV arrival at the decode group)."""

    __slots__ = ("gid", "ready_at", "draining", "free_at", "busy_until", "jobs", "prompt", "cached", "done", "pool",
                 "ends", "processed")

    def __init__(self, gid: int, ready_at: float, kv: int = 0):
        self.gid = gid
        self.processed = 0  # requests the router sent here (SMG's tie-break)
        # its radix cache (the blocks it prefilled, least recently used evicted at the pool's size) and the prefill
        # end times of the requests routed here (FIFO, so increasing): the router's load is those not ended yet
        self.pool = KVPool(kv)
        self.ends: deque[float] = deque()
        self.ready_at = ready_at
        self.draining = False
        self.free_at = -math.inf  # end of the last prefill routed here
        self.busy_until = -math.inf  # end of its last KV transfer
        self.jobs: deque[tuple[float, float, float, int, int]] = deque()  # (start, end, arrive, prompt, uncached)
        self.prompt = self.cached = self.done = 0  # SGLang's tokenizer counters (at a request's end)

    @property
    def load(self) -> int:
        return len(self.ends)

    @property
    def seq(self) -> int:  # registration order (_Router's tie-break)
        return self.gid

    def sample(self, now: float, bootstrap: int, metrics_cls: Any) -> Any:
        """What the operator scrapes from this group at `now` (scrape.GroupMetrics)."""
        while self.jobs and self.jobs[0][1] <= now and self.jobs[0][2] <= now:
            _, _, _, prompt, miss = self.jobs.popleft()
            self.prompt += prompt
            self.cached += prompt - miss
            self.done += 1
        queued = running = inflight = 0
        for start, end, arrive, _, _ in self.jobs:
            if start > now:
                queued += 1
            elif end > now:
                running += 1
            elif arrive > now:
                inflight += 1
        return metrics_cls(group=self.gid, kv_used_tokens=0, kv_total_tokens=0, running_reqs=running,
                           queued_reqs=queued, ranks=1, pods_scraped=1, pods_missing=(),
                           prompt_tokens_total=float(self.prompt), cached_tokens_total=float(self.cached),
                           requests_total=float(self.done), prefill_bootstrap_reqs=bootstrap,
                           prefill_inflight_reqs=inflight)


@dataclass(frozen=True)
class Autoscale:
    """Per-role autoscaling with the operator's own laws, every `law.STEP_SECONDS`: `law` (autoscale/law.py) sizes
    the aggregated groups or the PD decode groups on KV; `prefill` (autoscale/prefill.py, PD only) sizes the prefill
    groups on the observed prompt rate + backlog (prefill_step.observe). New groups serve `PDConfig.cold_start_s`
    after they are asked for; removed groups leave routing, finish their work and are released at the next step."""

    law: LawParams
    prefill: PrefillParams | None = None
    typical_prompt: float = 8192.0  # the declared typical uncached prompt (spec.disaggregation.prefill.promptTokens)
    initial_prefill: int = 1
    initial_decode: int = 1
    # a baseline instead of the law for the aggregated / decode groups: an `offline.Policy` (hpa, keda, keda2), fed
    # the same samples every STEP_SECONDS (= their 15 s HPA sync); None: the law
    baseline: Any = None


def autoscale_params(reqs: Sequence[Request], cfg: PDConfig, uncached: Sequence[int] | None = None,
                     initial_prefill: int = 1, initial_decode: int = 1, target: float = 0.7,
                     stabilization_s: float = 600.0, prefill_target: float = 0.7,
                     prefill_stabilization_s: float = 300.0, latency: bool = False,
                     mode: str = "aggregated") -> Autoscale:
    """The API's defaults: decode/aggregated target KV 0.7, stabilization 600 s, horizon = cold start; prefill
    target 0.7, stabilization 300 s, ttftSeconds = the TTFT SLO, the backlog spread over max(TTFT, cold start) as
    prefill_step.prefill_params does with the measured cold start (`cfg.cold_start_s`), throughput per group from
    the planner's model at the trace's mean uncached prompt (what a user would declare as promptTokens; a
    configuration, not foresight)."""
    miss = list(uncached) if uncached is not None else uncached_tokens(reqs)
    typical = max(1.0, sum(miss) / len(miss)) if miss else 8192.0
    tput = tp.prefill_tokens_per_second(cfg.model, cfg.accelerator, cfg.gpus, cfg.precision, round(typical))
    return Autoscale(
        law=LawParams(target_kv_utilization=target, min_groups=1, max_groups=cfg.max_groups,
                      scale_down_stabilization_s=stabilization_s, cold_start_s=cfg.cold_start_s,
                      itl_target_s=cfg.itl_slo_s if latency else None,
                      ttft_target_s=cfg.ttft_slo_s if latency and mode == "aggregated" else None),
        prefill=PrefillParams(tokens_per_second_per_group=tput, target_utilization=prefill_target,
                              ttft_seconds=cfg.ttft_slo_s, min_groups=1, max_groups=cfg.max_groups,
                              stabilization_seconds=prefill_stabilization_s, cold_start_seconds=cfg.cold_start_s),
        typical_prompt=typical, initial_prefill=initial_prefill, initial_decode=initial_decode)


def replay(reqs: Sequence[Request], cfg: PDConfig, mode: str, prefill_groups: int, decode_groups: int,
           uncached: Sequence[int] | None = None, scaling: Autoscale | None = None) -> ModeResult:
    """One fleet: aggregated (`decode_groups` groups doing both) or PD (`prefill_groups` + `decode_groups`); static,
    or with `scaling` autoscaled from `scaling.initial_*` groups (`prefill_groups`/`decode_groups` are ignored)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    wall0 = _time.perf_counter()
    pd = mode == "pd"
    if scaling is not None:
        prefill_groups, decode_groups = scaling.initial_prefill, scaling.initial_decode
        if pd and scaling.prefill is None:
            raise ValueError("PD autoscaling needs prefill parameters")
    miss = list(uncached) if uncached is not None else uncached_tokens(reqs)
    n_req = len(reqs)
    m, acc, prec, g_gpus = cfg.model, cfg.accelerator, cfg.precision, cfg.gpus
    kv_bytes = tp.kv_bytes_per_token(m, acc, cfg.kv_dtype)
    # what the KV pools and the router trees key a prompt by: its runs or its blocks (offline.prompt_keys; a run is
    # only ever used whole, so both give the same replay, at O(runs) per request)
    keyed = [prompt_keys(r) or ((), ()) for r in reqs]
    keys_of = [k for k, _ in keyed]
    sizes_of = [sz for _, sz in keyed]
    del keyed
    private = [r.input_len - sum(sz) for r, sz in zip(reqs, sizes_of, strict=True)]
    out_left = [r.output_len for r in reqs]  # tokens still to generate
    gen_before = [0] * n_req  # tokens generated before a retraction (re-prefilled with the prompt)
    retractions = [0]
    actual_miss = list(miss)  # the uncached prompt where the request was prefilled (its group's cache)
    router = _Router()
    pre_router = _Router()
    worker_of: dict[int, _RankWorker] = {}  # aggregated: the SMG worker each routed, unfinished request went to
    overloaded: set[_Decoder] = set()  # aggregated: the groups SMG's last load poll found overloaded (_Router)
    pre_t = -cfg.cold_start_s  # the initial fleet starts a cold start before t = 0
    lives: list[list[Any]] = []  # [role, gid, provisioned from, released at (None: still held)]
    next_gid = [0]

    def provision(role: str, at: float) -> int:
        gid = next_gid[0]
        next_gid[0] += 1
        lives.append([role, gid, at, None])
        return gid

    def release(gid: int, at: float) -> None:
        for life in lives:
            if life[1] == gid and life[3] is None:
                life[3] = at

    ranks = 1 if pd else max(1, cfg.router_ranks)  # SMG workers per group (PDConfig.router_ranks)
    decoders = [_Decoder(cfg.group_kv_tokens, provision("decode", pre_t), ranks=ranks) for _ in range(decode_groups)]
    prefills = [_Prefill(provision("prefill", pre_t), 0.0, cfg.group_kv_tokens)
                for _ in range(prefill_groups if pd else 0)]
    first = [math.nan] * n_req
    done = [math.nan] * n_req
    home: list[_Decoder | None] = [None] * n_req
    admitted_at = [math.nan] * n_req
    rejected = 0
    queue: deque[int] = deque()
    joins: list[tuple[float, int]] = []  # (time, rid): PD arrivals at their decode group
    step_cache: dict[tuple[int, int], float] = {}
    # between two law steps (what SGLang's counters give the operator): admissions, finished requests
    iv = {"admitted": 0, "done": 0, "service": 0.0, "prompt": 0, "miss": 0, "arrived_miss": 0, "since": 0.0}
    mean_kv_prompt: list[float | None] = [None]  # mean prompt KV a queued request needs (last interval with finishes)

    def step_s(n: int, ctx: float) -> float:
        key = (n, int(ctx) >> 8)  # 256-token context buckets
        s = step_cache.get(key)
        if s is None:
            s = step_cache[key] = tp.decode_step_seconds(m, acc, g_gpus, prec, n, (key[1] << 8) + 128, cfg.kv_dtype)
        return s

    def kv_transfer(tokens: int) -> float:
        return tp.kv_transfer_seconds(tokens, kv_bytes, cfg.link_bytes_per_s)

    def prefill_cost(new: int, cached: int) -> float:
        return tp.prefill_seconds(m, acc, g_gpus, prec, new, cached)

    def admit(rid: int, now: float) -> bool:
        """PD: pre-allocate the request's KV in the decode group with the most free KV, then prefill it in the
        prefill group SMG's cache_aware policy picks (its own radix cache gives the uncached part)."""
        r = reqs[rid]
        need = r.input_len + r.output_len
        best = None
        for d in decoders:
            if d.kv_free >= need and d.ready_at <= now and not d.draining:
                if best is None or d.kv_free > best.kv_free:
                    best = d
        if best is None:
            return False
        routable = [p for p in prefills if p.ready_at <= now and not p.draining]
        if not routable:
            return False
        for p in routable:
            while p.ends and p.ends[0] <= now:
                p.ends.popleft()
        keys, sizes = keys_of[rid], sizes_of[rid]
        pre = pre_router.pick(r, keys, sizes, routable)
        k = pre.pool.match(keys, sizes)
        cached = pre.pool.admit(rid, keys, sizes, private[rid], 0, k=k)
        pre.pool.release(rid)  # the prefill group keeps the blocks cached (evictable), the KV goes to the decode side
        d = best
        d.kv_free -= need
        d.admitted += 1
        home[rid] = d
        admitted_at[rid] = now
        iv["admitted"] += 1
        start = max(now, pre.free_at)
        end = start + prefill_cost(r.input_len - cached, cached)
        pre.free_at = end
        pre.ends.append(end)
        arrive = end + kv_transfer(r.input_len)
        pre.busy_until = arrive
        pre.jobs.append((start, end, arrive, r.input_len, r.input_len - cached))
        actual_miss[rid] = r.input_len - cached
        first[rid] = arrive
        d.pending += 1
        d.pending_tokens += r.input_len
        heapq.heappush(joins, (arrive, rid))
        return True

    def route(rid: int, now: float) -> bool:
        """Aggregated: SMG's cache_aware policy sends the request to a group, where it waits in that group's queue
        (SGLang's waiting queue) until the group's scheduler admits it; False: no group is serving."""
        routable = [d for d in decoders if d.ready_at <= now and not d.draining]
        if not routable:
            return False
        w = router.pick(reqs[rid], keys_of[rid], sizes_of[rid], [w for d in routable for w in d.workers], overloaded)
        w.load += 1
        worker_of[rid] = w
        d = w.group
        d.admitted += 1
        home[rid] = d
        d.wait.append(rid)
        try_admit(d, now)
        return True

    def try_admit(d: _Decoder, now: float) -> None:
        """SGLang's admission from the group's waiting queue, FCFS (the default `--schedule-policy fcfs`; a
        retracted request goes to the back, scheduler.py `_add_request_to_queue`), one prefill batch at a time: only
        while the admitted, not yet prefilled prompts are under one chunk (`chunked_prefill_size`, the
        PrefillAdder's `rem_chunk_tokens`; the rest waits without KV), and schedule_policy.py
        PrefillAdder.add_one_req — the uncached prompt + min(output left, CLIP_MAX_NEW_TOKENS) must fit in what is
        neither used nor reserved for running requests (`rem_total_tokens` = available + evictable - the running
        requests' new_token_ratio x min(left, CLIP)); the evictable blocks it hits are pinned out of the budget."""
        pool = d.pool
        while d.wait and d.fifo_new < cfg.chunk_tokens:
            rid = d.wait[0]
            r = reqs[rid]
            keys, sizes = keys_of[rid], sizes_of[rid]
            k = pool.match(keys, sizes)
            priv = private[rid] + gen_before[rid]
            cached = sum(sizes[:k])
            new = r.input_len + gen_before[rid] - cached
            out = min(out_left[rid], CLIP_MAX_NEW_TOKENS)
            budget = (pool.cap - pool.locked_tokens - pool.private_tokens - d.generated() - d.reserved()
                      - pool.hit_evictable(keys, k))
            if new + out > budget:
                return
            d.wait.popleft()
            pool.admit(rid, keys, sizes, priv, 0, k=k)
            _make_room(d, 0)
            w = prefill_cost(new, cached)
            d.fifo.append([float(rid), w, w / new if new else 0.0, float(out), float(new)])
            d.work += w
            d.fifo_rem += out
            d.fifo_new += new
            if math.isnan(admitted_at[rid]):
                admitted_at[rid] = now
                actual_miss[rid] = new
                iv["admitted"] += 1

    def retract(d: _Decoder, room_needed: float, now: float) -> None:
        """SGLang's retraction (managers/schedule_batch.py ScheduleBatch.retract_decode, called by the scheduler when
        `check_decode_mem` fails): the requests with the fewest output tokens (then the longest prompt) leave the
        batch until the next steps fit, at least one stays; their KV is freed (their cached blocks stay evictable),
        they go back to the waiting queue and are prefilled again with what they generated; new_token_ratio becomes
        (decoded + RETRACT_DECODE_STEPS x batch) / (sum of max_new_tokens + 1) over the rest
        (NewTokenRatioTracker.estimate_new_token_ratio_after_retract)."""
        pool = d.pool
        order = sorted(d.running, key=lambda i: (reqs[i].output_len - out_left[i] + d.v - d.running[i][1],
                                                 -reqs[i].input_len), reverse=True)
        while len(order) > 1 and pool.locked_tokens + pool.private_tokens + d.generated() + room_needed > pool.cap:
            rid = order.pop()
            g = int(d.leave(rid))
            out_left[rid] -= g
            gen_before[rid] += g
            pool.release(rid)
            d.wait.append(rid)
            retractions[0] += 1
            room_needed = d.n * room_needed / (d.n + 1)
        decoded = sum(reqs[i].output_len - out_left[i] + d.v - d.running[i][1] for i in d.running)
        max_new = sum(reqs[i].output_len for i in d.running)
        d.ratio = min(1.0, (decoded + RETRACT_DECODE_STEPS * d.n) / (max_new + 1))

    def finish(rid: int, t: float) -> None:
        r = reqs[rid]
        done[rid] = t
        d = home[rid]
        assert d is not None
        if pd:
            d.kv_free += r.input_len + r.output_len
        else:
            d.pool.release(rid)
            worker_of.pop(rid).load -= 1
        iv["done"] += 1
        iv["service"] += t - admitted_at[rid]
        iv["prompt"] += r.input_len
        iv["miss"] += actual_miss[rid]

    def start_decode(d: _Decoder, rid: int, t: float) -> None:
        """The end of a prefill: its forward samples one token (the first, or the next after a retraction)."""
        out_left[rid] -= 1
        if out_left[rid] <= 0:
            finish(rid, t)
        else:
            d.join(rid, reqs[rid].input_len + gen_before[rid], out_left[rid])

    def drain(now: float) -> None:
        if pd:
            while queue and admit(queue[0], now):
                queue.popleft()
        else:
            while queue and route(queue[0], now):
                queue.popleft()

    # -- the autoscalers: what the operator measures at a step, its laws, and their actuation --------------------
    law_state = LawState()
    pre_state = PrefillState()
    pre_memory: Any = None
    metrics_cls: Any = None
    if scaling is not None and pd:
        from moe_operator.autoscale.prefill_step import PrefillMemory, group_capacity
        from moe_operator.autoscale.prefill_step import observe as prefill_observe
        from moe_operator.autoscale.scrape import GroupMetrics

        pre_memory, metrics_cls = PrefillMemory(), GroupMetrics
    pre_drain: list[_Prefill | None] = [None]  # the prefill group draining (prefill_step: one at a time)
    timeline: list[tuple[float, int, int, float, float, int]] = []
    reasons: list[tuple[float, str, str]] = []
    scale_events = 0
    peaks = {"prefill": prefill_groups if pd else 0, "decode": decode_groups}

    def used_kv(d: _Decoder) -> int:
        if pd:
            return int((d.ctx0 + d.n * d.v if d.n else 0.0) + d.pending_tokens)
        return d.used()

    def queued_reqs(d: _Decoder) -> int:
        # aggregated: SGLang's waiting queue = not admitted, and admitted behind the chunked prefill in progress
        return len(d.wait) + max(0, len(d.fifo) - 1)

    def law_step(now: float) -> None:
        nonlocal law_state, scale_events
        assert scaling is not None
        span = now - iv["since"]
        rate = iv["admitted"] / span if span > 0 else None
        service = iv["service"] / iv["done"] if iv["done"] else None
        if iv["done"]:
            mean_kv_prompt[0] = (iv["prompt"] if pd else iv["miss"]) / iv["done"]
        active = [d for d in decoders if not d.draining]
        q = len(queue)
        samples = []
        for d in active:
            if d.ready_at > now:
                continue
            dq = queued_reqs(d) + q
            lat = d.lat
            samples.append(GroupSample(used_kv(d), cfg.group_kv_tokens, d.n + d.pending + (1 if d.fifo else 0), dq,
                                       queued_tokens=dq * mean_kv_prompt[0] if mean_kv_prompt[0] is not None
                                       else None, admitted_per_s=rate, service_s=service,
                                       itl_s=lat[0] / lat[1] if lat[1] > 0 else None,
                                       ttft_s=lat[2] / lat[3] if lat[3] else None))
            q, rate = 0, (0.0 if rate is not None else None)  # the fleet's queue and rate are reported once
        for d in decoders:
            d.lat = [0.0, 0.0, 0.0, 0]
        starting = sum(1 for d in active if d.ready_at > now)
        cur = len(active)
        if scaling.baseline is not None:
            from .offline import View

            desired = scaling.baseline.decide(View(now, samples, cur, starting, cfg.group_kv_tokens))
            why = f"{scaling.baseline.name}: {cur} -> {desired} groups"
        else:
            dec = law_decide(now, samples, cur, starting, law_state, scaling.law)
            law_state = dec.state
            desired, why = dec.desired_groups, dec.reason
        if desired != cur:
            scale_events += 1
            reasons.append((now, "decode" if pd else "aggregated", why))
        if desired > cur:
            for d in sorted((d for d in decoders if d.draining), key=lambda d: -d.gid):
                if cur >= desired:
                    break
                d.draining = False  # routed again (instantly, before a new group is started)
                cur += 1
            while cur < desired:
                decoders.append(_Decoder(cfg.group_kv_tokens, provision("decode", now),
                                         now + cfg.cold_start_s, ranks))
                cur += 1
        elif desired < cur:
            excess = cur - desired
            for d in sorted(active, key=lambda d: (d.ready_at <= now, -d.gid)):  # starting first, newest first
                if excess == 0:
                    break
                excess -= 1
                if d.ready_at > now:  # a starting group is cancelled
                    decoders.remove(d)
                    release(d.gid, now)
                else:
                    d.draining = True  # leaves routing; released at a step when it holds nothing
        if pd:
            prefill_step(now, desired)

    def prefill_step(now: float, decode_desired: int) -> None:
        nonlocal scale_events
        assert scaling is not None and scaling.prefill is not None
        samples = {}
        boot = len(queue)  # requests whose decode side has no KV for them yet: the prefill bootstrap queue
        for p in prefills:
            samples[p.gid] = p.sample(now, boot, metrics_cls)
            boot = 0
        rate, backlog = prefill_observe(samples, pre_memory, now, scaling.typical_prompt)
        cur = len(prefills)
        # as prefill_step.prefill_once: the law runs on the measured capacity of busy groups once there is one
        params = replace(scaling.prefill, tokens_per_second_per_group=group_capacity(
            pre_memory, scaling.prefill.tokens_per_second_per_group))
        dec = prefill_decide(now, params, pre_state, cur, decode_desired, rate, backlog)
        g = pre_drain[0]
        if g is not None:
            s = samples[g.gid]
            # prefill_step.prefill_once: demand is back (the law's `need`, not `desired`, which holds at the current
            # count while the window after the step that started this drain runs)
            if dec.need >= cur:
                g.draining = False
                pre_drain[0] = None
                reasons.append((now, "prefill", f"drain of group {g.gid} cancelled: {dec.reason}"))
            elif (s.running_reqs == 0 and s.queued_reqs == 0 and s.prefill_bootstrap_reqs == 0
                  and s.prefill_inflight_reqs == 0):
                prefills.remove(g)
                release(g.gid, now)
                pre_drain[0] = None
                scale_events += 1
                reasons.append((now, "prefill", f"group {g.gid} drained: {cur} -> {cur - 1}: {dec.reason}"))
            return
        if dec.desired > cur:
            for _ in range(dec.desired - cur):
                prefills.append(_Prefill(provision("prefill", now), now + cfg.cold_start_s))
            scale_events += 1
            reasons.append((now, "prefill", f"{cur} -> {dec.desired}: {dec.reason}"))
        elif dec.desired < cur and cur > 0:
            g = prefills[-1]
            g.draining = True
            pre_drain[0] = g
            reasons.append((now, "prefill", f"group {g.gid} leaves routing: {dec.reason}"))

    def release_drained(now: float) -> None:
        for d in [d for d in decoders if d.draining and (d.idle() or d.ready_at > now)]:
            decoders.remove(d)
            release(d.gid, now)

    def record(now: float) -> None:
        tput = scaling.prefill.tokens_per_second_per_group if scaling is not None and scaling.prefill else \
            tp.prefill_tokens_per_second(m, acc, g_gpus, prec, 8192)
        span = now - iv["since"]
        pre_demand = iv["arrived_miss"] / span / tput if span > 0 else 0.0
        kv = sum(used_kv(d) for d in decoders) / cfg.group_kv_tokens
        timeline.append((now, len(prefills), len(decoders), round(pre_demand, 3), round(kv, 3), len(queue)))
        peaks["prefill"] = max(peaks["prefill"], len(prefills))
        peaks["decode"] = max(peaks["decode"], len(decoders))

    order = sorted(range(n_req), key=lambda i: reqs[i].arrival)
    ai = 0
    dt = cfg.slice_s
    t = 0.0
    next_step = 0.0
    next_poll = 0.0
    last = reqs[order[-1]].arrival if n_req else 0.0
    while True:
        te = t + dt
        if t >= next_step - 1e-9:  # a law step (and the timeline) at the operator's cadence
            if scaling is not None:
                release_drained(t)
                law_step(t)
            record(t)
            iv.update(admitted=0, done=0, service=0.0, prompt=0, miss=0, arrived_miss=0, since=t)
            next_step += STEP_SECONDS
        if not pd and t >= next_poll - 1e-9:  # SMG's load monitor (worker overload protection, _Router)
            overloaded.clear()
            overloaded.update(d for d in decoders if len(d.wait) >= WORKER_OVERLOAD_WAITING_REQUESTS
                              or d.used() >= WORKER_OVERLOAD_TOKEN_USAGE * d.pool.cap)
            next_poll += LOAD_MONITOR_INTERVAL_S
        if queue and scaling is not None:  # groups that became Ready (or were routed again) take the queue
            drain(t)
        # arrivals in [t, t + dt) are admitted at their arrival instant (their prefill starts then)
        while ai < n_req and reqs[order[ai]].arrival < te:
            rid = order[ai]
            ai += 1
            r = reqs[rid]
            iv["arrived_miss"] += miss[rid]
            if r.input_len + r.output_len > cfg.group_kv_tokens:
                rejected += 1
                continue
            if queue or not (admit if pd else route)(rid, max(t, r.arrival)):
                queue.append(rid)
        while joins and joins[0][0] < te:
            at, rid = heapq.heappop(joins)
            d = home[rid]
            assert d is not None
            d.pending -= 1
            d.pending_tokens -= reqs[rid].input_len
            start_decode(d, rid, at)
        freed = False
        for d in decoders:
            left = dt
            steps = 0.0
            if not pd:
                if d.wait:
                    try_admit(d, t)
                if d.n:  # the decode steps of this slice must find KV (check_decode_mem), else retract
                    grow = d.n * math.ceil(dt / step_s(d.n, (d.ctx0 + d.n * d.v) / d.n))
                    pool = d.pool
                    if pool.locked_tokens + pool.private_tokens + d.generated() + grow > pool.cap:
                        retract(d, grow, t)
                        grow = d.n * math.ceil(dt / step_s(d.n, (d.ctx0 + d.n * d.v) / d.n))
                    _make_room(d, grow)
                elif not d.fifo and not d.wait:
                    d.ratio = INIT_NEW_TOKEN_RATIO  # scheduler.py: an idle scheduler resets new_token_ratio
            tstep = step_s(d.n, (d.ctx0 + d.n * d.v) / d.n) if d.n else 0.0
            started: list[tuple[int, float]] = []
            while d.fifo and left > 1e-12:
                head = d.fifo[0]
                chunk = min(head[1], cfg.chunk_tokens * head[2]) if head[2] else head[1]
                step = tstep + chunk
                rate = chunk / step if step > 0 else 1.0  # prefill group-seconds per second
                need = head[1] / rate if rate > 0 else math.inf
                if need <= left:
                    steps += need / step if step > 0 else 0.0
                    left -= need
                    d.fifo.popleft()
                    # an empty queue is exactly no backlog: float residue below 0 made the least-backlog routing
                    # send every arrival to one group forever (found by the latency-aware law, 2026-12-02)
                    d.work = d.work - head[1] if d.fifo else 0.0
                    if len(head) > 3:
                        d.fifo_rem -= int(head[3])
                        d.fifo_new -= int(head[4])
                    rid = int(head[0])
                    started.append((rid, te - left))
                    if d.wait:  # the next prefill batch forms at once (not at the next slice)
                        try_admit(d, te - left)
                else:
                    head[1] -= left * rate
                    d.work = max(0.0, d.work - left * rate)
                    steps += left / step if step > 0 else 0.0
                    left = 0.0
            if d.n and left > 0:
                steps += left / tstep
            if d.n and steps > 0:
                d.lat[0] += d.n * dt
                d.lat[1] += d.n * steps
                d.ratio = max(MIN_NEW_TOKEN_RATIO, d.ratio - NEW_TOKEN_RATIO_DECAY * steps)
                v0, v1 = d.v, d.v + steps
                d.v = v1
                while d.heap and d.heap[0][0] <= v1:
                    ve, rid = heapq.heappop(d.heap)
                    e = d.running.get(rid)
                    if e is None or e[0] != ve:  # retracted since (and maybe running again with another end)
                        continue
                    d.leave(rid)
                    out_left[rid] = 0
                    finish(rid, t + dt * (ve - v0) / (v1 - v0))
                    freed = True
            for rid, at in started:
                if math.isnan(first[rid]):
                    first[rid] = at
                    d.lat[2] += at - reqs[rid].arrival
                    d.lat[3] += 1
                start_decode(d, rid, at)
                if out_left[rid] <= 0:
                    freed = True
        if freed and queue:
            drain(te)
        t = te
        busy = queue or joins or any(d.n or d.fifo or d.wait for d in decoders)
        if t > last and not busy and ai >= n_req:
            break
        if t > last + 7 * 86400:  # a fleet that cannot serve the trace: stop a week after the last arrival
            break
    ttft = [first[i] - reqs[i].arrival for i in range(n_req) if not math.isnan(done[i])]
    itl: list[float] = []
    good = 0
    completed = 0
    end = 0.0
    bins: dict[int, list[int]] = {}
    for i, r in enumerate(reqs):
        b = bins.setdefault(int(r.arrival // SLO_BIN_S), [0, 0])
        b[0] += 1
        if math.isnan(done[i]):
            continue
        completed += 1
        end = max(end, done[i])
        tt = first[i] - r.arrival
        ok = tt <= cfg.ttft_slo_s
        if r.output_len > 1:
            a = (done[i] - first[i]) / (r.output_len - 1)
            itl.append(a)
            ok = ok and a <= cfg.itl_slo_s
        good += ok
        b[1] += ok
    span = max(end, last)
    record(span)
    prompt_in = sum(r.input_len for i, r in enumerate(reqs) if not math.isnan(done[i]))
    cache_hit = 1.0 - sum(actual_miss[i] for i in range(n_req) if not math.isnan(done[i])) / prompt_in \
        if prompt_in else 0.0
    # GPU-hours: every group from when it was asked for (the initial ones a cold start before t = 0) to its release
    # (a drained group at the step that saw it empty) or the end of the run
    group_s = {"prefill": 0.0, "decode": 0.0}
    for role, _gid, t0, t1 in lives:
        group_s[role] += max(0.0, min(span, t1 if t1 is not None else span) - t0)
    if not pd:
        group_s["prefill"] = 0.0
    gpu_hours = (group_s["prefill"] + group_s["decode"]) * g_gpus / 3600.0
    auto = scaling is not None
    n_pre = peaks["prefill"] if auto else (prefill_groups if pd else 0)
    n_dec = peaks["decode"] if auto else decode_groups
    run_s = span - pre_t
    return ModeResult(
        mode=mode, prefill_groups=n_pre, decode_groups=n_dec, gpus=(n_pre + n_dec) * g_gpus,
        requests=n_req, completed=completed, rejected=rejected, ttft_p50_s=_pct(ttft, 0.5), ttft_p99_s=_pct(ttft, 0.99),
        itl_p50_s=_pct(itl, 0.5), itl_p99_s=_pct(itl, 0.99), goodput=good / n_req if n_req else 0.0,
        goodput_rps=good / span if span else 0.0, gpu_hours=gpu_hours, end_s=end, wall_s=_time.perf_counter() - wall0,
        autoscaled=auto, mean_prefill_groups=group_s["prefill"] / run_s if run_s else 0.0,
        mean_decode_groups=group_s["decode"] / run_s if run_s else 0.0, scale_events=scale_events,
        timeline=timeline if auto else timeline[:1] + timeline[-1:], reasons=reasons,
        slo_timeline=[(k * SLO_BIN_S, v[0], v[1]) for k, v in sorted(bins.items())],
        admitted_per_group=[d.admitted for d in sorted(decoders, key=lambda d: d.gid)],
        retracted=retractions[0], cache_hit=cache_hit)


def replay_autoscaled(reqs: Sequence[Request], cfg: PDConfig, mode: str, uncached: Sequence[int] | None = None,
                      scaling: Autoscale | None = None) -> ModeResult:
    """`replay` with the operator's laws (defaults: `autoscale_params`, from one group per role)."""
    miss = list(uncached) if uncached is not None else uncached_tokens(reqs)
    return replay(reqs, cfg, mode, 0, 0, miss, scaling or autoscale_params(reqs, cfg, miss))


def _ok(res: ModeResult, cfg: PDConfig) -> bool:
    return res.goodput >= cfg.goodput_target


def smallest_aggregated(reqs: Sequence[Request], cfg: PDConfig, uncached: Sequence[int] | None = None,
                        lo: int = 1) -> ModeResult:
    """The fewest aggregated groups whose goodput reaches the target (bisection; max_groups if none does)."""
    miss = list(uncached) if uncached is not None else uncached_tokens(reqs)
    tried: list[tuple[int, int, float]] = []
    cache: dict[int, ModeResult] = {}

    def run(n: int) -> ModeResult:
        if n not in cache:
            cache[n] = replay(reqs, cfg, "aggregated", 0, n, miss)
            tried.append((0, n, cache[n].goodput))
        return cache[n]

    hi = cfg.max_groups
    if not _ok(run(hi), cfg):
        res = run(hi)
    else:
        lo = max(1, lo) - 1  # lo - 1 is assumed to fail
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _ok(run(mid), cfg):
                hi = mid
            else:
                lo = mid
        res = run(hi)
    res.searched = sorted(tried)
    return res


def smallest_pd(reqs: Sequence[Request], cfg: PDConfig, uncached: Sequence[int] | None = None) -> ModeResult:
    """The PD fleet with the fewest GPUs whose goodput reaches the target: for each prefill count, the fewest
    decode groups (bisection), stopping once the prefill groups alone cost as much as the best fleet found."""
    miss = list(uncached) if uncached is not None else uncached_tokens(reqs)
    tried: list[tuple[int, int, float]] = []
    best: ModeResult | None = None
    fallback: ModeResult | None = None
    for n_p in range(1, cfg.max_groups):
        if best is not None and n_p + 1 >= best.prefill_groups + best.decode_groups:
            break
        top = cfg.max_groups - n_p
        if best is not None:
            top = min(top, best.prefill_groups + best.decode_groups - n_p - 1)
        if top < 1:
            break
        r_top = replay(reqs, cfg, "pd", n_p, top, miss)
        tried.append((n_p, top, r_top.goodput))
        if fallback is None or r_top.goodput > fallback.goodput:
            fallback = r_top
        if not _ok(r_top, cfg):
            continue
        lo, hi, found = 0, top, r_top
        while hi - lo > 1:
            mid = (lo + hi) // 2
            r = replay(reqs, cfg, "pd", n_p, mid, miss)
            tried.append((n_p, mid, r.goodput))
            if _ok(r, cfg):
                hi, found = mid, r
            else:
                lo = mid
        if best is None or found.gpus < best.gpus:
            best = found
    res = best or fallback
    assert res is not None
    res.searched = sorted(tried)
    return res


def compare(reqs: Sequence[Request], cfg: PDConfig) -> dict[str, ModeResult]:
    """Both modes at their smallest SLO-meeting static fleets."""
    miss = uncached_tokens(reqs)
    return {"aggregated": smallest_aggregated(reqs, cfg, miss), "pd": smallest_pd(reqs, cfg, miss)}


__all__ = ["BLOCK_TOKENS", "MODES", "ModeResult", "PDConfig", "compare", "replay", "smallest_aggregated",
           "smallest_pd", "uncached_tokens"]
