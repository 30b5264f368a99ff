"""Workload generators: long-context coding-agent sessions (and agent swarms), as Mooncake-format requests.

Why: the two shipped traces are flat conversation traffic. The product exists for coding agents whose context grows
turn by turn towards 128k (tool results appended, think time between turns) and for swarms (Kimi-K2.5's orchestrator
fans out up to 100 parallel sub-agents over its shared context: KV demand jumps at once). No public trace has that
shape with prefix ids, so this generates one, seeded and documented.

Model (every number a parameter of `AgentWorkload`, defaults in brackets):

* Sessions arrive as a non-homogeneous Poisson process with rate `peak_sessions_per_min` [40] x profile(t):
  `ramp`  — linear 0 -> 1 over `ramp_up_s` [1800], plateau `plateau_s` [3600], linear 1 -> 0 over `ramp_down_s`
            [1800] (2 h in all);
  `diurnal` — 24 h: trough `diurnal_trough` [0.15] at 04:00, peak 1 at 16:00 (raised cosine), for `duration_s`
            [86400; a week: 604800, the curve repeats daily].
* A session's first request holds a shared system prefix (`system_prefix_tokens` [4096], the same blocks for every
  session, as an agent's tool/system prompt is) and a repository context, lognormal median `repo_context_tokens`
  [16384] (sigma 0.6, clipped to [2048, 65536]).
* Each turn: the model writes `output_tokens` (lognormal median [400], sigma 0.8, clipped [32, 4096]); then a tool
  result (lognormal median `tool_result_tokens` [2500], sigma 1.0, clipped [64, 32768]) and the next user/agent
  message (`message_tokens` [150]) are appended; the next request is sent the whole context again.
* The next turn arrives after the previous one's nominal service time (uncached prefill at `nominal_prefill_tps`
  [8192] tokens/s + output at `nominal_decode_tps` [20] tokens/s, the simulator's defaults) plus a think time
  (lognormal median `think_s` [10] s, sigma 1.0, clipped [1, 300]): an open-loop trace, as Mooncake's is.
* A session ends when the next request would exceed `context_limit` [131072] tokens, or with probability
  `end_prob` [0.03] after each turn (users stop), or after `max_turns` [200].
* Swarms (`swarm_prob` [0] per turn; the `swarm` preset sets it): the orchestrator fans out
  uniform[`swarm_min`, `swarm_max`] [10, 100] sub-agents at once, each starting from the orchestrator's whole
  context plus its own task (`message_tokens`), running uniform[2, `swarm_turns`] [2, 6] turns of its own; the
  orchestrator's next turn waits for the last sub-agent and gets each one's final output appended.
* Prefix ids: Mooncake 512-token blocks. A full block of a session's context keeps its id as the context grows
  (`hash_ids` chain: equal ids = equal prefix); the last, partial block gets a fresh id each request (its content
  changes). Sub-agents share their orchestrator's full blocks. Every request has exactly ceil(input_length / 512)
  ids (what `moe_sim.offline.load_trace` checks). The requests carry them as runs (`offline.Request.runs`: the full
  blocks a turn appended, consecutive ids, plus the partial block), which the KV replay keys by; `blocks` gives
  the ids.

`generate()` returns `offline.Request`s sorted by arrival, `stream()` the same ones one at a time (for traces that
do not fit in memory: a week); `write_jsonl()` writes Mooncake JSONL (timestamp in ms,
input_length, output_length, hash_ids) for `moe-operator simulate --trace` and the rig's load generator.
"""

from __future__ import annotations

import dataclasses
import gc
import heapq
import json
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .offline import BLOCK_TOKENS, Request

PROFILES = ("ramp", "diurnal")
DAY_S = 86400.0


@dataclass(frozen=True)
class AgentWorkload:
    profile: str = "ramp"
    peak_sessions_per_min: float = 40.0
    ramp_up_s: float = 1800.0
    plateau_s: float = 3600.0
    ramp_down_s: float = 1800.0
    duration_s: float = DAY_S  # diurnal only
    diurnal_trough: float = 0.15
    system_prefix_tokens: int = 4096
    repo_context_tokens: int = 16384
    output_tokens: int = 400
    tool_result_tokens: int = 2500
    message_tokens: int = 150
    think_s: float = 10.0
    context_limit: int = 131072
    end_prob: float = 0.03
    max_turns: int = 200
    swarm_prob: float = 0.0
    swarm_min: int = 10
    swarm_max: int = 100
    swarm_turns: int = 6
    nominal_prefill_tps: float = 8192.0
    nominal_decode_tps: float = 20.0
    seed: int = 1

    @property
    def span_s(self) -> float:
        return self.ramp_up_s + self.plateau_s + self.ramp_down_s if self.profile == "ramp" else self.duration_s

    def rate(self, t: float) -> float:
        """Session arrivals per second at t."""
        peak = self.peak_sessions_per_min / 60.0
        if self.profile == "ramp":
            if t < 0 or t >= self.span_s:
                return 0.0
            if t < self.ramp_up_s:
                return peak * t / self.ramp_up_s
            if t < self.ramp_up_s + self.plateau_s:
                return peak
            return peak * (self.span_s - t) / self.ramp_down_s
        if self.profile == "diurnal":
            if t < 0 or t >= self.duration_s:
                return 0.0
            # raised cosine over the day: trough at 04:00, peak at 16:00
            phase = 2 * math.pi * ((t % DAY_S) - 4 * 3600.0) / DAY_S
            return peak * (self.diurnal_trough + (1 - self.diurnal_trough) * (1 - math.cos(phase)) / 2)
        raise ValueError(f"unknown profile {self.profile!r}; choose from {', '.join(PROFILES)}")


