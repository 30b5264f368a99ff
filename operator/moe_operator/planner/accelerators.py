"""Accelerator pool profiles (data). ``AcceleratorProfile.from_dict`` builds a custom pool from plain data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from moe_operator.planner.errors import PlanError

MIB = 1024 * 1024


@dataclass(frozen=True)
class AcceleratorProfile:
    name: str
    memory_gb: float  # per device, as marketed (decimal GB)
    devices_per_node: int
    resource_name: str  # "nvidia.com/gpu" | "huawei.com/Ascend910"
    supported_precisions: tuple[str, ...]
    vendor: str  # "nvidia" | "huawei"
    sglang_device_args: tuple[str, ...] = ()
    default_image: str = ""
    cost_per_node_hour: float | None = None  # USD list price for one node
    cost_source: str = ""
    # what the runtime reports as total device memory (torch.cuda / torch_npu total_memory), MiB;
    # SGLang's mem_fraction_static heuristic and KV profiling work from this number
    usable_mib: int | None = None
    runtime_overhead_mib: int = 1024  # CUDA/CANN context + comm buffers taken before SGLang profiles memory
    dsa_default_kv_dtype: str = "bfloat16"  # SGLang: fp8_e4m3 on SM>=100 (B200), bfloat16 on SM90 (H200)
    supported_kv_dtypes: tuple[str, ...] = ("auto", "bf16", "bfloat16", "fp8_e4m3", "fp8_e5m2")
    product_label_key: str = "nvidia.com/gpu.product"
    product_label: str = ""
    # KV page size SGLang uses by default per attention kind on this device (max_total_num_tokens floors to it)
    page_size: Mapping[str, int] = field(default_factory=lambda: {"mla": 1, "dsa": 64, "gqa": 1})
    moe_a2a_backend: str = "deepep"
    # compute architecture the SGLang rules key on (data/sglang_compat.yaml): sm90 (Hopper), sm100 (Blackwell), npu
    arch: str = "sm90"
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def memory_bytes(self) -> int:
        """Marketed capacity in bytes (decimal)."""
        return int(self.memory_gb * 1e9)

    @property
    def usable_bytes(self) -> int:
        return (self.usable_mib if self.usable_mib is not None else int(self.memory_gb * 1e9 / MIB)) * MIB

    @property
    def gpu_mem_mib(self) -> int:
        return self.usable_bytes // MIB

    def supports(self, precision: str) -> bool:
        return precision in self.supported_precisions

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AcceleratorProfile:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise PlanError("accelerator", f"unknown accelerator profile fields: {', '.join(unknown)}")
        kw = dict(data)
        for tup in ("supported_precisions", "sglang_device_args", "supported_kv_dtypes"):
            if tup in kw:
                kw[tup] = tuple(kw[tup])
        missing = [n for n in ("name", "memory_gb", "devices_per_node", "resource_name", "vendor") if n not in kw]
        if missing:
            raise PlanError("accelerator", f"accelerator profile lacks {', '.join(missing)}")
        kw.setdefault("supported_precisions", ("bf16",))
        if kw.get("vendor") == "huawei":
            kw.setdefault("arch", "npu")
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["memory_bytes"] = self.memory_bytes
        out["usable_bytes"] = self.usable_bytes
        for k, v in list(out.items()):
            if isinstance(v, tuple):
                out[k] = list(v)
            elif isinstance(v, Mapping):
                out[k] = dict(v)
        return out


_NV_SRC = {
    "usable_mib": "nvidia-smi total memory: H200 143771 MiB, B200 183359 MiB [inferred from commonly posted logs]",
    "dsa_default_kv_dtype": "sglang overrides.py::_dsa_kv_cache_dtype_default (sglang.md §1.1)",
    "page_size": "sglang: DSA forces page_size 64 on CUDA; trtllm_mla (Blackwell MLA default, DeepSeek family) and "
    "trtllm_mha (Blackwell GQA default: model_override_base.py::get_default_attn_backend) use 64; fa3 1 [code]",
}

ACCELERATORS: dict[str, AcceleratorProfile] = {
    "h200": AcceleratorProfile(
        name="h200",
        memory_gb=141,
        devices_per_node=8,
        resource_name="nvidia.com/gpu",
        supported_precisions=("bf16", "fp8", "int4"),
        vendor="nvidia",
        sglang_device_args=(),
        default_image="lmsysorg/sglang:v0.5.23",
        # AWS p5en.48xlarge (8x H200) on-demand, us-east-1, after the June 2025 price cut [inferred, verify]
        cost_per_node_hour=63.30,
        cost_source="AWS EC2 p5en.48xlarge on-demand list price, us-east-1 (2025) [inferred]",
        usable_mib=143771,
        dsa_default_kv_dtype="bfloat16",
        product_label="NVIDIA-H200",
        page_size={"mla": 1, "dsa": 64, "gqa": 1},
        sources=_NV_SRC,
    ),
    "b200": AcceleratorProfile(
        name="b200",
        memory_gb=180,
        devices_per_node=8,
        resource_name="nvidia.com/gpu",
        supported_precisions=("bf16", "fp8", "int4", "nvfp4"),
        vendor="nvidia",
        sglang_device_args=(),
        default_image="lmsysorg/sglang:v0.5.23-cu130",
        # AWS p6-b200.48xlarge (8x B200) on-demand, us-east-1 [inferred, verify]
        cost_per_node_hour=113.93,
        cost_source="AWS EC2 p6-b200.48xlarge on-demand list price, us-east-1 (2025) [inferred]",
        usable_mib=183359,
        dsa_default_kv_dtype="fp8_e4m3",
        supported_kv_dtypes=("auto", "bf16", "bfloat16", "fp8_e4m3", "fp8_e5m2"),
        product_label="NVIDIA-B200",
        page_size={"mla": 64, "dsa": 64, "gqa": 64},
        arch="sm100",
        sources=_NV_SRC,
    ),
    "ascend-910b": AcceleratorProfile(
        name="ascend-910b",
        memory_gb=64,
        devices_per_node=8,
        resource_name="huawei.com/Ascend910",
        # no FP8 datapath on 910B: W8A8 / W4A8 (modelslim) or BF16
        supported_precisions=("bf16", "w8a8", "w4a8"),
        vendor="huawei",
        sglang_device_args=("--device", "npu", "--attention-backend", "ascend"),
        default_image="lmsysorg/sglang:v0.5.23-cann9.0.0-910b",
        cost_per_node_hour=None,
        cost_source="no public USD list price; pass --cost-per-node-hour",
        usable_mib=65536,
        runtime_overhead_mib=2048,
        dsa_default_kv_dtype="bfloat16",
        supported_kv_dtypes=("auto", "bf16", "bfloat16"),
        product_label_key="accelerator",
        product_label="huawei-Ascend910",
        page_size={"mla": 128, "dsa": 128, "gqa": 128},
        arch="npu",
        sources={
            "usable_mib": "npu-smi HBM capacity 65536 MB per 910B device [inferred]",
            "page_size": "sglang Ascend backend default page size 128 [inferred]",
            "supported_precisions": "sglang.md §1.3 Ascend: W8A8/W4A8 via --quantization modelslim, BF16",
        },
    ),
    "ascend-910c": AcceleratorProfile(
        name="ascend-910c",
        memory_gb=64,
        devices_per_node=16,  # Atlas 800I/900 A3: 8 chips x 2 dies, each die a 64 GB device
        resource_name="huawei.com/Ascend910",
        supported_precisions=("bf16", "w8a8", "w4a8"),
        vendor="huawei",
        sglang_device_args=("--device", "npu", "--attention-backend", "ascend"),
        default_image="lmsysorg/sglang:v0.5.23-cann9.0.0-a3",
        cost_per_node_hour=None,
        cost_source="no public USD list price; pass --cost-per-node-hour",
        usable_mib=65536,
        runtime_overhead_mib=2048,
        dsa_default_kv_dtype="bfloat16",
        supported_kv_dtypes=("auto", "bf16", "bfloat16"),
        product_label_key="accelerator",
        product_label="huawei-Ascend910",
        page_size={"mla": 128, "dsa": 128, "gqa": 128},
        arch="npu",
        sources={
            "devices_per_node": "sglang.md §1.3: 1x Atlas 800I A3 = 16 NPUs (DeepSeek-R1 W4A8 --tp 16)",
            "usable_mib": "64 GB HBM per A3 die [inferred]",
        },
    ),
}


def resolve_accelerator(acc: str | AcceleratorProfile | Mapping[str, Any]) -> AcceleratorProfile:
    if isinstance(acc, AcceleratorProfile):
        return acc
    if isinstance(acc, Mapping):
        return AcceleratorProfile.from_dict(acc)
    key = acc.lower()
    if key not in ACCELERATORS:
        raise PlanError("accelerator", f"unknown accelerator {acc!r}; choose one of {', '.join(ACCELERATORS)}")
    return ACCELERATORS[key]
