"""Offline simulator: replay a request trace through SGLang groups sized by the planner, scaled by a policy.

Model (event-driven: arrivals, finishes, group-ready and policy ticks in a heap; no per-token steps):

* Fleet. A group has `attn_dp_size` DP ranks of `max_total_tokens_per_dp` KV tokens each (the planner's numbers).
  A request lives in ONE DP rank of one group from admission to finish (SGLang attention DP: each DP rank owns its
  KV pool and radix cache, sglang.md §4).
* KV of a request = its prompt (`input_length`) + the tokens generated so far. Admission RESERVES the prompt and the
  whole output (no retraction is modelled; SGLang reserves an estimate of the remaining output instead), while the
  metric the policies see — `kv_used_tokens` — counts only prompt + generated-so-far, like `sglang:kv_used_tokens`.
* Prefix reuse (Mooncake only: `hash_ids` are 512-token blocks, equal ids = same prefix). Each DP rank keeps a
  radix cache of blocks: blocks of running requests are locked (used, counted once however many requests share
  them); blocks of finished requests stay cached as *evictable* (free for the metric, sglang.md §3.2) and are evicted
  LRU when the rank needs room. A new request reuses the longest run of leading blocks resident in the rank; only
  the rest needs new KV and prefill. The Azure trace has no prefix information: no reuse.
* Routing: a global FIFO queue in front of the fleet (the router). The head request goes to the DP rank with the
  longest cached prefix, then the most free KV, among ranks of Ready, non-draining groups that can hold it; if no
  rank can, it waits (head-of-line) — that wait is KV exhaustion. Waiting requests move to any group that frees KV
  or becomes Ready (optimistic: a real router pins a request to one group).
* Speed: a request prefills its uncached prompt at `prefill_tps` tokens/s and then decodes at `decode_tps`
  tokens/s, independent of load. Compute limits (prefill FLOPs, decode bandwidth) are NOT modelled: this measures
  the KV-bound behaviour the autoscaler controls. Defaults (see `DEFAULT_DECODE_TPS`) are documented in
  docs/benchmarks.md with their sources, and the result echoes the implied per-group throughput for a sanity check.
* Groups: a new group serves `cold_start_s` after the policy asks for it. Removing a group drains it (no new
  requests; removed when its last request finishes), like the operator's drain; starting groups are cancelled before
  Ready groups are drained; draining groups are re-used (instantly) before new groups are started. Group-hours count
  every provisioned group (starting, Ready, draining) from t=0 to the last arrival.
* Policies: `moe` (the control law in `law.py`, every 15 s), `hpa`, `keda`, `keda2`, `static`, `oracle`: see
  `POLICIES`. Only the oracle sees the future: every other policy starts from the fleet the first window (the
  warm-up) showed it needs. The oracle is the cheapest zero-exhaustion foresight schedule found by searching its
  sizing utilization (`cheapest_oracle`), static the smallest zero-exhaustion fixed fleet (`smallest_static`).
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import gc
import heapq
import itertools
import json
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from moe_operator.autoscale.law import STEP_SECONDS, GroupSample, LawParams, LawState, decide

from .kvcache import BlockIndex, KVPool

BLOCK_TOKENS = 512  # Mooncake hash_ids block size (traces README)
# Per-request decode speed: 20 tokens/s = a 50 ms inter-token latency, the default ITL SLO of NVIDIA Dynamo's
# planner (reference/anchors.md §2.1). Per-request prefill: 8192 tokens/s = one chunked-prefill chunk (the planner's
# chunked_prefill_size for these models) per second. See docs/benchmarks.md for the throughput sanity check.
DEFAULT_DECODE_TPS = 20.0
DEFAULT_PREFILL_TPS = 8192.0
DEFAULT_COLD_START_S = 300.0
POLICIES = ("moe", "hpa", "keda", "keda2", "static", "oracle")
HPA_SYNC_S = 15.0  # Kubernetes HPA --horizontal-pod-autoscaler-sync-period default
HPA_TOLERANCE = 0.1
HPA_DOWN_STABILIZATION_S = 300.0
# KEDA: the HPA asks KEDA's metrics server at every sync, and by default the server queries the scaler then
# (caching to pollingInterval is opt-in, `useCachedMetrics`); pollingInterval (30 s) paces only activation 0 <-> 1
KEDA_QUEUE_PER_GROUP = 5.0  # keda2's queue trigger: llm-d WVA's saturation threshold (queue 5; anchors update §4)
MOE_TICK_S = STEP_SECONDS  # the operator's autoscaling cadence (one constant, law.STEP_SECONDS)
ORACLE_SLOT_S = 15.0
TIMELINE_S = 15.0  # the result's timeline resolution


# ---- traces -----------------------------------------------------------------------------------------------------

class Request:
    """One trace request. `blocks`: its prefix blocks, the Mooncake `hash_ids` (BLOCK_TOKENS each, the last one
    partial; None: no prefix information).

    `runs` (optional, what `workloads.generate` gives): the same blocks as runs, (keys, tokens). A run is a range of
    consecutive block ids that is only ever used whole: every request holding one of its blocks holds all of them,
    at the same place in its prompt (the full blocks one turn appended to a session's context; the partial last
    block is a run of its own). Its key is its first id, and `blocks` is the runs' ids expanded. Why: the KV replay
    (`simulate`) locks, releases, matches and evicts a run as one block of its tokens, which is what it would do to
    the run's blocks one by one (they always share a lock count and are released together, so they are evicted
    in a row: a run that is partly evicted is unreachable, as the whole run is, since a prefix match stops at its
    first missing block) at O(runs) instead of O(blocks) per request: agent turns have 13 runs for 132 blocks on
    average (docs/benchmarks.md "Replay speed"; tests/unit/test_simulate.py checks both give the same result)."""

    __slots__ = ("arrival", "input_len", "output_len", "_blocks", "runs")

    def __init__(self, arrival: float, input_len: int, output_len: int, blocks: tuple[int, ...] | None = None,
                 runs: tuple[tuple[int, ...], tuple[int, ...]] | None = None):
        self.arrival, self.input_len, self.output_len = arrival, input_len, output_len
        self._blocks, self.runs = blocks, runs

    @property
    def blocks(self) -> tuple[int, ...] | None:
        if self._blocks is None and self.runs is not None:
            # expanded on each read, not kept: the replays key by the runs, and a day's trace as ids would not fit
            keys, sizes = self.runs
            out: list[int] = []
            for k, s in zip(keys, sizes, strict=True):
                out.extend(range(k, k - (-s // BLOCK_TOKENS)))
            return tuple(out)
        return self._blocks

    def _key(self) -> tuple[Any, ...]:
        return self.arrival, self.input_len, self.output_len, self.blocks

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Request) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"Request(arrival={self.arrival!r}, input_len={self.input_len!r}, output_len={self.output_len!r}, "
                f"blocks={self.blocks!r})")


def load_trace(path: str, rate_scale: float = 1.0, load_scale: int = 1) -> list[Request]:
    """Mooncake JSONL (timestamp ms, input_length, output_length, hash_ids) or Azure CSV (TIMESTAMP, ContextTokens,
    GeneratedTokens). `rate_scale` divides timestamps. `load_scale` K replays K copies of the trace with disjoint
    prefix ids, copy i delayed by i/K of the mean inter-arrival gap: K x the KV demand, the hour-long shape kept."""
    if rate_scale <= 0:
        raise ValueError("--rate-scale must be > 0")
    if load_scale < 1:
        raise ValueError("--load-scale must be >= 1")
    base: list[Request] = []
    with open(path, encoding="utf-8") as f:
        head = f.read(1)
        f.seek(0)
        if head == "{":
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                r = json.loads(line)
                ids = r.get("hash_ids")
                n_in = int(r["input_length"])
                if ids and len(ids) != math.ceil(n_in / BLOCK_TOKENS):
                    # the blocks ARE the prompt (block_sizes): a mismatch would make KV out of nothing
                    raise ValueError(f"{path}:{lineno}: {len(ids)} hash_ids for input_length {n_in}; Mooncake "
                                     f"blocks are {BLOCK_TOKENS} tokens, so it needs ceil({n_in}/{BLOCK_TOKENS}) "
                                     f"= {math.ceil(n_in / BLOCK_TOKENS)}")
                base.append(Request(float(r["timestamp"]) / 1000.0, n_in, int(r["output_length"]),
                                    tuple(int(i) for i in ids) if ids else None))
        else:
            t0: dt.datetime | None = None
            for row in csv.DictReader(f):
                ts = dt.datetime.fromisoformat(row["TIMESTAMP"].strip()[:26])
                t0 = t0 or ts
                base.append(Request((ts - t0).total_seconds(), int(row["ContextTokens"]),
                                    int(row["GeneratedTokens"])))
    base.sort(key=lambda r: r.arrival)
    if not base:
        raise ValueError(f"{path}: no requests")
    start = base[0].arrival
    span = base[-1].arrival - start
    gap = span / max(1, len(base) - 1)
    id_space = 1 + max((max(r.blocks) for r in base if r.blocks), default=0)
    out = []
    for k in range(load_scale):
        shift = k * gap / load_scale
        for r in base:
            blocks = r.blocks if k == 0 or r.blocks is None else tuple(b + k * id_space for b in r.blocks)
            out.append(Request((r.arrival - start + shift) / rate_scale, r.input_len, r.output_len, blocks))
    out.sort(key=lambda r: r.arrival)
    return out


def block_sizes(r: Request) -> list[int]:
    assert r.blocks is not None
    n = len(r.blocks)
    return [BLOCK_TOKENS] * (n - 1) + [r.input_len - BLOCK_TOKENS * (n - 1)] if n else []


def prompt_keys(r: Request) -> tuple[Sequence[int], Sequence[int]] | None:
    """What the KV model keys a request's prompt by: its runs when it has them, else its blocks; None without
    prefix information."""
    if r.runs is not None:
        return r.runs
    if r.blocks is None:
        return None
    return r.blocks, block_sizes(r)


# ---- fleet ------------------------------------------------------------------------------------------------------

@dataclass
class Group:
    gid: int
    ready_at: float
    ranks: list[KVPool]  # one per attention-DP rank (kvcache.py: the KV model shared with the rig's engine)
    draining: bool = False
    removed: bool = False

    def ready(self, now: float) -> bool:
        return now >= self.ready_at

    def running(self) -> int:
        return sum(len(r.running) for r in self.ranks)


@dataclass(frozen=True)
class View:
    """What a policy sees at a tick: the operator's view of the fleet."""

    now: float
    samples: list[GroupSample]  # Ready, non-draining groups
    current: int  # provisioned, non-draining groups (including starting)
    starting: int
    group_tokens: int


