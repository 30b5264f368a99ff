"""plan(): model x precision x accelerator pool x (sessions, context) -> group layout, groups, SGLang args."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from moe_operator.planner.accelerators import AcceleratorProfile, resolve_accelerator
from moe_operator.planner.catalog import ModelSpec, resolve_model
from moe_operator.planner.compat import Rule, moe_rule
from moe_operator.planner.errors import PlanError
from moe_operator.planner.kv import KVCell, kv_cell, page_size, resolve_kv_dtype
from moe_operator.planner.memory import MemFraction, gpu_defaults, kv_pool, mem_fraction_static
from moe_operator.planner.precision import Precision, resolve_precision
from moe_operator.planner.weights import Layout, WeightSummary, per_gpu_weight_bytes, summarize

__all__ = ["Plan", "PlanError", "PlanRequest", "plan"]

# decode CUDA-graph max batch sizes the planner may pin (per DP rank), besides SGLang's default
GRAPH_BS_CANDIDATES = (8, 16, 32, 64, 128, 256, 512)
# min-cost: cheapest fleet for the target (nodes x price per node-hour; devices when the pool has no price), ties to
# fewer nodes per group, then the simpler layout; min-group: the smallest group that fits, cheapest within it;
# max-sessions-per-gpu: the densest layout, cheapest among equals. "min-nodes" (v0.1) is min-cost.
OBJECTIVES = ("min-cost", "min-group", "max-sessions-per-gpu")
OBJECTIVE_ALIASES = {"min-nodes": "min-cost"}
# environ.py SGLANG_DEEPEP_NUM_MAX_DISPATCH_TOKENS_PER_RANK (rule deepep-dispatch-budget): DeepEP's low-latency
# buffers hold this many tokens per rank and step; nothing in SGLang clamps the decode batch to it
DEEPEP_DISPATCH_TOKENS_PER_RANK = 128
MTP_DRAFT_TOKENS = 4  # --speculative-num-draft-tokens below: tokens per request per decode step
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
    objective: str = "min-cost"  # see OBJECTIVES
    # the pool: RDMA between its nodes (multi-node groups need it) and the most nodes it may grow to
    rdma: bool = True
    pool_max_nodes: int | None = None


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
    rule: Rule | None = None  # the SGLang compatibility rule that admitted / rejected the layout
    groups: int = 0
    fleet_reason: str = ""  # feasible per group, but the fleet breaks max_groups / the pool's maxNodes
    cost: float = 0.0  # fleet cost per hour (USD), or devices when the pool has no price
    refused: bool = False  # by the SGLang compatibility table or the pool (RDMA), not by shape divisibility

    @property
    def fits_group(self) -> bool:
        return self.valid and self.sessions_per_dp >= 1

    @property
    def feasible(self) -> bool:
        return self.fits_group and not self.fleet_reason

    @property
    def sessions_per_group(self) -> int:
        return self.layout.attn_dp * self.sessions_per_dp if self.fits_group else 0

    @property
    def total_nodes(self) -> int:
        return self.groups * self.layout.nodes

    @property
    def runner(self) -> str:
        return self.rule.runner if self.rule is not None else "auto"


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
    moe_runner_backend: str = "auto"
    compat_rule: str | None = None  # the data/sglang_compat.yaml rule that admitted the layout
    chunked_prefill_per_rank: int = 0  # what each attention-DP rank prefills per step
    prefill_chunks_per_context: int = 0  # steps to prefill one full-context prompt on one rank
    runner_up: dict[str, Any] | None = None  # the best other feasible layout under the same objective
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
    """Every TP/attention-DP/EP/all-to-all layout of one group of `nodes` nodes: TP over all devices; attention DP
    over any divisor; MoE experts TP-split (EP1) or expert-parallel (EP = TP), with no all-to-all backend or with
    DeepEP (which forces ep_size = tp_size: overrides.py::_a2a_ep_size). The compatibility table decides later."""
    g = nodes * acc.devices_per_node
    out: list[Layout] = []
    for dp in _divisors(g):
        out.append(Layout(nodes, g, g, dp, 1, "none"))
        if spec.n_routed_experts:
            out.append(Layout(nodes, g, g, dp, g, "none"))
            if acc.moe_a2a_backend != "none":
                out.append(Layout(nodes, g, g, dp, g, acc.moe_a2a_backend))
    return out


def _complexity(lay: Layout) -> int:
    """Tie-break between layouts of equal cost and group size: plain TP < EP < attention DP < all-to-all backend."""
    return (lay.a2a != "none") * 4 + (lay.attn_dp > 1) * 2 + (lay.ep > 1)


def _compat(spec: ModelSpec, prec: Precision, acc: AcceleratorProfile, lay: Layout, req: PlanRequest) -> tuple[
    Rule | None, str
]:
    """(the SGLang rule for this layout's MoE, why it is rejected or '') — plus the pool's own limits."""
    if lay.nodes > 1 and not req.rdma:
        return None, (
            f"a {lay.nodes}-node group needs RDMA between its nodes (the pool sets no spec.rdma): its TP all-reduce"
            " / EP all-to-all would cross nodes over TCP"
        )
    if not spec.n_routed_experts:
        return None, ""
    rule = moe_rule(a2a=lay.a2a, quant=prec.id, arch=acc.arch)
    return rule, "" if rule.supported else f"SGLang cannot run {prec.id} experts with {lay.a2a}: {rule.explain()}"


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
    page = page_size(spec, acc)
    # what SGLang (or the pool) cannot run at all is named first, before shape divisibility
    rule, rejected = _compat(spec, prec, acc, lay, req)
    if rejected:
        return Candidate(lay, False, rejected, page=page, rule=rule, refused=True)
    reason = _invalid_reason(spec, prec, lay)
    if reason:
        return Candidate(lay, False, reason, page=page, rule=rule)
    w, by_group = per_gpu_weight_bytes(spec, prec, lay, req.serve_mtp)
    cell = kv_cell(spec, kv_dtype, lay.attn_tp, acc, req.serve_mtp)
    need_ctx = _ceil_to(req.context, page)
    occ_ctx = _ceil_to(req.avg_context, page) if req.avg_context else need_ctx
    _, default_bs = gpu_defaults(acc.gpu_mem_mib, lay.tp, acc.vendor)
    # DeepEP: a DP rank's decode batch (x draft tokens with MTP) must fit the dispatch budget, graphs included
    cap = DEEPEP_DISPATCH_TOKENS_PER_RANK // (MTP_DRAFT_TOKENS if req.serve_mtp else 1) if lay.a2a == "deepep" else 0
    sizes = [b for b in GRAPH_BS_CANDIDATES if b < default_bs] + [default_bs]
    if cap:
        sizes = [b for b in sizes if b < cap] + [min(cap, default_bs)]
    best: Candidate | None = None
    best_value = -1
    for bs in sizes:
        mem = mem_fraction_static(
            acc, spec, tp=lay.tp, attn_dp=lay.attn_dp, deepep=lay.a2a == "deepep", cuda_graph_max_bs=bs
        )
        pool = kv_pool(acc, mem.value, w, cell.bytes_per_token, page)
        s = pool.max_total_tokens // occ_ctx if pool.max_total_tokens >= need_ctx else 0
        value = s if bs == default_bs and not cap else min(s, bs)
        if value > best_value:
            best_value = value
            best = Candidate(
                lay, True, "", w, by_group, mem, cell, pool.kv_pool_bytes, pool.pre_load_free_bytes,
                pool.max_total_tokens, value, page, bs != default_bs, rule,
            )  # fmt: skip
    assert best is not None
    if best.sessions_per_dp < 1:
        if best.kv_pool_bytes <= 0:
            frac = best.mem.value if best.mem is not None else 0.0
            best.reason = (
                f"weights {gib(w)} per GPU exceed the static budget {gib(best.pre_free_bytes * frac)}"
                f" (mem-fraction-static {frac:.3f})"
            )
        else:
            best.reason = (
                f"KV pool {gib(best.kv_pool_bytes)} per GPU holds {best.max_total_tokens:,} tokens per DP group,"
                f" less than one {req.context:,}-token session"
            )
    return best


def gib(b: float) -> str:
    """Sizes as SGLang logs them (its "GB" are GiB)."""
    return f"{b / 2**40:.2f} TiB" if b >= 2**40 else f"{b / 2**30:.1f} GiB"


def _size_fleet(c: Candidate, req: PlanRequest, price: float | None) -> None:
    """Groups, fleet cost and the fleet-level limits (max_groups, the pool's maxNodes) of a candidate that fits."""
    if not c.fits_group:
        return
    c.groups = math.ceil(req.sessions / c.sessions_per_group)
    c.cost = c.total_nodes * price if price is not None else c.groups * c.layout.gpus
    if req.max_groups is not None and c.groups > req.max_groups:
        c.fleet_reason = f"needs {c.groups} groups > max_groups {req.max_groups}"
    elif req.pool_max_nodes is not None and c.total_nodes > req.pool_max_nodes:
        c.fleet_reason = f"needs {c.total_nodes} nodes > the pool's maxNodes {req.pool_max_nodes}"


def _objective_key(objective: str) -> Any:
    def simple(c: Candidate) -> tuple[Any, ...]:
        return (_complexity(c.layout), -c.sessions_per_group)

    if objective == "min-group":
        return lambda c: (c.layout.nodes, c.cost, *simple(c))
    if objective == "max-sessions-per-gpu":
        return lambda c: (-c.sessions_per_group / c.layout.gpus, c.cost, c.layout.nodes, *simple(c))
    return lambda c: (c.cost, c.layout.nodes, *simple(c))


def _alt(c: Candidate, reason: str, price: float | None) -> dict[str, Any]:
    ok = c.fits_group
    return {
        "layout": c.layout.label(),
        "nodes_per_group": c.layout.nodes,
        "tp_size": c.layout.tp,
        "attn_dp_size": c.layout.attn_dp,
        "ep_size": c.layout.ep,
        "moe_a2a_backend": c.layout.a2a,
        "moe_runner_backend": c.runner,
        "sessions_per_group": c.sessions_per_group,
        "groups": c.groups if ok else None,
        "total_nodes": c.total_nodes if ok else None,
        "cost_per_hour": round(c.cost, 2) if ok and price is not None else None,
        "rule": c.rule.id if c.rule is not None else None,
        "feasible": c.feasible,
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
    objective = OBJECTIVE_ALIASES.get(req.objective, req.objective)
    if objective not in OBJECTIVES:
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
    if req.pool_max_nodes is not None:
        if req.pool_max_nodes < 1:
            raise PlanError("request", "the pool's maxNodes must be >= 1")
        max_nodes = min(max_nodes, req.pool_max_nodes)
    weights = summarize(spec, prec, req.serve_mtp)
    price = req.cost_per_node_hour if req.cost_per_node_hour is not None else acc.cost_per_node_hour

    candidates: list[Candidate] = []
    for n in range(1, max_nodes + 1):
        for lay in _layouts(spec, acc, n):
            c = _evaluate(spec, prec, acc, lay, kv_dtype, req)
            _size_fleet(c, req, price)
            candidates.append(c)
    key = _objective_key(objective)
    feasible = sorted((c for c in candidates if c.feasible), key=key)
    if not feasible:
        _raise_infeasible(spec, prec, acc, req, candidates, weights, kv_dtype, max_nodes)
    return _build_plan(spec, prec, acc, req, kv_dtype, weights, feasible[0], candidates, objective, price, key)


def _raise_infeasible(
    spec: ModelSpec,
    prec: Precision,
    acc: AcceleratorProfile,
    req: PlanRequest,
    candidates: list[Candidate],
    weights: WeightSummary,
    kv_dtype: str,
    max_nodes: int,
) -> None:
    fits = [c for c in candidates if c.fits_group]
    if fits:
        best = max(fits, key=lambda c: (c.sessions_per_group / c.layout.nodes, -c.layout.nodes))
        if req.max_groups is not None and best.groups > req.max_groups:
            raise PlanError(
                "max_groups",
                f"{req.sessions} sessions x {req.context:,} tokens need {best.groups} groups of the best layout "
                f"({best.layout.label()}, {best.sessions_per_group} sessions per group), more than max_groups "
                f"{req.max_groups}",
            )
        raise PlanError(
            "pool_max_nodes",
            f"{req.sessions} sessions x {req.context:,} tokens need at least {best.total_nodes} nodes "
            f"({best.groups} x {best.layout.label()}), more than the pool's maxNodes {req.pool_max_nodes}",
        )
    g = max_nodes * acc.devices_per_node
    largest = [c for c in candidates if c.layout.nodes == max_nodes and c.valid and c.mem is not None]
    if not largest:
        reasons = "; ".join(sorted({c.reason for c in candidates if c.layout.nodes == max_nodes}))
        raise PlanError("layout", f"no valid TP/EP/attention-DP layout on {g} devices of {acc.name}: {reasons}")
    top = max(largest, key=lambda c: c.kv_pool_bytes)
    mfs = top.mem.value  # type: ignore[union-attr]
    budget = top.pre_free_bytes * mfs
    nodes = f"{max_nodes} node{'s' if max_nodes > 1 else ''}"
    if top.kv_pool_bytes <= 0:
        raise PlanError(
            "weights_fit",
            f"weights {gib(weights.bytes)} ({prec.id}) do not fit in the largest allowed group: {nodes} x "
            f"{acc.devices_per_node} x {gib(acc.usable_bytes)} = {gib(g * acc.usable_bytes)} at mem-fraction-static "
            f"{mfs:.3f}: best layout {top.layout.label()} puts {gib(top.weights_per_gpu)} on each device against a "
            f"static budget of {gib(budget)}",
        )
    raise PlanError(
        "kv_fit",
        f"weights fit, but no layout up to {nodes} of {acc.name} leaves room for one {req.context:,}-token session "
        f"per DP group: best is {top.layout.label()} with a {gib(top.kv_pool_bytes)} KV pool per device = "
        f"{top.max_total_tokens:,} tokens at {top.cell.bytes_per_token:,} B/token ({kv_dtype})",  # type: ignore[union-attr]
    )


def _model_path(spec: ModelSpec, prec: Precision, req: PlanRequest, warnings: list[str]) -> tuple[str, list[str]]:
    """The --model-path and any --quantization needed to load it."""
    if req.model_path:
        quant = [prec.sglang_quantization] if prec.sglang_quantization else []
        return req.model_path, quant
    repo = spec.checkpoint_for(prec.id)
    if repo:
        return repo, [prec.sglang_quantization] if prec.sglang_quantization else []
    native = spec.checkpoint_for(spec.native_precision) or spec.local_path
    if native is None:
        warnings.append(
            f"no checkpoint of {spec.id} is known: --model-path {spec.id} is a placeholder, pass --model-path"
        )
        native = spec.id
    elif not spec.checkpoint_for(spec.native_precision):
        warnings.append(
            f"--model-path {native} is the directory of the config.json given; pass --model-path if the weights"
            " live elsewhere"
        )
    if prec.id == spec.native_precision:
        return native, [prec.sglang_quantization] if prec.sglang_quantization else []
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
    if c.runner != "auto":  # the compatibility rule names the only runner SGLang can use for this layout
        args += ["--moe-runner-backend", c.runner]
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


def _why_not(c: Candidate, chosen: Candidate, objective: str, price: float | None) -> str:
    """Why a candidate lost to the chosen one, in the objective's terms."""
    if not c.valid:
        return f"rejected: {c.reason}" if c.refused else f"invalid: {c.reason}"
    if not c.fits_group:
        return f"infeasible: {c.reason}"
    if c.fleet_reason:
        return f"infeasible: {c.fleet_reason}"
    unit = "$/h" if price is not None else "devices"
    cost = f"{c.cost:,.2f} {unit}" if price is not None else f"{c.cost:,.0f} {unit}"
    mine = f"{chosen.cost:,.2f} {unit}" if price is not None else f"{chosen.cost:,.0f} {unit}"
    fleet = f"{c.groups} group{'s' if c.groups != 1 else ''}, {c.total_nodes} node{'s' if c.total_nodes != 1 else ''}"
    if objective == "max-sessions-per-gpu":
        a, b = c.sessions_per_group / c.layout.gpus, chosen.sessions_per_group / chosen.layout.gpus
        if a < b:
            return f"{a:.2f} sessions per device < {b:.2f} ({fleet}, {cost})"
    if objective == "min-group" and c.layout.nodes > chosen.layout.nodes:
        return f"larger group than needed (objective min-group); {fleet}, {cost} vs {mine}"
    if c.cost > chosen.cost:
        return f"costs more: {fleet}, {cost} vs {mine}"
    if c.layout.nodes > chosen.layout.nodes:
        return f"same cost ({cost}) with a larger group ({c.layout.nodes} nodes): a larger failure domain"
    return f"same cost ({cost}) and group size, more complex layout"


def _build_plan(
    spec: ModelSpec,
    prec: Precision,
    acc: AcceleratorProfile,
    req: PlanRequest,
    kv_dtype: str,
    weights: WeightSummary,
    chosen: Candidate,
    candidates: list[Candidate],
    objective: str,
    price: float | None,
    key: Any,
) -> Plan:
    lay, cell, mem = chosen.layout, chosen.cell, chosen.mem
    assert cell is not None and mem is not None
    groups = chosen.groups
    spg = chosen.sessions_per_group
    warnings: list[str] = []
    if objective != req.objective:
        warnings.append(f"objective {req.objective!r} is now called {objective!r}")
    path, quant = _model_path(spec, prec, req, warnings)

    ranked = sorted((c for c in candidates if c is not chosen), key=lambda c: (not c.feasible, *(
        key(c) if c.feasible else (c.layout.nodes, _complexity(c.layout))
    )))  # fmt: skip
    alternatives = [_alt(c, _why_not(c, chosen, objective, price), price) for c in ranked]
    runner_up = next((a for a in alternatives if a["feasible"]), None)

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
    # parallel_hook.py::handle_data_parallelism (rule chunked-prefill-per-dp-rank): each DP rank prefills
    # chunked_prefill_size // attn_dp tokens per step
    chunk_per_rank = max(1, mem.chunked_prefill_size // lay.attn_dp)
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
        objective=objective,
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
        moe_runner_backend=chosen.runner,
        compat_rule=chosen.rule.id if chosen.rule is not None else None,
        chunked_prefill_per_rank=chunk_per_rank,
        prefill_chunks_per_context=-(-ctx // chunk_per_rank),
        runner_up=runner_up,
    )
    if price is not None:
        p.cost_per_node_hour = price
        p.cost_source = "request" if req.cost_per_node_hour is not None else acc.cost_source
        p.cost_per_hour = round(price * p.total_nodes, 2)
        p.cost_per_session_hour = round(price * p.total_nodes / req.sessions, 4)
    return p
