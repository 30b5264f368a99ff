"""The LeaderWorkerSet running the SGLang groups (one group = one LWS replica)."""

from __future__ import annotations

import math
from typing import Any

from .argv import API_KEY_ENV, SGLANG_COMMAND, literal, sglang_argv
from .inputs import CACHE_MOUNT, MODEL_MOUNT, PD_PREFILL, RenderInput
from .meta import (
    A_BOOTSTRAP_PORT,
    A_TEMPLATE_HASH,
    COMPONENT_ENGINE,
    L_ROLE,
    L_ROUTABLE,
    LWS_EXCLUSIVE_TOPOLOGY,
    LWS_WORKER_INDEX_LABEL,
    ROLE_LEADER,
    ROLE_WORKER,
    base_labels,
    object_meta,
    spec_hash,
)

LWS_API_VERSION = "leaderworkerset.x-k8s.io/v1"
CONTAINER_NAME = "sglang"

#: Extra seconds on top of drain_timeout_seconds: SGLang's shutdown after the
#: drain (ShutdownReq to schedulers, 15 s scheduler exit timeout, kill tree).
SHUTDOWN_SLACK_SECONDS = 30

#: Env names the builder sets itself; RenderInput.env must not repeat them.
RESERVED_ENV = frozenset({"LWS_WORKER_INDEX", "LWS_LEADER_ADDRESS", "LWS_GROUP_SIZE", "HF_TOKEN", API_KEY_ENV,
                          "ASCEND_MF_STORE_URL"})
#: Defaults the user may override through RenderInput.env.
DEFAULT_ENV = (("PYTHONUNBUFFERED", "1"),)  # logs reach `kubectl logs` without buffering delays

STARTUP_PERIOD_SECONDS = 10


def _env(inp: RenderInput) -> list[dict[str, Any]]:
    user = dict(inp.env)
    reserved = sorted(RESERVED_ENV.intersection(user))
    if reserved:
        raise ValueError(f"env must not set {reserved}: the render layer sets them")
    env: list[dict[str, Any]] = [
        # --node-rank $(LWS_WORKER_INDEX); the leader is worker-index 0
        {
            "name": "LWS_WORKER_INDEX",
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{LWS_WORKER_INDEX_LABEL}']"}},
        },
    ]
    w = inp.weights
    if w.mode == "hf" and w.hf_token_secret:
        env.append(
            {
                "name": "HF_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": w.hf_token_secret, "key": w.hf_token_key}},
            }
        )
    env += api_key_env(inp)
    if inp.pd and inp.transfer_backend == "ascend" and inp.ascend_store_url:
        # SGLang's Ascend transfer engine (srt/disaggregation/ascend/) reads the memfabric store's address from the
        # environment on every server, prefill and decode; a wrong value only fails as "Ascend Transfer Engine
        # initialization failed" (anchors-update §2.9)
        env.append({"name": "ASCEND_MF_STORE_URL", "value": inp.ascend_store_url})
    env += [{"name": k, "value": v} for k, v in DEFAULT_ENV if k not in user]
    env += [{"name": k, "value": literal(v)} for k, v in inp.env]
    return env


def api_key_env(inp: RenderInput) -> list[dict[str, Any]]:
    """The API key from its Secret, for --api-key $(MOE_SGLANG_API_KEY) (engines and router alike)."""
    if inp.api_key_secret is None:
        return []
    name, key = inp.api_key_secret
    return [{"name": API_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}]


def _volumes_and_mounts(inp: RenderInput) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        # NCCL / torch shared memory; the container runtime default (64Mi) is far too small
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": inp.shm_size}},
        (
            {"name": "cache", "hostPath": {"path": inp.cache_host_path, "type": "DirectoryOrCreate"}}
            if inp.cache_host_path
            else {"name": "cache", "emptyDir": _size_limit(inp.cache_size_limit_bytes)}
        ),
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "cache", "mountPath": CACHE_MOUNT},
    ]
    w = inp.weights
    if w.mode == "pvc":
        volumes.append({"name": "weights", "persistentVolumeClaim": {"claimName": w.pvc_claim, "readOnly": True}})
        mounts.append({"name": "weights", "mountPath": MODEL_MOUNT, "readOnly": True})
    elif w.mode == "hostPath":
        volumes.append({"name": "weights", "hostPath": {"path": w.host_path, "type": "Directory"}})
        mounts.append({"name": "weights", "mountPath": MODEL_MOUNT, "readOnly": True})
    for i, m in enumerate(inp.host_mounts):
        volumes.append({"name": f"host-{i}", "hostPath": {"path": m.host_path}})
        mounts.append({"name": f"host-{i}", "mountPath": m.mount_path, "readOnly": m.read_only})
    return volumes, mounts