# ---- policies ---------------------------------------------------------------------------------------------------

class Policy:
    name = "policy"
    tick_s: float | None = MOE_TICK_S

    def initial(self) -> int:
        raise NotImplementedError

    def decide(self, v: View) -> int:
        raise NotImplementedError


class MoELaw(Policy):
    """The operator's control law (law.decide), every 15 s."""

    name = "moe"

    def __init__(self, params: LawParams, initial: int):
        self.params, self._initial, self.state = params, initial, LawState()
        self.reasons: list[tuple[float, str]] = []

    def initial(self) -> int:
        return self._initial

    def decide(self, v: View) -> int:
        d = decide(v.now, v.samples, v.current, v.starting, self.state, self.params)
        self.state = d.state
        if d.desired_groups != v.current:
            self.reasons.append((v.now, d.reason))
        return d.desired_groups


class HPA(Policy):
    """Kubernetes HPA on per-group KV utilization (Pods-metric semantics): 15 s sync, 10 % tolerance,
    desired = ceil(current x metric/target) over Ready groups, not-yet-Ready groups counted at 0 when scaling up,
    scale-up limited to max(2x, +4) per sync, scale-down to the max recommendation of the last 300 s."""

    name = "hpa"
    tick_s = HPA_SYNC_S

    def __init__(self, target: float, min_groups: int, max_groups: int, initial: int):
        self.target, self.min, self.max, self._initial = target, min_groups, max_groups, initial
        self.recs: deque[tuple[float, int]] = deque()

    def initial(self) -> int:
        return self._initial

    def recommend(self, v: View) -> int:
        if not v.samples:
            return v.current
        utils = [s.kv_used_tokens / s.kv_total_tokens for s in v.samples]
        ratio = sum(utils) / len(utils) / self.target
        if abs(ratio - 1) <= HPA_TOLERANCE:
            return v.current
        if ratio > 1:
            ratio_all = sum(utils) / (v.current * self.target)  # unready groups at 0
            if ratio_all <= 1 + HPA_TOLERANCE:
                return v.current
            return max(v.current, math.ceil(sum(utils) / self.target - 1e-9))
        return math.ceil(ratio * len(utils) - 1e-9)

    def stabilize(self, now: float, current: int, rec: int) -> int:
        rec = max(self.min, min(self.max, rec, max(2 * current, current + 4)))
        self.recs.append((now, rec))
        while self.recs and self.recs[0][0] < now - HPA_DOWN_STABILIZATION_S:
            self.recs.popleft()
        if rec >= current:
            return rec
        return min(current, max(r for _, r in self.recs))

    def decide(self, v: View) -> int:
        return self.stabilize(v.now, v.current, self.recommend(v))


