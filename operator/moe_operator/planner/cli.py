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
