"""KV-cache bytes per token per GPU, as SGLang 0.5.23 sizes its pools.

Code references (sglang 0.5.23): ``model_executor/pool_configurator.py::DefaultPoolConfigurator._compute_cell_size``,
``mem_cache/kv_cache_configurator.py::calculate_mla_kv_cache_dim``, ``_compute_dsa_indexer_cell_size``,
``mem_cache/memory_pool.py::DSATokenToKVPool(quant_block_size=128)`` (shared/reference/sglang.md §4); the DSA fp8
layout follows the backend (rule dsa-kv-layout of data/sglang_compat.yaml): SGLang's SM100 default backend for DSA
with fp8 KV is trtllm (dsa-backend-default), which keeps the raw (kv_lora_rank + rope) x 1 B layout; FlashMLA
(SM90) uses nope fp8 + an fp32 scale per 128 + bf16 rope.
"""

from __future__ import annotations

from dataclasses import dataclass

from moe_operator.planner.accelerators import AcceleratorProfile
from moe_operator.planner.catalog import ModelSpec
from moe_operator.planner.errors import PlanError

KV_DTYPE_BYTES = {"bfloat16": 2, "fp8_e4m3": 1, "fp8_e5m2": 1}
DSA_QUANT_BLOCK = 128  # DSATokenToKVPool quant_block_size
DSA_INDEX_KPOOL = 1  # index_k_with_scale_buffer: uint8, one "page" unit per token


def resolve_kv_dtype(requested: str, spec: ModelSpec, acc: AcceleratorProfile) -> str:
    """'auto' -> the dtype SGLang picks: DSA models get the accelerator's DSA default (fp8_e4m3 on
    Blackwell, bfloat16 on Hopper/Ascend); everything else the model dtype (bf16, also for FP8/INT4
    checkpoints, whose activations are bf16)."""
    req = (requested or "auto").lower()
    if req not in acc.supported_kv_dtypes:
        raise PlanError(
            "kv_dtype",
            f"kv-cache dtype {requested!r} is not supported on {acc.name}; choose one of "
            f"{', '.join(acc.supported_kv_dtypes)}",
        )
    if req == "auto":
        return acc.dsa_default_kv_dtype if spec.is_dsa else "bfloat16"
    if req == "bf16":
        req = "bfloat16"
    if req not in KV_DTYPE_BYTES:
        raise PlanError("kv_dtype", f"kv-cache dtype {requested!r} is not modelled; use auto, bf16 or fp8_e4m3")
    if spec.is_dsa and req not in ("bfloat16", "fp8_e4m3"):
        raise PlanError("kv_dtype", f"DSA models ({spec.id}) support only bfloat16 or fp8_e4m3 KV, not {requested!r}")
    return req


@dataclass(frozen=True)
class KVCell:
    bytes_per_token: int  # per GPU (per rank of one attention-TP group), all KV layers incl. MTP draft
    per_layer: int  # main KV part per layer per GPU
    indexer_per_layer: int  # DSA indexer cache per layer
    layers: int  # KV layers counted (target + draft)
    model_bytes_per_token: int  # unsharded: what one token costs the model as a whole (one replica)


# overrides.py::_DEEPSEEK_FAMILY_ARCHS: architectures whose MLA attention SGLang sends to trtllm_mla (page 64) on SM100
DEEPSEEK_FAMILY_ARCHS = frozenset({
    "DeepseekV3ForCausalLM", "DeepseekV32ForCausalLM", "KimiK25ForConditionalGeneration", "MistralLarge3ForCausalLM",
    "PixtralForConditionalGeneration", "GlmMoeDsaForCausalLM", "Glm5NextForConditionalGeneration", "HYV4ForCausalLM",
    "HYV4ForCausalLMNextN", "LongcatFlashForCausalLM", "LongcatFlashForCausalLMNextN", "Dots3NoteForCausalLM",
})  # fmt: skip


def page_size(spec: ModelSpec, acc: AcceleratorProfile) -> int:
    """The KV page SGLang picks by default: the pool's per-attention default, except MLA on SM100 outside the
    DeepSeek family, which gets flashinfer (page 1) instead of trtllm_mla (page 64)."""
    page = acc.page_size.get(spec.attention, 1)
    if acc.arch == "sm100" and spec.attention == "mla" and spec.architecture not in DEEPSEEK_FAMILY_ARCHS:
        return 1
    return page


def dsa_uses_trtllm_layout(acc: AcceleratorProfile) -> bool:
    """dsa-backend-default + dsa-kv-layout: trtllm (raw layout) is the DSA backend SGLang picks on SM100."""
    return acc.arch == "sm100" and acc.vendor == "nvidia"


def kv_cell(
    spec: ModelSpec, kv_dtype: str, attn_tp: int, acc: AcceleratorProfile, serve_mtp: bool = False
) -> KVCell:
    vendor = acc.vendor
    b = KV_DTYPE_BYTES[kv_dtype]
    layers = spec.num_layers + (spec.num_nextn_predict_layers if serve_mtp else 0)
    indexer = 0
    if spec.is_mla:
        lora, rope = spec.kv_lora_rank, spec.qk_rope_head_dim
        if spec.is_dsa and kv_dtype == "fp8_e4m3" and not dsa_uses_trtllm_layout(acc):
            # fp8 nope part + one fp32 scale per 128 + bf16 rope
            per_layer = lora + lora // DSA_QUANT_BLOCK * 4 + rope * 2
        else:
            per_layer = (lora + rope) * b
        if spec.is_dsa:
            d = spec.index_head_dim
            if vendor == "huawei" and kv_dtype != "fp8_e4m3":
                indexer = d * b  # NPU keeps the indexer keys in the KV dtype
            else:
                indexer = -(-(d + d // DSA_QUANT_BLOCK * 4) // DSA_INDEX_KPOOL)  # fp8 key + fp32 scale per 128
        model_per_layer = per_layer
    else:
        per_rank_heads = max(1, spec.num_kv_heads // attn_tp)
        per_layer = per_rank_heads * (spec.head_dim + spec.v_head_dim) * b
        model_per_layer = spec.num_kv_heads * (spec.head_dim + spec.v_head_dim) * b
    cell = (per_layer + indexer) * layers
    return KVCell(cell, per_layer, indexer, layers, (model_per_layer + indexer) * layers)
