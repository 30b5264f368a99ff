"""plan(): model x precision x accelerator pool x (sessions, context) -> group layout, groups, SGLang args."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from moe_operator.planner.accelerators import AcceleratorProfile, resolve_accelerator
from moe_operator.planner.catalog import ModelSpec, resolve_model
from moe_operator.planner.errors import PlanError
from moe_operator.planner.kv import KVCell, kv_cell, resolve_kv_dtype
from moe_operator.planner.memory import MemFraction, gpu_defaults, kv_pool, mem_fraction_static
from moe_operator.planner.precision import Precision, resolve_precision
from moe_operator.planner.weights import Layout, WeightSummary, per_gpu_weight_bytes, summarize

__all__ = ["Plan", "PlanError", "PlanRequest", "plan"]

# decode CUDA-graph max batch sizes the planner may pin (per DP rank), besides SGLang's default
GRAPH_BS_CANDIDATES = (8, 16, 32, 64, 128, 256, 512)
OBJECTIVES = ("min-group", "min-nodes")
MTP_ARGS = [
    "--speculative-algorithm", "EAGLE", "--speculative-num-steps", "3",
    "--speculative-eagle-topk", "1", "--speculative-num-draft-tokens", "4",
]  # fmt: skip


@dataclass
class PlanRequest:
    model: str | ModelSpec
    precision: str
    sessions: int
    context: int
    accelerator: str | AcceleratorProfile | Mapping[str, Any]
    kv_dtype: str = "auto"
    max_groups: int | None = None
    max_nodes_per_group: int | None = 4
    avg_context: int | None = None  # expected-occupancy mode
    cost_per_node_hour: float | None = None
    serve_mtp: bool = False
    model_path: str | None = None
    # "min-group": the issue-4 rule (smallest group that fits, then the best layout in it);
    # "min-nodes": the group size that minimises the fleet (groups x nodes), ties to the smaller group
    objective: str = "min-group"


@dataclass
class Candidate:
    layout: Layout
    valid: bool
    reason: str = ""  # why invalid / infeasible
    weights_per_gpu: float = 0.0
    weights_by_group: dict[str, float] = field(default_factory=dict)
    mem: MemFraction | None = None
    cell: KVCell | None = None
    kv_pool_bytes: float = 0.0
    pre_free_bytes: float = 0.0
    max_total_tokens: int = 0
    sessions_per_dp: int = 0
    page: int = 1
    pinned_graph_bs: bool = False

    @property
    def feasible(self) -> bool:
        return self.valid and self.sessions_per_dp >= 1

    @property
    def sessions_per_group(self) -> int:
        return self.layout.attn_dp * self.sessions_per_dp if self.feasible else 0


@dataclass
class Plan:
    model: str
    model_name: str
    precision: str
    kv_dtype: str
    accelerator: str
    context: int
    sessions: int
    avg_context: int | None
    mode: str
    objective: str
    weights_params: float
    weights_bytes: float
    checkpoint_bytes: float
    active_params: float
    kv_bytes_per_token_model: int
    kv_bytes_per_token: int
    kv_bytes_per_session: int
    kv_bytes_per_session_per_gpu: int
    kv_bytes_all_sessions: int
    kv_bytes_all_sessions_physical: int
    nodes_per_group: int
    gpus_per_group: int
    tp_size: int
    ep_size: int
    attn_dp_size: int
    attn_tp_size: int
    moe_a2a_backend: str
    page_size: int
    mem_fraction_static: float
    chunked_prefill_size: int
    cuda_graph_max_bs: int
    per_gpu: dict[str, Any]
    max_total_tokens_per_dp: int
    sessions_per_dp: int
    sessions_per_group: int
    groups: int
    total_nodes: int
    total_gpus: int
    capacity_sessions: int
    model_path: str
    sglang_args: list[str]
    alternatives: list[dict[str, Any]]
    warnings: list[str]
    cost_per_node_hour: float | None = None
    cost_source: str | None = None
    cost_per_hour: float | None = None
    cost_per_session_hour: float | None = None
    fits: bool = True

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        if self.cost_per_node_hour is None:
            for k in ("cost_per_node_hour", "cost_source", "cost_per_hour", "cost_per_session_hour"):
                out.pop(k)
        return out


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _layouts(spec: ModelSpec, acc: AcceleratorProfile, nodes: int) -> list[Layout]:
    g = nodes * acc.devices_per_node
    out: list[Layout] = []
    for dp in _divisors(g):
        if dp > 1 and spec.n_routed_experts:
            out.append(Layout(nodes, g, g, dp, g, acc.moe_a2a_backend))
            continue
        if dp > 1:
            out.append(Layout(nodes, g, g, dp, 1, "none"))
            continue
        out.append(Layout(nodes, g, g, 1, 1, "none"))
        if spec.n_routed_experts:
            out.append(Layout(nodes, g, g, 1, g, acc.moe_a2a_backend if nodes > 1 else "none"))
    return out


def _invalid_reason(spec: ModelSpec, prec: Precision, lay: Layout) -> str:
    if spec.num_attention_heads % lay.attn_tp:
        return f"{spec.num_attention_heads} attention heads not divisible by attention TP {lay.attn_tp}"
    if spec.attention == "gqa":
        kv = spec.num_kv_heads
        if kv % lay.attn_tp and lay.attn_tp % kv:
            return f"{kv} KV heads vs attention TP {lay.attn_tp}: neither divides the other"
    if spec.n_routed_experts:
        if lay.ep > 1 and spec.n_routed_experts % lay.ep:
            return f"{spec.n_routed_experts} routed experts not divisible by EP {lay.ep}"
        shard = spec.moe_intermediate_size / lay.moe_tp
        blk = prec.block if prec.covers("routed") else 1
        if shard != int(shard) or int(shard) % blk:
            return (
                f"MoE intermediate {spec.moe_intermediate_size} / TP {lay.moe_tp} = {shard:g} is not a multiple "
                f"of the {prec.id} block {blk}"
            )
    elif spec.intermediate_size % lay.tp:
        return f"intermediate size {spec.intermediate_size} not divisible by TP {lay.tp}"
    return ""


def _ceil_to(x: int, m: int) -> int:
    return -(-x // m) * m


def _evaluate(
    spec: ModelSpec, prec: Precision, acc: AcceleratorProfile, lay: Layout, kv_dtype: str, req: PlanRequest
) -> Candidate:
    page = acc.page_size.get(spec.attention, 1)
    reason = _invalid_reason(spec, prec, lay)
    if reason:
        return Candidate(lay, False, reason, page=page)
    w, by_group = per_gpu_weight_bytes(spec, prec, lay, req.serve_mtp)
    cell = kv_cell(spec, kv_dtype, lay.attn_tp, acc.vendor, req.serve_mtp)
    need_ctx = _ceil_to(req.context, page)
    occ_ctx = _ceil_to(req.avg_context, page) if req.avg_context else need_ctx
    _, default_bs = gpu_defaults(acc.gpu_mem_mib, lay.tp)
    best: Candidate | None = None
    best_value = -1
    for bs in [b for b in GRAPH_BS_CANDIDATES if b < default_bs] + [default_bs]:
        mem = mem_fraction_static(
            acc, spec, tp=lay.tp, attn_dp=lay.attn_dp, deepep=lay.a2a == "deepep",
            serve_mtp=req.serve_mtp, cuda_graph_max_bs=bs,
        )  # fmt: skip
        pool = kv_pool(acc, mem.value, w, cell.bytes_per_token, page)
        s = pool.max_total_tokens // occ_ctx if pool.max_total_tokens >= need_ctx else 0
        value = s if bs == default_bs else min(s, bs)
        if value > best_value:
            best_value = value
            best = Candidate(
                lay, True, "", w, by_group, mem, cell, pool.kv_pool_bytes, pool.pre_load_free_bytes,
                pool.max_total_tokens, value, page, bs != default_bs,
            )  # fmt: skip
    assert best is not None
    if best.sessions_per_dp < 1:
        if best.kv_pool_bytes <= 0:
            frac = best.mem.value if best.mem is not None else 0.0
            best.reason = (
                f"weights {_gb(w)} per GPU exceed the static budget {_gb(best.pre_free_bytes * frac)}"
                f" (mem-fraction-static {frac:.3f})"
            )
        else:
            best.reason = (
                f"KV pool {_gb(best.kv_pool_bytes)} per GPU holds {best.max_total_tokens:,} tokens per DP group,"
                f" less than one {req.context:,}-token session"
            )
    return best


def _gb(b: float) -> str:
    return f"{b / 1e12:.2f} TB" if b >= 1e12 else f"{b / 1e9:.1f} GB"


def _rank(c: Candidate) -> tuple[int, int, int]:
    return (-c.sessions_per_group, c.layout.attn_dp, c.layout.ep)


def _alt(c: Candidate, req: PlanRequest, reason: str) -> dict[str, Any]:
    spg = c.sessions_per_group
    groups = math.ceil(req.sessions / spg) if spg else None
    return {
        "layout": c.layout.label(),
        "nodes_per_group": c.layout.nodes,
        "tp_size": c.layout.tp,
        "attn_dp_size": c.layout.attn_dp,
        "ep_size": c.layout.ep,
        "moe_a2a_backend": c.layout.a2a,
        "sessions_per_group": spg if c.feasible else 0,
        "groups": groups,
        "total_nodes": groups * c.layout.nodes if groups else None,
        "reason": reason,
    }


def plan(req: PlanRequest) -> Plan:
    spec = resolve_model(req.model)
    prec = resolve_precision(req.precision)
    acc = resolve_accelerator(req.accelerator)
    if req.sessions < 1 or req.context < 1:
        raise PlanError("request", f"sessions ({req.sessions}) and context ({req.context}) must be positive")
    if req.avg_context is not None and not 0 < req.avg_context <= req.context:
        raise PlanError("request", f"avg_context {req.avg_context} must be in 1..context ({req.context})")
    if req.objective not in OBJECTIVES:
        raise PlanError("request", f"objective {req.objective!r} not one of {', '.join(OBJECTIVES)}")
    if not acc.supports(prec.id):
        raise PlanError(
            "precision_unsupported",
            f"{prec.id} weights are not supported on {acc.name} (supported: {', '.join(acc.supported_precisions)})",
        )
    if spec.max_position_embeddings and req.context > spec.max_position_embeddings:
        raise PlanError(
            "context_too_long",
            f"context {req.context:,} tokens exceeds {spec.id}'s maximum {spec.max_position_embeddings:,}"
            " (max_position_embeddings)",
        )
    if req.serve_mtp and not spec.num_nextn_predict_layers:
        raise PlanError("mtp", f"{spec.id} ships no MTP (nextn) layers to serve")
    kv_dtype = resolve_kv_dtype(req.kv_dtype, spec, acc)
    max_nodes = req.max_nodes_per_group or 4
    if max_nodes < 1 or (req.max_groups is not None and req.max_groups < 1):
        raise PlanError("request", "max_nodes_per_group and max_groups must be >= 1")
    weights = summarize(spec, prec, req.serve_mtp)

    per_nodes: dict[int, list[Candidate]] = {}
    for n in range(1, max_nodes + 1):
        per_nodes[n] = sorted(
            (_evaluate(spec, prec, acc, lay, kv_dtype, req) for lay in _layouts(spec, acc, n)), key=_rank
        )

    def best_at(n: int) -> Candidate | None:
        feas = [c for c in per_nodes[n] if c.feasible]
        return feas[0] if feas else None

    def groups_for(c: Candidate) -> int:
        return math.ceil(req.sessions / c.sessions_per_group)

    options = []
    for n in per_nodes:
        c = best_at(n)
        if c is not None and (req.max_groups is None or groups_for(c) <= req.max_groups):
            options.append(c)
    if not options:
        _raise_infeasible(spec, prec, acc, req, per_nodes, weights, kv_dtype, max_nodes)
    if req.objective == "min-nodes":
        chosen = min(options, key=lambda c: (groups_for(c) * c.layout.nodes, c.layout.nodes, _rank(c)))
    else:
        chosen = min(options, key=lambda c: c.layout.nodes)
    return _build_plan(spec, prec, acc, req, kv_dtype, weights, chosen, per_nodes, groups_for)


def _raise_infeasible(
    spec: ModelSpec,
    prec: Precision,
    acc: AcceleratorProfile,
    req: PlanRequest,
    per_nodes: dict[int, list[Candidate]],
    weights: WeightSummary,
    kv_dtype: str,
    max_nodes: int,
) -> None:
    feasible = [c for cs in per_nodes.values() for c in cs if c.feasible]
    if feasible and req.max_groups is not None:
        best = max(feasible, key=lambda c: c.sessions_per_group)
        need = math.ceil(req.sessions / best.sessions_per_group)
        raise PlanError(
            "max_groups",
            f"{req.sessions} sessions x {req.context:,} tokens need {need} groups of the best layout "
            f"({best.layout.label()}, {best.sessions_per_group} sessions per group), more than max_groups "
            f"{req.max_groups}",
        )
    largest = [c for c in per_nodes[max_nodes] if c.valid and c.mem is not None]
    g = max_nodes * acc.devices_per_node
    if not largest:
        reasons = "; ".join(sorted({c.reason for c in per_nodes[max_nodes]}))
        raise PlanError("layout", f"no valid TP/EP/attention-DP layout on {g} devices of {acc.name}: {reasons}")
    top = max(largest, key=lambda c: c.kv_pool_bytes)
    mfs = top.mem.value  # type: ignore[union-attr]
    budget = top.pre_free_bytes * mfs
    if top.kv_pool_bytes <= 0:
        raise PlanError(
            "weights_fit",
            f"weights {_gb(weights.bytes)} ({prec.id}) do not fit in the largest allowed group: {max_nodes} node"
            f"{'s' if max_nodes > 1 else ''} x {acc.devices_per_node} x {acc.memory_gb:g} GB = "
            f"{_gb(g * acc.memory_bytes)} at mem-fraction-static {mfs:.3f}: best layout {top.layout.label()} "
            f"puts {_gb(top.weights_per_gpu)} on each device against a static budget of {_gb(budget)}",
        )
    raise PlanError(
        "kv_fit",
        f"weights fit, but no layout up to {max_nodes} node{'s' if max_nodes > 1 else ''} of {acc.name} leaves room "
        f"for one {req.context:,}-token session per DP group: best is {top.layout.label()} with a "
        f"{_gb(top.kv_pool_bytes)} KV pool per device = {top.max_total_tokens:,} tokens at "
        f"{top.cell.bytes_per_token:,} B/token ({kv_dtype})",  # type: ignore[union-attr]
    )


def _model_path(spec: ModelSpec, prec: Precision, req: PlanRequest, warnings: list[str]) -> tuple[str, list[str]]:
    """The --model-path and any --quantization needed to load it."""
    if req.model_path:
        quant = [prec.sglang_quantization] if prec.sglang_quantization else []
        return req.model_path, quant
    repo = spec.checkpoint_for(prec.id)
    if repo:
        return repo, [prec.sglang_quantization] if prec.sglang_quantization else []
    native = spec.checkpoint_for(spec.native_precision) or spec.id
    if prec.id == "fp8" and spec.native_precision == "bf16":
        warnings.append(f"no published FP8 checkpoint of {spec.id} known: online FP8 quantisation of {native}")
        return native, ["fp8"]
    warnings.append(
        f"no published {prec.id} checkpoint of {spec.id} known; --model-path points at the {spec.native_precision} "
        f"checkpoint {native} — pass --model-path with a converted {prec.id} checkpoint"
    )
    return native, [prec.sglang_quantization] if prec.sglang_quantization else []


def sglang_args(
    spec: ModelSpec, acc: AcceleratorProfile, c: Candidate, kv_dtype: str, model_path: str, quant: list[str],
    req: PlanRequest, max_running: int,
) -> list[str]:  # fmt: skip
    lay = c.layout
    mem = c.mem
    assert mem is not None
    args = ["--model-path", model_path, "--tp-size", str(lay.tp)]
    if lay.ep > 1:
        args += ["--ep-size", str(lay.ep)]
    if lay.attn_dp > 1:
        args += ["--attn-dp-size", str(lay.attn_dp)]
    if lay.a2a != "none":
        args += ["--moe-a2a-backend", lay.a2a]
    if quant:
        args += ["--quantization", quant[0]]
    args += [
        "--kv-cache-dtype", kv_dtype,
        "--mem-fraction-static", f"{mem.value:.3f}",
        "--context-length", str(req.context),
        "--max-running-requests", str(max_running),
        "--chunked-prefill-size", str(mem.chunked_prefill_size),
    ]  # fmt: skip
    if c.pinned_graph_bs:
        args += ["--cuda-graph-max-bs-decode", str(mem.cuda_graph_max_bs)]
    if spec.trust_remote_code:
        args.append("--trust-remote-code")
    if spec.tool_call_parser:
        args += ["--tool-call-parser", spec.tool_call_parser]
    if spec.reasoning_parser:
        args += ["--reasoning-parser", spec.reasoning_parser]
    if req.serve_mtp:
        args += MTP_ARGS
    args += list(acc.sglang_device_args)
    return args


def _build_plan(
    spec: ModelSpec,
    prec: Precision,
    acc: AcceleratorProfile,
    req: PlanRequest,
    kv_dtype: str,
    weights: WeightSummary,
    chosen: Candidate,
    per_nodes: dict[int, list[Candidate]],
    groups_for: Any,
) -> Plan:
    lay, cell, mem = chosen.layout, chosen.cell, chosen.mem
    assert cell is not None and mem is not None
    groups = groups_for(chosen)
    spg = chosen.sessions_per_group
    warnings: list[str] = []
    path, quant = _model_path(spec, prec, req, warnings)

    alternatives: list[dict[str, Any]] = []
    for c in per_nodes[lay.nodes]:
        if c is chosen:
            continue
        if not c.valid:
            why = f"invalid: {c.reason}"
        elif not c.feasible:
            why = f"infeasible: {c.reason}"
        else:
            why = (
                f"fewer sessions per group ({spg_c} < {spg})"
                if (spg_c := c.sessions_per_group) < spg
                else (f"same {spg} sessions per group with a more complex layout")
            )
        alternatives.append(_alt(c, req, why))
    for n, cands in per_nodes.items():
        if n == lay.nodes:
            continue
        best = next((c for c in cands if c.feasible), None)
        if best is None:
            top = next((c for c in cands if c.valid), cands[0] if cands else None)
            if top is not None:
                alternatives.append(_alt(top, req, f"infeasible on {n} node(s): {top.reason}"))
            continue
        g = groups_for(best)
        fleet, mine = g * n, groups * lay.nodes
        if req.max_groups is not None and g > req.max_groups:
            why = f"needs {g} groups > max_groups {req.max_groups}"
        elif req.objective == "min-nodes":
            why = f"fleet of {fleet} nodes vs {mine}" if fleet != mine else f"same fleet ({fleet} nodes), larger group"
        elif n > lay.nodes:
            why = f"larger group than needed (min-group rule); fleet {fleet} nodes vs {mine}"
            if fleet < mine:
                warnings.append(
                    f"{n}-node groups ({best.layout.label()}) would need {fleet} nodes in total instead of {mine};"
                    " use objective min-nodes (--objective min-nodes) to prefer them"
                )
        else:
            why = f"smaller group, but needs {g} groups"
        alternatives.append(_alt(best, req, why))

    ctx = req.context
    per_session_gpu = cell.bytes_per_token * _ceil_to(ctx, chosen.page)
    kv_used = chosen.max_total_tokens * cell.bytes_per_token
    reserved = chosen.pre_free_bytes * (1 - mem.value)
    usable = acc.usable_bytes
    per_gpu = {
        "usable_bytes": usable,
        "runtime_overhead_bytes": usable - chosen.pre_free_bytes,
        "reserved_bytes": reserved,
        "weights_bytes": chosen.weights_per_gpu,
        "weights_by_group": chosen.weights_by_group,
        "kv_pool_bytes": chosen.kv_pool_bytes,
        "kv_used_bytes": kv_used,
        "unallocated_bytes": usable - (usable - chosen.pre_free_bytes) - reserved - chosen.weights_per_gpu - kv_used,
        "kv_tokens_for_sessions": spg // lay.attn_dp * _ceil_to(req.avg_context or ctx, chosen.page),
    }
    max_running = spg
    args = sglang_args(spec, acc, chosen, kv_dtype, path, quant, req, max_running)
    p = Plan(
        model=spec.id,
        model_name=spec.name,
        precision=prec.id,
        kv_dtype=kv_dtype,
        accelerator=acc.name,
        context=ctx,
        sessions=req.sessions,
        avg_context=req.avg_context,
        mode="expected_occupancy" if req.avg_context else "worst_case",
        objective=req.objective,
        weights_params=weights.params,
        weights_bytes=weights.bytes,
        checkpoint_bytes=weights.checkpoint_bytes,
        active_params=weights.active_params,
        kv_bytes_per_token_model=cell.model_bytes_per_token,
        kv_bytes_per_token=cell.bytes_per_token,
        kv_bytes_per_session=cell.model_bytes_per_token * ctx,
        kv_bytes_per_session_per_gpu=per_session_gpu,
        kv_bytes_all_sessions=cell.model_bytes_per_token * ctx * req.sessions,
        kv_bytes_all_sessions_physical=per_session_gpu * lay.attn_tp * req.sessions,
        nodes_per_group=lay.nodes,
        gpus_per_group=lay.gpus,
        tp_size=lay.tp,
        ep_size=lay.ep,
        attn_dp_size=lay.attn_dp,
        attn_tp_size=lay.attn_tp,
        moe_a2a_backend=lay.a2a,
        page_size=chosen.page,
        mem_fraction_static=mem.value,
        chunked_prefill_size=mem.chunked_prefill_size,
        cuda_graph_max_bs=mem.cuda_graph_max_bs,
        per_gpu=per_gpu,
        max_total_tokens_per_dp=chosen.max_total_tokens,
        sessions_per_dp=chosen.sessions_per_dp,
        sessions_per_group=spg,
        groups=groups,
        total_nodes=groups * lay.nodes,
        total_gpus=groups * lay.gpus,
        capacity_sessions=groups * spg,
        model_path=path,
        sglang_args=args,
        alternatives=alternatives,
        warnings=warnings,
    )
    cost = req.cost_per_node_hour if req.cost_per_node_hour is not None else acc.cost_per_node_hour
    if cost is not None:
        p.cost_per_node_hour = cost
        p.cost_source = "request" if req.cost_per_node_hour is not None else acc.cost_source
        p.cost_per_hour = round(cost * p.total_nodes, 2)
        p.cost_per_session_hour = round(cost * p.total_nodes / req.sessions, 4)
    return p
