"""Metric scraping: SGLang exposition -> per-rank samples -> per-group aggregate, with a silent pod tolerated."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from moe_operator.autoscale.scrape import PodTarget, parse_exposition, scrape

LABELS = 'engine_type="unified",model_name="m",moe_ep_rank="{r}",pp_rank="0",tp_rank="{r}",dp_rank="{r}"'


def exposition(ranks: dict[int, tuple[int, int, int, int]]) -> str:
    """ranks: dp_rank -> (kv_used, max_total, running, queued), in SGLang's names and label set."""
    lines = []
    for name, idx, typ in (("sglang:kv_used_tokens", 0, "gauge"), ("sglang:max_total_num_tokens", 1, "gauge"),
                           ("sglang:num_running_reqs", 2, "gauge"), ("sglang:num_queue_reqs", 3, "gauge")):
        lines.append(f"# HELP {name} x")
        lines.append(f"# TYPE {name} {typ}")
        for r, vals in ranks.items():
            lines.append(f"{name}{{{LABELS.format(r=r)}}} {float(vals[idx])}")
    lines.append("# HELP sglang:token_usage x\n# TYPE sglang:token_usage gauge")
    for r, vals in ranks.items():
        lines.append(f"sglang:token_usage{{{LABELS.format(r=r)}}} {round(vals[0] / vals[1], 2)}")
    return "\n".join(lines) + "\n"


def test_parse_exposition_reads_each_dp_rank() -> None:
    samples = parse_exposition(exposition({0: (100, 1000, 2, 0), 1: (500, 1000, 5, 1)}))
    assert [(s.dp_rank, s.kv_used, s.max_total, s.running, s.queued) for s in samples] == [
        ("0", 100.0, 1000.0, 2.0, 0.0), ("1", 500.0, 1000.0, 5.0, 1.0)]


def test_token_usage_is_the_fallback_when_kv_used_is_absent() -> None:
    text = ("# TYPE sglang:max_total_num_tokens gauge\nsglang:max_total_num_tokens{dp_rank=\"0\"} 1000.0\n"
            "# TYPE sglang:token_usage gauge\nsglang:token_usage{dp_rank=\"0\"} 0.25\n")
    assert parse_exposition(text)[0].kv_used == 250.0


async def test_scrape_aggregates_groups_and_tolerates_a_silent_pod() -> None:
    pages = {
        "/g0-leader": exposition({0: (100, 1000, 1, 0), 1: (300, 1000, 2, 0)}),
        "/g0-worker": exposition({2: (600, 1000, 3, 0), 3: (0, 1000, 0, 0)}),
        "/g1-leader": exposition({0: (900, 1000, 8, 4)}),
    }

    async def handler(request: web.Request) -> web.Response:
        if request.path == "/slow":
            await asyncio.sleep(1.5)
        if request.path not in pages:
            return web.Response(status=503)
        return web.Response(text=pages[request.path])

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    targets = [PodTarget(0, "g0-0", base + "/g0-leader"), PodTarget(0, "g0-0-1", base + "/g0-worker"),
               PodTarget(1, "g1-0", base + "/g1-leader"), PodTarget(1, "g1-0-1", base + "/slow"),
               PodTarget(2, "g2-0", base + "/gone")]
    try:
        async with aiohttp.ClientSession() as session:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            result = await scrape(session, targets, timeout=0.5)
            assert loop.time() - t0 < 2.0  # a silent pod costs one timeout, not a stall
    finally:
        await runner.cleanup()
    groups = result.groups
    assert result.silent == ("g1-0-1", "g2-0")
    assert groups[0].kv_used_tokens == 1000 and groups[0].kv_total_tokens == 4000 and groups[0].ranks == 4
    assert groups[0].running_reqs == 6 and groups[0].pods_scraped == 2
    assert groups[1].queued_reqs == 4 and groups[1].pods_missing == ("g1-0-1",)
    assert 2 not in groups  # no pod of group 2 answered


def test_tokenizer_counters_are_summed_and_sglang_underscore_names_are_accepted() -> None:
    from moe_operator.autoscale.scrape import Page, aggregate, parse_page

    text = exposition({0: (100, 1000, 2, 3)}) + (
        "# HELP sglang:prompt_tokens_total x\n# TYPE sglang:prompt_tokens_total counter\n"
        'sglang:prompt_tokens_total{model_name="m",priority="0"} 9000.0\n'
        'sglang:prompt_tokens_total{model_name="m",priority="1"} 1000.0\n'
        "# HELP sglang:cached_tokens_total x\n# TYPE sglang:cached_tokens_total counter\n"
        'sglang:cached_tokens_total{model_name="m"} 4000.0\n'
        "# HELP sglang:num_requests_total x\n# TYPE sglang:num_requests_total counter\n"
        'sglang:num_requests_total{model_name="m"} 10.0\n')
    page = parse_page(text)
    assert page.counters == {"sglang:prompt_tokens_total": 10000.0, "sglang:cached_tokens_total": 4000.0,
                             "sglang:num_requests_total": 10.0}
    # the same page as an exporter that spells the names sglang_* (Prometheus-style) serves it
    underscored = parse_page(text.replace("sglang:", "sglang_"))
    assert underscored.counters == page.counters and underscored.ranks == page.ranks
    m = aggregate([(PodTarget(0, "p0", "u"), page), (PodTarget(0, "p1", "u"), Page([], {}))])[0]
    assert (m.prompt_tokens_total, m.cached_tokens_total, m.requests_total) == (10000.0, 4000.0, 10.0)
    assert m.queued_reqs == 3 and m.pods_scraped == 2


def test_latency_histograms_are_summed_over_their_labels() -> None:
    from moe_operator.autoscale.scrape import PodTarget as _T
    from moe_operator.autoscale.scrape import aggregate, parse_page

    text = exposition({0: (100, 1000, 2, 0)}) + (
        "# HELP sglang:inter_token_latency_seconds x\n# TYPE sglang:inter_token_latency_seconds histogram\n"
        'sglang:inter_token_latency_seconds_bucket{model_name="m",le="+Inf"} 400.0\n'
        'sglang:inter_token_latency_seconds_count{model_name="m"} 400.0\n'
        'sglang:inter_token_latency_seconds_sum{model_name="m"} 12.0\n'
        "# HELP sglang:time_to_first_token_seconds x\n# TYPE sglang:time_to_first_token_seconds histogram\n"
        'sglang:time_to_first_token_seconds_count{model_name="m",is_streaming="true"} 3.0\n'
        'sglang:time_to_first_token_seconds_sum{model_name="m",is_streaming="true"} 6.0\n'
        'sglang:time_to_first_token_seconds_count{model_name="m",is_streaming="false"} 1.0\n'
        'sglang:time_to_first_token_seconds_sum{model_name="m",is_streaming="false"} 2.0\n')
    m = aggregate([(_T(0, "p0", "u"), parse_page(text.replace("sglang:", "sglang_")))])[0]
    assert (m.itl_sum, m.itl_count, m.ttft_sum, m.ttft_count) == (12.0, 400.0, 8.0, 4.0)
