"""Print the Prometheus exposition of SGLang 0.5.23's own metrics collectors (no server, no GPU).

Usage (conformance venv only):
    .venv-sglang/bin/python hack/sglang/metrics_exposition.py > tests/fixtures/sglang_metrics_0.5.23.txt

Instantiates SGLang's `SchedulerMetricsCollector` (one scheduler: tp_rank 0 of DP group 0) and
`TokenizerMetricsCollector` exactly as the server does (sglang.md §7), feeds the scheduler one fixed
`SchedulerStats` sample (3 running, 2 queued, token_usage 0.42, 4200 used tokens, 123 tok/s, 50 % cache hits), and
prints `prometheus_client.generate_latest()` — metric names, HELP/TYPE, label sets and histogram buckets as
SGLang 0.5.23 defines them. A simulator/scraper can be compared against this text.

Differences from a live server: single-process registry (the server uses prometheus_client multiprocess mode,
which adds a `pid` label to `num_retracted_reqs`/`num_paused_reqs` and aggregates across processes), no HTTP
collector, no process_*/python_* default collectors, no `*_created` series, and every value other than the
sample above is the collector's initial value. The model is a config.json-only DeepSeek-V3 geometry (SGLang
publishes a runtime context from it; no weights are read). The torch/triton stand-ins (hack/sglang/stubs) are
import-time only; the script fails if constructing the collectors or rendering touched them.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _sglang_env  # noqa: E402  (must precede any sglang import)

DEEPSEEK_V3_CONFIG = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "hidden_size": 7168,
    "intermediate_size": 18432,
    "moe_intermediate_size": 2048,
    "num_hidden_layers": 61,
    "num_attention_heads": 128,
    "num_key_value_heads": 128,
    "vocab_size": 129280,
    "kv_lora_rank": 512,
    "q_lora_rank": 1536,
    "qk_rope_head_dim": 64,
    "qk_nope_head_dim": 128,
    "v_head_dim": 128,
    "max_position_embeddings": 163840,
    "n_routed_experts": 256,
    "num_experts_per_tok": 8,
    "n_shared_experts": 1,
    "first_k_dense_replace": 3,
    "torch_dtype": "bfloat16",
}
SCHEDULER_LABELS = {
    "model_name": "m",
    "engine_type": "unified",
    "tp_rank": 0,
    "pp_rank": 0,
    "moe_ep_rank": 0,
    "dp_rank": 0,
}
TOKENIZER_LABELS = {"model_name": "m", "engine_type": "unified"}


def main() -> int:
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    from prometheus_client import (
        GC_COLLECTOR,
        PLATFORM_COLLECTOR,
        PROCESS_COLLECTOR,
        REGISTRY,
        disable_created_metrics,
        generate_latest,
    )
    from sglang.srt import runtime_context
    from sglang.srt.observability.metrics_collector import (
        QueueCount,
        SchedulerMetricsCollector,
        SchedulerStats,
        TokenizerMetricsCollector,
    )
    from sglang.srt.server_args import ServerArgs

    with tempfile.TemporaryDirectory() as model_dir:
        with open(os.path.join(model_dir, "config.json"), "w", encoding="utf-8") as f:
            json.dump(DEEPSEEK_V3_CONFIG, f)
        sa = ServerArgs(model_path=model_dir, enable_metrics=True, skip_tokenizer_init=True, device="cpu")
        runtime_context.publish(sa, role="scheduler")
        disable_created_metrics()  # `*_created` timestamps differ run to run (multiprocess mode has none either)
        _sglang_env.stub_log().clear()
        sched = SchedulerMetricsCollector(labels=dict(SCHEDULER_LABELS), server_args=sa)
        sched.log_stats(
            SchedulerStats(
                num_running_reqs=QueueCount(total=3),
                num_queue_reqs=QueueCount(total=2),
                token_usage=0.42,
                num_used_tokens=4200,
                gen_throughput=123.0,
                cache_hit_rate=0.5,
            )
        )
        TokenizerMetricsCollector(labels=dict(TOKENIZER_LABELS), server_args=sa)
        # prometheus_client's own process/python collectors are not SGLang's and vary run to run
        for default in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            REGISTRY.unregister(default)
        text = generate_latest(REGISTRY).decode("utf-8")
    touched = [x for x in _sglang_env.stub_log() if not x.startswith("import ")]
    if touched:
        print(f"collectors touched the torch/triton stand-ins: {touched[:10]}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
