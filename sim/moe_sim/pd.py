"""Compute-aware offline replay: aggregated serving vs prefill/decode (PD) disaggregation (issue 13).

Unlike `offline.simulate` (KV only, load-independent speeds), this replay charges compute from the planner's
throughput model (`moe_operator.planner.throughput`): prefill time from the group's FLOP/s, decode step time from
the group's batch and context. Time advances in slices of `slice_s` (default 0.25 s); inside a slice a group's batch
is constant. (The serving-side PD roles of the rig's simulator are `moe_sim.pd_serve`, a different thing.)

* Prefix reuse: a request's uncached prompt is what no earlier request's leading 512-token blocks covered
  (`uncached_tokens`: a global, never-evicting cache = an ideal cache-aware router; Mooncake/agent traces only, the
  Azure trace has no prefix ids). Both modes get the same reuse, so the comparison is not skewed by it.
* KV admission: a group holds `group_kv_tokens` (the planner's attn_dp_size x max_total_tokens_per_dp, one pool: DP
  rank fragmentation is not modelled); a request reserves prompt + whole output from admission to finish. A global
  FIFO waits (head-of-line) when no group can hold the head request.
* aggregated: every group prefills and decodes. While a group has prefill work, each step carries one chunked-
  prefill chunk (`chunk_tokens`, SGLang's chunked_prefill_size) next to the decode batch: the step takes
  decode_step + chunk prefill time, so prefill stalls every running request of that group (and, with no running
  requests, prefill runs at the group's full rate). New requests go to the group with the least prefill backlog.
* PD: a request is admitted first to a decode group with room (SGLang's decode server pre-allocates the KV before the
  prefill server starts, LMSYS 2025-05-05 "Implementation Details"), then prefilled FIFO by the prefill group that
  frees up first (pure prefill at the group's full rate), then its whole prompt KV (cached part included: the decode
  group has none of it) moves over the RDMA link: TTFT = queue + prefill + KV bytes / `link_bytes_per_s`. Decode
  steps run without prefill interference at decode_step_seconds(batch, mean context).
* Metrics, as NVIDIA Dynamo's replay (ai-dynamo/dynamo lib/mocker/src/replay/collector.rs, `SlaThresholds::is_good`
  and `TraceThroughputStats`): TTFT; per-request average ITL = (e2e - TTFT) / (output - 1) (skipped when output <= 1);
  a request is good when TTFT <= the TTFT SLO and its average ITL <= the ITL SLO; goodput = good requests (reported as
  a fraction of all requests and per second); GPU-hours = provisioned workers x GPUs per worker over the whole run
  including the start-up ramp (`cold_start_s` per worker before t = 0, the fleets here are static) and the drain tail
  (to the last completion).
* Fleets: static, the smallest per mode whose goodput fraction reaches `goodput_target` (`smallest_aggregated`,
  `smallest_pd`: all prefill counts, each with the fewest decode groups, the fewest GPUs overall). Per-role
  autoscaling is not modelled yet.
"""

from __future__ import annotations

import heapq
import math
import time as _time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from moe_operator.planner import throughput as tp

from .offline import BLOCK_TOKENS, Request, _pct, block_sizes

MODES = ("aggregated", "pd")
DEFAULT_TTFT_SLO_S = 2.0  # Dynamo planner goodput-per-GPU sweep: ttft_ms=2000, itl_ms=50
DEFAULT_ITL_SLO_S = 0.05
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


def uncached_tokens(reqs: Sequence[Request]) -> list[int]:
    """Prompt tokens no earlier request's leading blocks cover (ideal global prefix cache, arrival order)."""
    seen: set[int] = set()
    out = []
    for r in reqs:
        if not r.blocks:
            out.append(r.input_len)
            continue
        sizes = block_sizes(r)
        hit = 0
        for b, s in zip(r.blocks, sizes, strict=True):
            if b not in seen:
                break
            hit += s
        out.append(r.input_len - hit)
        seen.update(r.blocks)
    return out


class _Decoder:
    """A group's running batch. All running requests advance together: `v` counts the tokens each has generated
    since the group started; a request that joined at v0 with n tokens still to make finishes at v0 + n."""

    __slots__ = ("kv_free", "v", "heap", "ctx0", "n", "fifo", "work")

    def __init__(self, kv: int):
        self.kv_free = kv
        self.v = 0.0
        self.heap: list[tuple[float, int]] = []
        self.ctx0 = 0.0  # sum over running of (prompt - v0): the batch's context is ctx0 + n * v
        self.n = 0
        self.fifo: deque[list[float]] = deque()  # aggregated: [rid, remaining prefill group-seconds, s per token]
        self.work = 0.0  # aggregated: prefill backlog, group-seconds

    def join(self, rid: int, prompt: int, remaining: int) -> None:
        heapq.heappush(self.heap, (self.v + remaining, rid))
        self.ctx0 += prompt - self.v
        self.n += 1


