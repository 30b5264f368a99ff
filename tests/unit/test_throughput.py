"""planner.throughput: monotonic in batch / context / GPUs, and the published calibration points reproduced."""

from __future__ import annotations

import pytest

from moe_operator.planner import throughput as tp

MODELS = ("kimi-k2.5", "deepseek-v3", "glm-5")


@pytest.mark.parametrize("model", MODELS)
def test_decode_step_grows_with_batch_and_context(model: str) -> None:
    steps = [tp.decode_step_seconds(model, "h200", 8, "fp8" if model == "deepseek-v3" else "bf16", b, 4096)
             for b in (1, 8, 64, 256)]
    assert steps == sorted(steps) and steps[0] < steps[-1]
    ctxs = [tp.decode_step_seconds(model, "h200", 8, "bf16", 64, c) for c in (1000, 8000, 64000)]
    assert ctxs == sorted(ctxs) and ctxs[0] < ctxs[-1]


def test_more_gpus_decode_faster_and_prefill_more() -> None:
    assert tp.decode_step_seconds("kimi-k2.5", "h200", 16, "int4", 64, 8000) < tp.decode_step_seconds(
        "kimi-k2.5", "h200", 8, "int4", 64, 8000)
    p8 = tp.prefill_tokens_per_second("kimi-k2.5", "h200", 8, "int4", 8000)
    p16 = tp.prefill_tokens_per_second("kimi-k2.5", "h200", 16, "int4", 8000)
    assert p16 == pytest.approx(2 * p8)


def test_prefill_slows_with_prompt_length_and_faster_accelerators_help() -> None:
    rates = [tp.prefill_tokens_per_second("deepseek-v3", "h200", 8, "fp8", n) for n in (1024, 8192, 65536)]
    assert rates == sorted(rates, reverse=True)
    assert tp.prefill_tokens_per_second("deepseek-v3", "b200", 8, "fp8", 4096) > rates[0]
    assert tp.prefill_tokens_per_second("deepseek-v3", "ascend-910b", 8, "w8a8", 4096) < rates[0]
    # INT4 (W4A16) computes in BF16 on Hopper: about half the FP8 rate
    assert tp.peak_flops("h200", "int4") == tp.peak_flops("h200", "bf16") < tp.peak_flops("h200", "fp8") / 1.9


def test_prefill_seconds_counts_cached_positions() -> None:
    cold = tp.prefill_seconds("kimi-k2.5", "h200", 8, "int4", 4096, 0)
    warm = tp.prefill_seconds("kimi-k2.5", "h200", 8, "int4", 4096, 60000)
    assert 0 < cold < warm
    assert tp.prefill_seconds("kimi-k2.5", "h200", 8, "int4", 0, 1000) == 0.0
    assert tp.ttft_seconds("kimi-k2.5", "h200", 8, "int4", 4096, queue_s=1.0) > 1.0


def test_calibration_points_reproduced_within_tolerance() -> None:
    cs = tp.checks()
    assert any(c.fitted for c in cs) and any(not c.fitted for c in cs)
    for c in cs:
        assert abs(c.error) <= c.tolerance, (c.name, c.error)
    fitted = [c for c in cs if c.fitted]
    assert all(abs(c.error) <= 0.01 for c in fitted if "decode" in c.name)  # the decode fit point exactly


def test_every_calibration_constant_has_a_source() -> None:
    cal = tp.DEFAULT_CALIBRATION
    for name in ("prefill_mfu", "prefill_attention_weight", "decode_token_factor", "decode_layer_latency_s",
                 "hbm_efficiency"):
        assert cal.sources[name]
    for dev in tp.DEVICES.values():
        assert dev.source


def test_kv_transfer_and_errors() -> None:
    assert tp.kv_transfer_seconds(1000, 35136, 50e9) == pytest.approx(1000 * 35136 / 50e9)
    assert tp.kv_bytes_per_token("kimi-k2.5", "h200", "fp8_e4m3") == 35136
    with pytest.raises(ValueError):
        tp.decode_step_seconds("kimi-k2.5", "h200", 0, "int4", 1, 1)
