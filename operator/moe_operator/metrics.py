"""The operator's own Prometheus metrics (served by `moe-operator run` on --metrics-port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("moe_operator_reconcile_total", "Reconcile runs by result", ["result"])
RECONCILE_ERRORS = Counter("moe_operator_reconcile_errors_total", "Reconcile runs that raised", ["kind"])
RECONCILE_SECONDS = Histogram("moe_operator_reconcile_duration_seconds", "Reconcile duration",
                              buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
API_WRITES = Counter("moe_operator_api_writes_total", "Create/apply/patch/delete calls made by reconcile")
API_REQUESTS = Counter("moe_operator_api_requests_total",
                       "Requests of the operator's own API client by verb and resource (kopf's watches and its "
                       "annotation patches are not counted; the apiserver's apiserver_request_total has them)",
                       ["verb", "resource"])
GROUPS_DESIRED = Gauge("moe_operator_groups_desired", "Desired SGLang groups", ["namespace", "name"])
GROUPS_READY = Gauge("moe_operator_groups_ready", "Ready SGLang groups", ["namespace", "name"])
LEADER = Gauge("moe_operator_leader", "1 while this replica holds the leader Lease (reconciles and autoscales)")
ADMISSION = Counter("moe_operator_admission_total", "Admission reviews by verdict", ["kind", "verdict"])
ADMISSION_SECONDS = Histogram("moe_operator_admission_duration_seconds", "Admission reviews: from the parsed review to "
                              "the response, inside the webhook server (the apiserver's "
                              "apiserver_admission_webhook_admission_duration_seconds adds TLS, HTTP and its queue)",
                              ["webhook"], buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
#: the webhook thread's time on a CPU and waiting for one (Linux schedstat), set by webhook_server: a review slow
#: with little of either waited for the interpreter lock
ADMISSION_THREAD_SECONDS = Gauge("moe_operator_admission_thread_seconds", "The admission webhook thread's time "
                                 "running on a CPU and waiting in the run queue (Linux /proc schedstat)", ["state"])
KV_UTILIZATION = Gauge("moe_operator_kv_utilization", "KV-cache occupancy of the ready groups as the autoscaler saw "
                       "it at its last step, 0..1", ["namespace", "name"])
PODS_WITHOUT_METRICS = Gauge("moe_operator_pods_without_metrics", "Group pods whose /metrics did not answer at the "
                             "last autoscaling step", ["namespace", "name"])
SCALE_EVENTS = Counter("moe_operator_scale_events_total", "Autoscaling and rollout events posted, by reason "
                       "(ScaledUp, Draining, ScaledDown, DrainCancelled, MetricsMissing, RolloutStarted, "
                       "RolloutDraining, RolloutGroupDrained)", ["namespace", "name", "reason"])
DRAIN_TIMEOUTS = Counter("moe_operator_drain_timeouts_total", "Drains that ended by drain.timeoutSeconds with "
                         "requests still running", ["namespace", "name", "kind"])


def observe_groups(namespace: str, name: str, *, desired: int, ready: int) -> None:
    GROUPS_DESIRED.labels(namespace, name).set(desired)
    GROUPS_READY.labels(namespace, name).set(ready)
    for kind in ("scale-down", "rollout"):  # the series exist at 0 from the start, so increase() sees the first one
        DRAIN_TIMEOUTS.labels(namespace, name, kind)


def observe_autoscaling(namespace: str, name: str, status_patch: dict, event: tuple[str, str] | None) -> None:
    """What an autoscaling step decided, as metrics (the dashboard's and the alerts' inputs)."""
    if "kvUtilization" in status_patch:
        KV_UTILIZATION.labels(namespace, name).set(float(status_patch["kvUtilization"]))
    PODS_WITHOUT_METRICS.labels(namespace, name).set(len(status_patch.get("podsWithoutMetrics") or []))
    if event is not None:
        SCALE_EVENTS.labels(namespace, name, event[0]).inc()
        if "drain timeout" in event[1]:
            DRAIN_TIMEOUTS.labels(namespace, name, "scale-down").inc()


def observe_rollout(namespace: str, name: str, reason: str, message: str) -> None:
    SCALE_EVENTS.labels(namespace, name, reason).inc()
    if "drain timeout" in message:
        DRAIN_TIMEOUTS.labels(namespace, name, "rollout").inc()


def forget(namespace: str, name: str) -> None:
    for g in (GROUPS_DESIRED, GROUPS_READY, KV_UTILIZATION, PODS_WITHOUT_METRICS):
        try:
            g.remove(namespace, name)
        except KeyError:
            pass
    for kind in ("scale-down", "rollout"):
        try:
            DRAIN_TIMEOUTS.remove(namespace, name, kind)
        except KeyError:
            pass