class KEDA(HPA):
    """KEDA Prometheus scaler feeding the HPA: fleet KV tokens in use (sum over groups) as an External
    AverageValue target of target x KV tokens per group: desired = ceil(sum / (target x group tokens)); queried at
    every 15 s HPA sync (KEDA's default: no metric cache); 10 % tolerance; HPA scale-up limit and 300 s scale-down
    stabilization. No readiness correction (External metric)."""

    name = "keda"

    def triggers(self, v: View) -> list[tuple[float, float]]:
        """(metric value, AverageValue target) per trigger."""
        return [(float(sum(s.kv_used_tokens for s in v.samples)), self.target * v.group_tokens)]

    def recommend(self, v: View) -> int:
        if not v.samples:
            return v.current
        recs = []
        for value, per in self.triggers(v):
            if abs(value / (max(1, v.current) * per) - 1) <= HPA_TOLERANCE:
                recs.append(v.current)
            else:
                recs.append(math.ceil(value / per - 1e-9))
        return max(recs)  # the HPA takes the largest recommendation of its metrics


class KEDA2(KEDA):
    """What a careful SRE writes with KEDA: two triggers, KV in use (as `keda`) and `sglang:num_queue_reqs` summed
    over the fleet with an AverageValue of KEDA_QUEUE_PER_GROUP queued requests per group."""

    name = "keda2"

    def triggers(self, v: View) -> list[tuple[float, float]]:
        queued = float(sum(s.queued_reqs for s in v.samples))
        return [*super().triggers(v), (queued, KEDA_QUEUE_PER_GROUP)]


