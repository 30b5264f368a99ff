"""Weight precisions: which tensor groups each covers, at how many bytes per parameter incl. scales.

Tensor groups (see weights.py): embed, lm_head, norm (norms, biases, small unquantized projections),
router (MoE gate), attn (attention projections), indexer (DSA indexer projections), dense (dense-MLP
layers), shared (shared experts), routed (routed experts), vision (multimodal tower). Groups a precision
does not cover stay BF16 (2 bytes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

BF16 = 2.0


@dataclass(frozen=True)
class Precision:
    id: str
    description: str
    # group -> bytes per parameter including scale overhead
    rates: Mapping[str, float] = field(default_factory=dict)
    # the K / N granularity a TP-split MoE/linear shard must stay a multiple of (quant block or group)
    block: int = 1
    sglang_quantization: str | None = None  # --quantization value when it is not auto-detected
    source: str = ""

    def bytes_per_param(self, group: str) -> float:
        return self.rates.get(group, BF16)

    def covers(self, group: str) -> bool:
        return group in self.rates


_LINEAR = ("attn", "indexer", "dense", "shared", "routed")

# FP8 block quantisation: e4m3 weight (1 B) + one fp32 scale per 128x128 block.
_FP8 = 1.0 + 4.0 / (128 * 128)
# INT4 W4A16, symmetric, group 32 along K: 0.5 B + one bf16 scale per 32 weights.
_INT4_G32 = 0.5 + 2.0 / 32
# NVFP4: e2m1 (0.5 B) + one fp8 e4m3 scale per 16 weights (+ a per-tensor fp32 scale, negligible).
_NVFP4 = 0.5 + 1.0 / 16
# W8A8 int8 (Ascend modelslim): int8 weight + per-output-channel fp32 scale and offset; ~8 B per row of
# K >= 2048 weights -> < 0.4 %; we charge 8/2048.
_W8A8 = 1.0 + 8.0 / 2048
# W4A8 (Ascend modelslim): int4 routed experts with per-group (256) scales, the other linears W8A8.
_W4 = 0.5 + 8.0 / 256

PRECISIONS: dict[str, Precision] = {
    "bf16": Precision("bf16", "BF16 weights everywhere", {}, 1, None, "model dtype"),
    "fp8": Precision(
        "fp8",
        "FP8 e4m3 block-128x128 (DeepSeek/Kimi-K2/GLM-FP8 format): all attention, indexer, dense, shared and"
        " routed linears; embeddings, lm_head, router gate and norms stay BF16",
        {g: _FP8 for g in _LINEAR},
        128,
        None,
        "DeepSeek-V3 config.json quantization_config weight_block_size [128,128] (sglang.md §5)",
    ),
    "int4": Precision(
        "int4",
        "INT4 W4A16 symmetric group-32 (compressed-tensors pack-quantized), routed experts only (Kimi native)",
        {"routed": _INT4_G32},
        32,
        None,
        "Kimi-K2.5 quantization_config: INT4 symmetric, group_size 32, routed experts only (sglang.md §5)",
    ),
    "w8a8": Precision(
        "w8a8",
        "W8A8 int8 per-channel (Ascend modelslim): all attention, dense, shared and routed linears",
        {g: _W8A8 for g in _LINEAR},
        1,
        "modelslim",
        "sglang Ascend docs: --quantization modelslim W8A8 weights from modelers.cn (sglang.md §1.3)"
        " [overhead inferred]",
    ),
    "w4a8": Precision(
        "w4a8",
        "W4A8 (Ascend modelslim): routed experts int4 (group 256), other linears int8",
        {"attn": _W8A8, "indexer": _W8A8, "dense": _W8A8, "shared": _W8A8, "routed": _W4},
        256,
        "modelslim",
        "sglang Ascend DeepSeek-R1 W4A8 example (sglang.md §1.3) [scale layout inferred]",
    ),
    "nvfp4": Precision(
        "nvfp4",
        "NVFP4 (ModelOpt): dense, shared and routed MLP linears in FP4 with fp8 scales per 16; attention BF16",
        {"dense": _NVFP4, "shared": _NVFP4, "routed": _NVFP4},
        16,
        "modelopt_fp4",
        "NVIDIA ModelOpt NVFP4 checkpoints (nvidia/DeepSeek-R1-FP4 ...) [coverage inferred]",
    ),
}


def resolve_precision(precision: str) -> Precision:
    from moe_operator.planner.errors import PlanError

    key = precision.lower().replace("-", "").replace("_", "")
    aliases = {"bfloat16": "bf16", "w4a16": "int4", "int8": "w8a8", "fp4": "nvfp4", "fp8e4m3": "fp8"}
    key = aliases.get(key, key)
    if key not in PRECISIONS:
        raise PlanError("precision", f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return PRECISIONS[key]
