"""Autoscaling on compute as well as KV: goodput and provisioned GPU-hours per policy (issue 10, compute-aware).

    .venv/bin/python bench/goodput.py [--out bench/results/goodput.json] [--jobs 2] [--quick]
    .venv/bin/python bench/goodput.py --from-json bench/results/goodput.json     # tables and pictures only

Model: `moe_sim.pd.replay` in aggregated mode — the compute-aware replay (decode step time from the group's batch
and context, chunked prefill stalling the decode batch of its group, prefill FLOP/s; `moe_operator.planner.throughput`,
calibrated on LMSYS's published SGLang numbers, table in docs/benchmarks.md), least-prefill-backlog routing, a global
FIFO when no group has the KV. Groups: Kimi-K2.5 INT4 on H200 with FP8 KV, the planner's layout for 100 sessions at
the workload's longest request (1 node, TP 8, attention DP 8). Metrics as NVIDIA Dynamo's planner replay
(lib/mocker/src/replay/collector.rs `SlaThresholds::is_good`): a request is good when its TTFT <= the TTFT SLO and its
mean ITL (e2e - TTFT) / (output - 1) <= the ITL SLO; goodput = good / all requests; GPU-hours = every provisioned
group x 8 GPUs from when it was asked for (the initial ones a cold start before t = 0) to its release or the last
completion (start-up ramp and drain tail included).

SLOs: TTFT 10 s, ITL 50 ms (the issue's targets: long prompts), goodput target 0.99 (Mooncake: 0.95 — no fleet of
8-GPU groups reaches 0.99 there: 64 groups give 0.970, its longest prompts' chunked prefill stalls the decode batch
of their group past 50 ms ITL whatever the fleet).

Policies (every 15 s, on what the operator measures then; only `static` is sized on the whole trace):
* static   — the smallest fixed fleet whose goodput reaches the target (`pd.smallest_aggregated`).
* moe      — the law with the API's defaults (KV only: targetKVUtilization 0.7, stabilization 600 s).
* moe+lat  — the same with autoscaling.targetInterTokenLatencySeconds = the ITL SLO and
             targetTimeToFirstTokenSeconds = the TTFT SLO (the law's latency pressure, autoscale/law.py).
* keda2    — KEDA with two triggers, KV in use (AverageValue 0.7 x a group's KV) and sglang:num_queue_reqs
             (5 per group), feeding the HPA (15 s sync, 10 % tolerance, max(2x, +4) up, 300 s down stabilization).
* hpa      — the HPA on per-group KV utilization (target 0.7).
Every autoscaled policy starts from the fleet the first 5 minutes alone would need (`observed_initial`: the past
only; 1 group for the workloads that ramp up from zero).

Workloads: `agents` and `swarm` (moe_sim.workloads presets, seeded; parameters in that module's docstring) and the
first 30 minutes of the Mooncake FAST'25 conversation trace (kvcache-ai/Mooncake, Apache-2.0; /work/shared/traces).
Cold starts 60 / 300 / 900 s. Pictures: bench/results/goodput/<workload>-cold<s>.png (provisioned groups per policy
over time; below, the fraction of the requests arriving in each 5 minutes that missed an SLO).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from typing import Any

TRACES = os.environ.get("MOE_TRACES", "/work/shared/traces")
MODEL = ("kimi-k2.5", "int4", "h200", "fp8_e4m3")
PLAN_SESSIONS = 100
TTFT_SLO_S, ITL_SLO_S, GOODPUT_TARGET = 10.0, 0.05, 0.99
POLICIES = ("static", "moe", "moe+lat", "keda2", "hpa")
COLD_STARTS = (60.0, 300.0, 900.0)
OBSERVED_S = 300.0  # the past an autoscaled policy's initial fleet is sized on


def workloads(quick: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"name": "agents", "workload": "agents"}, {"name": "swarm", "workload": "swarm"},
                                 {"name": "mooncake-30min", "trace": "mooncake_conversation.jsonl", "slice_s": 1800.0,
                                  "goodput_target": 0.95}]
    if quick:
        out = [{"name": "agents-quick", "workload": "agents",
                "params": {"ramp_up_s": 300.0, "plateau_s": 600.0, "ramp_down_s": 300.0,
                           "peak_sessions_per_min": 20.0}}]
    return out


def _load(w: dict[str, Any]) -> tuple[list[Any], Any]:
    from moe_operator.planner import PlanRequest, plan
    from moe_sim import offline, pd
    from moe_sim import workloads as wl

    if "workload" in w:
        reqs = wl.generate(wl.with_overrides(wl.PRESETS[w["workload"]], **w.get("params", {})))
    else:
        reqs = [r for r in offline.load_trace(os.path.join(TRACES, w["trace"]), 1.0, 1) if r.arrival < w["slice_s"]]
    model, precision, acc, kv = MODEL
    context = max(r.input_len + r.output_len for r in reqs)
    pl = plan(PlanRequest(model=model, precision=precision, sessions=PLAN_SESSIONS, context=context,
                          accelerator=acc, kv_dtype=kv))
    cfg = pd.PDConfig(model=model, accelerator=acc, precision=precision, gpus=pl.gpus_per_group,
                      group_kv_tokens=pl.attn_dp_size * pl.max_total_tokens_per_dp, kv_dtype=kv,
                      chunk_tokens=pl.chunked_prefill_size, ttft_slo_s=TTFT_SLO_S, itl_slo_s=ITL_SLO_S,
                      goodput_target=w.get("goodput_target", GOODPUT_TARGET), max_groups=64)
    return reqs, cfg


def run_one(job: tuple[dict[str, Any], float]) -> dict[str, Any]:
    from moe_sim import offline, pd

    w, cold = job
    t0 = time.perf_counter()
    reqs, cfg = _load(w)
    cfg = replace(cfg, cold_start_s=cold)
    miss = pd.uncached_tokens(reqs)
    static = pd.smallest_aggregated(reqs, cfg, miss)
    early = [i for i, r in enumerate(reqs) if r.arrival < OBSERVED_S]
    first = pd.smallest_aggregated([reqs[i] for i in early], cfg, [miss[i] for i in early]) if early else static
    init = max(1, first.decode_groups)
    results: dict[str, Any] = {"static": static}
    base = pd.autoscale_params(reqs, cfg, miss, 1, init)
    results["moe"] = pd.replay(reqs, cfg, "aggregated", 0, 0, miss, base)
    lat = pd.autoscale_params(reqs, cfg, miss, 1, init, latency=True)
    results["moe+lat"] = pd.replay(reqs, cfg, "aggregated", 0, 0, miss, lat)
    results["keda2"] = pd.replay(reqs, cfg, "aggregated", 0, 0, miss,
                                 replace(base, baseline=offline.KEDA2(0.7, 1, cfg.max_groups, init)))
    results["hpa"] = pd.replay(reqs, cfg, "aggregated", 0, 0, miss,
                               replace(base, baseline=offline.HPA(0.7, 1, cfg.max_groups, init)))
    return {"workload": w, "cold_start_s": cold, "requests": len(reqs), "span_s": reqs[-1].arrival,
            "initial_groups": init, "group_gpus": cfg.gpus, "group_kv_tokens": cfg.group_kv_tokens,
            "results": {k: asdict(v) for k, v in results.items()}, "wall_s": time.perf_counter() - t0}


def _bad(r: dict[str, Any]) -> int:
    return r["requests"] - round(r["goodput"] * r["requests"])


def table(run: dict[str, Any]) -> str:
    res = run["results"]
    st, k2 = res["static"], res["keda2"]
    out = [f"**{run['workload']['name']}**, cold start {run['cold_start_s']:.0f} s ({run['requests']:,} requests over "
           f"{run['span_s'] / 60:.0f} min; autoscaled policies start from {run['initial_groups']} group(s); static = "
           f"{st['decode_groups']} groups, the smallest with goodput >= "
           f"{run['workload'].get('goodput_target', GOODPUT_TARGET)})", "",
           "| policy | peak / mean groups | TTFT p50 / p99 s | ITL p50 / p99 ms | goodput | SLO-violating requests "
           "| vs keda2 | GPU-hours | vs static | vs keda2 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name in POLICIES:
        r = res[name]
        bad, kbad = _bad(r), _bad(k2)
        fewer = "—" if name == "keda2" else (f"{kbad / bad:.1f}x fewer" if bad else f"0 vs {kbad}")
        out.append(f"| {name} | {r['decode_groups']} / {r['mean_decode_groups']:.1f} | {r['ttft_p50_s']:.2f} / "
                   f"{r['ttft_p99_s']:.2f} | {r['itl_p50_s'] * 1e3:.1f} / {r['itl_p99_s'] * 1e3:.1f} | "
                   f"{r['goodput']:.3f} | {bad:,} | {fewer} | {r['gpu_hours']:.1f} | "
                   f"{r['gpu_hours'] / st['gpu_hours']:.2f}x | {r['gpu_hours'] / k2['gpu_hours']:.2f}x |")
    return "\n".join(out)


def targets(runs: list[dict[str, Any]], policy: str = "moe+lat") -> str:
    """The issue's compute targets for one policy: goodput >= the target, GPU-hours <= 0.7x static, >= 5x fewer
    SLO-violating requests than keda2 at <= its GPU-hours."""
    out = [f"| workload | cold s | {policy}: goodput >= target | GPU-h <= 0.70x static | >= 5x fewer SLO-violating "
           "than keda2 at <= its GPU-h |", "|---|---|---|---|---|"]
    yes = {True: "yes", False: "NO"}
    for run in runs:
        res = run["results"]
        r, st, k2 = res[policy], res["static"], res["keda2"]
        target = run["workload"].get("goodput_target", GOODPUT_TARGET)
        bad, kbad = _bad(r), _bad(k2)
        ratio = kbad / bad if bad else float("inf")
        gh = r["gpu_hours"] / k2["gpu_hours"]
        out.append(f"| {run['workload']['name']} | {run['cold_start_s']:.0f} | {yes[r['goodput'] >= target]} "
                   f"({r['goodput']:.3f} vs {target:g}) | {yes[r['gpu_hours'] <= 0.7 * st['gpu_hours']]} "
                   f"({r['gpu_hours'] / st['gpu_hours']:.2f}x) | {yes[ratio >= 5 and gh <= 1.0]} "
                   f"({ratio:.1f}x at {gh:.2f}x GPU-h) |")
    return "\n".join(out)


def pictures(runs: list[dict[str, Any]], outdir: str) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing: run `hack/setup-python --bench` for the pictures", file=sys.stderr)
        return []
    os.makedirs(outdir, exist_ok=True)
    colors = {"moe": "tab:blue", "moe+lat": "tab:green", "keda2": "tab:orange", "hpa": "tab:purple"}
    written = []
    for run in runs:
        res = run["results"]
        fig, (top, bot) = plt.subplots(2, 1, figsize=(11, 6.4), dpi=110, sharex=True,
                                       gridspec_kw={"height_ratios": [2, 1]})
        for name, color in colors.items():
            r = res[name]
            tl = r["timeline"]
            top.step([row[0] / 60 for row in tl], [row[2] for row in tl], where="post", color=color, lw=1.4,
                     label=f"{name} ({r['gpu_hours']:.0f} GPU-h, goodput {r['goodput']:.3f})")
            slo = r["slo_timeline"]
            bot.step([b[0] / 60 for b in slo], [1 - b[2] / b[1] if b[1] else 0.0 for b in slo], where="post",
                     color=color, lw=1.2)
        st = res["static"]
        top.axhline(st["decode_groups"], color="tab:gray", ls=":",
                    label=f"static {st['decode_groups']} ({st['gpu_hours']:.0f} GPU-h, goodput {st['goodput']:.3f})")
        kv = res["moe+lat"]["timeline"]
        top.fill_between([row[0] / 60 for row in kv], [row[4] for row in kv], step="post", color="tab:red",
                         alpha=0.12, label="KV in use under moe+lat (groups at 100 %)")
        top.set_ylabel("provisioned groups")
        top.legend(loc="upper right", fontsize=7)
        top.grid(alpha=0.3)
        bot.set_ylabel("SLO misses\n(per 5 min of arrivals)")
        # the trace and 30 minutes of drain tail: a policy that queues everything (hpa) finishes days later and
        # would squeeze every other line into the left edge
        bot.set_xlim(0, run["span_s"] / 60 + 30)
        bot.set_xlabel("minutes (the trace + 30 min; later completions are off the picture)")
        bot.grid(alpha=0.3)
        top.set_title(f"{run['workload']['name']}, cold start {run['cold_start_s']:.0f} s: provisioned groups per "
                      f"policy (compute-aware replay; SLOs TTFT {TTFT_SLO_S:g} s, ITL {ITL_SLO_S * 1e3:g} ms)",
                      fontsize=10)
        fig.tight_layout()
        name = os.path.join(outdir, f"{run['workload']['name']}-cold{run['cold_start_s']:.0f}.png")
        fig.savefig(name)
        plt.close(fig)
        written.append(name)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench/results/goodput.json")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="one shortened workload at one cold start (a smoke run)")
    ap.add_argument("--workload", action="append", help="only these workloads (agents, swarm, mooncake-30min)")
    ap.add_argument("--from-json", help="print the tables (and draw the pictures) of a previous run")
    ap.add_argument("--pictures", default="bench/results/goodput", help="folder for the PNG timelines")
    a = ap.parse_args(argv)
    if a.from_json:
        with open(a.from_json, encoding="utf-8") as f:
            runs = json.load(f)["runs"]
    else:
        jobs = [(w, c) for w in workloads(a.quick) for c in ((300.0,) if a.quick else COLD_STARTS)
                if not a.workload or w["name"] in a.workload]
        t0 = time.perf_counter()
        with ProcessPoolExecutor(max(1, a.jobs)) as ex:
            runs = list(ex.map(run_one, jobs))
        os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
        with open(a.out, "w", encoding="utf-8") as f:
            json.dump({"command": " ".join(["bench/goodput.py", *(argv if argv is not None else sys.argv[1:])]),
                       "model": MODEL, "slo": {"ttft_s": TTFT_SLO_S, "itl_s": ITL_SLO_S, "goodput": GOODPUT_TARGET},
                       "wall_s": time.perf_counter() - t0, "runs": runs}, f, indent=1)
    for r in runs:
        print(table(r))
        print()
    for policy in ("moe+lat", "moe"):
        print(targets(runs, policy))
        print()
    for r in runs:
        print(f"{r['workload']['name']} cold {r['cold_start_s']:.0f}: {r['wall_s']:.1f} s", file=sys.stderr)
    for name in pictures(runs, a.pictures):
        print(f"picture: {name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
