"""Scrape SGLang's Prometheus endpoints of every pod of every group, concurrently, and aggregate per group.

Scheduler gauges carry a `dp_rank` label; with attention DP spanning nodes, DP groups on worker nodes appear on the
worker pod's own /metrics (SGLang's dummy server), so every pod of a group is scraped and ranks are de-duplicated by
`dp_rank`. One pod that does not answer leaves its ranks out of the sample instead of blocking the decision."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

# sglang:* names exactly as SGLang 0.5.23 emits them (reference sglang.md §3)
KV_USED = "sglang:kv_used_tokens"
NUM_USED = "sglang:num_used_tokens"
MAX_TOTAL = "sglang:max_total_num_tokens"
RUNNING = "sglang:num_running_reqs"
QUEUED = "sglang:num_queue_reqs"
TOKEN_USAGE = "sglang:token_usage"
# PD prefill servers' queues (SchedulerMetricsCollector, set by metrics_reporter.py report_prefill_stats): requests
# waiting for their decode side's handshake, and prefilled ones whose KV is still being sent
PREFILL_BOOTSTRAP = "sglang:num_prefill_bootstrap_queue_reqs"
PREFILL_INFLIGHT = "sglang:num_prefill_inflight_queue_reqs"
WANTED = {KV_USED, NUM_USED, MAX_TOTAL, RUNNING, QUEUED, TOKEN_USAGE, PREFILL_BOOTSTRAP, PREFILL_INFLIGHT}
# the tokenizer's counters (on the leader; no dp_rank): what a queued request will need, as the mean uncached
# prompt of the requests served (observability/metrics_collector.py TokenizerMetricsCollector; they count at a
# request's end)
PROMPT_TOKENS = "sglang:prompt_tokens_total"
CACHED_TOKENS = "sglang:cached_tokens_total"
REQUESTS = "sglang:num_requests_total"
# histograms' _count/_sum (counters too): requests admitted from a scheduler's queue and their wait
# (SchedulerMetricsCollector queue_time_seconds, per DP rank), finished requests' end-to-end latency (tokenizer)
ADMITTED = "sglang:queue_time_seconds_count"
QUEUE_TIME_SUM = "sglang:queue_time_seconds_sum"
E2E_SUM = "sglang:e2e_request_latency_seconds_sum"
E2E_COUNT = "sglang:e2e_request_latency_seconds_count"
# the tokenizer's latency histograms (TokenizerMetricsCollector): inter-token latency is observed once per new token
# (observe_inter_token_latency: interval / tokens, `num_new_tokens` times), so _sum/_count is the token-weighted
# mean ITL; time to first token once per request (summed over its is_streaming label)
ITL_SUM = "sglang:inter_token_latency_seconds_sum"
ITL_COUNT = "sglang:inter_token_latency_seconds_count"
TTFT_SUM = "sglang:time_to_first_token_seconds_sum"
TTFT_COUNT = "sglang:time_to_first_token_seconds_count"
COUNTERS = (PROMPT_TOKENS, CACHED_TOKENS, REQUESTS, ADMITTED, QUEUE_TIME_SUM, E2E_SUM, E2E_COUNT, ITL_SUM, ITL_COUNT,
            TTFT_SUM, TTFT_COUNT)


def canonical(name: str) -> str:
    """`sglang_x` (how some exporters and Prometheus' own relabelling spell it) -> `sglang:x`, as SGLang emits it."""
    return "sglang:" + name[len("sglang_"):] if name.startswith("sglang_") else name


@dataclass(frozen=True)
class RankSample:
    dp_rank: str
    kv_used: float
    max_total: float
    running: float
    queued: float
    prefill_bootstrap: float = 0.0
    prefill_inflight: float = 0.0


@dataclass(frozen=True)
class Page:
    """One /metrics page: per-DP-rank gauges and the tokenizer's counters (summed over their label sets)."""

    ranks: list[RankSample]
    counters: dict[str, float]


@dataclass(frozen=True)
class PodTarget:
    group: int
    pod: str
    url: str  # http://ip:port/metrics


@dataclass(frozen=True)
class GroupMetrics:
    group: int
    kv_used_tokens: int
    kv_total_tokens: int
    running_reqs: int
    queued_reqs: int
    ranks: int
    pods_scraped: int
    pods_missing: tuple[str, ...]
    # tokenizer counters summed over the group's pods; None when no pod exposes them
    prompt_tokens_total: float | None = None
    cached_tokens_total: float | None = None
    requests_total: float | None = None
    admitted_total: float | None = None
    queue_time_sum: float | None = None
    e2e_sum: float | None = None
    e2e_count: float | None = None
    itl_sum: float | None = None
    itl_count: float | None = None
    ttft_sum: float | None = None
    ttft_count: float | None = None
    prefill_bootstrap_reqs: int = 0  #: PD prefill: waiting for the decode side's handshake
    prefill_inflight_reqs: int = 0  #: PD prefill: prefilled, KV still being sent

    @property
    def utilization(self) -> float:
        return self.kv_used_tokens / self.kv_total_tokens if self.kv_total_tokens else 0.0


def parse_exposition(text: str) -> list[RankSample]:
    """Per-DP-rank samples from one /metrics page."""
    return parse_page(text).ranks


def parse_page(text: str) -> Page:
    by_rank: dict[str, dict[str, float]] = {}
    counters: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            name = canonical(s.name)
            if name in COUNTERS:
                counters[name] = counters.get(name, 0.0) + float(s.value)
                continue
            if name not in WANTED:
                continue
            rank = s.labels.get("dp_rank", s.labels.get("tp_rank", "0"))
            by_rank.setdefault(rank, {})[name] = float(s.value)
    out = []
    for rank, v in sorted(by_rank.items()):
        total = v.get(MAX_TOTAL, 0.0)
        # kv_used_tokens (absolute, full pool) is the precise signal; token_usage is rounded to 2 decimals
        used = v.get(KV_USED, v.get(NUM_USED, v.get(TOKEN_USAGE, 0.0) * total))
        if total <= 0:
            continue
        out.append(RankSample(rank, used, total, v.get(RUNNING, 0.0), v.get(QUEUED, 0.0),
                              v.get(PREFILL_BOOTSTRAP, 0.0), v.get(PREFILL_INFLIGHT, 0.0)))
    return Page(out, counters)


async def _fetch(session: aiohttp.ClientSession, sem: asyncio.Semaphore, target: PodTarget,
                 timeout: float) -> tuple[PodTarget, Page | None]:
    async with sem:
        try:
            async with session.get(target.url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                if resp.status != 200:
                    return target, None
                return target, parse_page(await resp.text())
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return target, None


@dataclass(frozen=True)
class Scrape:
    groups: dict[int, GroupMetrics]  # groups where at least one pod answered
    silent: tuple[str, ...]  # pods that did not answer (timeout, refused, non-200, unparsable), sorted


async def scrape(session: aiohttp.ClientSession, targets: Iterable[PodTarget], *, concurrency: int = 32,
                 timeout: float = 2.0) -> Scrape:
    """Scrape all targets with bounded concurrency over one shared session; aggregate per group. A pod that does
    not answer costs at most `timeout` and is listed in `silent`; groups where no pod answered are absent."""
    sem = asyncio.Semaphore(concurrency)
    results = await asyncio.gather(*(_fetch(session, sem, t, timeout) for t in targets))
    return Scrape(groups=aggregate(results), silent=tuple(sorted(t.pod for t, s in results if s is None)))


def aggregate(results: Sequence[tuple[PodTarget, Page | list[RankSample] | None]]) -> dict[int, GroupMetrics]:
    ranks: dict[int, dict[str, RankSample]] = {}
    counters: dict[int, dict[str, float]] = {}
    scraped: dict[int, int] = {}
    missing: dict[int, list[str]] = {}
    for target, page in results:
        if page is None:
            missing.setdefault(target.group, []).append(target.pod)
            continue
        if isinstance(page, list):
            page = Page(page, {})
        scraped[target.group] = scraped.get(target.group, 0) + 1
        for s in page.ranks:  # a rank seen on two pods (e.g. --enable-metrics-for-all-schedulers) counts once
            ranks.setdefault(target.group, {})[s.dp_rank] = s
        for k, v in page.counters.items():
            c = counters.setdefault(target.group, {})
            c[k] = c.get(k, 0.0) + v
    out = {}
    for g, rs in ranks.items():
        vals: Mapping[str, RankSample] = rs
        out[g] = GroupMetrics(
            group=g,
            kv_used_tokens=int(sum(r.kv_used for r in vals.values())),
            kv_total_tokens=int(sum(r.max_total for r in vals.values())),
            running_reqs=int(sum(r.running for r in vals.values())),
            queued_reqs=int(sum(r.queued for r in vals.values())),
            ranks=len(vals),
            pods_scraped=scraped.get(g, 0),
            pods_missing=tuple(missing.get(g, ())),
            prompt_tokens_total=counters.get(g, {}).get(PROMPT_TOKENS),
            cached_tokens_total=counters.get(g, {}).get(CACHED_TOKENS),
            requests_total=counters.get(g, {}).get(REQUESTS),
            admitted_total=counters.get(g, {}).get(ADMITTED),
            queue_time_sum=counters.get(g, {}).get(QUEUE_TIME_SUM),
            e2e_sum=counters.get(g, {}).get(E2E_SUM),
            e2e_count=counters.get(g, {}).get(E2E_COUNT),
            itl_sum=counters.get(g, {}).get(ITL_SUM),
            itl_count=counters.get(g, {}).get(ITL_COUNT),
            ttft_sum=counters.get(g, {}).get(TTFT_SUM),
            ttft_count=counters.get(g, {}).get(TTFT_COUNT),
            prefill_bootstrap_reqs=int(sum(r.prefill_bootstrap for r in vals.values())),
            prefill_inflight_reqs=int(sum(r.prefill_inflight for r in vals.values())),
        )
    return out