def quantity(n: int) -> str:
    """Bytes as the shortest exact binary quantity (64Gi, not 68719476736)."""
    for suffix, unit in (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def _size_limit(n: int | None) -> dict[str, Any]:
    return {"sizeLimit": quantity(n)} if n else {}


def _resources(inp: RenderInput) -> dict[str, Any]:
    # Extended resources cannot be overcommitted: requests must equal limits. CPU and memory requests = limits too
    # (Guaranteed QoS: last to be evicted, and NUMA-alignable by the static CPU / topology managers).
    res = {inp.device_resource: str(inp.devices_per_node)}
    if inp.rdma_resource and inp.rdma_count:
        res[inp.rdma_resource] = str(inp.rdma_count)
    if inp.cpu_cores:
        res["cpu"] = str(inp.cpu_cores)
    if inp.memory_bytes:
        res["memory"] = quantity(inp.memory_bytes)
    if inp.ephemeral_bytes:
        res["ephemeral-storage"] = quantity(inp.ephemeral_bytes)
    return {"limits": dict(res), "requests": dict(res)}


def _http_get(path: str, port: int) -> dict[str, Any]:
    return {"path": path, "port": port, "scheme": "HTTP"}


def _probes(inp: RenderInput, role: str) -> dict[str, Any]:
    # Startup: weight loading (hundreds of GB), DeepGEMM JIT and CUDA-graph
    # capture take 10-60 min.  The startupProbe owns that window; readiness
    # and liveness only start once it succeeded.  A startup failure restarts
    # the container, which (RecreateGroupOnPodRestart) recreates the whole
    # group, so the budget is the full startup_timeout_seconds.
    startup_failures = max(1, math.ceil(inp.startup_timeout_seconds / STARTUP_PERIOD_SECONDS))
    if role == ROLE_LEADER:
        return {
            # /ready: 200 once the tokenizer manager is Up, 503 while starting,
            # paused or after SIGTERM; no generation, so cheap to poll.
            "startupProbe": {
                "httpGet": _http_get("/ready", inp.port),
                "periodSeconds": STARTUP_PERIOD_SECONDS,
                "timeoutSeconds": 5,
                "failureThreshold": startup_failures,
            },
            # Readiness on /ready: gates the LWS group's readiness (rollouts,
            # status) and the router's discovery (it only adds Ready pods).
            # SIGTERM flips /ready to 503, so a draining leader leaves routing.
            "readinessProbe": {
                "httpGet": _http_get("/ready", inp.port),
                "periodSeconds": 10,
                "timeoutSeconds": 5,
                "failureThreshold": 3,
            },
            # Liveness on /health: a 1-token generation through the whole group
            # (the deep check; on a busy server it piggybacks on live traffic).
            # A failure restarts the *group* (cold start of up to an hour), so
            # it must be sure: timeout above SGLANG_HEALTH_CHECK_TIMEOUT (20 s),
            # 10 x 30 s = 5 min of consecutive failures (SGLang's own watchdog,
            # 300 s, catches hung schedulers on the same scale).  The kubelet
            # stops liveness probes once the pod is terminating, so the 503s of
            # a SIGTERM drain never trigger a restart.
            "livenessProbe": {
                "httpGet": _http_get("/health", inp.port),
                "periodSeconds": 30,
                "timeoutSeconds": 30,
                "failureThreshold": 10,
            },
        }
    # Ranks > 0 run a dummy HTTP server on the same port: /health is always 200
    # once the rank is up.  It proves only that the process lives, so no
    # livenessProbe (a crash exits the container anyway and a restart would
    # recreate the group); startup + readiness make the LWS count the group
    # Ready only when every rank is.
    return {
        "startupProbe": {
            "httpGet": _http_get("/health", inp.port),
            "periodSeconds": STARTUP_PERIOD_SECONDS,
            "timeoutSeconds": 5,
            "failureThreshold": startup_failures,
        },
        "readinessProbe": {
            "httpGet": _http_get("/health", inp.port),
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
    }


def pod_template(inp: RenderInput, role: str) -> dict[str, Any]:
    """Leader or worker pod template.  Container command/args, env, resources,
    volumes and placement are identical; only probes and labels differ."""
    if role not in (ROLE_LEADER, ROLE_WORKER):
        raise ValueError(f"role must be leader or worker, got {role!r}")
    labels = base_labels(inp, COMPONENT_ENGINE)
    labels[L_ROLE] = role
    if role == ROLE_LEADER:
        labels[L_ROUTABLE] = "true"
    volumes, mounts = _volumes_and_mounts(inp)
    security: dict[str, Any] = {
        # setuid binaries are never needed by the server, NCCL or the RDMA stack
        "allowPrivilegeEscalation": False,
        # Every capability dropped but IPC_LOCK: RDMA memory registration (ibv_reg_mr, DeepEP/NVSHMEM buffers, HCCL)
        # pins pages beyond RLIMIT_MEMLOCK. SGLang images run as root (its caches and JIT write under /root), so
        # runAsNonRoot is not set; without the other capabilities root cannot chown, ptrace, load modules or
        # bypass file permissions it does not own.
        "capabilities": {"drop": ["ALL"], "add": ["IPC_LOCK"]},
    }
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": inp.image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(SGLANG_COMMAND),
        "args": sglang_argv(inp),
        "env": _env(inp),
        "ports": [
            {"name": "http", "containerPort": inp.port, "protocol": "TCP"},
            {"name": "dist", "containerPort": inp.dist_port, "protocol": "TCP"},
            # the decode servers' handshake with a prefill server's bootstrap server (rank 0 binds it)
            *([{"name": "bootstrap", "containerPort": inp.bootstrap_port, "protocol": "TCP"}]
              if inp.pd_role == PD_PREFILL else []),
        ],
        "resources": _resources(inp),
        "volumeMounts": mounts,
        "securityContext": security,
        **_probes(inp, role),
    }
    spec: dict[str, Any] = {
        # Service links inject <SVC>_PORT-style env for every Service in the
        # namespace; a Service named sglang-* would inject SGLANG_* variables
        # that SGLang reads as configuration.
        "enableServiceLinks": False,
        # SGLang never calls the Kubernetes API: no token in the pod (a compromised model server cannot act as the
        # namespace's default service account)
        "automountServiceAccountToken": False,
        # the container runtime's default seccomp profile: CUDA, NCCL, verbs and CANN need no syscall it blocks
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        # SIGTERM makes rank 0 drain in-flight requests (unbounded in SGLang);
        # the grace period bounds the drain.  Workers get the same grace: on
        # SIGTERM they wait for rank 0's shutdown broadcast, and killing them
        # earlier would break the collectives of requests still draining.
        "terminationGracePeriodSeconds": inp.drain_timeout_seconds + SHUTDOWN_SLACK_SECONDS,
        "containers": [container],
        "volumes": volumes,
    }
    if inp.node_selector:
        spec["nodeSelector"] = dict(sorted(inp.node_selector.items()))
    tolerations = [dict(t) for t in inp.tolerations]
    if inp.node_failure_toleration_seconds is not None:
        # the taints the node controller puts on a NotReady / unreachable node: evicted after this long, the group is
        # recreated (RecreateGroupOnPodRestart) on healthy nodes
        tolerations += [{"key": k, "operator": "Exists", "effect": "NoExecute",
                         "tolerationSeconds": inp.node_failure_toleration_seconds}
                        for k in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")]
    if tolerations:
        spec["tolerations"] = tolerations
    annotations = {"kubectl.kubernetes.io/default-container": CONTAINER_NAME}
    if inp.pd_role == PD_PREFILL and role == ROLE_LEADER:
        # SMG's PD discovery reads each prefill worker's bootstrap port from this annotation
        annotations[A_BOOTSTRAP_PORT] = str(inp.bootstrap_port)
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": spec}


def leaderworkerset(inp: RenderInput) -> dict[str, Any]:
    """The LWS: ``replicas`` groups of ``nodes_per_group`` pods."""
    template: dict[str, Any] = {
        "size": inp.nodes_per_group,
        # Any rank dying kills the NCCL world: restart the whole group.
        "restartPolicy": "RecreateGroupOnPodRestart",
        "leaderTemplate": pod_template(inp, ROLE_LEADER),
        "workerTemplate": pod_template(inp, ROLE_WORKER),
    }
    # reconcile compares it with the LWS's to see a new template and start a drain-aware rollout (moe_operator.rollout);
    # on the pods too, so which groups run the current template is read from the pods (LWS's updatedReplicas counts
    # the groups a partition holds back as updated)
    digest = spec_hash(template)
    for role in ("leaderTemplate", "workerTemplate"):
        template[role]["metadata"]["annotations"][A_TEMPLATE_HASH] = digest
    annotations: dict[str, str] = {A_TEMPLATE_HASH: digest}
    if inp.exclusive_topology_key:
        # LWS's webhook turns this into pod (anti-)affinity: one group per domain.
        annotations[LWS_EXCLUSIVE_TOPOLOGY] = inp.exclusive_topology_key
    return {
        "apiVersion": LWS_API_VERSION,
        "kind": "LeaderWorkerSet",
        "metadata": object_meta(inp, inp.lws_name, COMPONENT_ENGINE, annotations),
        "spec": {
            "replicas": inp.replicas,
            # Workers start with the leader (LeaderReady would serialise the
            # leader's whole startup before the workers even pull the image,
            # and the leader cannot get Ready without them).
            "startupPolicy": "LeaderCreated",
            # Group-at-a-time rollout without surge: GPU pools rarely have a
            # spare group's worth of nodes. The partition (groups below it keep
            # their revision) is reconcile's: it lowers it one drained group at
            # a time (moe_operator.rollout); rendered alone, nothing is held.
            "rolloutStrategy": {
                "type": "RollingUpdate",
                "rollingUpdateConfiguration": {"maxUnavailable": 1, "maxSurge": 0, "partition": 0},
            },
            # LWS_LEADER_ADDRESS = <lws>-<i>.<lws>.<ns> via the shared headless Service
            "networkConfig": {"subdomainPolicy": "Shared"},
            "leaderWorkerTemplate": template,
        },
    }