class Static(Policy):
    name = "static"
    tick_s = None

    def __init__(self, groups: int):
        self.groups = groups

    def initial(self) -> int:
        return self.groups

    def decide(self, v: View) -> int:
        return self.groups


class Oracle(Policy):
    """Perfect foresight: at t, holds max need(s) for s in [t, t + cold_start], need(s) = groups for the
    unconstrained KV demand of slot s at a sizing utilization (cheapest_oracle searches it); groups start exactly
    cold_start ahead of need and go as soon as no longer needed."""

    name = "oracle"
    tick_s = ORACLE_SLOT_S

    def __init__(self, need: list[int], cold_start_s: float, min_groups: int, max_groups: int):
        self.need = need
        w = max(1, math.ceil(cold_start_s / ORACLE_SLOT_S) + 1)
        self.schedule = [max(min_groups, min(max_groups, max(need[i:i + w] or [0]))) for i in range(len(need))]
        self.min = min_groups

    def at(self, t: float) -> int:
        i = int(t // ORACLE_SLOT_S)
        return self.schedule[i] if i < len(self.schedule) else self.min

    initial_groups: int | None = None
    utilization: float | None = None  # the sizing utilization cheapest_oracle chose

    def initial(self) -> int:
        return self.initial_groups if self.initial_groups is not None else self.at(0.0)

    def decide(self, v: View) -> int:
        return self.at(v.now)


def demand_curve(reqs: Sequence[Request], decode_tps: float, prefill_tps: float, slot_s: float) -> list[float]:
    """Peak KV tokens (prompt blocks counted once across the fleet + whole outputs, the admission reservation) per
    slot if every request were admitted on arrival: the unconstrained demand the oracle and static size for."""
    events: list[tuple[float, int, int]] = []  # (t, +1 start / -1 end, index)
    for i, r in enumerate(reqs):
        events.append((r.arrival, 1, i))
        events.append((r.arrival + r.input_len / prefill_tps + r.output_len / decode_tps, -1, i))
    events.sort(key=lambda e: (e[0], e[1]))  # ends before starts at the same instant
    ref: dict[int, int] = {}
    tokens = 0
    n = int(max(e[0] for e in events) // slot_s) + 1
    peak = [0.0] * n
    j = 0
    for t, kind, i in events:
        k = int(t // slot_s)
        while j < k:  # slots without events hold the level carried into them
            j += 1
            peak[j] = max(peak[j], tokens)
        r = reqs[i]
        pk = prompt_keys(r)
        if pk is None:
            tokens += kind * (r.input_len + r.output_len)
        else:
            tokens += kind * r.output_len
            for b, s in zip(*pk, strict=True):
                c = ref.get(b, 0) + kind
                if c == 1 and kind == 1:
                    tokens += s
                elif c == 0:
                    tokens -= s
                if c:
                    ref[b] = c
                else:
                    ref.pop(b, None)
        if tokens > peak[j]:
            peak[j] = tokens
    return peak


# ---- simulation -------------------------------------------------------------------------------------------------

@dataclass
class SimConfig:
    dp_ranks: int
    rank_tokens: int
    cold_start_s: float = DEFAULT_COLD_START_S
    decode_tps: float = DEFAULT_DECODE_TPS
    prefill_tps: float = DEFAULT_PREFILL_TPS
    target: float = 0.7
    min_groups: int = 1
    max_groups: int = 64
    warmup_s: float = 120.0  # the replay starts from an empty fleet: policies act only after this

    @property
    def group_tokens(self) -> int:
        return self.dp_ranks * self.rank_tokens


@dataclass
class SimResult:
    policy: str
    requests: int
    completed: int
    rejected: int
    span_s: float
    group_hours: float
    kv_exhaustion_seconds: float
    kv_exhaustion_seconds_after_warmup: float
    warmup_s: float
    requests_waited: int
    queue_wait_total_s: float
    queue_wait_mean_s: float
    queue_wait_p50_s: float
    queue_wait_p99_s: float
    queue_wait_max_s: float
    scale_events: int
    groups_started: int
    initial_groups: int
    peak_groups: int
    mean_groups: float
    peak_kv_utilization: float
    cache_hit_rate: float
    peak_decode_tps_per_group: float
    prefill_tps_per_group: float
    wall_s: float = 0.0
    reasons: list[tuple[float, str]] = field(default_factory=list)
    # every TIMELINE_S: (t, provisioned groups incl. starting and draining, queued requests)
    timeline: list[tuple[float, int, int]] = field(default_factory=list)
    exhaustion: list[tuple[float, float]] = field(default_factory=list)  # (from, to): requests waited for KV


def _pct(xs: list[float], q: float) -> float:
    return _pct_sorted(sorted(xs), q)


def _pct_sorted(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


def _sorted_stream(reqs: Iterable[Request]) -> Iterator[tuple[int, Request]]:
    last = -math.inf
    for i, r in enumerate(reqs):
        if r.arrival < last:
            raise ValueError(f"a streamed trace must be sorted by arrival: request {i} arrives at {r.arrival} s, "
                             f"before the one ahead of it ({last} s)")
        last = r.arrival
        yield i, r


def needs(curve: Sequence[float], cfg: SimConfig, utilization: float) -> list[int]:
    """Groups each slot's unconstrained demand needs at this KV utilization."""
    per = cfg.group_tokens * utilization
    return [max(cfg.min_groups, math.ceil(d / per - 1e-9)) for d in curve]


def observed_initial(curve: Sequence[float], cfg: SimConfig) -> int:
    """The fleet a policy without foresight starts with: what the first window (the warm-up) showed it needs at
    the target — the past only, as an operator that has watched the traffic for that long would size it."""
    k = int(cfg.warmup_s // ORACLE_SLOT_S) + 1
    return max(cfg.min_groups, min(cfg.max_groups, max(needs(curve[:k], cfg, cfg.target) or [cfg.min_groups])))


def oracle_at(curve: Sequence[float], cfg: SimConfig, utilization: float) -> Oracle:
    o = Oracle(needs(curve, cfg, utilization), cfg.cold_start_s, cfg.min_groups, cfg.max_groups)
    o.initial_groups = o.at(0.0)  # foresight from the start
    o.utilization = utilization
    return o


def _no_exhaustion(reqs: Sequence[Request], cfg: SimConfig, policy: Policy) -> bool:
    return simulate(reqs, cfg, policy).kv_exhaustion_seconds_after_warmup <= 0.0


#: the oracle's sizing utilizations tried, cheapest first (1.0 cannot work with per-rank fragmentation, but is tried)
ORACLE_UTILIZATIONS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45, 0.4)


def cheapest_oracle(reqs: Sequence[Request], cfg: SimConfig, curve: Sequence[float] | None = None) -> Oracle:
    """The cheapest perfect-foresight schedule with 0 s of KV exhaustion after the warm-up, among the schedules
    that size each slot's demand at one utilization u and start groups a cold start ahead (group-hours fall as u
    rises): the highest u in ORACLE_UTILIZATIONS whose replay never exhausts (the lowest tried if none)."""
    curve = curve if curve is not None else demand_curve(reqs, cfg.decode_tps, cfg.prefill_tps, ORACLE_SLOT_S)
    for u in ORACLE_UTILIZATIONS:
        o = oracle_at(curve, cfg, u)
        if _no_exhaustion(reqs, cfg, o):
            return oracle_at(curve, cfg, u)
    return oracle_at(curve, cfg, ORACLE_UTILIZATIONS[-1])


def smallest_static(reqs: Sequence[Request], cfg: SimConfig, curve: Sequence[float] | None = None) -> Static:
    """The smallest fixed fleet with 0 s of KV exhaustion after the warm-up (bisection on the group count between
    the peak demand at 100 % and at 40 % utilization; max_groups if even that exhausts)."""
    curve = curve if curve is not None else demand_curve(reqs, cfg.decode_tps, cfg.prefill_tps, ORACLE_SLOT_S)
    lo = max(cfg.min_groups, max(needs(curve, cfg, 1.0))) - 1  # lo exhausts (or is below the minimum)
    hi = min(cfg.max_groups, max(needs(curve, cfg, 0.4)))
    if not _no_exhaustion(reqs, cfg, Static(hi)):
        return Static(cfg.max_groups) if hi < cfg.max_groups and _no_exhaustion(
            reqs, cfg, Static(cfg.max_groups)) else Static(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if mid >= cfg.min_groups and _no_exhaustion(reqs, cfg, Static(mid)):
            hi = mid
        else:
            lo = mid
    return Static(hi)


def warmup_window_s(cfg: SimConfig) -> float:
    """The end of the window whose demand a policy without foresight starts from (`observed_initial`)."""
    return (int(cfg.warmup_s // ORACLE_SLOT_S) + 1) * ORACLE_SLOT_S


def warmup_requests(reqs: Iterable[Request], cfg: SimConfig) -> list[Request]:
    """The requests of a trace sorted by arrival that arrive within the warm-up window: all that `make_policy` reads
    for a policy other than oracle and static, taken from the head of a stream."""
    end = warmup_window_s(cfg)
    return list(itertools.takewhile(lambda r: r.arrival < end, reqs))


def make_policy(name: str, reqs: Sequence[Request], cfg: SimConfig, *, horizon_s: float | None = None,
                stabilization_s: float = 600.0, trend_window_s: float | None = None) -> Policy:
    if name == "oracle":
        return cheapest_oracle(reqs, cfg)
    if name == "static":
        return smallest_static(reqs, cfg)
    # the other policies see only the warm-up window's demand, which requests arriving after it cannot change:
    # the curve of the whole trace is not computed for them (O(blocks) per request, a fifth of a day's replay)
    early = reqs[:bisect.bisect_left(reqs, warmup_window_s(cfg), key=lambda r: r.arrival)]
    init = observed_initial(demand_curve(early, cfg.decode_tps, cfg.prefill_tps, ORACLE_SLOT_S) if early else [],
                            cfg)
    if name == "moe":
        return MoELaw(LawParams(target_kv_utilization=cfg.target, min_groups=cfg.min_groups,
                                max_groups=cfg.max_groups, scale_down_stabilization_s=stabilization_s,
                                cold_start_s=cfg.cold_start_s, forecast_horizon_s=horizon_s,
                                trend_window_s=trend_window_s), init)
    if name == "hpa":
        return HPA(cfg.target, cfg.min_groups, cfg.max_groups, init)
    if name == "keda":
        return KEDA(cfg.target, cfg.min_groups, cfg.max_groups, init)
    if name == "keda2":
        return KEDA2(cfg.target, cfg.min_groups, cfg.max_groups, init)
    raise ValueError(f"unknown policy {name!r}; choose from {', '.join(POLICIES)}")


@dataclass
class _Interval:
    """What the operator reads from SGLang's counters and histograms between two steps (controller.counter_rates),
    accumulated between two ticks: prompt and cached tokens and service seconds of the finished requests (they
    count at a request's end), requests admitted; the last mean uncached prompt carries over an empty interval."""

    prompt: int = 0
    cached: int = 0
    done: int = 0
    service_s: float = 0.0
    admitted: int = 0
    since: float = 0.0
    mean_uncached: float | None = None

    def finished(self, prompt: int, miss: int, service_s: float) -> None:
        self.prompt += prompt
        self.cached += prompt - miss
        self.done += 1
        self.service_s += service_s

    def close(self, now: float) -> tuple[float | None, float | None, float | None]:
        """(admitted/s, mean service s, mean uncached prompt) of the interval ending now; starts the next."""
        rate = self.admitted / (now - self.since) if now > self.since else None
        service = self.service_s / self.done if self.done else None
        if self.done:
            self.mean_uncached = (self.prompt - self.cached) / self.done
        self.prompt = self.cached = self.done = self.admitted = 0
        self.service_s, self.since = 0.0, now
        return rate, service, self.mean_uncached


def simulate(reqs: Sequence[Request] | Iterable[Request], cfg: SimConfig, policy: Policy,
             on_tick: Callable[[View, int], None] | None = None) -> SimResult:
    """Replay `reqs` against `policy`. A sequence is replayed in (arrival, index) order; any other iterable (e.g.
    `workloads.stream`, a trace too large to hold) must come sorted by arrival and is read one request ahead, only
    the requests not yet finished kept: the same result as the list of it."""
    # without the cyclic collector: the replay makes and drops millions of containers (held requests, cache index
    # entries) and would have it walk every live one again and again, a fifth of a 50-group replay; the few
    # cycles it leaves (pools and their shared index) are collected once it is back on
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _simulate(reqs, cfg, policy, on_tick)
    finally:
        if collecting:
            gc.enable()


def _simulate(reqs: Sequence[Request] | Iterable[Request], cfg: SimConfig, policy: Policy,
              on_tick: Callable[[View, int], None] | None) -> SimResult:
    import time as _time

    wall0 = _time.perf_counter()
    ARRIVE, FINISH, READY, TICK, SAMPLE = 0, 1, 2, 3, 4  # noqa: N806  (ties: arrivals first, then finishes, ...)
    heap: list[tuple[float, int, int, int]] = []  # (t, kind, seq/rid, payload)
    # arrivals are merged in from the trace in (arrival, index) order instead of sitting in the heap (a day's
    # millions would make every pop log2(millions) deep); ARRIVE sorts first at equal times, so an arrival goes
    # before any heap event at its instant, as it did when it was one
    incoming: Iterator[tuple[int, Request]]
    if isinstance(reqs, Sequence):
        span = reqs[-1].arrival if reqs else 0.0
        order: Sequence[int] = range(len(reqs))
        if any(reqs[i].arrival > reqs[i + 1].arrival for i in range(len(reqs) - 1)):
            order = sorted(order, key=lambda i: reqs[i].arrival)  # stable: ties keep the index order
        incoming = ((i, reqs[i]) for i in order)
    else:
        span = math.inf  # the last arrival, known once the stream is read to its end (one request ahead)
        incoming = _sorted_stream(reqs)
    live: dict[int, Request] = {}  # arrived and not finished (nor rejected)
    groups: list[Group] = []
    next_gid = 0
    queue: deque[int] = deque()
    placed: dict[int, KVPool] = {}
    admitted: dict[int, tuple[int, float]] = {}  # request -> (uncached prompt tokens, time admitted)
    acc = _Interval()
    wait: list[float] = []
    rejected = completed = 0
    scale_events = started = 0
    hit_tokens = prompt_tokens = 0
    peak_util = 0.0
    peak_decode = 0.0
    # group-seconds integral and exhaustion
    gsec = 0.0
    last_t = 0.0
    n_prov = 0
    peak_groups = 0
    exhaust = exhaust_after = 0.0
    q_since: float | None = None
    warmup = cfg.warmup_s
    decode_tps = cfg.decode_tps

    def account(t: float) -> None:
        nonlocal gsec, last_t
        te = min(t, span)
        if te > last_t:
            gsec += n_prov * (te - last_t)
            last_t = te

    def add_group(now: float, warm: bool) -> None:
        nonlocal next_gid, n_prov, started, peak_groups
        g = Group(next_gid, now if warm else now + cfg.cold_start_s,
                  [KVPool(cfg.rank_tokens, index=index) for _ in range(cfg.dp_ranks)])
        next_gid += 1
        groups.append(g)
        invalidate()
        n_prov += 1
        peak_groups = max(peak_groups, n_prov)
        if not warm:
            started += 1
            heapq.heappush(heap, (g.ready_at, READY, g.gid, 0))

    def remove_group(g: Group) -> None:
        nonlocal n_prov
        g.removed = True
        groups.remove(g)
        invalidate()
        n_prov -= 1

    # block -> ranks it is resident in, and which ranks are routable: placement finds the longest cached prefix
    # without matching every rank's cache (kvcache.BlockIndex.best; O(ranks x blocks) per request before)
    index = BlockIndex()
    cache: dict[str, Any] = {"ranks": None, "set": set(), "known": set(), "draining": None}

    def invalidate() -> None:
        cache["ranks"] = None
        cache["draining"] = None

    def routable_ranks(now: float) -> list[KVPool]:
        if cache["ranks"] is None:
            fresh = [rk for g in groups if not g.draining and g.ready(now) for rk in g.ranks]
            fresh_set, known = set(fresh), {rk for g in groups for rk in g.ranks}
            for rk in cache["set"] - fresh_set:
                index.set_routable(rk, False)
            for rk in fresh_set - cache["set"]:
                index.set_routable(rk, True)
            for rk in cache["known"] - known:  # removed groups never come back
                index.forget(rk)
            cache["ranks"], cache["set"], cache["known"] = fresh, fresh_set, known
        ranks: list[KVPool] = cache["ranks"]
        return ranks

    def try_place(now: float, rid: int) -> bool:
        nonlocal hit_tokens, prompt_tokens
        r = live[rid]
        keys: Sequence[int] = ()
        sizes: Sequence[int] = ()
        private = r.input_len  # no prefix information: the whole prompt is private to the request
        pk = prompt_keys(r)
        if pk is not None:
            (keys, sizes), private = pk, 0
        ranks = routable_ranks(now)

        def freest(among: list[KVPool]) -> KVPool | None:
            """The rank with the most free KV, if it can hold the whole request (no prefix of it cached)."""
            best_free = max(among, key=KVPool.free) if among else None
            return best_free if best_free is not None and best_free.admissible(r.input_len + r.output_len) else None

        k = 0
        if not keys:  # no prefix information: the rank with the most free KV
            found = freest(ranks)
            if found is None:
                return False
            rank, miss = found, r.input_len
        else:
            # the longest cached prefix, then the most free KV, among ranks that can hold it: only ranks holding
            # the first block can have a prefix; the others tie at no prefix, where the most free KV wins
            best = index.best(keys, sizes, 0, r.output_len)
            if best is None:
                holding = index.holders(keys[0])
                found = freest([rk for rk in ranks if rk not in holding] if holding else ranks)
                if found is None:
                    return False
                rank, miss = found, r.input_len
            else:
                rank, k, miss = best
        decode_start = now + miss / cfg.prefill_tps
        rank.admit(rid, keys, sizes, private, r.output_len, decode_start, k)
        placed[rid] = rank
        admitted[rid] = (miss, now)
        acc.admitted += 1
        hit_tokens += r.input_len - miss
        prompt_tokens += r.input_len
        heapq.heappush(heap, (decode_start + r.output_len / decode_tps, FINISH, rid, 0))
        wait.append(now - r.arrival)
        return True

    def drain_queue(now: float) -> None:
        nonlocal q_since, exhaust, exhaust_after
        while queue and try_place(now, queue[0]):
            queue.popleft()
        if not queue and q_since is not None:
            exhaust += now - q_since
            exhaust_after += max(0.0, now - max(q_since, warmup))
            intervals.append((q_since, now))
            q_since = None

    def fits_anywhere(r: Request) -> bool:
        return r.input_len + r.output_len <= cfg.rank_tokens

    def view(now: float) -> View:
        samples = []
        active = [g for g in groups if not g.draining]
        q = len(queue)
        # what the operator estimates a queued request needs: the mean uncached prompt of the requests finished
        # since the last tick, from SGLang's counters (prompt_tokens_total - cached_tokens_total over
        # num_requests_total; they count at a request's end)
        rate, service, mean_uncached = acc.close(now)
        for g in active:
            if not g.ready(now):
                continue
            used = sum(rk.used(now, decode_tps) for rk in g.ranks)
            run = g.running()
            samples.append(GroupSample(used, cfg.group_tokens, run, q,
                                       queued_tokens=q * mean_uncached if mean_uncached is not None else None,
                                       admitted_per_s=rate, service_s=service))
            # the fleet's queue and admission rate are reported once (the law sums them over the groups)
            q, rate = 0, (0.0 if rate is not None else None)
        return View(now, samples, len(active), sum(1 for g in active if not g.ready(now)), cfg.group_tokens)

    def actuate(now: float, desired: int) -> None:
        nonlocal scale_events
        desired = max(cfg.min_groups, min(cfg.max_groups, desired))
        active = [g for g in groups if not g.draining]
        cur = len(active)
        if desired == cur:
            return
        scale_events += 1
        if desired > cur:
            for g in sorted((g for g in groups if g.draining), key=lambda g: -g.gid):
                if cur >= desired:
                    break
                g.draining = False
                invalidate()
                cur += 1
            while cur < desired:
                add_group(now, warm=False)
                cur += 1
            drain_queue(now)
        else:
            excess = cur - desired
            for g in sorted(active, key=lambda g: (g.ready(now), -g.gid)):  # starting first, newest first
                if excess == 0:
                    break
                excess -= 1
                if not g.ready(now) or g.running() == 0:
                    remove_group(g)
                else:
                    g.draining = True
                    invalidate()

    for _ in range(policy.initial()):
        add_group(0.0, warm=True)
    nxt = next(incoming, None)
    n = 0  # requests arrived
    if nxt is None:
        span = 0.0
    if policy.tick_s:
        heapq.heappush(heap, (warmup, TICK, -1, 0))
    heapq.heappush(heap, (0.0, SAMPLE, -1, 0))
    timeline: list[tuple[float, int, int]] = []
    intervals: list[tuple[float, float]] = []
    while heap or nxt is not None:
        if nxt is not None and (not heap or nxt[1].arrival <= heap[0][0]):
            ident, r = nxt
            t, kind = r.arrival, ARRIVE
            n += 1
            nxt = next(incoming, None)
            if nxt is None and span == math.inf:
                span = t  # a stream's end: every event so far was at or before it
        else:
            t, kind, ident, _ = heapq.heappop(heap)
            if t > span and kind in (TICK, SAMPLE):
                continue  # pushed while a stream's end was not known: neither ticks nor samples run past it
        account(t)
        if kind == ARRIVE:
            if not fits_anywhere(r):
                rejected += 1
                continue
            live[ident] = r
            if queue or not try_place(t, ident):
                if not queue:
                    q_since = t
                queue.append(ident)
        elif kind == FINISH:
            placed.pop(ident).release(ident)
            completed += 1
            miss, at = admitted.pop(ident)
            acc.finished(live.pop(ident).input_len, miss, t - at)
            draining = cache["draining"]
            if draining is None:
                draining = cache["draining"] = [g for g in groups if g.draining]
            if draining:
                for g in [g for g in draining if g.running() == 0]:
                    remove_group(g)
            if queue:
                drain_queue(t)
        elif kind == READY:
            invalidate()
            if queue:
                drain_queue(t)
        elif kind == SAMPLE:
            timeline.append((t, n_prov, len(queue)))
            if t + TIMELINE_S <= span:
                heapq.heappush(heap, (t + TIMELINE_S, SAMPLE, -1, 0))
        else:  # TICK
            v = view(t)
            for s in v.samples:
                peak_util = max(peak_util, s.kv_used_tokens / s.kv_total_tokens)
                peak_decode = max(peak_decode, s.running_reqs * decode_tps)
            desired = policy.decide(v)
            if on_tick:
                on_tick(v, desired)
            actuate(t, desired)
            if policy.tick_s and t + policy.tick_s <= span:
                heapq.heappush(heap, (t + policy.tick_s, TICK, -1, 0))
    account(span)
    waited = sum(1 for w in wait if w > 1e-9)
    wait_total = sum(wait)  # in arrival order, before the sort (the float sum depends on the order)
    wait.sort()  # once, for both percentiles (a week has ~42 M waits)
    return SimResult(
        policy=policy.name, requests=n, completed=completed, rejected=rejected, span_s=span,
        group_hours=gsec / 3600.0, kv_exhaustion_seconds=exhaust, kv_exhaustion_seconds_after_warmup=exhaust_after,
        warmup_s=warmup, requests_waited=waited, queue_wait_total_s=wait_total,
        queue_wait_mean_s=wait_total / len(wait) if wait else 0.0, queue_wait_p50_s=_pct_sorted(wait, 0.5),
        queue_wait_p99_s=_pct_sorted(wait, 0.99), queue_wait_max_s=wait[-1] if wait else 0.0, scale_events=scale_events,
        groups_started=started, initial_groups=policy.initial(), peak_groups=peak_groups,
        mean_groups=gsec / span if span else float(n_prov), peak_kv_utilization=peak_util,
        cache_hit_rate=hit_tokens / prompt_tokens if prompt_tokens else 0.0,
        peak_decode_tps_per_group=peak_decode,
        prefill_tps_per_group=(prompt_tokens - hit_tokens) / span / max(1e-9, gsec / span) if span and gsec else 0.0,
        wall_s=_time.perf_counter() - wall0, reasons=list(getattr(policy, "reasons", [])),
        timeline=timeline, exhaustion=intervals + ([(q_since, span)] if q_since is not None else []),
    )
