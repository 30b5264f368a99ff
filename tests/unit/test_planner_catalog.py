"""Catalog data: sources for every number, parameter counts vs published sizes, config.json loading."""

from __future__ import annotations

import json

import pytest

from moe_operator.planner import CATALOG, PRECISIONS, ModelSpec, PlanError, load_model_config
from moe_operator.planner.catalog import MODEL_IDS, load_catalog_file
from moe_operator.planner.weights import summarize


def test_catalog_ids() -> None:
    assert set(CATALOG) == set(MODEL_IDS)
    assert all(isinstance(s, ModelSpec) for s in CATALOG.values())


@pytest.mark.parametrize("model", MODEL_IDS)
def test_every_number_has_a_source(model: str) -> None:
    spec = CATALOG[model]
    for key in ("num_hidden_layers", "hidden_size", "vocab_size", "max_position_embeddings"):
        src = spec.sources.get(key) or spec.sources.get(f"text_config.{key}")
        assert src, f"{model}.{key} has no source"
    assert all(v for v in spec.sources.values()), spec.sources
    assert spec.published and all(p.source for p in spec.published)


@pytest.mark.parametrize("model", MODEL_IDS)
def test_parameter_count_within_5_percent_of_published(model: str) -> None:
    spec = CATALOG[model]
    for pub in spec.published:
        prec = PRECISIONS[pub.precision or spec.native_precision]
        s = summarize(spec, prec, serve_mtp=True)
        if pub.what == "params":
            ours = s.checkpoint_params if pub.includes_mtp else s.checkpoint_params - _mtp_params(spec)
        elif pub.what == "bytes":
            ours = s.checkpoint_bytes
        else:
            ours = s.active_params
        tol = 0.10 if pub.what == "active_params" else 0.05
        assert ours == pytest.approx(pub.value, rel=tol), (model, pub, ours)


def _mtp_params(spec: ModelSpec) -> float:
    from moe_operator.planner.weights import components

    return sum(c.params for c in components(spec) if c.mtp)


def test_headline_checkpoint_sizes() -> None:
    k25 = summarize(CATALOG["kimi-k2.5"], PRECISIONS["int4"]).checkpoint_bytes
    v3 = summarize(CATALOG["deepseek-v3"], PRECISIONS["fp8"]).checkpoint_bytes
    assert k25 == pytest.approx(595e9, rel=0.01)
    assert v3 == pytest.approx(688e9, rel=0.01)


def test_geometry_matches_reference() -> None:
    k25, g5, g47 = CATALOG["kimi-k2.5"], CATALOG["glm-5"], CATALOG["glm-4.7"]
    assert (k25.attention, k25.architecture, k25.native_precision) == ("mla", "KimiK25ForConditionalGeneration", "int4")
    assert (k25.n_routed_experts, k25.first_k_dense_replace, k25.is_multimodal) == (384, 1, True)
    assert (g5.attention, g5.num_layers, g5.index_head_dim, g5.q_lora_rank) == ("dsa", 78, 128, 2048)
    assert (g47.attention, g47.num_kv_heads, g47.head_dim) == ("gqa", 8, 128)
    assert CATALOG["deepseek-v3.2"].attention == "dsa" and CATALOG["deepseek-v3"].attention == "mla"
    q = CATALOG["qwen3-235b-a22b"]
    assert (q.n_routed_experts, q.n_shared_experts, q.first_k_dense_replace, q.num_kv_heads) == (128, 0, 0, 4)


def _kimi_like_config() -> dict:
    text = {
        "model_type": "kimi_k2",
        "num_hidden_layers": 61,
        "hidden_size": 7168,
        "intermediate_size": 18432,
        "num_attention_heads": 64,
        "num_key_value_heads": 64,
        "q_lora_rank": 1536,
        "kv_lora_rank": 512,
        "qk_nope_head_dim": 128,
        "qk_rope_head_dim": 64,
        "v_head_dim": 128,
        "n_routed_experts": 384,
        "n_shared_experts": 1,
        "num_experts_per_tok": 8,
        "first_k_dense_replace": 1,
        "moe_intermediate_size": 2048,
        "vocab_size": 163840,
        "max_position_embeddings": 262144,
        "quantization_config": {
            "quant_method": "compressed-tensors",
            "config_groups": {"group_0": {"weights": {"num_bits": 4, "group_size": 32}}},
        },
    }
    return {
        "architectures": ["KimiK25ForConditionalGeneration"],
        "model_type": "kimi_k25",
        "text_config": text,
        "vision_config": {"vt_num_hidden_layers": 27, "vt_hidden_size": 1152, "vt_intermediate_size": 4304},
    }


