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
WANTED = {KV_USED, NUM_USED, MAX_TOTAL, RUNNING, QUEUED, TOKEN_USAGE}


@dataclass(frozen=True)
class RankSample:
    dp_rank: str
    kv_used: float
    max_total: float
    running: float
    queued: float


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

    @property
    def utilization(self) -> float:
        return self.kv_used_tokens / self.kv_total_tokens if self.kv_total_tokens else 0.0


def parse_exposition(text: str) -> list[RankSample]:
    """Per-DP-rank samples from one /metrics page."""
    by_rank: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name not in WANTED:
                continue
            rank = s.labels.get("dp_rank", s.labels.get("tp_rank", "0"))
            by_rank.setdefault(rank, {})[s.name] = float(s.value)
    out = []
    for rank, v in sorted(by_rank.items()):
        total = v.get(MAX_TOTAL, 0.0)
        # kv_used_tokens (absolute, full pool) is the precise signal; token_usage is rounded to 2 decimals
        used = v.get(KV_USED, v.get(NUM_USED, v.get(TOKEN_USAGE, 0.0) * total))
        if total <= 0:
            continue
        out.append(RankSample(rank, used, total, v.get(RUNNING, 0.0), v.get(QUEUED, 0.0)))
    return out


async def _fetch(session: aiohttp.ClientSession, sem: asyncio.Semaphore, target: PodTarget,
                 timeout: float) -> tuple[PodTarget, list[RankSample] | None]:
    async with sem:
        try:
            async with session.get(target.url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                if resp.status != 200:
                    return target, None
                return target, parse_exposition(await resp.text())
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


def aggregate(results: Sequence[tuple[PodTarget, list[RankSample] | None]]) -> dict[int, GroupMetrics]:
    ranks: dict[int, dict[str, RankSample]] = {}
    scraped: dict[int, int] = {}
    missing: dict[int, list[str]] = {}
    for target, samples in results:
        if samples is None:
            missing.setdefault(target.group, []).append(target.pod)
            continue
        scraped[target.group] = scraped.get(target.group, 0) + 1
        for s in samples:  # a rank seen on two pods (e.g. --enable-metrics-for-all-schedulers) counts once
            ranks.setdefault(target.group, {})[s.dp_rank] = s
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
        )
    return out
