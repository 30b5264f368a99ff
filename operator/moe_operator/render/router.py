"""The router, SMG 1.13.0 (Shepherd Model Gateway, the SGLang model gateway's continuation): Deployment, RBAC and
client Service.

The router discovers this deployment's routable leader pods through the
Kubernetes API (``--service-discovery --selector ...``) and load-balances
across groups with a prefix-cache-aware policy.  It runs on CPU nodes.
"""

from __future__ import annotations

from typing import Any

from .argv import ROUTER_COMMAND, ROUTER_METRICS_PORT, ROUTER_PORT, router_args, router_selector
from .inputs import RenderInput
from .lws import SHUTDOWN_SLACK_SECONDS, api_key_env
from .meta import (
    COMPONENT_ENGINE,
    COMPONENT_ROUTER,
    L_COMPONENT,
    L_DEPLOYMENT,
    base_labels,
    leaders_service_name,
    object_meta,
    router_name,
)

ROUTER_CPU_LIMIT, ROUTER_MEMORY_LIMIT = "2", "4Gi"
ROUTER_UID = 65532  # the distroless "nonroot" user


def router_pod_selector(inp: RenderInput) -> dict[str, str]:
    """Selector of the router pods (Deployment, Service, PDB).  Immutable on a
    Deployment, hence minimal."""
    return {L_DEPLOYMENT: inp.name, L_COMPONENT: COMPONENT_ROUTER}


def router_service_account(inp: RenderInput) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": object_meta(inp, router_name(inp.name), COMPONENT_ROUTER),
    }


def router_role(inp: RenderInput) -> dict[str, Any]:
    """Pod discovery in the deployment's namespace only."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": object_meta(inp, router_name(inp.name), COMPONENT_ROUTER),
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
    }


def router_role_binding(inp: RenderInput) -> dict[str, Any]:
    name = router_name(inp.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": object_meta(inp, name, COMPONENT_ROUTER),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": inp.namespace}],
    }


def router_deployment(inp: RenderInput) -> dict[str, Any]:
    name = router_name(inp.name)
    labels = base_labels(inp, COMPONENT_ROUTER)
    container: dict[str, Any] = {
        "name": "router",
        "image": inp.router_image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(ROUTER_COMMAND),
        "args": router_args(inp),
        **({"env": api_key_env(inp)} if inp.api_key_secret is not None else {}),
        "ports": [
            {"name": "http", "containerPort": ROUTER_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": ROUTER_METRICS_PORT, "protocol": "TCP"},
        ],
        # No device resources: CPU nodes.  The cache-aware radix tree grows with
        # traffic up to the router's eviction threshold; the limits bound a leak
        # (an OOM kill restarts one stateless router pod, never a group).
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "64Mi"},
                      "limits": {"cpu": ROUTER_CPU_LIMIT, "memory": ROUTER_MEMORY_LIMIT, "ephemeral-storage": "1Gi"}},
        # /readiness is 503 until a worker is healthy: with it, the Service
        # would have no endpoints during the (long) first group start-up and a
        # router rollout would stall whenever no group is up.  Readiness of the
        # router *process* is what the Service needs; per-worker health is the
        # router's own business (its health checks + circuit breakers).
        "readinessProbe": {
            "httpGet": {"path": "/health", "port": "http", "scheme": "HTTP"},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/liveness", "port": "http", "scheme": "HTTP"},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        # a plain CPU process: no root, no writes outside /tmp, no privileges
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                            "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                            "runAsUser": ROUTER_UID, "runAsGroup": ROUTER_UID},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    pod_spec: dict[str, Any] = {
        "serviceAccountName": name,
        "enableServiceLinks": False,
        # matches --shutdown-grace-period-secs: streams through a rolling
        # router pod get the same drain budget as the engines
        "terminationGracePeriodSeconds": inp.drain_timeout_seconds + SHUTDOWN_SLACK_SECONDS,
        "containers": [container],
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
    }
    if inp.router_replicas > 1:
        pod_spec["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": router_pod_selector(inp)},
            }
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(inp, name, COMPONENT_ROUTER),
        "spec": {
            "replicas": inp.router_replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": router_pod_selector(inp)},
            # CPU pods are cheap to surge; never drop below the desired count.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def router_service(inp: RenderInput) -> dict[str, Any]:
    """Client entry point ``<name>-router:8000`` (+ metrics 29000).

    Not called ``<name>``: that is the headless Service the LWS controller
    creates for leader addresses (see meta.py)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(inp, router_name(inp.name), COMPONENT_ROUTER),
        "spec": {
            "type": "ClusterIP",
            "selector": router_pod_selector(inp),
            "ports": [
                {"name": "http", "port": ROUTER_PORT, "targetPort": "http", "protocol": "TCP"},
                {"name": "metrics", "port": ROUTER_METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }


def leader_service(inp: RenderInput) -> dict[str, Any]:
    """Client entry point when the router is disabled: ClusterIP ``<name>-leaders``
    port 8000 onto the routable leaders' HTTP port (kube-proxy balancing, no
    cache awareness; the drain label still takes a group out).  Metrics are
    scraped per pod (PodMonitor), so no headless variant is needed; LWS
    already has one per deployment."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(inp, leaders_service_name(inp.name), COMPONENT_ENGINE),
        "spec": {
            "type": "ClusterIP",
            "selector": router_selector(inp),
            "ports": [{"name": "http", "port": ROUTER_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }
