"""Autoscaling benchmark: every policy on agent-session workloads and the shared traces, three cold starts, with a
timeline picture per setting.

    hack/setup-python --bench      # once: matplotlib for the pictures
    .venv/bin/python bench/autoscale.py [--jobs 2] [--out bench/results/autoscale.json] [--quick]
    .venv/bin/python bench/autoscale.py --from-json bench/results/autoscale.json   # tables (and pictures) only

Workloads: generated long-context coding-agent sessions (`moe_sim.workloads`, presets `agents`, `agents-busy`,
`swarm`; every parameter in that module's docstring, seeded) and the shared traces (see /work/shared/traces/README.md):
Mooncake FAST'25 conversation trace (kvcache-ai/Mooncake, Apache-2.0) and the Azure LLM inference trace 2023,
conversation (Azure/AzurePublicDataset, CC-BY-4.0). Groups: Kimi-K2.5 INT4 on H200 with FP8 KV, the layout the
planner picks for 100 sessions at the workload's longest request (1 node, TP 8, attention DP 8).

References (honest by construction, moe_sim.offline): `oracle` = the cheapest perfect-foresight schedule with 0 s of
KV exhaustion (its sizing utilization searched), `static` = the smallest fixed fleet with 0 s of exhaustion; every
other policy starts from the fleet the warm-up window showed it needs (no foresight). Prints a markdown table per
setting with ratios, then the issue's targets; writes bench/results/autoscale/<setting>-<cold>.png.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from typing import Any

TRACES = os.environ.get("MOE_TRACES", "/work/shared/traces")
MODEL = ("kimi-k2.5", "int4", "h200", "fp8_e4m3")
PLAN_SESSIONS = 100
# (label, source, load scale): source "workload:<preset>" or a trace file under TRACES
SETTINGS = [
    ("agents (40 sessions/min peak)", "workload:agents", 1),
    # ("agents-busy (120 sessions/min peak)", "workload:agents-busy", 1),  # 182k requests: ~2 min per replay
    ("swarm (6 sessions/min, 8 % of turns fan out 10-100 sub-agents)", "workload:swarm", 1),
    ("mooncake x16 load", "mooncake_conversation.jsonl", 16),
    ("azure x64 load", "azure_llm_conv_2023.csv", 64),
]
COLD = [60.0, 300.0, 900.0]
POLICIES = ["moe", "hpa", "keda", "keda2", "static", "oracle"]
PICTURED = ["moe", "keda2", "static", "oracle"]


@functools.lru_cache(maxsize=4)
def _requests(source: str, load: int) -> tuple[Any, ...]:
    from moe_sim import offline, workloads

    if source.startswith("workload:"):
        return tuple(workloads.generate(workloads.PRESETS[source.split(":", 1)[1]]))
    return tuple(offline.load_trace(os.path.join(TRACES, source), 1.0, load))


def _command(source: str, load: int, cold: float, policy: str) -> str:
    src = f"--workload {source.split(':', 1)[1]}" if source.startswith("workload:") else \
        f"--trace {TRACES}/{source} --load-scale {load}"
    return (f"moe-operator simulate {src} --model {MODEL[0]} --precision {MODEL[1]} --accelerator {MODEL[2]} "
            f"--kv-dtype {MODEL[3]} --plan-sessions {PLAN_SESSIONS} --policy {policy} --cold-start {cold:g} "
            f"-o json --timeline")


def one(job: tuple[str, str, int, float, str]) -> dict[str, Any]:
    label, source, load, cold, policy = job
    from moe_operator.planner import PlanRequest, plan
    from moe_sim import offline as sim

    reqs = list(_requests(source, load))
    context = max(r.input_len + r.output_len for r in reqs)
    pl = plan(PlanRequest(model=MODEL[0], precision=MODEL[1], sessions=PLAN_SESSIONS, context=context,
                          accelerator=MODEL[2], kv_dtype=MODEL[3]))
    cfg = sim.SimConfig(dp_ranks=pl.attn_dp_size, rank_tokens=pl.max_total_tokens_per_dp, cold_start_s=cold)
    t0 = time.perf_counter()
    pol = sim.make_policy(policy, reqs, cfg)
    res = sim.simulate(reqs, cfg, pol)
    d = asdict(res)
    d.pop("reasons")
    d.update(label=label, source=source, load_scale=load, cold_start_s=cold, group_kv_tokens=cfg.group_tokens,
             gpus_per_group=pl.gpus_per_group, search_and_run_s=time.perf_counter() - t0,
             oracle_utilization=getattr(pol, "utilization", None),
             static_groups=getattr(pol, "groups", None) if policy == "static" else None,
             command=_command(source, load, cold, policy))
    if policy == "oracle":  # the demand the pictures draw (unconstrained, 15 s slots), in KV tokens
        d["demand_curve"] = sim.demand_curve(reqs, cfg.decode_tps, cfg.prefill_tps, sim.ORACLE_SLOT_S)
    return d


def _by(rows: list[dict[str, Any]]) -> dict[tuple[str, float, str], dict[str, Any]]:
    out = {}
    for r in rows:
        out[(r["label"], r["cold_start_s"], r["policy"])] = r
    return out


def _static(by: dict, label: str, cold: float) -> dict[str, Any] | None:
    return by.get((label, cold, "static")) or next((v for (lab, _, p), v in by.items()
                                                   if lab == label and p == "static"), None)


def table(rows: list[dict[str, Any]]) -> str:
    out = []
    by = _by(rows)
    for label, *_ in SETTINGS:
        for cold in COLD:
            o = by.get((label, cold, "oracle"))
            if o is None:
                continue
            s = _static(by, label, cold)
            k = by.get((label, cold, "keda2"))
            out.append(f"\n**{label}**, cold start {cold:.0f} s ({o['requests']:,} requests, "
                       f"{o['span_s'] / 60:.0f} min, group = {o['gpus_per_group']} GPUs, "
                       f"{o['group_kv_tokens']:,} KV tokens; oracle sized at utilization "
                       f"{o['oracle_utilization']:.2f}, static = {s['static_groups'] if s else '?'} groups)\n")
            out.append("| policy | group-hours | vs oracle | vs static | vs keda2 | KV-exh. s after warm-up "
                       "| waited | wait p99 s | wait max s | peak/mean groups | scale events |")
            out.append("|---|---|---|---|---|---|---|---|---|---|---|")
            for p in POLICIES:
                r = by.get((label, cold, p)) or (s if p == "static" else None)
                if r is None:
                    continue
                gh = r["group_hours"]
                out.append(
                    f"| {p} | {gh:.2f} | {gh / o['group_hours']:.2f}x "
                    f"| {gh / s['group_hours']:.2f}x | {gh / k['group_hours']:.2f}x "
                    f"| {r['kv_exhaustion_seconds_after_warmup']:.0f} "
                    f"| {r['requests_waited']} | {r['queue_wait_p99_s']:.1f} | {r['queue_wait_max_s']:.1f} "
                    f"| {r['peak_groups']}/{r['mean_groups']:.2f} | {r['scale_events']} |")
    return "\n".join(out)


def targets(rows: list[dict[str, Any]]) -> str:
    by = _by(rows)
    out = ["\n| setting | cold s | moe exh. after warm-up <= 1 s | gh <= 1.15x oracle | gh <= 0.70x static "
           "| waited: keda2 / moe >= 5 at <= keda2 gh |", "|---|---|---|---|---|---|"]
    for label, *_ in SETTINGS:
        for cold in COLD:
            m = by.get((label, cold, "moe"))
            if m is None:
                continue
            o, k, s = by[(label, cold, "oracle")], by[(label, cold, "keda2")], _static(by, label, cold)
            me = m["kv_exhaustion_seconds_after_warmup"]
            mw, kw = m["requests_waited"], k["requests_waited"]
            ratio = "inf" if mw == 0 and kw > 0 else ("n/a (both 0)" if mw == 0 else f"{kw / mw:.1f}")
            ok5 = ((mw == 0 and kw > 0) or (mw > 0 and kw / mw >= 5)) and m["group_hours"] <= k["group_hours"]
            out.append(
                f"| {label} | {cold:.0f} | {'yes' if me <= 1 else 'NO'} ({me:.0f} s) "
                f"| {'yes' if m['group_hours'] <= 1.15 * o['group_hours'] else 'NO'} "
                f"({m['group_hours'] / o['group_hours']:.2f}x) "
                f"| {'yes' if s and m['group_hours'] <= 0.70 * s['group_hours'] else 'NO'} "
                f"({m['group_hours'] / s['group_hours']:.2f}x) "
                f"| {'yes' if ok5 else 'NO'} ({ratio}; gh {m['group_hours'] / k['group_hours']:.2f}x keda2) |")
    return "\n".join(out)


def pictures(rows: list[dict[str, Any]], outdir: str) -> list[str]:
    """Demand vs provisioned groups per policy over time, KV exhaustion marked: one PNG per setting and cold start."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing: run `hack/setup-python --bench` for the pictures", file=sys.stderr)
        return []
    os.makedirs(outdir, exist_ok=True)
    by = _by(rows)
    written = []
    colors = {"moe": "tab:blue", "keda2": "tab:orange", "static": "tab:gray", "oracle": "tab:green"}
    for i, (label, *_rest) in enumerate(SETTINGS):
        for cold in COLD:
            o = by.get((label, cold, "oracle"))
            if o is None:
                continue
            fig, ax = plt.subplots(figsize=(11, 4.2), dpi=110)
            g = o["group_kv_tokens"]
            curve = o.get("demand_curve") or []
            ax.fill_between([k * 15 / 60 for k in range(len(curve))], [c / g for c in curve], step="post",
                            color="tab:red", alpha=0.12, label="demand (groups at 100 % KV)")
            lanes = 0
            for p in PICTURED:
                r = by.get((label, cold, p)) or (_static(by, label, cold) if p == "static" else None)
                if r is None:
                    continue
                tl = r.get("timeline") or []
                ax.step([t / 60 for t, _, _ in tl], [n for _, n, _ in tl], where="post", color=colors[p],
                        lw=1.6 if p == "moe" else 1.1, label=f"{p} ({r['group_hours']:.1f} group-h)")
                for a, b in r.get("exhaustion") or []:
                    if b - a >= 1.0 and b > r["warmup_s"]:
                        ax.axvspan(a / 60, b / 60, ymin=0.02 + 0.03 * lanes, ymax=0.045 + 0.03 * lanes,
                                   color=colors[p], alpha=0.9)
                lanes += 1
            ax.set_xlabel("minutes")
            ax.set_ylabel("groups")
            ax.set_title(f"{label}, cold start {cold:.0f} s — bars at the bottom: KV exhaustion (requests wait)",
                         fontsize=10)
            ax.legend(loc="upper left", fontsize=8)
            ax.grid(alpha=0.3)
            name = os.path.join(outdir, f"{i}-{label.split(' ')[0]}-cold{cold:.0f}.png")
            fig.tight_layout()
            fig.savefig(name)
            plt.close(fig)
            written.append(name)
    return written


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="bench/results/autoscale.json")
    ap.add_argument("--pictures", default="bench/results/autoscale")
    ap.add_argument("--quick", action="store_true", help="first setting, cold start 300 s only")
    ap.add_argument("--only", help="settings whose label starts with this")
    ap.add_argument("--from-json", help="only print the tables (and draw the pictures) from an earlier --out file")
    a = ap.parse_args()
    if a.from_json:
        with open(a.from_json) as f:
            rows = json.load(f)["runs"]
    else:
        settings = SETTINGS[:1] if a.quick else [s for s in SETTINGS if not a.only or s[0].startswith(a.only)]
        colds = [300.0] if a.quick else COLD
        jobs = [(lab, src, ls, c, p) for lab, src, ls in settings for c in colds for p in POLICIES
                if not (p == "static" and c != colds[0])]  # static does not depend on the cold start
        jobs.sort(key=lambda j: (j[4] not in ("oracle", "static"), j[1]))  # the searches first
        t0 = time.time()
        with ProcessPoolExecutor(max_workers=a.jobs) as ex:
            rows = list(ex.map(one, jobs))
        print(f"{len(rows)} runs in {time.time() - t0:.0f}s", file=sys.stderr)
        os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
        with open(a.out, "w") as f:
            json.dump({"model": MODEL, "plan_sessions": PLAN_SESSIONS, "cold_starts": COLD, "runs": rows}, f)
    print(table(rows))
    print(targets(rows))
    for name in pictures(rows, a.pictures):
        print(f"picture: {name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
