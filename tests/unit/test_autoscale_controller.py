"""The operator's autoscaling step (pure part): scale up at once, drain before scale-down, cancel a drain."""

from __future__ import annotations

from moe_operator.api.v1alpha1 import MoEDeploymentSpec
from moe_operator.autoscale.controller import (
    Memory,
    law_params,
    metrics_port,
    plan_step,
    starting_groups,
    with_silent_pods,
)
from moe_operator.autoscale.scrape import GroupMetrics

BASE = {"model": {"catalog": "kimi-k2.5"}, "weights": {"huggingFace": {"repo": "moonshotai/Kimi-K2.5"}},
        "precision": "int4", "sessions": {"target": 4, "contextTokens": 8192}, "pool": "h200"}
SPEC = MoEDeploymentSpec.model_validate({
    **BASE,
    "autoscaling": {"enabled": True, "minGroups": 1, "maxGroups": 4, "targetKVUtilization": 0.5,
                    "scaleDownStabilizationSeconds": 30, "coldStartSeconds": 20},
    "drain": {"timeoutSeconds": 60}})


def gm(group: int, used: int, total: int = 1000, running: int = 0, queued: int = 0) -> GroupMetrics:
    return GroupMetrics(group, used, total, running, queued, ranks=1, pods_scraped=1, pods_missing=())


def step(now: float, status: dict, replicas: int, metrics: dict, mem: Memory, starting: int = 0):  # type: ignore[no-untyped-def]
    return plan_step(now=now, spec=SPEC, status=status, replicas=replicas, starting=starting, metrics=metrics,
                     memory=mem, planned_groups=1, measured_cold_start=None)[1]


def test_high_occupancy_scales_up_immediately() -> None:
    r = step(1000.0, {}, 1, {0: gm(0, 800, running=8)}, Memory())
    assert r.changed_replicas and r.desired_groups >= 2
    assert r.status_patch["desiredGroups"] == r.desired_groups and r.event and r.event[0] == "ScaledUp"
    assert r.status_patch["kvUtilization"] == "0.80" and r.status_patch["kvUtilizationPercent"] == 80


def test_queued_requests_scale_up_even_at_low_average() -> None:
    r = step(1000.0, {}, 2, {0: gm(0, 300, running=3, queued=2), 1: gm(1, 100)}, Memory())
    assert r.changed_replicas and r.desired_groups == 3


def test_scale_down_drains_the_highest_group_first_and_only_then_lowers_replicas() -> None:
    mem = Memory()
    status: dict = {}
    t = 1000.0
    r = step(t, status, 2, {0: gm(0, 10, running=1), 1: gm(1, 10, running=1)}, mem)
    assert not r.changed_replicas and "drain" not in r.status_patch  # not yet stable long enough
    for _ in range(5):
        t += 10
        r = step(t, status, 2, {0: gm(0, 10, running=1), 1: gm(1, 10, running=1)}, mem)
        if "drain" in r.status_patch:
            break
    assert r.status_patch["drain"]["group"] == 1 and r.event and r.event[0] == "Draining"
    assert not r.changed_replicas and "desiredGroups" not in r.status_patch
    status = {"drain": {"group": 1, "startedAt": "2026-01-01T00:00:00Z"}}
    # group 1 still has a running request: keep waiting (the drain started "now" from the law's point of view)
    status["drain"]["startedAt"] = _iso(t)
    r = step(t + 5, status, 2, {0: gm(0, 10, running=1), 1: gm(1, 10, running=1)}, mem)
    assert not r.changed_replicas
    # its last request finished: now the replica count drops by one
    r = step(t + 10, status, 2, {0: gm(0, 10, running=1), 1: gm(1, 0, running=0)}, mem)
    assert r.changed_replicas and r.desired_groups == 1 and r.status_patch["drain"] is None
    assert r.event and r.event[0] == "ScaledDown" and "0 running requests" in r.event[1]


def test_drain_times_out() -> None:
    mem = Memory()
    status = {"drain": {"group": 1, "startedAt": _iso(1000.0)}}
    r = step(1061.0, status, 2, {0: gm(0, 10, running=1), 1: gm(1, 10, running=4)}, mem)
    assert r.changed_replicas and r.desired_groups == 1 and "timeout" in r.event[1]  # type: ignore[index]


