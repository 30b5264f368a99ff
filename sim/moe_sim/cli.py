"""`moe-operator simulate`: replay a request trace through the autoscaling control law and its baselines.

Import-light: only argparse at import time; the simulator and the planner are imported in run()."""

from __future__ import annotations

import argparse
import sys
from typing import Any

POLICIES = ("moe", "hpa", "keda", "keda2", "static", "oracle")


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--trace", help="Mooncake JSONL or Azure LLM CSV trace")
    src.add_argument("--workload", help="a generated workload instead of a trace: agents, agents-busy, swarm, "
                     "agents-diurnal (moe_sim.workloads; parameters with --workload-param)")
    p.add_argument("--workload-param", action="append", default=[], metavar="NAME=VALUE",
                   help="override a workload parameter, e.g. peak_sessions_per_min=60 (repeatable)")
    p.add_argument("--stream", action="store_true",
                   help="--workload: generate the trace while replaying it instead of holding it (a week of "
                        "agents-diurnal is ~42 M requests); groups are planned for --context or the workload's "
                        "context_limit; not with --policy oracle/static (they replay the whole trace many times) "
                        "nor --pd")
    p.add_argument("--model", required=True, help="catalog model id (see `moe-operator plan --help`)")
    p.add_argument("--precision", required=True)
    p.add_argument("--accelerator", required=True)
    p.add_argument("--kv-dtype", default="fp8_e4m3", help="KV cache dtype the groups are planned with (default "
                   "fp8_e4m3, as the README's Kimi example)")
    p.add_argument("--plan-sessions", type=int, default=100,
                   help="sessions the group layout is planned for (default 100: the layout of a fleet, not of one "
                        "session)")
    p.add_argument("--context", type=int, default=None,
                   help="context the groups are planned for (default: the trace's longest request)")
    p.add_argument("--policy", choices=POLICIES, default="moe")
    p.add_argument("--rate-scale", type=float, default=1.0, help="divide the trace's timestamps by X")
    p.add_argument("--load-scale", type=int, default=1,
                   help="replay K copies of the trace (disjoint prefixes, staggered): K x load over the same hour")
    p.add_argument("--cold-start", type=float, default=None, help="seconds from 'group added' to 'group serves' "
                   "(default 300)")
    p.add_argument("--decode-tps", type=float, default=None, help="decode tokens/s per request (default 20)")
    p.add_argument("--prefill-tps", type=float, default=None, help="prefill tokens/s per request (default 8192)")
    p.add_argument("--target", type=float, default=0.7, help="target KV utilization")
    p.add_argument("--min-groups", type=int, default=1)
    p.add_argument("--max-groups", type=int, default=64)
    p.add_argument("--warmup", type=float, default=120.0,
                   help="seconds before policies act (the replay starts from an empty fleet)")
    p.add_argument("--horizon", type=float, default=None, help="law: forecast horizon (default: --cold-start)")
    p.add_argument("--stabilization", type=float, default=600.0,
                   help="law: scale-down stabilization seconds (default 600, the API's)")
    p.add_argument("--trend-window", type=float, default=None,
                   help="law: trend window seconds (default max(180, horizon / 2))")
    p.add_argument("--reasons", action="store_true", help="print the law's scale decisions (table output)")
    p.add_argument("--timeline", action="store_true",
                   help="JSON output: add the 15 s timeline (t, groups, queued) and the KV-exhaustion intervals")
    p.add_argument("--pd", action="store_true",
                   help="compute-aware replay (moe_sim.pd): aggregated vs prefill/decode disaggregation, each at its "
                        "smallest static fleet meeting the SLOs, side by side (--policy is ignored)")
    p.add_argument("--ttft-slo", type=float, default=2.0, help="--pd: TTFT SLO seconds (default 2, Dynamo's sweep)")
    p.add_argument("--itl-slo", type=float, default=0.05,
                   help="--pd: per-request average ITL SLO seconds (default 0.05)")
    p.add_argument("--goodput-target", type=float, default=0.99,
                   help="--pd: fraction of requests within both SLOs a fleet must reach (default 0.99)")
    p.add_argument("--kv-link-gbps", type=float, default=400.0,
                   help="--pd: RDMA bandwidth of one prefill->decode KV transfer, Gbit/s (default 400)")
    p.add_argument("--autoscale", action="store_true",
                   help="--pd: also replay both modes autoscaled with the operator's laws (decode / aggregated on KV, "
                        "prefill on prompt rate + backlog, every 15 s, --cold-start for new groups, drains before "
                        "removal): four columns, aggregated and PD, static and autoscaled")
    p.add_argument("--autoscale-initial", choices=("min", "static"), default="min",
                   help="--pd --autoscale: start from one group per role (min, default) or from the static fleet")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")


