"""Speed of the offline KV replay (issue 10, "Speed"): a 24 h and a week-long `agents-diurnal` trace with prefix ids,
sized so that the control law (`--policy moe`) provisions about 50 groups at the daily peak, generated and replayed
with the same code path as

    moe-operator simulate --workload agents-diurnal --workload-param peak_sessions_per_min=430 \\
        --workload-param duration_s=86400 --model kimi-k2.5 --precision int4 --accelerator h200 --policy moe \
        --stream -o json

(duration_s=604800 for the week). Targets: the day in < 300 s, the week in < 1800 s, on 2 cores. This script prints
numbers and never asserts: wall times depend on the machine and its load, which it records next to each one.

    .venv/bin/python bench/speed.py [--quick] [--only day|week] [--out bench/results/speed.json]

`--quick`: a 2 h trace (00:00-02:00 of the diurnal curve, i.e. near its trough) as a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

MODEL = ("kimi-k2.5", "int4", "h200", "fp8_e4m3")  # the CLI's README setup (its --kv-dtype default)
PLAN_SESSIONS = 100  # the CLI's --plan-sessions default
# measured 2026-12-03: the law's day peaks at 35 groups at 300 sessions/min (4,186,425 requests) and at 51 groups at
# 430/min (5,999,662 requests): 430 is the 50-group day
PEAK_SESSIONS_PER_MIN = 430.0
SPANS = {"quick": 7200.0, "day": 86400.0, "week": 604800.0}
TARGETS = {"quick": None, "day": 300.0, "week": 1800.0}


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def command(peak: float, span: float, cold: float) -> str:
    return (f"moe-operator simulate --workload agents-diurnal --workload-param peak_sessions_per_min={peak:g} "
            f"--workload-param duration_s={span:.0f} --model {MODEL[0]} --precision {MODEL[1]} "
            f"--accelerator {MODEL[2]} --kv-dtype {MODEL[3]} --plan-sessions {PLAN_SESSIONS} --policy moe "
            f"--cold-start {cold:g} --stream -o json")


def _timed(reqs: Iterator[Any], seen: dict[str, float]) -> Iterator[Any]:
    """`reqs`, recording the seconds spent generating them, how many and the longest (prompt + output)."""
    clock, pull = time.perf_counter, reqs.__next__
    gen = 0.0
    n = longest = 0
    while True:
        t = clock()
        try:
            r = pull()
        except StopIteration:
            gen += clock() - t
            break
        gen += clock() - t
        n += 1
        if r.input_len + r.output_len > longest:
            longest = r.input_len + r.output_len
        yield r
    seen.update(generation_s=gen, requests=n, longest=longest)


def _plan(context: int) -> Any:
    from moe_operator.planner import PlanRequest, plan

    return plan(PlanRequest(model=MODEL[0], precision=MODEL[1], sessions=PLAN_SESSIONS, context=context,
                            accelerator=MODEL[2], kv_dtype=MODEL[3]))


def one(name: str, peak: float, cold: float) -> dict[str, Any]:
    from moe_sim import offline as sim
    from moe_sim import workloads

    span = SPANS[name]
    load0 = _load()
    t0 = time.perf_counter()
    w = workloads.with_overrides(workloads.PRESETS["agents-diurnal"], peak_sessions_per_min=peak, duration_s=span)
    # streamed: the trace is generated while it is replayed and never held whole (a week is ~42 M requests). The
    # CLI plans the group for the trace's longest request; a stream's is known only at its end, so this plans for
    # the workload's context limit (no request is longer) and checks afterwards that the longest gives that plan.
    pl = _plan(w.context_limit)
    cfg = sim.SimConfig(dp_ranks=pl.attn_dp_size, rank_tokens=pl.max_total_tokens_per_dp, cold_start_s=cold)
    # the law starts from the warm-up window's demand (make_policy reads only those requests)
    policy = sim.make_policy("moe", sim.warmup_requests(workloads.stream(w), cfg), cfg)
    seen: dict[str, float] = {}
    res = sim.simulate(_timed(workloads.stream(w), seen), cfg, policy)
    t2 = time.perf_counter()
    load2 = _load()
    same_plan = _plan(int(seen["longest"])).max_total_tokens_per_dp == pl.max_total_tokens_per_dp
    d = asdict(res)
    for k in ("reasons", "timeline", "exhaustion"):
        d.pop(k)
    target = TARGETS[name]
    total = t2 - t0
    return {
        "trace": name, "span_s": span, "peak_sessions_per_min": peak, "cold_start_s": cold,
        "requests": int(seen["requests"]), "peak_groups": res.peak_groups, "mean_groups": res.mean_groups,
        "group_hours": res.group_hours, "kv_exhaustion_seconds_after_warmup": res.kv_exhaustion_seconds_after_warmup,
        "cache_hit_rate": res.cache_hit_rate,
        "generation_wall_s": seen["generation_s"], "replay_wall_s": total - seen["generation_s"],
        "total_wall_s": total, "longest_request_tokens": int(seen["longest"]),
        "plan_for_longest_request_is_the_same": same_plan,
        "target_s": target, "met": None if target is None else total < target,
        "loadavg_start": load0, "loadavg_end": load2,
        "max_rss_mb": _rss_mb(), "group": {"gpus": pl.gpus_per_group, "attn_dp_size": pl.attn_dp_size,
                                           "kv_tokens": cfg.group_tokens},
        "command": command(peak, span, cold), "result": d,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a 2 h trace only (smoke run)")
    ap.add_argument("--only", choices=("day", "week"), help="one of the two traces")
    ap.add_argument("--peak", type=float, default=PEAK_SESSIONS_PER_MIN, help="peak_sessions_per_min")
    ap.add_argument("--cold-start", type=float, default=300.0, help="the CLI's default")
    ap.add_argument("--out", default="bench/results/speed.json")
    a = ap.parse_args()
    names = ["quick"] if a.quick else [a.only] if a.only else ["day", "week"]
    rows = []
    for name in names:
        print(f"{name}: generating and replaying {SPANS[name] / 3600:g} h (load {_load()}) ...", file=sys.stderr,
              flush=True)
        r = one(name, a.peak, a.cold_start)
        rows.append(r)
        print(f"{name}: {r['requests']:,} requests, peak {r['peak_groups']} groups, generation "
              f"{r['generation_wall_s']:.0f} s, replay {r['replay_wall_s']:.0f} s, total {r['total_wall_s']:.0f} s "
              f"(target {r['target_s']}), load {r['loadavg_start']} -> {r['loadavg_end']}", file=sys.stderr,
              flush=True)
    print("| trace | requests | peak groups | group-hours | generation s | replay s | total s | target s | met "
          "| load avg (1/5/15 min) start -> end | max RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        met = "n/a" if r["met"] is None else "yes" if r["met"] else "NO"
        print(f"| {r['trace']} ({r['span_s'] / 3600:g} h) | {r['requests']:,} | {r['peak_groups']} "
              f"| {r['group_hours']:.1f} | {r['generation_wall_s']:.1f} | {r['replay_wall_s']:.1f} "
              f"| {r['total_wall_s']:.1f} | {r['target_s'] or '-'} | {met} | {r['loadavg_start']} -> "
              f"{r['loadavg_end']} | {r['max_rss_mb']:.0f} |")
    if a.out:
        os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
        with open(a.out, "w") as f:
            json.dump({"python": platform.python_version(), "cpus": os.cpu_count(), "runs": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