def test_load_nested_text_config_matches_catalog() -> None:
    spec = load_model_config(_kimi_like_config(), model_id="custom-k25")
    cat = CATALOG["kimi-k2.5"]
    for f in (
        "attention",
        "num_layers",
        "hidden_size",
        "kv_lora_rank",
        "n_routed_experts",
        "moe_intermediate_size",
        "vision_num_layers",
        "vision_hidden_size",
        "native_precision",
    ):
        assert getattr(spec, f) == getattr(cat, f), f
    assert summarize(spec, PRECISIONS["int4"]).bytes == pytest.approx(
        summarize(cat, PRECISIONS["int4"]).bytes, rel=1e-6
    )


def test_load_config_file_and_json_text(tmp_path) -> None:
    d = tmp_path / "my-model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(_kimi_like_config()))
    assert load_model_config(d).id == "my-model"
    assert load_model_config(d / "config.json").num_layers == 61
    assert load_model_config(json.dumps(_kimi_like_config())).attention == "mla"


def test_unknown_architecture_names_missing_fields() -> None:
    with pytest.raises(PlanError) as e:
        load_model_config({"architectures": ["MambaForCausalLM"], "hidden_size": 4096, "n_routed_experts": 8})
    assert e.value.constraint == "model_config"
    for f in ("num_hidden_layers", "num_attention_heads", "vocab_size", "num_experts_per_tok", "moe_intermediate_size"):
        assert f in e.value.message
    assert "MambaForCausalLM" in e.value.message
    with pytest.raises(PlanError) as e:
        load_model_config({"text_config": {"hidden_size": 1}})
    assert "text_config" in e.value.message


def test_qwen_style_config() -> None:
    spec = load_model_config(
        {
            "architectures": ["Qwen3MoeForCausalLM"],
            "model_type": "qwen3_moe",
            "num_hidden_layers": 94,
            "hidden_size": 4096,
            "num_attention_heads": 64,
            "num_key_value_heads": 4,
            "head_dim": 128,
            "num_experts": 128,
            "num_experts_per_tok": 8,
            "moe_intermediate_size": 1536,
            "vocab_size": 151936,
            "max_position_embeddings": 40960,
            "mlp_only_layers": [],
            "decoder_sparse_step": 1,
        }
    )
    assert spec.attention == "gqa" and spec.num_moe_layers == 94 and spec.native_precision == "bf16"


def test_catalog_files_are_wellformed() -> None:
    from moe_operator.planner.catalog import DATA_DIR

    files = sorted(DATA_DIR.glob("*.yaml"))
    assert len(files) == len(MODEL_IDS)
    for f in files:
        assert load_catalog_file(f).id == f.stem


def test_kimi_k25_config_as_published() -> None:
    """Issue 9 §6: text_config.model_type deepseek_v3, compressed-tensors config_groups + ignore, vt_* vision keys."""
    from moe_operator.planner.catalog import DATA_DIR, _load_yaml, _unwrap, spec_from_config

    doc = _load_yaml(DATA_DIR / "kimi-k2.5.yaml")
    config = _unwrap(doc["config"], {}, doc["sources"], "")
    assert config["text_config"]["model_type"] == "deepseek_v3"
    q = config["text_config"]["quantization_config"]
    assert q["config_groups"]["group_0"]["weights"]["num_bits"] == 4 and "lm_head" in q["ignore"]
    assert set(config["vision_config"]) >= {"vt_num_hidden_layers", "vt_hidden_size", "vt_intermediate_size"}
    plain = spec_from_config(config)  # no catalog meta: precision and vision read from the config itself
    assert plain.native_precision == "int4"
    assert (plain.vision_num_layers, plain.vision_hidden_size, plain.vision_intermediate_size) == (27, 1152, 4304)


def test_glm5_checkpoint_has_no_mtp_embedding_copies() -> None:
    spec = CATALOG["glm-5"]
    assert not spec.mtp_checkpoint_duplicates_embeddings
    s = summarize(spec, PRECISIONS["fp8"], serve_mtp=True)
    assert s.checkpoint_bytes == pytest.approx(s.bytes)  # everything in the checkpoint is loaded with MTP on
