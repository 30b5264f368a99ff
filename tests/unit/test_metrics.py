"""The operator's own metrics that the dashboard and the alerts read."""

from __future__ import annotations

from prometheus_client import REGISTRY

from moe_operator import metrics


def value(metric: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(metric, labels)


def test_autoscaling_and_rollout_metrics() -> None:
    metrics.observe_autoscaling("ns", "m1", {"kvUtilization": "0.62", "podsWithoutMetrics": ["p1", "p2"]},
                                ("ScaledDown", "3 -> 2 groups: group 2 drained (drain timeout 600s reached)"))
    assert value("moe_operator_kv_utilization", namespace="ns", name="m1") == 0.62
    assert value("moe_operator_pods_without_metrics", namespace="ns", name="m1") == 2
    assert value("moe_operator_scale_events_total", namespace="ns", name="m1", reason="ScaledDown") == 1
    assert value("moe_operator_drain_timeouts_total", namespace="ns", name="m1", kind="scale-down") == 1
    metrics.observe_autoscaling("ns", "m1", {"kvUtilization": "0.5"}, None)
    assert value("moe_operator_pods_without_metrics", namespace="ns", name="m1") == 0
    metrics.observe_rollout("ns", "m1", "RolloutGroupDrained", "rollout: group 1 drained (0 running requests)")
    assert value("moe_operator_scale_events_total", namespace="ns", name="m1", reason="RolloutGroupDrained") == 1
    assert value("moe_operator_drain_timeouts_total", namespace="ns", name="m1", kind="rollout") is None
    metrics.forget("ns", "m1")
    assert value("moe_operator_kv_utilization", namespace="ns", name="m1") is None