def test_load_returning_cancels_the_drain() -> None:
    status = {"drain": {"group": 1, "startedAt": _iso(1000.0)}}
    r = step(1005.0, status, 2, {0: gm(0, 900, running=9), 1: gm(1, 10, running=1)}, Memory())
    assert r.status_patch["drain"] is None and not r.changed_replicas and r.event[0] == "DrainCancelled"  # type: ignore[index]


def test_starting_groups_are_those_without_a_ready_leader() -> None:
    def pod(group: int, worker: int, ready: bool) -> dict:
        return {"metadata": {"labels": {"leaderworkerset.sigs.k8s.io/group-index": str(group),
                                        "leaderworkerset.sigs.k8s.io/worker-index": str(worker)}},
                "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}
    pods = [pod(0, 0, True), pod(0, 1, True), pod(1, 0, False), pod(1, 1, True)]
    assert starting_groups(pods, 3) == 2  # group 1 not ready, group 2 has no pods yet


def _iso(t: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z")


def test_a_silent_group_is_reported_and_scaling_goes_on() -> None:
    # group 1's only pod is silent: group 0 alone at 80 % still scales the fleet up (group 1 counts as its mean)
    r = step(1000.0, {}, 2, {0: gm(0, 800, running=8)}, Memory())
    assert r.changed_replicas and r.desired_groups >= 3, r
    r = with_silent_pods(r, {}, ("auto-1",))
    assert r.status_patch["podsWithoutMetrics"] == ["auto-1"]
    assert r.event and r.event[0] == "ScaledUp" and r.event_type == "Normal"  # the scale event wins the step


def test_silent_pods_warn_once_and_clear() -> None:
    quiet = step(1000.0, {}, 1, {0: gm(0, 400, running=4)}, Memory())
    assert quiet.event is None
    r = with_silent_pods(quiet, {}, ("auto-0-1", "auto-1"))
    assert r.event_type == "Warning" and r.event and r.event[0] == "MetricsMissing" and "auto-0-1" in r.event[1]
    again = with_silent_pods(quiet, {"podsWithoutMetrics": ["auto-0-1", "auto-1"]}, ("auto-0-1", "auto-1"))
    assert again.event is None  # same set: no new event
    cleared = with_silent_pods(quiet, {"podsWithoutMetrics": ["auto-1"]}, ())
    assert cleared.status_patch["podsWithoutMetrics"] is None and cleared.event is None


def test_law_settings_come_from_the_typed_spec_zero_included() -> None:
    """0 is a legal cold start and drain timeout (no `or default` fallback), the stabilization default is the API's
    (600 s, as the CRD declares), and the scrape port follows autoscaling.metricsPort."""
    zero = MoEDeploymentSpec.model_validate({**BASE, "autoscaling": {"enabled": True, "maxGroups": 2,
                                                                     "coldStartSeconds": 0}})
    assert law_params(zero, measured_cold_start=90.0, planned_groups=1).cold_start_s == 0.0
    plain = MoEDeploymentSpec.model_validate({**BASE, "autoscaling": {"enabled": True, "maxGroups": 2}})
    p = law_params(plain, measured_cold_start=90.0, planned_groups=1)
    assert p.cold_start_s == 90.0 and p.scale_down_stabilization_s == 600.0 and p.max_groups == 2
    assert metrics_port(plain) == 30000
    port = MoEDeploymentSpec.model_validate({**BASE, "autoscaling": {"enabled": True, "maxGroups": 2,
                                                                     "metricsPort": 9090}})
    assert metrics_port(port) == 9090


def test_queued_tokens_admissions_and_service_time_come_from_the_counters_of_the_last_interval() -> None:
    from dataclasses import replace as _replace

    from moe_operator.autoscale.controller import Memory, Rates, counter_rates

    mem = Memory()
    base = _replace(gm(0, 100, 1000, 2, 4), prompt_tokens_total=10_000.0, cached_tokens_total=4_000.0,
                    requests_total=10.0, admitted_total=12.0, queue_time_sum=6.0, e2e_sum=100.0, e2e_count=10.0)
    assert counter_rates(0, base, mem, 0.0) == Rates(None, None, None)  # no interval yet: the law falls back
    # in 15 s: 5 requests finished (20,000 prompt tokens, 5,000 cached -> 3,000 uncached each; e2e 12 s each),
    # 6 admitted after waiting 2 s each on average; 4 queued now
    later = _replace(base, prompt_tokens_total=30_000.0, cached_tokens_total=9_000.0, requests_total=15.0,
                     admitted_total=18.0, queue_time_sum=18.0, e2e_sum=160.0, e2e_count=15.0)
    assert counter_rates(0, later, mem, 15.0) == Rates(4 * 3_000.0, 6 / 15, 12.0 - 2.0)
    assert counter_rates(0, later, mem, 30.0) == Rates(4 * 3_000.0, 0.0, 10.0)  # nothing new: last means hold
    # the server restarted (counters went down): re-based, the last values kept until a new interval
    restarted = _replace(base, prompt_tokens_total=500.0, cached_tokens_total=0.0, requests_total=1.0,
                         admitted_total=1.0, queue_time_sum=0.0, e2e_sum=5.0, e2e_count=1.0)
    assert counter_rates(0, restarted, mem, 45.0) == Rates(4 * 3_000.0, 0.0, 10.0)
    after = _replace(restarted, prompt_tokens_total=1_500.0, requests_total=2.0, admitted_total=2.0,
                     e2e_sum=10.0, e2e_count=2.0)
    assert counter_rates(0, after, mem, 55.0) == Rates(4 * 1_000.0, 0.1, 5.0)
    # a group whose servers expose no tokenizer counters: unknown
    assert counter_rates(1, gm(1, 100, 1000, 2, 4), mem, 55.0) == Rates(None, None, None)


def test_latency_comes_from_the_histograms_of_the_last_interval_and_drives_the_law() -> None:
    from dataclasses import replace as _replace

    from moe_operator.autoscale.controller import Latency, latency_since

    mem = Memory()
    base = _replace(gm(0, 100, 1000, 8, 0), itl_sum=10.0, itl_count=500.0, ttft_sum=4.0, ttft_count=4.0)
    assert latency_since(0, base, mem, 0.0) == Latency(None, None)  # no interval yet
    # in 15 s: 1,000 tokens decoded in 60 s of token intervals (60 ms each), 5 first tokens after 2 s each
    later = _replace(base, itl_sum=70.0, itl_count=1_500.0, ttft_sum=14.0, ttft_count=9.0)
    got = latency_since(0, later, mem, 15.0)
    assert abs((got.itl_s or 0) - 0.06) < 1e-12 and abs((got.ttft_s or 0) - 2.0) < 1e-12
    assert latency_since(0, later, mem, 30.0) == Latency(None, None)  # nothing new: no latency, not the last one
    restarted = _replace(base, itl_sum=1.0, itl_count=10.0, ttft_sum=0.0, ttft_count=0.0)
    assert latency_since(0, restarted, mem, 45.0) == Latency(None, None)  # counters went down: re-based
    assert latency_since(1, gm(1, 100), mem, 45.0) == Latency(None, None)  # no histograms exposed

    # the law reads them when the spec sets a target: 4 groups at 1.2 x the ITL target -> ceil(4.8 / 0.7) = 7
    spec = MoEDeploymentSpec.model_validate({**BASE, "autoscaling": {
        "enabled": True, "maxGroups": 8, "targetInterTokenLatencySeconds": 0.05}})
    mem2 = Memory()
    for now, s in ((0.0, 0.0), (15.0, 60.0)):
        metrics = {g: _replace(gm(g, 100, 1000, 8), itl_sum=s, itl_count=s / 0.06) for g in range(4)}
        res = plan_step(now=now, spec=spec, status={}, replicas=4, starting=0, metrics=metrics, memory=mem2,
                        planned_groups=1, measured_cold_start=None)[1]
    assert res.desired_groups == 7 and "latency 4.80 groups at target" in res.status_patch["lastScaleReason"]
    plain = plan_step(now=30.0, spec=SPEC, status={}, replicas=4, starting=0, metrics=metrics, memory=Memory(),
                      planned_groups=1, measured_cold_start=None)[1]
    assert plain.desired_groups == 4  # without a target: KV only (10 % used)
