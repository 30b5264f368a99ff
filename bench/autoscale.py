"""Autoscaling benchmark: every policy on both traces, two load settings each, three cold starts.

    .venv/bin/python bench/autoscale.py [--jobs 2] [--out bench/results/autoscale.json] [--quick]

Traces (see /work/shared/traces/README.md): Mooncake FAST'25 conversation trace (kvcache-ai/Mooncake, Apache-2.0)
and the Azure LLM inference trace 2023, conversation (Azure/AzurePublicDataset, CC-BY-4.0). Groups: Kimi-K2.5 INT4
on H200, sized by the planner for the trace's longest request. Prints a markdown table per setting with ratios vs
the oracle, static peak provisioning and the KEDA baseline, then checks the issue's targets.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict

TRACES = os.environ.get("MOE_TRACES", "/work/shared/traces")
MODEL = ("kimi-k2.5", "int4", "h200")
# (label, trace file, rate scale, load scale)
SETTINGS = [
    ("mooncake x4 load", "mooncake_conversation.jsonl", 1.0, 4),
    ("mooncake x8 load", "mooncake_conversation.jsonl", 1.0, 8),
    ("mooncake rate/4 x8 load", "mooncake_conversation.jsonl", 4.0, 8),
    ("azure x64 load", "azure_llm_conv_2023.csv", 1.0, 64),
    ("azure rate/2 x64 load", "azure_llm_conv_2023.csv", 2.0, 64),
]
COLD = [60.0, 300.0, 900.0]
POLICIES = ["moe", "hpa", "keda", "static", "oracle"]


def one(job: tuple[str, str, float, int, float, str]) -> dict:
    label, trace, rate, load, cold, policy = job
    from moe_operator.planner import PlanRequest, plan
    from moe_sim import offline as sim

    reqs = sim.load_trace(os.path.join(TRACES, trace), rate, load)
    context = max(r.input_len + r.output_len for r in reqs)
    pl = plan(PlanRequest(model=MODEL[0], precision=MODEL[1], sessions=1, context=context, accelerator=MODEL[2]))
    cfg = sim.SimConfig(dp_ranks=pl.attn_dp_size, rank_tokens=pl.max_total_tokens_per_dp, cold_start_s=cold)
    res = sim.simulate(reqs, cfg, sim.make_policy(policy, reqs, cfg))
    d = asdict(res)
    d.pop("reasons")
    d.update(label=label, trace=trace, rate_scale=rate, load_scale=load, cold_start_s=cold,
             group_kv_tokens=cfg.group_tokens, gpus_per_group=pl.gpus_per_group)
    cmd = (f"moe-operator simulate --trace {TRACES}/{trace} --model {MODEL[0]} --precision {MODEL[1]} "
           f"--accelerator {MODEL[2]} --policy {policy} --rate-scale {rate:g} --load-scale {load} "
           f"--cold-start {cold:g} -o json")
    d["command"] = cmd
    return d


def table(rows: list[dict]) -> str:
    out = []
    by = {(r["label"], r["cold_start_s"], r["policy"]): r for r in rows}
    for label, *_ in SETTINGS:
        for cold in COLD:
            if (label, cold, "oracle") not in by:
                continue
            o = by[(label, cold, "oracle")]
            s = by.get((label, cold, "static")) or by.get((label, 300.0, "static"))
            k = by[(label, cold, "keda")]
            out.append(f"\n**{label}**, cold start {cold:.0f} s ({o['requests']:,} requests, "
                       f"{o['span_s'] / 60:.0f} min, group = {o['gpus_per_group']} GPUs, "
                       f"{o['group_kv_tokens']:,} KV tokens)\n")
            out.append("| policy | group-hours | vs oracle | vs static | vs keda | KV-exh. s (after warm-up) "
                       "| waited | wait p99 s | wait max s | peak/mean groups | scale events |")
            out.append("|---|---|---|---|---|---|---|---|---|---|---|")
            for p in POLICIES:
                r = by.get((label, cold, p)) or (by.get((label, 300.0, p)) if p == "static" else None)
                if r is None:
                    continue
                out.append(
                    f"| {p} | {r['group_hours']:.2f} | {r['group_hours'] / o['group_hours']:.2f}x "
                    f"| {r['group_hours'] / s['group_hours']:.2f}x | {r['group_hours'] / k['group_hours']:.2f}x "
                    f"| {r['kv_exhaustion_seconds']:.0f} ({r['kv_exhaustion_seconds_after_warmup']:.0f}) "
                    f"| {r['requests_waited']} | {r['queue_wait_p99_s']:.1f} | {r['queue_wait_max_s']:.1f} "
                    f"| {r['peak_groups']}/{r['mean_groups']:.2f} | {r['scale_events']} |")
    return "\n".join(out)


def targets(rows: list[dict]) -> str:
    by = {(r["label"], r["cold_start_s"], r["policy"]): r for r in rows}
    out = ["\n| setting | cold s | exh. after warm-up = 0 | gh <= 1.15x oracle | gh <= 0.70x static "
           "| keda exh. / moe exh. >= 5 at <= keda gh |", "|---|---|---|---|---|---|"]
    for label, *_ in SETTINGS:
        for cold in COLD:
            m = by.get((label, cold, "moe"))
            if m is None:
                continue
            o, k = by[(label, cold, "oracle")], by[(label, cold, "keda")]
            s = by.get((label, cold, "static")) or by[(label, 300.0, "static")]
            me, ke = m["kv_exhaustion_seconds_after_warmup"], k["kv_exhaustion_seconds_after_warmup"]
            ratio = "inf" if me == 0 and ke > 0 else ("n/a (both 0)" if me == 0 else f"{ke / me:.1f}")
            ok5 = ((me == 0 and ke > 0) or (me > 0 and ke / me >= 5)) and m["group_hours"] <= k["group_hours"]
            out.append(
                f"| {label} | {cold:.0f} | {'yes' if me == 0 else 'NO'} ({me:.0f} s) "
                f"| {'yes' if m['group_hours'] <= 1.15 * o['group_hours'] else 'NO'} "
                f"({m['group_hours'] / o['group_hours']:.2f}x) "
                f"| {'yes' if m['group_hours'] <= 0.70 * s['group_hours'] else 'NO'} "
                f"({m['group_hours'] / s['group_hours']:.2f}x) "
                f"| {'yes' if ok5 else 'NO'} ({ratio}; gh {m['group_hours'] / k['group_hours']:.2f}x keda) |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="bench/results/autoscale.json")
    ap.add_argument("--quick", action="store_true", help="first setting, default cold start only")
    ap.add_argument("--from-json", help="only print the tables from an earlier --out file")
    a = ap.parse_args()
    if a.from_json:
        with open(a.from_json) as f:
            rows = json.load(f)["runs"]
    else:
        settings = SETTINGS[:1] if a.quick else SETTINGS
        colds = [300.0] if a.quick else COLD
        jobs = [(lab, tr, rs, ls, c, p) for lab, tr, rs, ls in settings for c in colds for p in POLICIES
                if not (p == "static" and c != 300.0)]
        # the longest jobs first
        jobs.sort(key=lambda j: -(j[3] * (19 if "azure" in j[1] else 12)))
        t0 = time.time()
        with ProcessPoolExecutor(max_workers=a.jobs) as ex:
            rows = list(ex.map(one, jobs))
        print(f"{len(rows)} runs in {time.time() - t0:.0f}s", file=sys.stderr)
        os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
        with open(a.out, "w") as f:
            json.dump({"model": MODEL, "cold_starts": COLD, "runs": rows}, f, indent=1)
    print(table(rows))
    print(targets(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