def build(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    """(requests: a list, or with --stream an iterator, SimConfig, the parameters echoed in the output)."""
    from moe_operator.planner import PlanRequest, plan
    from moe_sim import offline as sim
    from moe_sim import workloads

    reqs: Any
    if getattr(args, "stream", False):
        if not args.workload:
            raise ValueError("--stream needs --workload (a trace file is read whole to be sorted and checked)")
        if args.policy in ("oracle", "static") or getattr(args, "pd", False):
            raise ValueError("--stream: --policy oracle/static and --pd replay the whole trace more than once; "
                             "drop --stream")
        w = workload_spec(args.workload, args.workload_param)
        reqs = workloads.stream(w)
        context = args.context or w.context_limit  # no request is longer; the trace's longest is known only at its end
    elif args.trace:
        reqs = sim.load_trace(args.trace, args.rate_scale, args.load_scale)
        context = args.context or max(r.input_len + r.output_len for r in reqs)
    else:
        reqs = workload_requests(args.workload, args.workload_param)
        context = args.context or max(r.input_len + r.output_len for r in reqs)
    pl = plan(PlanRequest(model=args.model, precision=args.precision, sessions=args.plan_sessions, context=context,
                          accelerator=args.accelerator, kv_dtype=args.kv_dtype))
    cfg = sim.SimConfig(
        dp_ranks=pl.attn_dp_size, rank_tokens=pl.max_total_tokens_per_dp,
        cold_start_s=sim.DEFAULT_COLD_START_S if args.cold_start is None else args.cold_start,
        decode_tps=args.decode_tps or sim.DEFAULT_DECODE_TPS, prefill_tps=args.prefill_tps or sim.DEFAULT_PREFILL_TPS,
        target=args.target, min_groups=args.min_groups, max_groups=args.max_groups, warmup_s=args.warmup)
    echo = {
        "trace": args.trace, "workload": args.workload, "workload_params": args.workload_param,
        "kv_dtype": args.kv_dtype, "plan_sessions": args.plan_sessions, "model": args.model,
        "precision": args.precision, "accelerator": args.accelerator, "stream": bool(getattr(args, "stream", False)),
        "context": context, "rate_scale": args.rate_scale, "load_scale": args.load_scale,
        "cold_start_s": cfg.cold_start_s, "decode_tps": cfg.decode_tps, "prefill_tps": cfg.prefill_tps,
        "target": cfg.target, "min_groups": cfg.min_groups, "max_groups": cfg.max_groups, "warmup_s": cfg.warmup_s,
        "group": {"nodes": pl.nodes_per_group, "gpus": pl.gpus_per_group, "attn_dp_size": pl.attn_dp_size,
                  "max_total_tokens_per_dp": pl.max_total_tokens_per_dp, "kv_tokens": cfg.group_tokens,
                  "chunked_prefill_size": pl.chunked_prefill_size},
    }
    return reqs, cfg, echo


def workload_requests(name: str, params: list[str]) -> list[Any]:
    from moe_sim import workloads

    return workloads.generate(workload_spec(name, params))


def workload_spec(name: str, params: list[str]) -> Any:
    from moe_sim import workloads

    if name not in workloads.PRESETS:
        raise ValueError(f"unknown workload {name!r}; choose from {', '.join(workloads.PRESETS)}")
    overrides: dict[str, object] = {}
    for kv in params:
        k, sep, v = kv.partition("=")
        if not sep:
            raise ValueError(f"--workload-param {kv!r}: expected NAME=VALUE")
        overrides[k] = v if k == "profile" else float(v) if "." in v or "e" in v else int(v)
    return workloads.with_overrides(workloads.PRESETS[name], **overrides)


def workload_stream(args: argparse.Namespace) -> Any:
    from moe_sim import workloads

    return workloads.stream(workload_spec(args.workload, args.workload_param))


def run(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from moe_operator.planner import PlanError
    from moe_sim import offline as sim

    if getattr(args, "pd", False):
        return run_pd(args)
    try:
        reqs, cfg, echo = build(args)
        # a streamed trace: the policies it allows read only the warm-up window's requests (from a stream of their own)
        seen = (sim.warmup_requests(workload_stream(args), cfg) if getattr(args, "stream", False) else reqs)
        policy = sim.make_policy(args.policy, seen, cfg, horizon_s=args.horizon, stabilization_s=args.stabilization,
                                 trend_window_s=args.trend_window)
    except (OSError, ValueError, KeyError, PlanError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    res = sim.simulate(reqs, cfg, policy)
    out = asdict(res)
    reasons = out.pop("reasons")
    timeline, exhaustion = out.pop("timeline"), out.pop("exhaustion")
    if args.timeline:
        out["timeline"], out["exhaustion"] = timeline, exhaustion
    out["parameters"] = echo
    if args.output == "json":
        if args.reasons:
            out["reasons"] = reasons
        print(json.dumps(out, indent=2))
        return 0
    g = echo["group"]
    chosen = getattr(policy, "utilization", None)
    if chosen is not None:
        print(f"oracle: cheapest zero-exhaustion foresight schedule sizes demand at utilization {chosen:.2f}")
    if args.policy == "static":
        print(f"static: smallest zero-exhaustion fleet {getattr(policy, 'groups', '?')} groups")
    print(f"{args.policy}: {res.requests} requests over {res.span_s / 60:.1f} min, groups of {g['gpus']} "
          f"{args.accelerator} ({g['kv_tokens']:,} KV tokens), cold start {cfg.cold_start_s:.0f}s, "
          f"decode {cfg.decode_tps:g} tok/s/request, target {cfg.target:.2f}")
    rows = [
        ("group-hours", f"{res.group_hours:.2f}"),
        ("KV-exhaustion seconds (after warm-up)", f"{res.kv_exhaustion_seconds:.0f} "
                                                  f"({res.kv_exhaustion_seconds_after_warmup:.0f})"),
        ("requests that waited for KV", f"{res.requests_waited}"),
        ("queue wait p50 / p99 / max (s)", f"{res.queue_wait_p50_s:.1f} / {res.queue_wait_p99_s:.1f} / "
                                           f"{res.queue_wait_max_s:.1f}"),
        ("scale events / groups started", f"{res.scale_events} / {res.groups_started}"),
        ("groups initial / peak / mean", f"{res.initial_groups} / {res.peak_groups} / {res.mean_groups:.2f}"),
        ("peak KV utilization", f"{res.peak_kv_utilization:.2f}"),
        ("prefix cache hit rate", f"{res.cache_hit_rate:.2f}"),
        ("rejected (longer than a DP rank's KV)", f"{res.rejected}"),
        ("simulation wall time (s)", f"{res.wall_s:.1f}"),
    ]
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{w}}  {v}")
    if args.reasons:
        for t, why in reasons:
            print(f"  t={t:7.0f}s  {why}")
    return 0


def pd_config(args: argparse.Namespace, cfg: Any, echo: dict[str, Any]) -> Any:
    from moe_sim import pd

    g = echo["group"]
    return pd.PDConfig(model=args.model, accelerator=args.accelerator, precision=args.precision, gpus=g["gpus"],
                       group_kv_tokens=g["kv_tokens"], kv_dtype=args.kv_dtype, chunk_tokens=g["chunked_prefill_size"],
                       ttft_slo_s=args.ttft_slo, itl_slo_s=args.itl_slo, link_bytes_per_s=args.kv_link_gbps / 8 * 1e9,
                       cold_start_s=cfg.cold_start_s, goodput_target=args.goodput_target, max_groups=args.max_groups)


PD_ROWS = (
    ("groups (prefill + decode)", lambda r: f"{r.prefill_groups} + {r.decode_groups}" if r.mode == "pd"
     else f"{r.decode_groups}"),
    ("GPUs (autoscaled: peak)", lambda r: f"{r.gpus}"),
    ("mean groups (prefill + decode)", lambda r: f"{r.mean_prefill_groups:.1f} + {r.mean_decode_groups:.1f}"
     if r.mode == "pd" else f"{r.mean_decode_groups:.1f}"),
    ("TTFT p50 / p99 (s)", lambda r: f"{r.ttft_p50_s:.2f} / {r.ttft_p99_s:.2f}"),
    ("ITL p50 / p99 (ms)", lambda r: f"{r.itl_p50_s * 1e3:.1f} / {r.itl_p99_s * 1e3:.1f}"),
    ("goodput (fraction within both SLOs)", lambda r: f"{r.goodput:.3f}"),
    ("goodput (requests/s)", lambda r: f"{r.goodput_rps:.2f}"),
    ("GPU-hours (ramp + drain counted)", lambda r: f"{r.gpu_hours:.1f}"),
    ("completed / rejected", lambda r: f"{r.completed} / {r.rejected}"),
)


def run_pd(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from moe_operator.planner import PlanError
    from moe_sim import pd

    try:
        reqs, cfg, echo = build(args)
        pcfg = pd_config(args, cfg, echo)
        res = pd.compare(reqs, pcfg)
        if getattr(args, "autoscale", False):
            miss = pd.uncached_tokens(reqs)
            for mode in pd.MODES:
                st = res[mode]
                init = (max(1, st.prefill_groups), st.decode_groups) if args.autoscale_initial == "static" else (1, 1)
                sc = pd.autoscale_params(reqs, pcfg, miss, init[0], init[1])
                res[f"{mode}_autoscaled"] = pd.replay(reqs, pcfg, mode, 0, 0, miss, sc)
    except (OSError, ValueError, KeyError, PlanError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    agg, dis = res["aggregated"], res["pd"]
    if args.output == "json":
        out: dict[str, Any] = {k: asdict(v) for k, v in res.items()}
        out["gpu_hours_ratio_pd_over_aggregated"] = dis.gpu_hours / agg.gpu_hours if agg.gpu_hours else None
        out["parameters"] = {**echo, "ttft_slo_s": pcfg.ttft_slo_s, "itl_slo_s": pcfg.itl_slo_s,
                             "goodput_target": pcfg.goodput_target, "kv_link_gbps": args.kv_link_gbps}
        print(json.dumps(out, indent=2))
        return 0
    g = echo["group"]
    print(f"pd: {len(reqs)} requests, groups of {g['gpus']} {args.accelerator} ({args.model} {args.precision}), "
          f"SLOs TTFT {pcfg.ttft_slo_s:g} s / ITL {pcfg.itl_slo_s * 1e3:g} ms, goodput target "
          f"{pcfg.goodput_target:g}, KV link {args.kv_link_gbps:g} Gb/s; smallest static fleet per mode"
          + (f"; autoscaled from {args.autoscale_initial}, cold start {pcfg.cold_start_s:g} s" if "pd_autoscaled" in res
             else ""))
    cols = [("aggregated", agg), ("PD", dis)]
    if "pd_autoscaled" in res:
        cols = [("aggregated", agg), ("aggregated-auto", res["aggregated_autoscaled"]), ("PD", dis),
                ("PD-auto", res["pd_autoscaled"])]
    w = max(len(k) for k, _ in PD_ROWS)
    print(f"  {'':<{w}}" + "".join(f"  {name:>16}" for name, _ in cols))
    for k, f in PD_ROWS:
        print(f"  {k:<{w}}" + "".join(f"  {f(r):>16}" for _, r in cols))
    for r in (agg, dis):
        if r.goodput < pcfg.goodput_target:
            print(f"  note: {r.mode} never reaches the goodput target up to --max-groups {pcfg.max_groups}; "
                  f"shown: its best fleet")
    if agg.gpu_hours:
        print(f"  PD / aggregated GPU-hours: {dis.gpu_hours / agg.gpu_hours:.2f}")
    return 0