PRESETS: dict[str, AgentWorkload] = {
    "agents": AgentWorkload(),
    "agents-busy": AgentWorkload(peak_sessions_per_min=120.0),
    "swarm": AgentWorkload(peak_sessions_per_min=6.0, swarm_prob=0.08),
    "agents-diurnal": AgentWorkload(profile="diurnal", peak_sessions_per_min=40.0),
}


def _lognormal(rng: random.Random, median: float, sigma: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, median * math.exp(rng.gauss(0.0, sigma))))


class _Ids:
    """Block ids: full blocks keep theirs (keyed by the context they belong to and their index), partial ones are
    fresh each time. 1, 2, 3, ... (a day at 50 groups draws ~10^8 of them); `take(n)` hands out n consecutive ids
    and returns the first."""

    def __init__(self) -> None:
        self.next = 1

    def take(self, n: int) -> int:
        first = self.next
        self.next += n
        return first

    def fresh(self) -> int:
        return self.take(1)


@dataclass
class _Context:
    """A growing token sequence as blocks, kept as runs (`offline.Request.runs`): `keys` the first id of each run of
    complete blocks (consecutive ids), `sizes` its tokens, `tail` the tokens past them (more than a block while
    appends are pending: `seal` turns them into blocks)."""

    keys: list[int]
    sizes: list[int]
    full: int  # tokens in complete blocks (sum of sizes)
    tail: int

    @property
    def tokens(self) -> int:
        return self.full + self.tail

    def append(self, n: int) -> None:
        # pending until the context is next read as blocks (`seal`): every append between two requests lands in
        # the same run, as every later request holds all of it or none (one run per turn, not one per append)
        self.tail += n

    def seal(self, ids: _Ids) -> None:
        """The complete blocks of the pending tail become one run. The ids are those appending block by block
        would have drawn (nothing else draws ids between a context's appends and its next request or fork)."""
        full = self.tail // BLOCK_TOKENS
        if full:
            self.keys.append(ids.take(full))
            self.sizes.append(full * BLOCK_TOKENS)
            self.full += full * BLOCK_TOKENS
            self.tail -= full * BLOCK_TOKENS

    def request(self, arrival: float, output: int, ids: _Ids) -> Request:
        # the partial tail block's content changes: it gets a fresh id each request; once it fills it is part of
        # the next run of complete blocks
        self.seal(ids)
        if self.tail:
            runs = ((*self.keys, ids.fresh()), (*self.sizes, self.tail))
        else:
            runs = (tuple(self.keys), tuple(self.sizes))
        return Request(arrival, self.tokens, output, runs=runs)

    def fork(self, ids: _Ids) -> _Context:
        self.seal(ids)  # the fork shares these blocks
        return _Context(list(self.keys), list(self.sizes), self.full, self.tail)


def _session_starts(w: AgentWorkload, rng: random.Random) -> list[float]:
    """Non-homogeneous Poisson arrivals by thinning against the peak rate."""
    peak = w.peak_sessions_per_min / 60.0
    if peak <= 0:
        return []
    t, out = 0.0, list[float]()
    while True:
        t += rng.expovariate(peak)
        if t >= w.span_s:
            return out
        if rng.random() * peak <= w.rate(t):
            out.append(t)


def generate(w: AgentWorkload) -> list[Request]:
    """The whole trace, sorted by arrival (ties in the order generated): `list(stream(w))`."""
    _check(w)
    # the cyclic collector would walk the growing trace (millions of requests, no cycles among them) again and
    # again: a third of the time of a day's trace
    collecting = gc.isenabled()
    gc.disable()
    try:
        return list(_stream(w))
    finally:
        if collecting:
            gc.enable()


