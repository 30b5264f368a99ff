"""The prefill role's control law (spec.disaggregation.prefill.autoscaling): pure, like law.py.

Prefill groups are compute, not memory: a group absorbs `tput` uncached prompt tokens/s (planner/throughput.py, the
figure status.prefill.plan shows), so the demand is the prompt token rate plus the backlog:

    need = ceil( rate / (tput * targetUtilization) + backlog / (tput * max(ttftSeconds, coldStart)) )

The backlog is spread over the cold start when that is longer than the TTFT target: a group asked for now serves
only after it, so sizing it to clear today's queue within a few seconds asked again at every step while the groups
started (7 -> 28 prefill groups in 225 s on the agent workload, bench/pd.py, where the sustained rate needed ~11).

- `rate` is what the prefill groups served lately (SGLang's tokenizer counters prompt_tokens_total - cached_tokens_total
  over the interval, summed over the prefill leaders), `backlog` the prompt tokens waiting in their queues
  (sglang:num_queue_reqs x the mean uncached prompt). Not the PD bootstrap queue: a request waits there for its
  decode side to reserve KV, which is the decode role's shortage (its KV autoscaler's), not prefill work.
- Up at once, by as many groups as `need` says (a burst of 100 sub-agents' prompts is one step, not one group per
  cold start); pending (starting) groups count as capacity, so a step is not repeated while they start.
- Down by one group at a time, only after `need` stayed below the current count for the stabilization window
  (measured from the first sample with no backlog), and never at a sample where a backlog waits (such a sample holds
  the step without restarting the window); the group leaves routing and drains first (controller).
- Always within [minGroups, maxGroups] and the prefill:decode ratio bounds against the decode groups desired now.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class PrefillParams:
    tokens_per_second_per_group: float
    target_utilization: float = 0.7
    ttft_seconds: float = 10.0
    min_groups: int = 1
    max_groups: int | None = None
    stabilization_seconds: float = 300.0
    ratio_min: float | None = None
    ratio_max: float | None = None
    cold_start_seconds: float = 0.0  #: how long a new prefill group takes to serve


@dataclass
class PrefillState:
    low_since: float | None = None  #: since when `need` has been below the current count


@dataclass(frozen=True)
class PrefillDecision:
    desired: int
    need: int
    reason: str


def bounds(p: PrefillParams, decode_groups: int) -> tuple[int, int | None]:
    lo = p.min_groups
    hi = p.max_groups
    if p.ratio_min is not None:
        lo = max(lo, math.ceil(p.ratio_min * decode_groups))
    if p.ratio_max is not None:
        cap = math.floor(p.ratio_max * decode_groups)
        hi = cap if hi is None else min(hi, cap)
    return lo, hi


def need_groups(p: PrefillParams, rate: float, backlog: float) -> int:
    tput = max(p.tokens_per_second_per_group, 1e-9)
    horizon = max(p.ttft_seconds, p.cold_start_seconds)
    return math.ceil(max(0.0, rate) / (tput * p.target_utilization) + max(0.0, backlog) / (tput * horizon))


def decide(now: float, p: PrefillParams, state: PrefillState, current: int, decode_groups: int,
           rate: float | None, backlog: float | None) -> PrefillDecision:
    """The prefill count to converge to. `rate`/`backlog` None: nothing observed yet (the count holds, within
    bounds)."""
    lo, hi = bounds(p, decode_groups)

    def clamp(n: int) -> int:
        n = max(lo, n)
        return min(hi, n) if hi is not None else n

    if rate is None or backlog is None:
        state.low_since = None
        n = clamp(current)
        return PrefillDecision(n, n, "no prefill metrics yet" if n == current else "prefill bounds")
    need = clamp(need_groups(p, rate, backlog))
    if need > current:
        state.low_since = None
        return PrefillDecision(need, need, f"prefill demand {rate:,.0f} prompt tokens/s + backlog {backlog:,.0f} "
                               f"tokens needs {need} group(s) of {p.tokens_per_second_per_group:,.0f} tokens/s")
    if need < current and backlog > 0:
        # a waiting request holds the step but does not restart the window: under any steady PD load some request
        # sits in a prefill queue at most instants (each one passes the bootstrap queue for its decode handshake),
        # so a window that every such sample restarted would never end and the role would never scale down
        return PrefillDecision(clamp(current), need, "holding while a prefill backlog waits")
    if need < current:
        if state.low_since is None:
            state.low_since = now
        if now - state.low_since >= p.stabilization_seconds:
            state.low_since = now  # one group per window
            n = clamp(current - 1)
            return PrefillDecision(n, need, f"prefill demand {rate:,.0f} prompt tokens/s has needed {need} group(s) "
                                   f"for {p.stabilization_seconds:.0f}s")
        return PrefillDecision(clamp(current), need, "waiting out the stabilization window")
    state.low_since = None
    return PrefillDecision(clamp(current), need, "steady")
