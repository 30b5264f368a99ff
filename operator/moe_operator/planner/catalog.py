"""Model geometry: the catalog shipped as data (``moe_operator/data/models/*.yaml``) and a reader for any
Hugging Face ``config.json``.

Pure stdlib + PyYAML, loaded lazily: importing this module does not read the catalog.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moe_operator.planner.errors import PlanError

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "models"


@dataclass(frozen=True)
class PublishedSize:
    """A published number the parameter count is checked against."""

    what: str  # "params" | "bytes" | "active_params"
    value: float
    source: str
    precision: str | None = None
    includes_mtp: bool = True


@dataclass(frozen=True)
class ModelSpec:
    """The config.json fields that size a model for SGLang.

    attention: "mla" (DeepSeek-V3/Kimi latent KV), "dsa" (MLA + DeepSeek sparse-attention indexer:
    DeepSeek-V3.2, GLM-5) or "gqa" (grouped-query / multi-head, e.g. GLM-4.7, Qwen3).
    """

    id: str
    name: str
    architecture: str
    model_type: str
    attention: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int  # GQA: per-head q/k dim; MLA: qk_nope + qk_rope
    v_head_dim: int
    vocab_size: int
    max_position_embeddings: int
    intermediate_size: int = 0  # dense MLP (first_k_dense layers)
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    kv_lora_rank: int = 0
    q_lora_rank: int | None = None
    index_n_heads: int = 0
    index_head_dim: int = 0
    index_topk: int = 0
    n_routed_experts: int = 0
    num_experts_per_tok: int = 0
    n_shared_experts: int = 0
    shared_expert_intermediate_size: int = 0  # total width of the shared expert(s)
    first_k_dense_replace: int = 0  # number of dense (non-MoE) layers at the bottom
    moe_intermediate_size: int = 0
    num_nextn_predict_layers: int = 0  # MTP layers shipped in the checkpoint
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    native_precision: str = "bf16"
    # multimodal tower (replicated bf16); SGLang's mem_fraction_static VLM adjustment reads these
    vision_num_layers: int = 0
    vision_hidden_size: int = 0
    vision_intermediate_size: int = 0
    vision_merge: int = 1  # patch-merger factor (2x2 -> 4)
    checkpoints: Mapping[str, str] = field(default_factory=dict)  # precision -> HF repo id
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    trust_remote_code: bool = False
    mtp_checkpoint_duplicates_embeddings: bool = False
    local_path: str | None = None  # the directory of a config.json read from disk: the default --model-path
    published: tuple[PublishedSize, ...] = ()
    sources: Mapping[str, str] = field(default_factory=dict)  # field -> citation

    @property
    def is_mla(self) -> bool:
        return self.attention in ("mla", "dsa")

    @property
    def is_dsa(self) -> bool:
        return self.attention == "dsa"

    @property
    def num_moe_layers(self) -> int:
        return self.num_layers - self.first_k_dense_replace if self.n_routed_experts else 0

    @property
    def is_multimodal(self) -> bool:
        return self.vision_num_layers > 0

    def checkpoint_for(self, precision: str) -> str | None:
        return self.checkpoints.get(precision)


class ModelConfigError(PlanError):
    def __init__(self, message: str) -> None:
        super().__init__("model_config", message)


def _unwrap(node: Any, sources: dict[str, str], citations: Mapping[str, str], path: str) -> Any:
    """Catalog values are ``[value, source-key]``; nested mappings recurse. Records field -> citation."""
    if isinstance(node, Mapping):
        return {k: _unwrap(v, sources, citations, f"{path}{k}.") for k, v in node.items()}
    if isinstance(node, list) and len(node) == 2 and isinstance(node[1], str | type(None)):
        value, src = node
        key = path.rstrip(".")
        sources[key] = citations.get(src, src) if src else ""
        return value
    raise ValueError(f"catalog field {path.rstrip('.')!r} must be [value, source]")


def _get(cfg: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    for n in names:
        if n in cfg and cfg[n] is not None:
            return cfg[n]
    return default


def _native_precision(cfg: Mapping[str, Any]) -> str:
    q = cfg.get("quantization_config") or {}
    method = str(q.get("quant_method", "")).lower()
    if method == "fp8":
        return "fp8"
    if method in ("compressed-tensors", "compressed_tensors"):
        bits = q.get("num_bits")
        groups = q.get("config_groups") or {}
        for g in groups.values() if isinstance(groups, Mapping) else []:
            bits = bits or (g.get("weights") or {}).get("num_bits")
        return "int4" if bits == 4 else "fp8" if bits == 8 else "bf16"
    if method in ("modelopt", "modelopt_fp4") or "nvfp4" in str(q.get("quant_algo", "")).lower():
        return "nvfp4"
    return "bf16"


def spec_from_config(
    config: Mapping[str, Any],
    *,
    model_id: str | None = None,
    meta: Mapping[str, Any] | None = None,
    sources: Mapping[str, str] | None = None,
    published: tuple[PublishedSize, ...] = (),
) -> ModelSpec:
    """Build a ModelSpec from a Hugging Face config.json mapping (nested ``text_config`` supported)."""
    meta = meta or {}
    top = dict(config)
    text = dict(top.get("text_config") or top)
    archs = top.get("architectures") or text.get("architectures") or ["unknown"]
    arch = archs[0] if isinstance(archs, list) and archs else str(archs)
    model_type = str(top.get("model_type") or text.get("model_type") or "unknown")

    required = ["num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size"]
    missing = [n for n in required if text.get(n) is None]
    has_mla = text.get("kv_lora_rank") is not None
    if has_mla:
        missing += [n for n in ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim") if text.get(n) is None]
    n_experts = int(_get(text, "n_routed_experts", "num_experts", "num_local_experts", default=0) or 0)
    if n_experts:
        missing += [n for n in ("num_experts_per_tok", "moe_intermediate_size") if text.get(n) is None]
    if not n_experts and text.get("intermediate_size") is None:
        missing.append("intermediate_size")
    if missing:
        raise ModelConfigError(
            f"config.json for architecture {arch} (model_type {model_type}) lacks the fields the planner needs: "
            f"{', '.join(missing)}" + (" (looked in text_config)" if "text_config" in top else "")
        )

    layers = int(text["num_hidden_layers"])
    hidden = int(text["hidden_size"])
    heads = int(text["num_attention_heads"])
    if has_mla:
        attention = "dsa" if text.get("index_topk") is not None else "mla"
        if attention == "dsa":
            miss = [n for n in ("index_head_dim", "index_n_heads") if text.get(n) is None]
            if miss:
                raise ModelConfigError(f"DSA model {arch} lacks {', '.join(miss)}")
        head_dim = int(text["qk_nope_head_dim"]) + int(text["qk_rope_head_dim"])
        v_head_dim = int(text["v_head_dim"])
        kv_heads = int(_get(text, "num_key_value_heads", default=heads))
    else:
        attention = "gqa"
        head_dim = int(_get(text, "head_dim", default=hidden // heads))
        v_head_dim = int(_get(text, "v_head_dim", default=head_dim))
        kv_heads = int(_get(text, "num_key_value_heads", default=heads))

    # dense layers: DeepSeek/GLM first_k_dense_replace; Qwen mlp_only_layers / decoder_sparse_step
    first_dense = int(_get(text, "first_k_dense_replace", default=0) or 0)
    if n_experts and "first_k_dense_replace" not in text:
        only = text.get("mlp_only_layers") or []
        first_dense = len(only)
        step = int(text.get("decoder_sparse_step") or 1)
        if step != 1:
            raise ModelConfigError(f"decoder_sparse_step={step} (interleaved MoE layers) is not modelled")
    if not n_experts:
        first_dense = layers
    moe_inter = int(_get(text, "moe_intermediate_size", default=0) or 0)
    n_shared = int(_get(text, "n_shared_experts", default=0) or 0)
    shared_inter = int(_get(text, "shared_expert_intermediate_size", default=0) or 0)
    if not shared_inter and n_shared:
        shared_inter = n_shared * moe_inter
    if shared_inter and not n_shared:
        n_shared = 1

    vision = top.get("vision_config") or {}
    v_layers = int(_get(vision, "num_hidden_layers", "vt_num_hidden_layers", "depth", default=0) or 0)
    v_hidden = int(_get(vision, "hidden_size", "vt_hidden_size", default=0) or 0)
    v_inter = int(_get(vision, "intermediate_size", "vt_intermediate_size", default=4 * v_hidden) or 0)
    merge = _get(vision, "merge_kernel_size", default=[2, 2]) if vision else [1]
    merge_factor = math.prod(int(m) for m in merge) if isinstance(merge, list | tuple) else int(merge)

    if not meta:
        meta = _serving_defaults(arch, top)

    def m(key: str, default: Any) -> Any:
        return meta.get(key, default)

    native = m("native_precision", None) or _native_precision(text if "quantization_config" in text else top)
    mid = model_id or str(top.get("_name_or_path") or model_type)
    return ModelSpec(
        id=mid,
        name=str(m("name", mid)),
        architecture=arch,
        model_type=model_type,
        attention=attention,
        num_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        v_head_dim=v_head_dim,
        vocab_size=int(text["vocab_size"]),
        max_position_embeddings=int(_get(text, "max_position_embeddings", default=0) or 0),
        intermediate_size=int(_get(text, "intermediate_size", default=0) or 0),
        qk_nope_head_dim=int(_get(text, "qk_nope_head_dim", default=0) or 0),
        qk_rope_head_dim=int(_get(text, "qk_rope_head_dim", default=0) or 0),
        kv_lora_rank=int(_get(text, "kv_lora_rank", default=0) or 0),
        q_lora_rank=(int(text["q_lora_rank"]) if text.get("q_lora_rank") else None),
        index_n_heads=int(_get(text, "index_n_heads", default=0) or 0),
        index_head_dim=int(_get(text, "index_head_dim", default=0) or 0),
        index_topk=int(_get(text, "index_topk", default=0) or 0),
        n_routed_experts=n_experts,
        num_experts_per_tok=int(_get(text, "num_experts_per_tok", default=0) or 0),
        n_shared_experts=n_shared,
        shared_expert_intermediate_size=shared_inter,
        first_k_dense_replace=first_dense,
        moe_intermediate_size=moe_inter,
        num_nextn_predict_layers=int(_get(text, "num_nextn_predict_layers", default=0) or 0),
        tie_word_embeddings=bool(_get(text, "tie_word_embeddings", default=False)),
        attention_bias=bool(_get(text, "attention_bias", "qkv_bias", default=False)),
        native_precision=str(native),
        vision_num_layers=v_layers,
        vision_hidden_size=v_hidden,
        vision_intermediate_size=v_inter,
        vision_merge=merge_factor,
        checkpoints=dict(m("checkpoints", {}) or {}),
        tool_call_parser=m("tool_call_parser", None),
        reasoning_parser=m("reasoning_parser", None),
        trust_remote_code=bool(m("trust_remote_code", False)),
        mtp_checkpoint_duplicates_embeddings=bool(m("mtp_checkpoint_duplicates_embeddings", False)),
        local_path=m("local_path", None),
        published=published,
        sources=dict(sources or {}),
    )


def _serving_defaults(arch: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """For a config.json from outside the catalog: the parsers of the catalog model with the same architecture, and
    --trust-remote-code when the config maps its classes to code in the repository (auto_map)."""
    out: dict[str, Any] = {}
    for spec in CATALOG.values():
        if spec.architecture == arch:
            out = {"tool_call_parser": spec.tool_call_parser, "reasoning_parser": spec.reasoning_parser,
                   "trust_remote_code": spec.trust_remote_code}  # fmt: skip
            break
    if config.get("auto_map"):
        out["trust_remote_code"] = True
    return out


def load_model_config(source: str | Path | Mapping[str, Any], model_id: str | None = None) -> ModelSpec:
    """Read a Hugging Face config.json (path, JSON text, or already-parsed mapping) into a ModelSpec.

    Raises ModelConfigError (a PlanError, constraint "model_config") naming missing fields.
    """
    if isinstance(source, Mapping):
        cfg: Any = source
    else:
        text = str(source)
        if isinstance(source, str) and text.lstrip().startswith("{"):
            cfg = json.loads(text)
        else:
            path = Path(source)
            if path.is_dir():
                path = path / "config.json"
            try:
                cfg = json.loads(path.read_text())
            except FileNotFoundError as exc:
                raise ModelConfigError(f"model config {path} not found") from exc
            except json.JSONDecodeError as exc:
                raise ModelConfigError(f"model config {path} is not valid JSON: {exc}") from exc
            model_id = model_id or path.parent.name or path.stem
            if not isinstance(cfg, Mapping):
                raise ModelConfigError("model config must be a JSON object")
            arch = (cfg.get("architectures") or ["unknown"])[0] if isinstance(cfg.get("architectures"), list) else ""
            meta = {**_serving_defaults(str(arch), cfg), "local_path": str(path.resolve().parent)}
            return spec_from_config(cfg, model_id=model_id, meta=meta)
    if not isinstance(cfg, Mapping):
        raise ModelConfigError("model config must be a JSON object")
    return spec_from_config(cfg, model_id=model_id)


def _load_yaml(path: Path) -> Any:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open() as fh:
        return yaml.load(fh, Loader=loader)  # noqa: S506 - safe loader


def load_catalog_file(path: Path) -> ModelSpec:
    doc = _load_yaml(path)
    citations: Mapping[str, str] = doc.get("sources") or {}
    sources: dict[str, str] = {}
    config = _unwrap(doc["config"], sources, citations, "")
    meta_sources: dict[str, str] = {}
    meta = _unwrap(doc.get("meta") or {}, meta_sources, citations, "")
    sources.update(meta_sources)
    meta["name"] = doc.get("name", doc["id"])
    published = tuple(
        PublishedSize(
            what=p["what"],
            value=float(p["value"]),
            source=citations.get(p["source"], p["source"]),
            precision=p.get("precision"),
            includes_mtp=bool(p.get("includes_mtp", True)),
        )
        for p in doc.get("published") or ()
    )
    return spec_from_config(config, model_id=doc["id"], meta=meta, sources=sources, published=published)


class _LazyCatalog(Mapping[str, ModelSpec]):
    """dict-like CATALOG that reads data/models/*.yaml on first access."""

    def __init__(self) -> None:
        self._data: dict[str, ModelSpec] | None = None

    def _load(self) -> dict[str, ModelSpec]:
        if self._data is None:
            data: dict[str, ModelSpec] = {}
            for path in sorted(DATA_DIR.glob("*.yaml")):
                spec = load_catalog_file(path)
                data[spec.id] = spec
            self._data = data
        return self._data

    def __getitem__(self, key: str) -> ModelSpec:
        return self._load()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def __repr__(self) -> str:
        return f"CATALOG({sorted(self._load())})"


CATALOG: Mapping[str, ModelSpec] = _LazyCatalog()

MODEL_IDS = ("kimi-k2.5", "kimi-k2", "glm-5", "glm-4.7", "deepseek-v3", "deepseek-v3.2", "qwen3-235b-a22b")


def resolve_model(model: str | ModelSpec) -> ModelSpec:
    if isinstance(model, ModelSpec):
        return model
    try:
        return CATALOG[model]
    except KeyError:
        raise PlanError(
            "model", f"unknown model {model!r}; catalog ids: {', '.join(sorted(CATALOG))} (or pass a config.json)"
        ) from None