def replay(reqs: Sequence[Request], cfg: PDConfig, mode: str, prefill_groups: int, decode_groups: int,
           uncached: Sequence[int] | None = None) -> ModeResult:
    """One static fleet: aggregated (`decode_groups` groups doing both) or PD (`prefill_groups` + `decode_groups`)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    wall0 = _time.perf_counter()
    pd = mode == "pd"
    miss = list(uncached) if uncached is not None else uncached_tokens(reqs)
    n_req = len(reqs)
    m, acc, prec, g_gpus = cfg.model, cfg.accelerator, cfg.precision, cfg.gpus
    kv_bytes = tp.kv_bytes_per_token(m, acc, cfg.kv_dtype)
    work = [tp.prefill_seconds(m, acc, g_gpus, prec, miss[i], r.input_len - miss[i]) for i, r in enumerate(reqs)]
    decoders = [_Decoder(cfg.group_kv_tokens) for _ in range(decode_groups)]
    prefill_free = [0.0] * prefill_groups
    first = [math.nan] * n_req
    done = [math.nan] * n_req
    home: list[int] = [-1] * n_req
    rejected = 0
    queue: deque[int] = deque()
    joins: list[tuple[float, int]] = []  # (time, rid): PD arrivals at their decode group
    step_cache: dict[tuple[int, int], float] = {}

    def step_s(n: int, ctx: float) -> float:
        key = (n, int(ctx) >> 8)  # 256-token context buckets
        s = step_cache.get(key)
        if s is None:
            s = step_cache[key] = tp.decode_step_seconds(m, acc, g_gpus, prec, n, (key[1] << 8) + 128, cfg.kv_dtype)
        return s

    def kv_transfer(tokens: int) -> float:
        return tp.kv_transfer_seconds(tokens, kv_bytes, cfg.link_bytes_per_s)

    def admit(rid: int, now: float) -> bool:
        r = reqs[rid]
        need = r.input_len + r.output_len
        best = None
        for gi, d in enumerate(decoders):
            if d.kv_free >= need:
                key = (d.work, -d.kv_free) if not pd else (-d.kv_free, 0)
                if best is None or key < best[0]:
                    best = (key, gi)
        if best is None:
            return False
        gi = best[1]
        d = decoders[gi]
        d.kv_free -= need
        home[rid] = gi
        if pd:
            pi = min(range(prefill_groups), key=prefill_free.__getitem__)
            end = max(now, prefill_free[pi]) + work[rid]
            prefill_free[pi] = end
            arrive = end + kv_transfer(r.input_len)
            first[rid] = arrive
            heapq.heappush(joins, (arrive, rid))
        else:
            spt = work[rid] / miss[rid] if miss[rid] else 0.0
            d.fifo.append([float(rid), work[rid], spt])
            d.work += work[rid]
        return True

    def finish(rid: int, t: float) -> None:
        r = reqs[rid]
        done[rid] = t
        decoders[home[rid]].kv_free += r.input_len + r.output_len

    def start_decode(d: _Decoder, rid: int, t: float) -> None:
        r = reqs[rid]
        if r.output_len <= 1:
            finish(rid, t)
        else:
            d.join(rid, r.input_len, r.output_len - 1)

    def drain(now: float) -> None:
        while queue and admit(queue[0], now):
            queue.popleft()

    order = sorted(range(n_req), key=lambda i: reqs[i].arrival)
    ai = 0
    dt = cfg.slice_s
    t = 0.0
    last = reqs[order[-1]].arrival if n_req else 0.0
    while True:
        # arrivals in [t, t + dt) are admitted at their arrival instant (their prefill starts then)
        te = t + dt
        while ai < n_req and reqs[order[ai]].arrival < te:
            rid = order[ai]
            ai += 1
            r = reqs[rid]
            if r.input_len + r.output_len > cfg.group_kv_tokens:
                rejected += 1
                continue
            if queue or not admit(rid, max(t, r.arrival)):
                queue.append(rid)
        while joins and joins[0][0] < te:
            at, rid = heapq.heappop(joins)
            start_decode(decoders[home[rid]], rid, at)
        freed = False
        for d in decoders:
            left = dt
            steps = 0.0
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
                    d.work -= head[1]
                    d.fifo.popleft()
                    rid = int(head[0])
                    first[rid] = te - left
                    started.append((rid, te - left))
                else:
                    head[1] -= left * rate
                    d.work -= left * rate
                    steps += left / step if step > 0 else 0.0
                    left = 0.0
            if d.n and left > 0:
                steps += left / tstep
            if d.n and steps > 0:
                v0, v1 = d.v, d.v + steps
                d.v = v1
                while d.heap and d.heap[0][0] <= v1:
                    ve, rid = heapq.heappop(d.heap)
                    d.n -= 1
                    d.ctx0 -= reqs[rid].input_len - (ve - (reqs[rid].output_len - 1))
                    finish(rid, t + dt * (ve - v0) / (v1 - v0))
                    freed = True
                if not d.n:
                    d.ctx0 = 0.0
            for rid, at in started:
                start_decode(d, rid, at)
                if reqs[rid].output_len <= 1:
                    freed = True
        if freed and queue:
            drain(te)
        t = te
        busy = queue or joins or any(d.n or d.fifo for d in decoders)
        if t > last and not busy and ai >= n_req:
            break
        if t > last + 7 * 86400:  # a fleet that cannot serve the trace: stop a week after the last arrival
            break
    ttft = [first[i] - reqs[i].arrival for i in range(n_req) if not math.isnan(done[i])]
    itl: list[float] = []
    good = 0
    completed = 0
    end = 0.0
    for i, r in enumerate(reqs):
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
    groups = decode_groups + (prefill_groups if pd else 0)
    span = max(end, last)
    return ModeResult(
        mode=mode, prefill_groups=prefill_groups if pd else 0, decode_groups=decode_groups, gpus=groups * g_gpus,
        requests=n_req, completed=completed, rejected=rejected, ttft_p50_s=_pct(ttft, 0.5), ttft_p99_s=_pct(ttft, 0.99),
        itl_p50_s=_pct(itl, 0.5), itl_p99_s=_pct(itl, 0.99), goodput=good / n_req if n_req else 0.0,
        goodput_rps=good / span if span else 0.0, gpu_hours=groups * g_gpus * (cfg.cold_start_s + span) / 3600.0,
        end_s=end, wall_s=_time.perf_counter() - wall0)


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
