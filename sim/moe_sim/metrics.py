"""SGLang 0.5.23 Prometheus metrics of the simulator: names, types, HELP texts, label names and buckets copied from
`srt/observability/metrics_collector.py` (sglang.md §3; tests/fixtures/sglang_metrics_0.5.23.txt is the conformance
reference). One CollectorRegistry per simulated server; no `*_created` series (SGLang runs prometheus_client in
multiprocess mode, which has none)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric

from .engine import Engine, SimConfig

SCHEDULER_LABELS = ("model_name", "engine_type", "tp_rank", "pp_rank", "moe_ep_rank", "dp_rank")
TOKENIZER_LABELS = ("model_name", "engine_type")

TTFT_BUCKETS = (0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400)
E2E_BUCKETS = (0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400, 600, 1200, 1800, 2400)
ITL_BUCKETS = (0.002, 0.004, 0.006, 0.008, 0.010, 0.015, 0.020, 0.025, 0.030, 0.035, 0.040, 0.060, 0.080, 0.100,
               0.200, 0.400, 0.600, 0.800, 1.000, 2.000, 4.000, 6.000, 8.000)
PROMPT_TOKENS_BUCKETS = (100, 300, 500, 700, 1000, 1500, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000, 12500,
                         15000, 17500, 20000, 22500, 25000, 27500, 30000, 35000, 40000, 60000, 80000, 100000, 200000,
                         300000, 400000, 600000, 800000, 1000000, 1100000)
QUEUE_TIME_BUCKETS = (0.000, 0.001, 0.005, 0.010, 0.050, 0.100, 0.200, 0.500, 1, 2, 3, 4, 5, 10, 15, 20, 30, 40, 50,
                      60, 70, 80, 90, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1200, 1400, 1600, 1800, 2000,
                      2500, 3000)

# name -> (HELP, stats key); set per DP rank at scrape time
SCHEDULER_GAUGES: dict[str, tuple[str, str]] = {
    "sglang:num_running_reqs": ("The number of running requests.", "num_running_reqs"),
    "sglang:num_queue_reqs": ("The number of requests in the waiting queue.", "num_waiting_reqs"),
    "sglang:num_grammar_queue_reqs": ("The number of requests in the grammar waiting queue.", ""),
    "sglang:gen_throughput": ("The generation throughput (token/s).", "gen_throughput"),
    "sglang:cache_hit_rate": ("The prefix cache hit rate.", "cache_hit_rate"),
    "sglang:decode_sum_seq_lens": ("The sum of all sequence lengths in decode.", "decode_sum_seq_lens"),
    "sglang:token_usage": ("The token usage.", "token_usage_rounded"),
    "sglang:full_token_usage": ("The token usage for full attention layers.", "token_usage"),
    "sglang:num_used_tokens": ("The number of used tokens.", "num_used_tokens"),
    "sglang:kv_available_tokens": ("Number of free token slots in the KV cache pool.", "kv_available_tokens"),
    "sglang:kv_evictable_tokens": ("Number of evictable (radix-cached) token slots in the KV cache pool.",
                                   "kv_evictable_tokens"),
    "sglang:kv_used_tokens": ("Number of actively used token slots in the KV cache pool.", "kv_used_tokens"),
    # constants (SGLang emits them once at startup)
    "sglang:max_total_num_tokens": ("Maximum total number of tokens in the KV cache pool.", "max_total_num_tokens"),
    "sglang:page_size": ("KV cache page size in tokens.", "page_size"),
    "sglang:context_len": ("Maximum context length.", "context_len"),
}

# PD disaggregation (prefill and decode servers only): the gauges SchedulerMetricsCollector.log_stats sets in its
# "PD disaggregation" block (srt/observability/metrics_collector.py), every one on both roles as in SGLang (the other
# role's stay 0). Stats keys come from pd_serve.py's stats hook; "" = never set by the simulator (host receive, deferred
# KV release and SWA are not modelled; `pending_prealloc_token_usage` is never assigned in SGLang 0.5.23 either).
PD_GAUGES: dict[str, tuple[str, str]] = {
    "sglang:num_prefill_bootstrap_queue_reqs": ("The number of requests in the prefill bootstrap queue.",
                                                "num_prefill_bootstrap_queue_reqs"),
    "sglang:num_prefill_inflight_queue_reqs": ("The number of requests in the prefill inflight queue.",
                                               "num_prefill_inflight_queue_reqs"),
    "sglang:num_decode_prealloc_queue_reqs": ("The number of requests in the decode prealloc queue.",
                                              "num_decode_prealloc_queue_reqs"),
    "sglang:num_decode_transfer_queue_reqs": ("The number of requests in the decode transfer queue.",
                                              "num_decode_transfer_queue_reqs"),
    "sglang:num_decode_host_receive_queue_reqs": ("Requests in the decode transfer queue receiving into host memory "
                                                  "or waiting for device admission.", ""),
    "sglang:num_decode_deferred_kv_release_reqs": ("The number of failed decode requests whose KV allocations are "
                                                   "held pending transfer drain acknowledgement or timeout.", ""),
    "sglang:pending_prealloc_token_usage": ("The token usage for pending preallocated tokens (not preallocated yet).",
                                            ""),
    "sglang:prealloc_full_token_usage": ("Share of the full-attention KV pool held by decode requests whose KV "
                                         "transfer is pending (preallocated, not yet running); same capacity basis "
                                         "as sglang:full_token_usage.", "prealloc_full_token_usage"),
    "sglang:prealloc_swa_token_usage": ("Share of the SWA KV pool held by decode requests whose KV transfer is "
                                        "pending; same capacity basis as sglang:swa_token_usage.", ""),
}
KV_TRANSFER_SPEED_BUCKETS = (0.1, 0.5, 1, 5, 10, 25, 50, 100, 200, 400)
KV_TRANSFER_LATENCY_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
KV_TRANSFER_BOOTSTRAP_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)
KV_TRANSFER_MB_BUCKETS = (1, 5, 10, 50, 100, 500, 1000, 5000, 10000)


class _WithoutCreated:
    """The registry's families minus their `*_created` samples."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for fam in self.registry.collect():
            fam.samples = [s for s in fam.samples if not s.name.endswith("_created")]
            yield fam


