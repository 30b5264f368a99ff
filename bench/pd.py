"""Prefill/decode disaggregation benchmark: aggregated vs PD, each at its smallest static fleet meeting the SLOs.

    .venv/bin/python bench/pd.py [--out bench/results/pd.json] [--quick]

Model: `moe_sim.pd` (compute-aware replay) over `moe_operator.planner.throughput` (prefill FLOP/s, decode step time,
calibrated on LMSYS's published SGLang numbers; see that module's `checks()`). Groups: Kimi-K2.5 INT4 on H200 with
FP8 KV, the planner's layout for 100 sessions at the workload's longest request (1 node, TP 8, attention DP 8).

Settings:
* `agents`: moe_sim.workloads preset `agents` (defaults of `AgentWorkload`, seed 1): sessions on a ramp 0 -> 40/min
  over 30 min, 60 min plateau, 30 min down; shared 4,096-token system prefix + lognormal repository context (median
  16,384, sigma 0.6, [2,048, 65,536]); per turn ~400 output tokens (lognormal, sigma 0.8, [32, 4,096]), a tool result
  (median 2,500, sigma 1.0, [64, 32,768]) and a 150-token message appended; think time median 10 s (sigma 1.0,
  [1, 300]); sessions end at 131,072 tokens, with probability 0.03 per turn, or after 200 turns. SLOs: TTFT 5 s (a
  session's first turn prefills a 20-70k-token repository context: one 8-GPU group alone needs 1-4 s for it), ITL
  50 ms.
  Goodput target 0.99.
* `mooncake-30min`: the first 30 minutes of the Mooncake FAST'25 conversation trace (kvcache-ai/Mooncake,
  Apache-2.0; /work/shared/traces), 5,719 requests. SLOs: TTFT 2 s, ITL 50 ms (NVIDIA Dynamo's planner
  goodput-per-GPU sweep). Goodput target 0.90: 4.5 % of these prompts (p99 7.9 s) need more than 2 s of prefill on an
  idle 8-GPU group, so no fleet of such groups reaches 0.99 (the prefill of one request is not split across groups).
KV link 400 Gb/s per transfer; cold start 300 s per group.

Autoscaled rows (both modes; `moe_sim.pd.replay` with `Autoscale`): the operator's own laws every 15 s
(autoscale/law.py on KV for the aggregated groups and the PD decode groups, autoscale/prefill.py on the observed
prompt rate + backlog for the PD prefill groups, prefill_step.observe on simulated SGLang counters), the API's
defaults, 300 s cold start for every new group, drains before removal. `agents` starts from one group per role (the
workload ramps up from zero), `mooncake-30min` from the static fleet (the trace starts at full load). The prefill
drain rules are prefill_step's (a drain is cancelled when the law's need is back at the current count; the group is
released when it runs, queues and sends nothing); the backlog is spread over max(TTFT, cold start). Pictures:
bench/results/pd-<setting>.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from typing import Any

TRACES = os.environ.get("MOE_TRACES", "/work/shared/traces")
MODEL = ("kimi-k2.5", "int4", "h200", "fp8_e4m3")
PLAN_SESSIONS = 100


def settings(quick: bool) -> list[dict[str, Any]]:
    agents: dict[str, Any] = {"name": "agents", "workload": "agents", "ttft_slo_s": 5.0, "itl_slo_s": 0.05,
                              "goodput_target": 0.99, "initial": "min"}
    moon: dict[str, Any] = {"name": "mooncake-30min", "trace": "mooncake_conversation.jsonl", "load_scale": 1,
                            "slice_s": 1800.0, "ttft_slo_s": 2.0, "itl_slo_s": 0.05, "goodput_target": 0.90,
                            "initial": "static"}
    if quick:
        agents["params"] = {"ramp_up_s": 300.0, "plateau_s": 600.0, "ramp_down_s": 300.0,
                            "peak_sessions_per_min": 20.0}
        agents["name"] = "agents-quick"
        moon["slice_s"] = 600.0
        moon["name"] = "mooncake-10min"
    return [agents, moon]


def run_setting(s: dict[str, Any], max_groups: int) -> dict[str, Any]:
    from moe_operator.planner import PlanRequest, plan
    from moe_sim import offline, pd, workloads

    if "workload" in s:
        w = workloads.with_overrides(workloads.PRESETS[s["workload"]], **s.get("params", {}))
        reqs = workloads.generate(w)
    else:
        reqs = offline.load_trace(os.path.join(TRACES, s["trace"]), 1.0, s["load_scale"])
        reqs = [r for r in reqs if r.arrival < s["slice_s"]]
    model, precision, acc, kv = MODEL
    context = max(r.input_len + r.output_len for r in reqs)
    pl = plan(PlanRequest(model=model, precision=precision, sessions=PLAN_SESSIONS, context=context,
                          accelerator=acc, kv_dtype=kv))
    cfg = pd.PDConfig(model=model, accelerator=acc, precision=precision, gpus=pl.gpus_per_group,
                      group_kv_tokens=pl.attn_dp_size * pl.max_total_tokens_per_dp, kv_dtype=kv,
                      chunk_tokens=pl.chunked_prefill_size, ttft_slo_s=s["ttft_slo_s"], itl_slo_s=s["itl_slo_s"],
                      goodput_target=s["goodput_target"], max_groups=max_groups)
    t0 = time.perf_counter()
    res = pd.compare(reqs, cfg)
    static_wall = time.perf_counter() - t0
    miss = pd.uncached_tokens(reqs)
    for mode in pd.MODES:
        st = res[mode]
        init = (max(1, st.prefill_groups), st.decode_groups) if s.get("initial") == "static" else (1, 1)
        sc = pd.autoscale_params(reqs, cfg, miss, init[0], init[1])
        res[f"{mode}_autoscaled"] = pd.replay(reqs, cfg, mode, 0, 0, miss, sc)
    return {
        "setting": s, "requests": len(reqs), "span_s": reqs[-1].arrival,
        "mean_input_tokens": sum(r.input_len for r in reqs) / len(reqs),
        "mean_uncached_tokens": sum(miss) / len(miss),
        "mean_output_tokens": sum(r.output_len for r in reqs) / len(reqs),
        "group": {"gpus": pl.gpus_per_group, "kv_tokens": cfg.group_kv_tokens, "chunk_tokens": cfg.chunk_tokens},
        "config": asdict(cfg),
        "results": {k: asdict(v) for k, v in res.items()},
        "ratios": {"gpu_hours_pd_over_aggregated": res["pd"].gpu_hours / res["aggregated"].gpu_hours,
                   "gpus_pd_over_aggregated": res["pd"].gpus / res["aggregated"].gpus,
                   "gpu_hours_pd_autoscaled_over_aggregated_autoscaled":
                       res["pd_autoscaled"].gpu_hours / res["aggregated_autoscaled"].gpu_hours},
        "static_search_wall_s": static_wall,
        "wall_s": time.perf_counter() - t0,
    }


COLUMNS = (("aggregated", "aggregated static"), ("aggregated_autoscaled", "aggregated autoscaled"),
           ("pd", "PD static"), ("pd_autoscaled", "PD autoscaled"))


def _groups(r: dict[str, Any]) -> str:
    if r["mode"] == "pd":
        g = f"{r['prefill_groups']} P + {r['decode_groups']} D"
        return f"peak {g} (mean {r['mean_prefill_groups']:.1f} + {r['mean_decode_groups']:.1f})" \
            if r.get("autoscaled") else g
    return f"peak {r['decode_groups']} (mean {r['mean_decode_groups']:.1f})" if r.get("autoscaled") \
        else f"{r['decode_groups']}"


def table(run: dict[str, Any]) -> str:
    s = run["setting"]
    res = run["results"]
    base = res["aggregated"]["gpu_hours"]
    out = [f"### {s['name']}: {run['requests']} requests over {run['span_s'] / 60:.0f} min, mean input "
           f"{run['mean_input_tokens']:,.0f} (uncached {run['mean_uncached_tokens']:,.0f}), mean output "
           f"{run['mean_output_tokens']:,.0f}; SLOs TTFT {s['ttft_slo_s']:g} s / ITL {s['itl_slo_s'] * 1e3:g} ms, "
           f"goodput target {s['goodput_target']:g}; autoscaled from "
           f"{'the static fleet' if s.get('initial') == 'static' else 'one group per role'}",
           "", "| mode | groups | TTFT p50 / p99 (s) | ITL p50 / p99 (ms) | goodput | goodput (req/s) | GPU-hours "
           "| / aggregated static |", "|---|---|---|---|---|---|---|---|"]
    for key, label in COLUMNS:
        r = res.get(key)
        if r is None:
            continue
        out.append(f"| {label} | {_groups(r)} | {r['ttft_p50_s']:.2f} / {r['ttft_p99_s']:.2f} | "
                   f"{r['itl_p50_s'] * 1e3:.1f} / {r['itl_p99_s'] * 1e3:.1f} | {r['goodput']:.3f} | "
                   f"{r['goodput_rps']:.2f} | {r['gpu_hours']:.1f} | {r['gpu_hours'] / base:.2f} |")
    return "\n".join(out)


def pictures(runs: list[dict[str, Any]], outdir: str) -> list[str]:
    """Per setting: demand vs provisioned groups over time, prefill role on top, decode role (and the aggregated
    groups) below; static fleets as dotted levels."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing: run `hack/setup-python --bench` for the pictures", file=sys.stderr)
        return []
    os.makedirs(outdir, exist_ok=True)
    written = []
    for run in runs:
        res = run["results"]
        pa = res.get("pd_autoscaled")
        if pa is None:
            continue
        fig, (top, bot) = plt.subplots(2, 1, figsize=(11, 6.4), dpi=110, sharex=True)
        tl = pa["timeline"]
        mins = [row[0] / 60 for row in tl]
        top.fill_between(mins, [row[3] for row in tl], step="post", color="tab:red", alpha=0.15,
                         label="prefill demand (uncached prompt tokens arriving / one group's tokens/s)")
        top.step(mins, [row[1] for row in tl], where="post", color="tab:blue", lw=1.6,
                 label=f"PD autoscaled prefill groups ({pa['gpu_hours']:.0f} GPU-h, both roles)")
        top.axhline(res["pd"]["prefill_groups"], color="tab:gray", ls=":", label="PD static prefill groups")
        top.set_ylabel("prefill groups")
        top.legend(loc="upper right", fontsize=7)
        top.grid(alpha=0.3)
        bot.fill_between(mins, [row[4] for row in tl], step="post", color="tab:red", alpha=0.15,
                         label="PD decode KV in use (groups at 100 %)")
        aa = res["aggregated_autoscaled"]
        bot.step(mins, [row[2] for row in tl], where="post", color="tab:blue", lw=1.6,
                 label="PD autoscaled decode groups")
        bot.step([row[0] / 60 for row in aa["timeline"]], [row[2] for row in aa["timeline"]], where="post",
                 color="tab:orange", lw=1.4, label=f"aggregated autoscaled groups ({aa['gpu_hours']:.0f} GPU-h)")
        bot.axhline(res["pd"]["decode_groups"], color="tab:gray", ls=":", label="PD static decode groups")
        bot.axhline(res["aggregated"]["decode_groups"], color="tab:orange", ls=":",
                    label="aggregated static groups")
        waits = [(row[0] / 60, row[5]) for row in tl if row[5] > 0]
        if waits:
            bot.scatter([w[0] for w in waits], [0.1] * len(waits), marker="|", color="tab:red", s=30,
                        label="PD: requests waiting for decode KV")
        bot.set_ylabel("decode / aggregated groups")
        bot.set_xlabel("minutes")
        bot.legend(loc="upper right", fontsize=7)
        bot.grid(alpha=0.3)
        top.set_title(f"{run['setting']['name']}: demand vs provisioned groups per role (laws every 15 s, "
                      f"cold start 300 s)", fontsize=10)
        fig.tight_layout()
        name = os.path.join(outdir, f"pd-{run['setting']['name']}.png")
        fig.savefig(name)
        plt.close(fig)
        written.append(name)
    return written


