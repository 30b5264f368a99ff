"""Parameter counting from the config and the per-GPU weight shard under a TP/EP/attention-DP layout.

Sharding follows SGLang's DeepSeek/GLM/Qwen MoE model code (0.5.x):
- MLA ``q_a_proj`` / ``kv_a_proj_with_mqa`` (fused_qkv_a_proj_with_mqa) and the DSA indexer are
  ReplicatedLinear: every rank holds them. ``q_b_proj``, ``kv_b_proj``, ``o_proj`` split across attention TP.
- GQA q/o split across attention TP; k/v heads split until attention TP exceeds the KV heads, then replicated.
- Embedding: vocab-parallel over the attention-TP group under attention DP, else over TP. lm_head over TP.
- Dense MLP layers (first_k_dense_replace): split over TP (moe_dense_tp_size unset).
- Shared experts: split over TP, but replicated on every rank with the DeepEP all-to-all backend.
- Routed experts: ep x moe_tp = tp ranks, each holds 1/tp of them.
- Router gate, norms: replicated. Vision tower (Kimi-K2.5): replicated, BF16.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from moe_operator.planner.catalog import ModelSpec
from moe_operator.planner.precision import Precision


@dataclass(frozen=True)
class Layout:
    nodes: int
    gpus: int
    tp: int
    attn_dp: int
    ep: int
    a2a: str  # "none" | "deepep"

    @property
    def attn_tp(self) -> int:
        return self.tp // self.attn_dp

    @property
    def moe_tp(self) -> int:
        return self.tp // self.ep

    def label(self) -> str:
        parts = [f"{self.nodes} node{'s' if self.nodes > 1 else ''}", f"TP{self.tp}"]
        if self.attn_dp > 1:
            parts.append(f"attn-DP{self.attn_dp}")
        if self.ep > 1:
            parts.append(f"EP{self.ep}")
        if self.a2a != "none":
            parts.append(self.a2a)
        return " ".join(parts)


@dataclass(frozen=True)
class Component:
    name: str
    group: str  # precision group, see precision.py
    params: float
    shard: str  # rep | tp | attn_tp | kv_heads | embed | shared | experts
    mtp: bool = False  # belongs to the MTP (nextn) draft layer(s)
    checkpoint_only: bool = False  # stored in the checkpoint but not loaded by SGLang


def _attention(spec: ModelSpec) -> list[tuple[str, str, float, str]]:
    h, H = spec.hidden_size, spec.num_attention_heads
    out: list[tuple[str, str, float, str]] = []
    if spec.is_mla:
        qk = spec.qk_nope_head_dim + spec.qk_rope_head_dim
        if spec.q_lora_rank:
            out.append(("q_a_proj", "attn", h * spec.q_lora_rank, "rep"))
            out.append(("q_a_layernorm", "norm", spec.q_lora_rank, "rep"))
            out.append(("q_b_proj", "attn", spec.q_lora_rank * H * qk, "attn_tp"))
        else:
            out.append(("q_proj", "attn", h * H * qk, "attn_tp"))
        out.append(("kv_a_proj_with_mqa", "attn", h * (spec.kv_lora_rank + spec.qk_rope_head_dim), "rep"))
        out.append(("kv_a_layernorm", "norm", spec.kv_lora_rank, "rep"))
        out.append(("kv_b_proj", "attn", spec.kv_lora_rank * H * (spec.qk_nope_head_dim + spec.v_head_dim), "attn_tp"))
        out.append(("o_proj", "attn", H * spec.v_head_dim * h, "attn_tp"))
        if spec.is_dsa:
            q_in = spec.q_lora_rank or h
            out.append(("indexer.wq_b", "indexer", q_in * spec.index_n_heads * spec.index_head_dim, "rep"))
            out.append(("indexer.wk", "indexer", h * spec.index_head_dim, "rep"))
            out.append(("indexer.k_norm", "norm", 2 * spec.index_head_dim, "rep"))
            out.append(("indexer.weights_proj", "norm", h * spec.index_n_heads, "rep"))
    else:
        d, kv = spec.head_dim, spec.num_kv_heads
        out.append(("q_proj", "attn", h * H * d, "attn_tp"))
        out.append(("k_proj+v_proj", "attn", h * kv * (d + spec.v_head_dim), "kv_heads"))
        out.append(("o_proj", "attn", H * spec.v_head_dim * h, "attn_tp"))
        if spec.attention_bias:
            out.append(("qkv_bias", "norm", H * d + kv * (d + spec.v_head_dim), "rep"))
        if spec.model_type.startswith("qwen3"):
            out.append(("q_norm+k_norm", "norm", 2 * d, "rep"))
    out.append(("layernorms", "norm", 2 * h, "rep"))
    return out


def _moe(spec: ModelSpec) -> list[tuple[str, str, float, str]]:
    h = spec.hidden_size
    out: list[tuple[str, str, float, str]] = [
        ("router.gate", "router", h * spec.n_routed_experts + spec.n_routed_experts, "rep"),
        ("routed_experts", "routed", spec.n_routed_experts * 3 * h * spec.moe_intermediate_size, "experts"),
    ]
    if spec.shared_expert_intermediate_size:
        out.append(("shared_experts", "shared", 3 * h * spec.shared_expert_intermediate_size, "shared"))
    return out


def components(spec: ModelSpec) -> list[Component]:
    """Every parameter tensor family of the checkpoint, counted from the config."""
    h, V = spec.hidden_size, spec.vocab_size
    comps: list[Component] = []

    def add(layers: float, items: Iterable[tuple[str, str, float, str]], prefix: str, mtp: bool = False) -> None:
        for name, group, params, shard in items:
            comps.append(Component(f"{prefix}{name}", group, layers * params, shard, mtp=mtp))

    comps.append(Component("embed_tokens", "embed", V * h, "embed"))
    if not spec.tie_word_embeddings:
        comps.append(Component("lm_head", "lm_head", V * h, "tp"))
    comps.append(Component("final_norm", "norm", h, "rep"))
    add(spec.num_layers, _attention(spec), "layers.attn.")
    dense = spec.first_k_dense_replace
    if dense:
        add(dense, [("mlp", "dense", 3 * h * spec.intermediate_size, "tp")], "layers.dense.")
    if spec.num_moe_layers:
        add(spec.num_moe_layers, _moe(spec), "layers.moe.")
    mtp = spec.num_nextn_predict_layers
    if mtp:
        add(mtp, _attention(spec), "mtp.attn.", mtp=True)
        add(
            mtp,
            _moe(spec) if spec.n_routed_experts else [("mlp", "dense", 3 * h * spec.intermediate_size, "tp")],
            "mtp.moe.",
            mtp=True,
        )
        add(
            mtp,
            [("eh_proj", "norm", 2 * h * h, "rep"), ("enorm+hnorm+head_norm", "norm", 3 * h, "rep")],
            "mtp.",
            mtp=True,
        )
        if spec.mtp_checkpoint_duplicates_embeddings:
            comps.append(
                Component(
                    "mtp.embed_tokens+shared_head", "embed", mtp * 2 * V * h, "rep", mtp=True, checkpoint_only=True
                )
            )
    if spec.vision_num_layers:
        vh, vi = spec.vision_hidden_size, spec.vision_intermediate_size
        tower = spec.vision_num_layers * (4 * vh * vh + 2 * vh * vi + 4 * vh)
        merged = vh * spec.vision_merge
        projector = merged * merged + merged * h
        comps.append(Component("vision_tower+projector", "vision", tower + projector, "rep"))
    return comps


def shard_divisor(comp: Component, layout: Layout, spec: ModelSpec) -> float:
    s = comp.shard
    if s == "rep":
        return 1
    if s == "tp" or s == "experts":
        return layout.tp
    if s == "attn_tp":
        return layout.attn_tp
    if s == "kv_heads":
        return min(layout.attn_tp, spec.num_kv_heads)
    if s == "embed":
        return layout.attn_tp if layout.attn_dp > 1 else layout.tp
    if s == "shared":
        return 1 if layout.a2a == "deepep" else layout.tp
    raise ValueError(s)


@dataclass(frozen=True)
class WeightSummary:
    params: float  # loaded by SGLang (MTP only when served)
    bytes: float
    checkpoint_params: float  # everything in the published checkpoint
    checkpoint_bytes: float
    active_params: float  # per token (top-k of the routed experts), excluding MTP and vision
    by_group: dict[str, float]  # bytes per group, served


def summarize(spec: ModelSpec, precision: Precision, serve_mtp: bool = False) -> WeightSummary:
    params = bytes_ = cp = cb = active = 0.0
    by_group: dict[str, float] = {}
    frac = spec.num_experts_per_tok / spec.n_routed_experts if spec.n_routed_experts else 1.0
    for c in components(spec):
        b = c.params * precision.bytes_per_param(c.group)
        cp += c.params
        cb += b
        if not c.mtp and c.group != "vision":
            active += c.params * (frac if c.group == "routed" else 1.0)
        if c.checkpoint_only or (c.mtp and not serve_mtp):
            continue
        params += c.params
        bytes_ += b
        by_group[c.group] = by_group.get(c.group, 0.0) + b
    return WeightSummary(params, bytes_, cp, cb, active, by_group)


def per_gpu_weight_bytes(
    spec: ModelSpec, precision: Precision, layout: Layout, serve_mtp: bool = False
) -> tuple[float, dict[str, float]]:
    """Bytes of weights on the most loaded rank, and the same split by group."""
    total = 0.0
    by_group: dict[str, float] = {}
    for c in components(spec):
        if c.checkpoint_only or (c.mtp and not serve_mtp):
            continue
        b = c.params * precision.bytes_per_param(c.group) / shard_divisor(c, layout, spec)
        total += b
        by_group[c.group] = by_group.get(c.group, 0.0) + b
    return total, by_group