class SimMetrics:
    def __init__(self, cfg: SimConfig, *, scheduler_ranks: list[int], tokenizer: bool):
        self.cfg = cfg
        self.ranks = scheduler_ranks
        self.registry = CollectorRegistry(auto_describe=True)
        self._exposed = _WithoutCreated(self.registry)
        r = self.registry
        self.gauges = {name: Gauge(name, doc, SCHEDULER_LABELS, registry=r)
                       for name, (doc, _) in SCHEDULER_GAUGES.items()}
        self.queue_time = Histogram("sglang:queue_time_seconds", "Histogram of queueing time in seconds.",
                                    SCHEDULER_LABELS, buckets=QUEUE_TIME_BUCKETS, registry=r)
        for d in scheduler_ranks:  # series exist from startup, as in SGLang (emit_constants + first log_stats)
            self.queue_time.labels(**cfg.rank_labels(d))
        self.pd = cfg.disaggregation_mode != "null"
        if self.pd:
            self._init_pd()
        self.tokenizer = tokenizer
        if not tokenizer:
            return
        tl = TOKENIZER_LABELS
        st = (*tl, "is_streaming")
        self.labels = {"model_name": cfg.model_name, "engine_type": cfg.engine_type}
        self.startup_time = Gauge("sglang:startup_time_seconds", "Engine startup duration by phase in seconds.",
                                  (*tl, "phase"), registry=r)
        self.prompt_tokens = Counter("sglang:prompt_tokens", "Number of prefill tokens processed.", st, registry=r)
        self.generation_tokens = Counter("sglang:generation_tokens", "Number of generation tokens processed.", st,
                                         registry=r)
        self.cached_tokens = Counter("sglang:cached_tokens",
                                     "Number of cached prompt tokens by source (device/host/storage).",
                                     (*tl, "cache_source"), registry=r)
        self.num_requests = Counter("sglang:num_requests", "Number of requests processed.", st, registry=r)
        self.num_aborted = Counter("sglang:num_aborted_requests", "Number of requests aborted.", tl, registry=r)
        self.prompt_hist = Histogram("sglang:prompt_tokens_histogram", "Histogram of prompt token length.", tl,
                                     buckets=PROMPT_TOKENS_BUCKETS, registry=r)
        self.uncached_prompt_hist = Histogram("sglang:uncached_prompt_tokens_histogram",
                                              "Histogram of uncached (compute) prompt token length.", tl,
                                              buckets=PROMPT_TOKENS_BUCKETS, registry=r)
        self.generation_hist = Histogram("sglang:generation_tokens_histogram",
                                         "Histogram of generation token length.", tl,
                                         buckets=PROMPT_TOKENS_BUCKETS, registry=r)
        self.ttft = Histogram("sglang:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                              st, buckets=TTFT_BUCKETS, registry=r)
        self.itl = Histogram("sglang:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                             tl, buckets=ITL_BUCKETS, registry=r)
        self.tpot = Histogram("sglang:request_time_per_output_token_seconds",
                              "Per-request TPOT in seconds: (finished_time - first_token_time) / "
                              "(completion_tokens - 1).", st, buckets=ITL_BUCKETS, registry=r)
        self.e2e = Histogram("sglang:e2e_request_latency_seconds",
                             "Histogram of End-to-end request latency in seconds", st, buckets=E2E_BUCKETS,
                             registry=r)

    def _init_pd(self) -> None:
        """SchedulerMetricsCollector's PD families (metrics_collector.py, "PD disaggregation" block)."""
        r, sl = self.registry, SCHEDULER_LABELS
        self.pd_gauges = {name: Gauge(name, doc, sl, registry=r) for name, (doc, _) in PD_GAUGES.items()}
        self.kv_transfer_speed = Histogram("sglang:kv_transfer_speed_gb_s",
                                           "Histogram of KV cache transfer speed in GB/s.", sl,
                                           buckets=KV_TRANSFER_SPEED_BUCKETS, registry=r)
        self.kv_transfer_latency = Histogram("sglang:kv_transfer_latency_ms",
                                             "Histogram of KV cache transfer latency in ms.", sl,
                                             buckets=KV_TRANSFER_LATENCY_BUCKETS, registry=r)
        self.kv_transfer_bootstrap = Histogram("sglang:kv_transfer_bootstrap_ms",
                                               "Histogram of KV transfer bootstrap time in ms.", sl,
                                               buckets=KV_TRANSFER_BOOTSTRAP_BUCKETS, registry=r)
        self.kv_transfer_alloc = Histogram("sglang:kv_transfer_alloc_ms",
                                           "Histogram of KV transfer allocation waiting time in ms.", sl,
                                           buckets=KV_TRANSFER_BOOTSTRAP_BUCKETS, registry=r)
        self.kv_transfer_mb = Histogram("sglang:kv_transfer_total_mb", "Histogram of KV cache transfer size in MB.",
                                        sl, buckets=KV_TRANSFER_MB_BUCKETS, registry=r)
        self.bootstrap_failed = Counter("sglang:num_bootstrap_failed_reqs_total",
                                        "The number of bootstrap failed requests.", sl, registry=r)
        self.transfer_failed = Counter("sglang:num_transfer_failed_reqs_total",
                                       "The number of transfer failed requests.", sl, registry=r)

    # ---- PD scheduler side (SchedulerMetricsCollector.observe_kv_transfer_metrics / observe_kv_transfer_bootstrap /
    # increment_bootstrap_failed_reqs / increment_transfer_failed_reqs) ------------------------------------------
    def observe_kv_transfer(self, dp_rank: int, *, latency_s: float, total_bytes: int) -> None:
        """Prefill side (prefill.py process_disagg_prefill_inflight_queue -> req_time_stats.py
        compute_and_observe_kv_transfer_metrics): latency, size in MiB, speed in GiB/s."""
        if not self.pd or dp_rank not in self.ranks or latency_s <= 0:
            return
        labels = self.cfg.rank_labels(dp_rank)
        total_mb = total_bytes / (1024 * 1024)
        self.kv_transfer_latency.labels(**labels).observe(latency_s * 1000)
        self.kv_transfer_mb.labels(**labels).observe(total_mb)
        self.kv_transfer_speed.labels(**labels).observe(total_mb / 1024 / latency_s)

    def observe_kv_bootstrap(self, dp_rank: int, *, bootstrap_s: float, alloc_s: float) -> None:
        if self.pd and dp_rank in self.ranks:
            labels = self.cfg.rank_labels(dp_rank)
            self.kv_transfer_bootstrap.labels(**labels).observe(max(0.0, bootstrap_s) * 1000)
            self.kv_transfer_alloc.labels(**labels).observe(max(0.0, alloc_s) * 1000)

    def inc_bootstrap_failed(self, dp_rank: int) -> None:
        if self.pd and dp_rank in self.ranks:
            self.bootstrap_failed.labels(**self.cfg.rank_labels(dp_rank)).inc()

    def inc_transfer_failed(self, dp_rank: int) -> None:
        if self.pd and dp_rank in self.ranks:
            self.transfer_failed.labels(**self.cfg.rank_labels(dp_rank)).inc()

    # ---- tokenizer side (leader only) -------------------------------------------------------------------------
    def set_startup_time(self, seconds: float) -> None:
        if self.tokenizer:
            self.startup_time.labels(**self.labels, phase="total").set(seconds)

    def observe_finished(self, *, prompt: int, generated: int, cached: int, stream: bool, arrival: float,
                         first_token: float, finished: float) -> None:
        if not self.tokenizer:
            return
        sl = {**self.labels, "is_streaming": "true" if stream else "false"}
        self.prompt_tokens.labels(**sl).inc(prompt)
        self.generation_tokens.labels(**sl).inc(generated)
        self.num_requests.labels(**sl).inc()
        if cached > 0:
            self.cached_tokens.labels(**self.labels, cache_source="device").inc(cached)
        self.prompt_hist.labels(**self.labels).observe(prompt)
        self.uncached_prompt_hist.labels(**self.labels).observe(prompt - cached)
        self.generation_hist.labels(**self.labels).observe(generated)
        self.ttft.labels(**sl).observe(max(0.0, first_token - arrival))
        self.e2e.labels(**sl).observe(max(0.0, finished - arrival))
        if generated > 1:
            per_token = (finished - first_token) / (generated - 1)
            self.tpot.labels(**sl).observe(per_token)
            self.itl.labels(**self.labels).observe(per_token)

    def observe_aborted(self) -> None:
        if self.tokenizer:
            self.num_aborted.labels(**self.labels).inc()

    # ---- scheduler side ---------------------------------------------------------------------------------------
    def observe_queue_time(self, dp_rank: int, seconds: float) -> None:
        if dp_rank in self.ranks:
            self.queue_time.labels(**self.cfg.rank_labels(dp_rank)).observe(seconds)

    def refresh(self, engine: Engine | None) -> None:
        now = engine.clock.now() if engine is not None else 0.0  # an idle node's stats do not depend on it
        for d in self.ranks:
            st: dict[str, Any] = engine.rank_stats(d, now) if engine is not None else idle_stats(self.cfg, d)
            st["token_usage_rounded"] = round(st["token_usage"], 2)
            st["page_size"] = 1
            st["context_len"] = self.cfg.context_length
            labels = self.cfg.rank_labels(d)
            for name, (_, key) in SCHEDULER_GAUGES.items():
                self.gauges[name].labels(**labels).set(st.get(key, 0) if key else 0)
            if self.pd:
                for name, (_, key) in PD_GAUGES.items():
                    self.pd_gauges[name].labels(**labels).set(st.get(key, 0) if key else 0)

    def exposition(self, engine: Engine | None) -> bytes:
        self.refresh(engine)
        return generate_latest(self._exposed)  # type: ignore[arg-type]


def idle_stats(cfg: SimConfig, d: int) -> dict[str, Any]:
    cap = cfg.max_total_tokens
    return {"dp_rank": d, "num_running_reqs": 0, "num_waiting_reqs": 0, "num_used_tokens": 0, "kv_used_tokens": 0,
            "kv_evictable_tokens": 0, "kv_available_tokens": cap, "max_total_num_tokens": cap,
            "token_usage": 0.0, "gen_throughput": 0.0, "cache_hit_rate": 0.0, "decode_sum_seq_lens": 0}