def calibration_table() -> str:
    from moe_operator.planner import throughput

    out = ["| point | published | model | error | fitted? |", "|---|---|---|---|---|"]
    for c in throughput.checks():
        out.append(f"| {c.name} | {c.published:,.4g} | {c.model:,.4g} | {c.error:+.1%} | "
                   f"{'fitted' if c.fitted else 'extrapolated'} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench/results/pd.json")
    ap.add_argument("--quick", action="store_true", help="shortened workloads (a smoke run)")
    ap.add_argument("--max-groups", type=int, default=48)
    ap.add_argument("--from-json", help="print the tables (and draw the pictures) of a previous run")
    ap.add_argument("--pictures", default="bench/results", help="folder for the PNG timelines")
    a = ap.parse_args(argv)
    if a.from_json:
        with open(a.from_json, encoding="utf-8") as f:
            runs = json.load(f)["runs"]
    else:
        runs = []
        for s in settings(a.quick):
            print(f"running {s['name']} ...", file=sys.stderr, flush=True)
            runs.append(run_setting(s, a.max_groups))
        os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
        with open(a.out, "w", encoding="utf-8") as f:
            json.dump({"command": " ".join(["bench/pd.py", *(argv if argv is not None else sys.argv[1:])]),
                       "model": MODEL, "runs": runs}, f, indent=1)
    print(calibration_table())
    print()
    for r in runs:
        print(table(r))
        print()
    for r in runs:
        print(f"{r['setting']['name']}: {r['wall_s']:.1f} s (static searches {r.get('static_search_wall_s', 0):.1f} s)",
              file=sys.stderr)
    for name in pictures(runs, a.pictures):
        print(f"picture: {name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
