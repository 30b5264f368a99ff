"""`moe-operator plan`: offline capacity plan as a table or JSON. Imports stay stdlib-only at module level."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

MODEL_IDS = ("kimi-k2.5", "kimi-k2", "glm-5", "glm-4.7", "deepseek-v3", "deepseek-v3.2", "qwen3-235b-a22b")


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help=f"catalog model id: {', '.join(MODEL_IDS)}")
    src.add_argument("--model-config", metavar="PATH", help="Hugging Face config.json (file or directory) of any model")
    p.add_argument("--precision", help="bf16, fp8, int4, w8a8, w4a8, nvfp4 (default: the model's native precision)")
    p.add_argument("--kv-dtype", default="auto", help="auto (SGLang's default), bf16, fp8_e4m3, fp8_e5m2")
    p.add_argument("--sessions", type=int, required=True, help="target live sessions")
    p.add_argument("--context", type=int, required=True, help="tokens per session (prompt + output)")
    p.add_argument("--accelerator", default="h200", help="h200, b200, ascend-910b, ascend-910c")
    p.add_argument("--compare", metavar="A,B,...", help="plan on several pools side by side")
    p.add_argument("--max-groups", type=int)
    p.add_argument("--max-nodes-per-group", type=int, default=4)
    p.add_argument("--avg-context", type=int, help="expected mean tokens per session (expected-occupancy mode)")
    p.add_argument("--cost-per-node-hour", type=float, help="USD per node-hour (default: the pool's list price)")
    p.add_argument("--serve-mtp", action="store_true", help="serve the MTP layers (EAGLE speculative decoding)")
    p.add_argument("--model-path", help="HF repo id or path for --model-path (default: the catalog checkpoint)")
    p.add_argument(
        "--objective",
        default="min-cost",
        choices=("min-cost", "min-group", "max-sessions-per-gpu", "min-nodes"),
        help="min-cost: cheapest fleet, ties to smaller groups then simpler layouts (default); min-group: smallest "
        "group that fits; max-sessions-per-gpu: densest layout (min-nodes: old name of min-cost)",
    )
    p.add_argument(
        "--no-rdma", dest="rdma", action="store_false", help="the pool has no RDMA: single-node groups only"
    )
    p.add_argument("--pool-max-nodes", type=int, help="most nodes the pool may grow to (caps group and fleet)")
    pd = p.add_argument_group("prefill/decode disaggregation (--pd)")
    pd.add_argument("--pd", action="store_true",
                    help="plan a prefill role next to the (KV-sized) decode groups and compare with the aggregated "
                    "plan: spec.disaggregation")
    pd.add_argument("--prompt-tokens-per-second", type=float, metavar="N",
                    help="uncached prompt tokens/s at peak (required with --pd; disaggregation.prefill."
                    "promptTokensPerSecond)")
    pd.add_argument("--prompt-tokens", type=int, metavar="N",
                    help="a typical uncached prompt, for the TTFT estimate (default --avg-context, else --context)")
    pd.add_argument("--ttft", type=float, default=10.0, metavar="SECONDS",
                    help="TTFT target for that prompt: prefill queue + prefill + KV transfer (default 10)")
    pd.add_argument("--prefill-max-nodes-per-group", type=int, metavar="N",
                    help="largest prefill group, in nodes (default --max-nodes-per-group)")
    pd.add_argument("--prefill-target-utilization", type=float, default=0.7, metavar="F",
                    help="fraction of a prefill group's throughput to plan for (default 0.7)")
    p.add_argument("-o", "--output", default="table", choices=("table", "json"))


def _request(args: argparse.Namespace, accelerator: str, model: Any) -> Any:
    from moe_operator.planner.plan import PlanRequest

    precision = args.precision or model.native_precision
    return PlanRequest(
        model=model,
        precision=precision,
        kv_dtype=args.kv_dtype,
        sessions=args.sessions,
        context=args.context,
        accelerator=accelerator,
        max_groups=args.max_groups,
        max_nodes_per_group=args.max_nodes_per_group,
        avg_context=args.avg_context,
        cost_per_node_hour=args.cost_per_node_hour,
        serve_mtp=args.serve_mtp,
        model_path=args.model_path,
        objective=args.objective,
        rdma=args.rdma,
        pool_max_nodes=args.pool_max_nodes,
    )


def run(args: argparse.Namespace) -> int:
    from moe_operator.planner.catalog import load_model_config, resolve_model
    from moe_operator.planner.errors import PlanError
    from moe_operator.planner.plan import plan

    try:
        model = load_model_config(args.model_config) if args.model_config else resolve_model(args.model)
    except PlanError as exc:
        return _fail(args, exc)
    if getattr(args, "pd", False):
        return run_pd(args, model)
    pools = [a.strip() for a in args.compare.split(",") if a.strip()] if args.compare else [args.accelerator]
    results: list[tuple[str, Any]] = []
    for pool in pools:
        try:
            results.append((pool, plan(_request(args, pool, model))))
        except PlanError as exc:
            results.append((pool, exc))
    ok = all(not isinstance(r, PlanError) for _, r in results)
    if args.output == "json":
        if args.compare:
            doc: Any = {
                pool: (r.to_dict() if not isinstance(r, PlanError) else {"error": r.to_dict()}) for pool, r in results
            }
        else:
            r = results[0][1]
            doc = r.to_dict() if not isinstance(r, PlanError) else {"error": r.to_dict()}
        json.dump(doc, sys.stdout, indent=2, default=_json_default)
        sys.stdout.write("\n")
        for pool, r in results:
            if isinstance(r, PlanError):
                print(f"{pool}: {r}", file=sys.stderr)
        return 0 if ok else 1
    if args.compare:
        print(render_compare(results))  # a failing pool's error is a line of the table, said once
    else:
        r = results[0][1]
        if isinstance(r, PlanError):
            return _fail(args, r)
        print(render_table(r))
    return 0 if ok else 1


def _json_default(o: Any) -> Any:
    if isinstance(o, tuple | set):
        return list(o)
    raise TypeError(type(o).__name__)


def _fail(args: argparse.Namespace, exc: Any) -> int:
    if args.output == "json":
        json.dump({"error": exc.to_dict()}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    print(f"error: {exc}", file=sys.stderr)
    return 1


def _gb(b: float) -> str:
    """Binary units throughout, as SGLang logs memory (its "GB" are GiB)."""
    if b >= 2**40:
        return f"{b / 2**40:.2f} TiB"
    if b >= 2**30:
        return f"{b / 2**30:.1f} GiB"
    if b >= 2**20:
        return f"{b / 2**20:.1f} MiB"
    return f"{b:,.0f} B"


def _n(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def _alternatives(p: Any, feasible_shown: int = 6) -> list[str]:
    """The best feasible alternatives, then every rejected layout grouped by the rule or constraint that refused it."""
    out: list[str] = []
    feas = [a for a in p.alternatives if a["feasible"]]
    for a in feas[:feasible_shown]:
        out.append(f"  - {a['layout']}: {a['sessions_per_group']} sessions/group — {a['reason']}")
    if len(feas) > feasible_shown:
        out.append(f"  - … {len(feas) - feasible_shown} more feasible layouts (-o json lists them all)")
    by_reason: dict[str, list[str]] = {}
    for a in p.alternatives:
        if not a["feasible"]:
            by_reason.setdefault(a["reason"], []).append(a["layout"])
    for reason, layouts in by_reason.items():
        shown = ", ".join(layouts[:3]) + (f" (+{len(layouts) - 3} more)" if len(layouts) > 3 else "")
        out.append(f"  - {shown} — {reason}")
    return out


def _kv(n: int) -> str:
    return f"{n:,} B/token"


def render_table(p: Any) -> str:
    g = p.per_gpu
    rows: list[tuple[str, str]] = [
        ("model", f"{p.model_name} [{p.model}]"),
        ("precision / KV dtype", f"{p.precision} / {p.kv_dtype}"),
        ("accelerator", f"{p.accelerator}: {_gb(g['usable_bytes'])} per device as the runtime reports it"),
        (
            "target",
            f"{p.sessions} sessions x {p.context:,} tokens"
            + (f" (expected mean {p.avg_context:,})" if p.avg_context else " (worst case: all at full context)"),
        ),
        (
            "weights (served)",
            f"{_gb(p.weights_bytes)} ({p.weights_params / 1e9:,.0f} B params; checkpoint {_gb(p.checkpoint_bytes)})",
        ),
        ("KV per token (model)", _kv(p.kv_bytes_per_token_model)),
        ("KV per token per GPU", f"{_kv(p.kv_bytes_per_token)} (attention TP {p.attn_tp_size}, page {p.page_size})"),
        ("KV per session", f"{_gb(p.kv_bytes_per_session)} (per GPU {_gb(p.kv_bytes_per_session_per_gpu)})"),
        (
            "KV all sessions",
            f"{_gb(p.kv_bytes_all_sessions)} logical, {_gb(p.kv_bytes_all_sessions_physical)} "
            "physical incl. attention-TP replication",
        ),
        (
            "layout",
            f"{_n(p.nodes_per_group, 'node')} x {p.gpus_per_group // p.nodes_per_group} = {p.gpus_per_group} "
            f"devices: TP{p.tp_size} EP{p.ep_size} attn-DP{p.attn_dp_size} a2a={p.moe_a2a_backend}"
            + (f" runner={p.moe_runner_backend}" if p.moe_runner_backend != "auto" else "")
            + (f" (SGLang rule {p.compat_rule})" if p.compat_rule else ""),
        ),
        ("chosen by", f"objective {p.objective}" + (f"; runner-up {_runner_up(p.runner_up)}" if p.runner_up else "")),
        (
            "per-GPU memory",
            f"{_gb(g['usable_bytes'])} = runtime {_gb(g['runtime_overhead_bytes'])} + reserved "
            f"{_gb(g['reserved_bytes'])} + weights {_gb(g['weights_bytes'])} + KV pool {_gb(g['kv_pool_bytes'])}",
        ),
        (
            "mem-fraction-static",
            f"{p.mem_fraction_static:.3f} (chunked prefill {p.chunked_prefill_size}, decode "
            f"graph max bs {p.cuda_graph_max_bs})",
        ),
        (
            "prefill per DP rank",
            f"{p.chunked_prefill_per_rank:,} tokens per step: {_n(p.prefill_chunks_per_context, 'step')} "
            f"for one {p.context:,}-token prompt",
        ),
        ("KV tokens per DP group", f"{p.max_total_tokens_per_dp:,}"),
        ("sessions", f"{p.sessions_per_dp} per DP group x {p.attn_dp_size} = {p.sessions_per_group} per group"),
        (
            "groups",
            f"{_n(p.groups, 'group')} -> {_n(p.total_nodes, 'node')}, {_n(p.total_gpus, 'device')}, capacity "
            f"{_n(p.capacity_sessions, 'session')}",
        ),
        ("fits", "yes"),
    ]
    if p.cost_per_node_hour is not None:
        rows.append(
            (
                "cost",
                f"${p.cost_per_hour:,.2f}/h fleet, ${p.cost_per_session_hour:,.4f} per session-hour "
                f"(${p.cost_per_node_hour:,.2f}/node-h: {p.cost_source})",
            )
        )
    width = max(len(k) for k, _ in rows)
    out = [f"{k.ljust(width)}  {v}" for k, v in rows]
    out.append("")
    out.append("sglang args: " + " ".join(p.sglang_args))
    if p.alternatives:
        out.append("")
        out.append("alternatives considered:")
        out.extend(_alternatives(p))
    for w in p.warnings:
        out.append(f"warning: {w}")
    return "\n".join(out)


def _runner_up(ru: dict[str, Any]) -> str:
    cost = f", ${ru['cost_per_hour']:,.2f}/h" if ru.get("cost_per_hour") is not None else ""
    return f"{ru['layout']} ({_n(ru['groups'], 'group')}, {_n(ru['total_nodes'], 'node')}{cost})"


def render_compare(results: list[tuple[str, Any]]) -> str:
    from moe_operator.planner.errors import PlanError

    keys = [
        ("precision / KV", lambda p: f"{p.precision} / {p.kv_dtype}"),
        ("weights", lambda p: _gb(p.weights_bytes)),
        ("KV/token/GPU", lambda p: f"{p.kv_bytes_per_token:,} B"),
        ("KV/session", lambda p: _gb(p.kv_bytes_per_session)),
        (
            "layout",
            lambda p: f"{p.nodes_per_group}n TP{p.tp_size} DP{p.attn_dp_size} EP{p.ep_size}"
            + (f" {p.moe_a2a_backend}" if p.moe_a2a_backend != "none" else ""),
        ),
        ("weights/GPU", lambda p: _gb(p.per_gpu["weights_bytes"])),
        ("KV pool/GPU", lambda p: _gb(p.per_gpu["kv_pool_bytes"])),
        ("mem-fraction", lambda p: f"{p.mem_fraction_static:.3f}"),
        ("tokens/DP", lambda p: f"{p.max_total_tokens_per_dp:,}"),
        ("sessions/group", lambda p: str(p.sessions_per_group)),
        ("groups", lambda p: str(p.groups)),
        ("nodes", lambda p: str(p.total_nodes)),
        ("$/h", lambda p: f"{p.cost_per_hour:,.2f}" if p.cost_per_hour is not None else "-"),
        ("$/session-h", lambda p: f"{p.cost_per_session_hour:,.4f}" if p.cost_per_session_hour is not None else "-"),
    ]
    cols = [pool for pool, _ in results]
    table: list[list[str]] = [[""] + cols]
    for name, fn in keys:
        table.append([name] + ["-" if isinstance(r, PlanError) else fn(r) for _, r in results])
    table.append(["fits"] + ["no" if isinstance(r, PlanError) else "yes" for _, r in results])
    widths = [max(len(row[i]) for row in table) for i in range(len(cols) + 1)]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(row)) for row in table]
    for pool, r in results:
        if isinstance(r, PlanError):
            lines.append(f"{pool}: {r.constraint}: {r.message}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- --pd
def _usage(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def run_pd(args: argparse.Namespace, model: Any) -> int:
    """`plan --pd`: the decode role (what the aggregated plan sizes: KV cache for the sessions), the prefill role
    (planner.pd.plan_prefill, as spec.disaggregation plans it), and the cost against the aggregated plan."""
    from moe_operator.planner.errors import PlanError
    from moe_operator.planner.pd import PrefillRequest, plan_prefill
    from moe_operator.planner.plan import plan

    if args.compare:
        return _usage("--pd plans one pool (--accelerator); drop --compare")
    if args.prompt_tokens_per_second is None or args.prompt_tokens_per_second <= 0:
        return _usage("--pd needs --prompt-tokens-per-second > 0 (uncached prompt tokens per second at peak)")
    prompt = args.prompt_tokens or args.avg_context or args.context
    if prompt <= 0 or prompt > args.context:
        return _usage(f"--prompt-tokens ({prompt:,}) must be between 1 and --context ({args.context:,})")
    if args.ttft <= 0:
        return _usage("--ttft must be > 0 seconds")
    if not 0.1 <= args.prefill_target_utilization <= 0.95:
        return _usage("--prefill-target-utilization must be within 0.1..0.95")
    if args.prefill_max_nodes_per_group is not None and args.prefill_max_nodes_per_group < 1:
        return _usage("--prefill-max-nodes-per-group must be >= 1")
    base = _request(args, args.accelerator, model)
    req = PrefillRequest(prompt_tokens_per_second=float(args.prompt_tokens_per_second), prompt_tokens=int(prompt),
                         ttft_seconds=float(args.ttft), target_utilization=float(args.prefill_target_utilization),
                         max_nodes_per_group=args.prefill_max_nodes_per_group or args.max_nodes_per_group)
    try:
        aggregated = plan(base)  # the same request without PD; also the decode role's plan (KV-sized)
        prefill = plan_prefill(base, req, aggregated)
    except PlanError as exc:
        return _fail(args, exc)
    doc = pd_summary(aggregated, prefill, req, model, rdma=args.rdma)
    if args.output == "json":
        doc = {**doc, "decode": {**aggregated.to_dict(), **doc["decode"]},
               "prefill": {**prefill.to_dict(), **doc["prefill"]}}
        json.dump(doc, sys.stdout, indent=2, default=_json_default)
        sys.stdout.write("\n")
    else:
        print(render_pd(doc, aggregated, prefill))
    return 0


def _layout(p: Any) -> str:
    return (f"{_n(p.nodes_per_group, 'node')} x {p.gpus_per_group // p.nodes_per_group}: TP{p.tp_size} EP{p.ep_size} "
            f"attn-DP{p.attn_dp_size}" + (f" a2a={p.moe_a2a_backend}" if p.moe_a2a_backend != "none" else ""))


def _money(v: float | None) -> float | None:
    return round(v, 2) if v is not None else None


def _aggregated_with_prompts(agg: Any, req: Any, model: Any, accelerator: str) -> dict[str, Any]:
    """The aggregated groups prefilling the same prompt load themselves (same throughput model and M/D/1 queue as
    the prefill role, no KV transfer); decode steps competing with prefill are NOT modelled, so this is optimistic
    for the aggregated fleet."""
    import math

    from moe_operator.planner import throughput
    from moe_operator.planner.pd import md1_wait

    try:
        tput = throughput.prefill_tokens_per_second(model, accelerator, agg.gpus_per_group, agg.precision,
                                                    req.prompt_tokens)
    except (KeyError, ValueError, TypeError):
        return {"modelled": False}
    s = req.prompt_tokens / tput

    def ttft(g: int) -> float:
        return md1_wait(req.prompt_tokens_per_second / (g * tput), s) + s

    groups = max(agg.groups, math.ceil(req.prompt_tokens_per_second / (tput * req.target_utilization)))
    feasible = s <= req.ttft_seconds
    while feasible and ttft(groups) > req.ttft_seconds:
        groups += 1
    nodes = groups * agg.nodes_per_group
    price = agg.cost_per_node_hour
    return {"modelled": True, "feasible": feasible, "groups": groups if feasible else None,
            "total_nodes": nodes if feasible else None,
            "prompt_tokens_per_second_per_group": round(tput),
            "utilization_at_planned_groups": round(req.prompt_tokens_per_second / (agg.groups * tput), 3),
            "ttft_seconds_at_planned_groups": round(ttft(agg.groups), 3)
            if req.prompt_tokens_per_second < agg.groups * tput else None,
            "cost_per_hour": _money(price * nodes) if feasible and price is not None else None}


def pd_summary(agg: Any, prefill: Any, req: Any, model: Any, rdma: bool = True) -> dict[str, Any]:
    """Both roles, the ratio, cost per hour, and the comparison with the aggregated plan of the same request."""
    from moe_operator.planner.pd import RDMA_LINK_BYTES_PER_S, TCP_LINK_BYTES_PER_S

    pp = prefill.plan
    decode_nodes, prefill_nodes = agg.total_nodes, prefill.groups * pp.nodes_per_group
    d_cost, p_cost = agg.cost_per_hour, prefill.cost_per_hour
    total = _money(d_cost + p_cost) if d_cost is not None and p_cost is not None else None
    with_prompts = _aggregated_with_prompts(agg, req, model, agg.accelerator)
    vs: dict[str, Any] = {
        "aggregated_groups": agg.groups, "aggregated_nodes": agg.total_nodes,
        "aggregated_cost_per_hour": _money(agg.cost_per_hour),
        "pd_nodes": decode_nodes + prefill_nodes,
        "extra_nodes": prefill_nodes,
        "cost_delta_per_hour": _money(total - agg.cost_per_hour) if total is not None and d_cost is not None else None,
        "cost_ratio": round(total / agg.cost_per_hour, 3) if total is not None and agg.cost_per_hour else None,
        "node_ratio": round((decode_nodes + prefill_nodes) / agg.total_nodes, 3) if agg.total_nodes else None,
        "aggregated_with_prompt_load": with_prompts,
    }
    if with_prompts.get("feasible") and with_prompts.get("total_nodes"):
        vs["node_ratio_vs_aggregated_with_prompt_load"] = round((decode_nodes + prefill_nodes)
                                                                / with_prompts["total_nodes"], 3)
        c = with_prompts.get("cost_per_hour")
        vs["cost_ratio_vs_aggregated_with_prompt_load"] = round(total / c, 3) if total is not None and c else None
    return {
        "model": agg.model, "precision": agg.precision, "accelerator": agg.accelerator,
        "sessions": agg.sessions, "context": agg.context,
        "prompt_tokens_per_second": req.prompt_tokens_per_second, "prompt_tokens": req.prompt_tokens,
        "ttft_target_seconds": req.ttft_seconds, "target_utilization": req.target_utilization,
        "kv_link_gbit_per_s": round((RDMA_LINK_BYTES_PER_S if rdma else TCP_LINK_BYTES_PER_S) * 8 / 1e9),
        "decode": {"layout": _layout(agg), "groups": agg.groups, "total_nodes": decode_nodes,
                   "cost_per_hour": _money(d_cost)},
        "prefill": {"layout": _layout(pp), "groups": prefill.groups, "total_nodes": prefill_nodes,
                    "cost_per_hour": _money(p_cost)},
        "ratio": round(prefill.groups / agg.groups, 3) if agg.groups else None,
        "ratio_text": f"{prefill.groups}:{agg.groups}",
        "total_nodes": decode_nodes + prefill_nodes,
        "cost_per_hour": total,
        "vs_aggregated": vs,
        "warnings": list(prefill.warnings),
    }


def _usd(v: float | None) -> str:
    return f"${v:,.2f}/h" if v is not None else "-"


def render_pd(doc: dict[str, Any], agg: Any, prefill: Any) -> str:
    d, p, vs = doc["decode"], doc["prefill"], doc["vs_aggregated"]
    head = (f"{agg.model_name} [{agg.model}] {agg.precision} on {agg.accelerator}: {agg.sessions} sessions x "
            f"{agg.context:,} tokens; {doc['prompt_tokens_per_second']:,.0f} prompt tokens/s of "
            f"{doc['prompt_tokens']:,}-token prompts, TTFT target {doc['ttft_target_seconds']:g} s")
    table = [["role", "layout", "groups", "nodes", "TTFT", "cost"],
             ["decode", d["layout"], str(d["groups"]), str(d["total_nodes"]), "-", _usd(d["cost_per_hour"])],
             ["prefill", p["layout"], str(p["groups"]), str(p["total_nodes"]), f"{prefill.ttft_seconds:.2f} s",
              _usd(p["cost_per_hour"])],
             ["total", "", str(d["groups"] + p["groups"]), str(doc["total_nodes"]), "", _usd(doc["cost_per_hour"])]]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    out = [head, ""] + ["  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in table] + [""]
    rows: list[tuple[str, str]] = [
        ("decode role", "the aggregated plan's layout and groups: KV cache for the sessions"),
        ("prefill throughput", f"~{prefill.tokens_per_second_per_group:,.0f} prompt tokens/s per group; utilization "
         f"{prefill.utilization:.0%} at {_n(prefill.groups, 'group')} (target {doc['target_utilization']:.0%})"),
        ("TTFT estimate", f"{prefill.ttft_seconds:.2f} s = queue {prefill.queue_seconds:.2f} s (M/D/1) + prefill "
         f"{prefill.prefill_seconds:.2f} s + KV transfer {prefill.transfer_seconds:.3f} s "
         f"({doc['kv_link_gbit_per_s']} Gb/s link)"),
        ("prefill:decode", f"{doc['ratio_text']} ({doc['ratio']:g} per decode group)"
         if doc["ratio"] is not None else doc["ratio_text"]),
        ("cost", f"{_usd(doc['cost_per_hour'])} = decode {_usd(d['cost_per_hour'])} + prefill "
         f"{_usd(p['cost_per_hour'])}" if doc["cost_per_hour"] is not None else
         f"no price for {agg.accelerator} (--cost-per-node-hour): {doc['total_nodes']} nodes"),
    ]
    agg_line = f"{_n(vs['aggregated_groups'], 'group')}, {_n(vs['aggregated_nodes'], 'node')}" + (
        f", {_usd(vs['aggregated_cost_per_hour'])}" if vs["aggregated_cost_per_hour"] is not None else "")
    if vs["cost_ratio"] is not None:
        agg_line += (f" -> PD adds {_n(vs['extra_nodes'], 'node')}, {_usd(vs['cost_delta_per_hour'])} "
                     f"(x{vs['cost_ratio']:.2f})")
    else:
        agg_line += f" -> PD adds {_n(vs['extra_nodes'], 'node')} (x{vs['node_ratio']:.2f} nodes)"
    rows.append(("vs aggregated", agg_line))
    wp = vs["aggregated_with_prompt_load"]
    if wp.get("modelled"):
        at = (f"the {_n(vs['aggregated_groups'], 'aggregated group')} at {wp['utilization_at_planned_groups']:.0%} "
              "prefill utilization" + (f", TTFT {wp['ttft_seconds_at_planned_groups']:.2f} s"
                                       if wp["ttft_seconds_at_planned_groups"] is not None else ", queue unbounded"))
        if wp["feasible"]:
            need = f"{_n(wp['groups'], 'group')}, {_n(wp['total_nodes'], 'node')}" + (
                f", {_usd(wp['cost_per_hour'])}" if wp["cost_per_hour"] is not None else "")
            ratio = vs.get("cost_ratio_vs_aggregated_with_prompt_load") or vs.get(
                "node_ratio_vs_aggregated_with_prompt_load")
            what = "cost" if vs.get("cost_ratio_vs_aggregated_with_prompt_load") else "nodes"
            rows.append(("aggregated + prompts", f"{at}; to meet the TTFT target itself: {need} -> PD is "
                         f"x{ratio:.2f} of that ({what}; decode/prefill interference not modelled, optimistic for "
                         "aggregated)"))
        else:
            rows.append(("aggregated + prompts", f"{at}; one aggregated group cannot prefill a "
                         f"{doc['prompt_tokens']:,}-token prompt within the TTFT target"))
    width = max(len(k) for k, _ in rows)
    out += [f"{k.ljust(width)}  {v}" for k, v in rows]
    out += ["", "decode sglang args: " + " ".join(agg.sglang_args), "prefill sglang args: "
            + " ".join(prefill.plan.sglang_args)]
    for w in list(agg.warnings) + list(prefill.warnings):
        out.append(f"warning: {w}")
    return "\n".join(out)