def stream(w: AgentWorkload) -> Iterator[Request]:
    """The same requests as `generate(w)`, in the same order, one at a time: what is held is the requests of the
    sessions still running, not the trace (a week at 430 sessions/min is ~42 M requests, ~38 GB as a list)."""
    _check(w)
    return _stream(w)


def _check(w: AgentWorkload) -> None:
    if w.profile not in PROFILES:
        raise ValueError(f"unknown profile {w.profile!r}; choose from {', '.join(PROFILES)}")


def _stream(w: AgentWorkload) -> Iterator[Request]:
    rng = random.Random(w.seed)
    ids = _Ids()
    system = _Context([], [], 0, 0)
    system.append(w.system_prefix_tokens)  # one shared system prefix for every session
    out: list[Request] = []  # the session being generated
    # sessions are generated whole, one after another in start order; a request is handed out once no later
    # session can arrive before it (every request of a session arrives at or after the session's start), in
    # (arrival, generated) order: the stable sort of the whole trace by arrival
    pending: list[tuple[float, int, Request]] = []
    seq = 0

    def service(r: Request, cached: int) -> float:
        return max(0, r.input_len - cached) / w.nominal_prefill_tps + r.output_len / w.nominal_decode_tps

    def send(ctx: _Context, t: float) -> Request | None:
        """The next turn's request (the whole context, a drawn output length), or None past the context limit."""
        o = int(_lognormal(rng, w.output_tokens, 0.8, 32, 4096))
        if ctx.tokens + o > w.context_limit:
            return None
        r = ctx.request(t, o, ids)
        out.append(r)
        return r

    def run_agent(ctx: _Context, t: float, turns: int) -> tuple[float, int]:
        """A sub-agent's own turns from `t`; returns (when its last turn ends, its final output tokens)."""
        ctx.seal(ids)  # its task message's full blocks count as cached below, as when appends drew ids at once
        last_out, cached = 0, ctx.full  # the orchestrator's context (its full blocks) is cached
        for _ in range(turns):
            r = send(ctx, t)
            if r is None:
                break
            t += service(r, cached)
            cached = r.input_len
            ctx.append(r.output_len)
            ctx.append(int(_lognormal(rng, w.tool_result_tokens, 1.0, 64, 32768)))
            t += _lognormal(rng, w.think_s, 1.0, 1.0, 300.0)
            last_out = r.output_len
        ctx.seal(ids)  # ids for what no request reads: they keep every later id (and the JSONL) as it was
        return t, last_out

    for start in _session_starts(w, rng):
        while pending and pending[0][0] < start:
            yield heapq.heappop(pending)[2]
        ctx = system.fork(ids)
        ctx.append(int(_lognormal(rng, w.repo_context_tokens, 0.6, 2048, 65536)))
        t, cached = start, 0
        for _turn in range(w.max_turns):
            r = send(ctx, t)
            if r is None:
                break
            t += service(r, cached)
            ctx.append(r.output_len)
            if w.swarm_prob and rng.random() < w.swarm_prob:
                ends = []
                for _ in range(rng.randint(w.swarm_min, w.swarm_max)):
                    sub = ctx.fork(ids)
                    sub.append(w.message_tokens)
                    ends.append(run_agent(sub, t, rng.randint(2, max(2, w.swarm_turns))))
                t = max(e for e, _ in ends)
                ctx.append(sum(o2 for _, o2 in ends))  # the sub-agents' reports come back
            else:
                ctx.append(int(_lognormal(rng, w.tool_result_tokens, 1.0, 64, 32768)))
            ctx.append(w.message_tokens)
            cached = r.input_len  # the next turn's prompt starts with this one's
            t += _lognormal(rng, w.think_s, 1.0, 1.0, 300.0)
            if rng.random() < w.end_prob:
                break
        ctx.seal(ids)  # (as in run_agent)
        for r in out:
            heapq.heappush(pending, (r.arrival, seq, r))
            seq += 1
        out.clear()
    while pending:
        yield heapq.heappop(pending)[2]


def with_overrides(w: AgentWorkload, **overrides: object) -> AgentWorkload:
    known = {f.name for f in dataclasses.fields(w)}
    bad = set(overrides) - known
    if bad:
        raise ValueError(f"unknown workload parameter(s) {', '.join(sorted(bad))}; known: {', '.join(sorted(known))}")
    return dataclasses.replace(w, **overrides)  # type: ignore[arg-type]


def write_jsonl(reqs: Iterable[Request], path: str) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for r in reqs:
            f.write(json.dumps({"timestamp": round(r.arrival * 1000), "input_length": r.input_len,
                                "output_length": r.output_len, "hash_ids": list(r.blocks or ())},
                               separators=(",", ":")) + "\n")
            n += 1
    return n
