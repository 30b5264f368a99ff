"""Input of the render layer: one frozen dataclass of plain values.

The handler layer maps (CR spec + planner output + pool settings) into a
:class:`RenderInput`; every builder in :mod:`moe_operator.render` is a pure
function of it.  Nothing here imports the API models or the planner, so the
render layer is unit-testable on its own and cannot grow a dependency cycle.

Simple field checks happen at construction time (``__post_init__`` raises
``ValueError``); the argv checks (duplicate flags, world size, model path)
happen when the argv is built (:func:`moe_operator.render.argv.sglang_argv`),
which every pod-template builder calls.

Sequence fields accept lists too: they are normalised to tuples, and mappings
are copied into plain dicts, so that a RenderInput never aliases caller state.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Where the weights volume (PVC or hostPath) is mounted in SGLang pods.
MODEL_MOUNT = "/models"
#: root's cache directory in SGLang pods: HF downloads (``huggingface/``) and
#: JIT artefacts (DeepGEMM kernels, flashinfer) that are expensive to rebuild.
CACHE_MOUNT = "/root/.cache"

#: The router image used when the spec names none.
DEFAULT_ROUTER_IMAGE = "lightseekorg/smg:1.13.0"

#: Router policies SMG 1.13.0 accepts for ``--policy`` (smg/router_args.py ``RouterArgs.add_cli_args``: its
#: ``choices``; ``bucket`` is a ``--prefill-policy`` choice only). The conformance tier checks this set against it.
ROUTER_POLICIES = frozenset({"random", "round_robin", "passthrough", "cache_aware", "power_of_two", "least_load",
                             "manual", "consistent_hashing", "prefix_hash"})

PD_PREFILL, PD_DECODE = "prefill", "decode"
#: --disaggregation-transfer-backend values rendered (SGLang 0.5.23 srt/arg_groups/fields/disagg.py
#: `disaggregation_transfer_backend` choices, less the test/ROCm engines fake and mori)
TRANSFER_BACKENDS = frozenset({"mooncake", "nixl", "ascend"})

#: Longest deployment name we accept.  LWS derives object names from it:
#: worker StatefulSets ``<name>-<group>`` whose pods carry a
#: ``controller-revision-hash`` label ``<sts>-<10 char hash>`` (label values are
#: at most 63 characters), pod hostnames ``<name>-<group>-<worker>``, and we add
#: ``<name>-router``.  45 leaves room for four-digit group indexes.
MAX_NAME_LEN = 45

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")


@dataclass(frozen=True, kw_only=True)
class Owner:
    """The custom resource that owns every rendered object (ownerReferences)."""

    api_version: str  #: e.g. "moe-operator.io/v1alpha1"
    kind: str  #: e.g. "MoEDeployment"
    name: str  #: the CR's metadata.name
    uid: str  #: the CR's metadata.uid (garbage collection keys on it)

    def __post_init__(self) -> None:
        for f in ("api_version", "kind", "name", "uid"):
            if not isinstance(getattr(self, f), str) or not getattr(self, f):
                raise ValueError(f"Owner.{f} must be a non-empty string")


@dataclass(frozen=True, kw_only=True)
class WeightsSource:
    """Where the SGLang pods read weights from.  Exactly one mode:

    * PVC (``pvc_claim``, optional ``pvc_sub_path``): the claim is mounted
      read-only at :data:`MODEL_MOUNT`; the model lives at
      ``/models/<pvc_sub_path>``.  Use a ReadOnlyMany claim: every pod of every
      group mounts it.
    * hostPath (``host_path``): a directory pre-staged on every node of the pool
      (model-agent style), mounted read-only at :data:`MODEL_MOUNT`.
    * Hugging Face (neither of the above): SGLang downloads ``hf_repo`` (or the
      catalog default) into :data:`CACHE_MOUNT`; ``hf_token_secret`` /
      ``hf_token_key`` become env ``HF_TOKEN``.
    """

    pvc_claim: str | None = None  #: PersistentVolumeClaim name (same namespace)
    pvc_sub_path: str | None = None  #: model directory inside the claim, relative
    host_path: str | None = None  #: absolute node path holding the model directory
    hf_repo: str | None = None  #: HF repo id, overrides the catalog default
    hf_revision: str | None = None  #: HF revision (branch, tag or commit); see model_args_for
    hf_token_secret: str | None = None  #: Secret holding the HF token (optional for public repos)
    hf_token_key: str = "token"  #: key inside hf_token_secret

    def __post_init__(self) -> None:
        if self.pvc_claim and self.host_path:
            raise ValueError("weights: pvc_claim and host_path are mutually exclusive")
        if self.pvc_sub_path and not self.pvc_claim:
            raise ValueError("weights: pvc_sub_path needs pvc_claim")
        if self.pvc_sub_path and (self.pvc_sub_path.startswith("/") or ".." in self.pvc_sub_path.split("/")):
            raise ValueError("weights: pvc_sub_path must be relative and must not contain '..'")
        if self.host_path and not self.host_path.startswith("/"):
            raise ValueError("weights: host_path must be absolute")
        if self.mode != "hf" and (self.hf_repo or self.hf_revision or self.hf_token_secret):
            raise ValueError("weights: hf_* fields only apply when neither pvc_claim nor host_path is set")
        if not self.hf_token_key:
            raise ValueError("weights: hf_token_key must not be empty")

    @property
    def mode(self) -> str:
        """``"pvc"``, ``"hostPath"`` or ``"hf"``."""
        if self.pvc_claim:
            return "pvc"
        if self.host_path:
            return "hostPath"
        return "hf"


@dataclass(frozen=True, kw_only=True)
class HostMount:
    """An extra hostPath mount on SGLang pods, e.g. ``/dev/infiniband`` when the
    RDMA devices are not injected by a device plugin, or the Ascend driver
    directories (``/usr/local/Ascend/driver``)."""

    host_path: str  #: absolute path on the node
    mount_path: str  #: absolute path in the container
    read_only: bool = True

    def __post_init__(self) -> None:
        if not self.host_path.startswith("/") or not self.mount_path.startswith("/"):
            raise ValueError("HostMount paths must be absolute")


def model_path_for(weights: WeightsSource, hf_default: str | None) -> str:
    """The ``--model-path`` value matching how :func:`leaderworkerset` mounts
    ``weights``: ``/models`` or ``/models/<subPath>`` for PVC and hostPath, the
    HF repo id (``weights.hf_repo`` or ``hf_default``) for Hugging Face."""
    if weights.mode == "pvc":
        sub = (weights.pvc_sub_path or "").strip("/")
        return f"{MODEL_MOUNT}/{sub}" if sub else MODEL_MOUNT
    if weights.mode == "hostPath":
        return MODEL_MOUNT
    repo = weights.hf_repo or hf_default
    if not repo:
        raise ValueError("weights: Hugging Face mode needs hf_repo or a catalog default repo")
    return repo


def model_args_for(weights: WeightsSource, hf_default: str | None) -> tuple[str, ...]:
    """``("--model-path", path)`` plus ``("--revision", rev)`` when an HF revision
    is pinned: the SGLang argv fragment the handler/planner should use."""
    args: tuple[str, ...] = ("--model-path", model_path_for(weights, hf_default))
    if weights.mode == "hf" and weights.hf_revision:
        args += ("--revision", weights.hf_revision)
    return args


@dataclass(frozen=True, kw_only=True)
class RenderInput:
    """Everything the builders need, as plain values (keyword-only)."""

    # --- identity -----------------------------------------------------------
    name: str  #: deployment name (the CR name): LWS name, label value, prefix of other names
    namespace: str  #: namespace of the CR and of every rendered object
    owner: Owner  #: controller owner reference put on every object
    model_id: str  #: catalog id or "custom"; label value only (sanitised)

    # --- SGLang argv ----------------------------------------------------------
    #: The planner's argv WITHOUT per-pod parts (no --dist-init-addr/--nnodes/
    #: --node-rank/--host/--port/--enable-metrics: the builder owns those).
    #: Includes --model-path (see model_path_for), --tp-size, --ep-size, ...
    sglang_args: tuple[str, ...]
    #: User-supplied extra flags appended after the plan; a flag the plan (or
    #: the builder) already sets makes the builders raise ValueError.
    extra_args: tuple[str, ...] = ()

    # --- topology -------------------------------------------------------------
    nodes_per_group: int  #: pods (= nodes) per SGLang group: LWS leaderWorkerTemplate.size
    devices_per_node: int  #: accelerators requested by each pod
    device_resource: str  #: extended resource name, e.g. "nvidia.com/gpu", "huawei.com/Ascend910"
    replicas: int  #: number of groups (LWS replicas); 0 is allowed (scaled to zero)

    # --- container --------------------------------------------------------------
    image: str  #: SGLang image (one pinned image per pool)
    #: Extra env (name, value) pairs; names reserved by the builder are rejected.
    env: tuple[tuple[str, str], ...] = ()
    port: int = 30000  #: SGLang HTTP port (API, /health, /ready, /metrics) on every rank
    dist_port: int = 20000  #: torch.distributed rendezvous port on the leader (--dist-init-addr)
    metrics_enabled: bool = True  #: add --enable-metrics (/metrics on the HTTP port)
    shm_size: str = "64Gi"  #: sizeLimit of the memory-backed /dev/shm emptyDir
    #: Node directory for CACHE_MOUNT (HF downloads, DeepGEMM JIT); None = emptyDir,
    #: i.e. every pod restart re-downloads / re-compiles.
    cache_host_path: str | None = None
    host_mounts: tuple[HostMount, ...] = ()  #: extra hostPath mounts (RDMA devices, Ascend driver)
    #: requests = limits of the SGLang container (Guaranteed QoS when cpu and memory are set; planner.pod_resources)
    cpu_cores: int | None = None
    memory_bytes: int | None = None
    ephemeral_bytes: int | None = None  #: ephemeral-storage request = limit
    cache_size_limit_bytes: int | None = None  #: sizeLimit of the cache emptyDir (None: unbounded, or a hostPath)

    # --- placement / privileges -------------------------------------------------
    node_selector: Mapping[str, str] = field(default_factory=dict)  #: pool node selector
    tolerations: tuple[Mapping[str, Any], ...] = ()  #: pool tolerations (Kubernetes toleration dicts)
    #: tolerationSeconds of the engine pods for the node controller's not-ready/unreachable NoExecute taints
    #: (None: the apiserver's DefaultTolerationSeconds, 300 s)
    node_failure_toleration_seconds: int | None = None
    rdma_resource: str | None = None  #: RDMA extended resource, e.g. "rdma/ib"
    rdma_count: int = 0  #: RDMA resources per pod (needs rdma_resource when > 0)
    #: Node label key whose domains get exactly one group each (LWS annotation
    #: leaderworkerset.sigs.k8s.io/exclusive-topology), e.g. a rack/NVLink-domain label.
    exclusive_topology_key: str | None = None

    # --- weights ------------------------------------------------------------------
    weights: WeightsSource  #: where the weights come from (volume + env)

    # --- router -------------------------------------------------------------------
    router_enabled: bool = True  #: render the SMG router Deployment (+RBAC, Service, PDB)
    router_policy: str = "cache_aware"  #: --policy, one of ROUTER_POLICIES
    router_replicas: int = 1  #: router Deployment replicas (a PDB is added when > 1)
    router_image: str = DEFAULT_ROUTER_IMAGE  #: image whose `smg` binary is SMG 1.13.0
    #: (Secret name, key) of the API key SGLang requires (--api-key) and the router sends to it; None: no key
    api_key_secret: tuple[str, str] | None = None

    # --- network policy -----------------------------------------------------------------
    network_policy: bool = True  #: render the deployment's NetworkPolicies (render.network)
    #: NetworkPolicy peers (plain dicts) allowed to scrape the SGLang pods' metrics port
    metrics_from: tuple[Mapping[str, Any], ...] = ()
    #: peers allowed to call the router's port; None = every pod of the namespace
    router_from: tuple[Mapping[str, Any], ...] | None = None
    #: the operator's own pods (drain polls, metrics scrapes); None when it runs outside the cluster
    operator_peer: Mapping[str, Any] | None = None

    # --- lifecycle ------------------------------------------------------------------
    #: Upper bound on draining in-flight requests after SIGTERM;
    #: terminationGracePeriodSeconds = drain_timeout_seconds + 30.
    drain_timeout_seconds: int = 600
    #: Allowed time from container start to /ready (weight load, JIT, CUDA graphs):
    #: sizes the startupProbe.
    startup_timeout_seconds: int = 3600

    # --- prefill/decode disaggregation ---------------------------------------------------
    #: "" (aggregated), "prefill" (LWS <name>-prefill) or "decode" (LWS <name>, with the router in PD mode)
    pd_role: str = ""
    transfer_backend: str = "mooncake"  #: --disaggregation-transfer-backend (with pd_role)
    bootstrap_port: int = 8998  #: --disaggregation-bootstrap-port of prefill servers (+ pod annotation)
    ib_devices: tuple[str, ...] = ()  #: --disaggregation-ib-device, comma-joined (empty: the engine picks)
    ascend_store_url: str | None = None  #: ASCEND_MF_STORE_URL of every server (ascend backend)
    #: the prefill role's routing policy (SMG --prefill-policy); the decode side uses router_policy
    prefill_policy: str = "cache_aware"

    # --- bookkeeping (labels / annotations only) ---------------------------------------
    pool: str = ""  #: node pool name (label moe-operator.io/pool when set)
    accelerator: str = ""  #: accelerator kind, e.g. "h200" (label moe-operator.io/accelerator when set)
    spec_hash: str = ""  #: hash of the CR spec that produced this render (annotation moe-operator.io/spec-hash)

    @property
    def lws_name(self) -> str:
        """The LeaderWorkerSet (and its PDB): <name>, or <name>-prefill for the prefill role."""
        return f"{self.name}-prefill" if self.pd_role == PD_PREFILL else self.name

    @property
    def pd(self) -> bool:
        return self.pd_role in (PD_PREFILL, PD_DECODE)

    def __post_init__(self) -> None:
        # normalise sequences/mappings so the dataclass holds plain, unaliased values
        for f in ("sglang_args", "extra_args", "host_mounts", "metrics_from", "ib_devices"):
            object.__setattr__(self, f, tuple(getattr(self, f)))
        object.__setattr__(self, "env", tuple((str(k), str(v)) for k, v in self.env))
        object.__setattr__(self, "node_selector", {str(k): str(v) for k, v in dict(self.node_selector).items()})
        object.__setattr__(self, "tolerations", tuple(dict(t) for t in self.tolerations))
        if self.router_from is not None:
            object.__setattr__(self, "router_from", tuple(dict(p) for p in self.router_from))
        self._validate()

    def _validate(self) -> None:
        def fail(msg: str) -> None:
            raise ValueError(f"RenderInput {self.namespace}/{self.name}: {msg}")

        if not isinstance(self.name, str) or not _DNS1035.match(self.name) or len(self.name) > MAX_NAME_LEN:
            fail(f"name must be a DNS-1035 label of at most {MAX_NAME_LEN} characters")
        if not isinstance(self.namespace, str) or not _DNS1123.match(self.namespace) or len(self.namespace) > 63:
            fail("namespace must be a DNS-1123 label")
        if not isinstance(self.owner, Owner):
            fail("owner must be an Owner")
        if not isinstance(self.weights, WeightsSource):
            fail("weights must be a WeightsSource")
        for f in ("nodes_per_group", "devices_per_node", "router_replicas", "startup_timeout_seconds"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                fail(f"{f} must be an integer >= 1")
        for f in ("replicas", "rdma_count", "drain_timeout_seconds"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                fail(f"{f} must be an integer >= 0")
        for f in ("port", "dist_port"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 65535:
                fail(f"{f} must be a TCP port")
        if self.port == self.dist_port:
            fail("port and dist_port must differ")
        if not self.device_resource or "/" not in self.device_resource:
            fail("device_resource must be an extended resource name like nvidia.com/gpu")
        if self.rdma_count and not self.rdma_resource:
            fail("rdma_count > 0 needs rdma_resource")
        if self.rdma_resource and "/" not in self.rdma_resource:
            fail("rdma_resource must be an extended resource name like rdma/ib")
        if self.rdma_resource == self.device_resource:
            fail("rdma_resource must differ from device_resource")
        if not self.image or not self.router_image:
            fail("image and router_image must be set")
        if self.router_policy not in ROUTER_POLICIES:
            fail(f"router_policy must be one of {sorted(ROUTER_POLICIES)}")
        if self.pd_role not in ("", PD_PREFILL, PD_DECODE):
            fail(f"pd_role must be '', {PD_PREFILL!r} or {PD_DECODE!r}")
        if self.pd:
            if len(self.lws_name) > MAX_NAME_LEN:
                fail(f"name must be at most {MAX_NAME_LEN - len('-prefill')} characters with disaggregation")
            if self.transfer_backend not in TRANSFER_BACKENDS:
                fail(f"transfer_backend must be one of {sorted(TRANSFER_BACKENDS)}")
            if not 1 <= self.bootstrap_port <= 65535 or self.bootstrap_port in (self.port, self.dist_port):
                fail("bootstrap_port must be a TCP port other than port and dist_port")
            if self.transfer_backend == "ascend" and not self.ascend_store_url:
                fail("the ascend transfer backend needs ascend_store_url (ASCEND_MF_STORE_URL)")
            if not self.router_enabled:
                fail("disaggregation needs the router")
            if self.prefill_policy not in ROUTER_POLICIES | {"bucket"}:
                fail(f"prefill_policy must be one of {sorted(ROUTER_POLICIES | {'bucket'})}")
        if not _QUANTITY.match(self.shm_size):
            fail("shm_size must be a Kubernetes quantity such as 64Gi")
        if self.cache_host_path is not None and not self.cache_host_path.startswith("/"):
            fail("cache_host_path must be absolute")
        if not all(isinstance(a, str) for a in self.sglang_args + self.extra_args):
            fail("sglang_args and extra_args must be strings")
        if not all(isinstance(m, HostMount) for m in self.host_mounts):
            fail("host_mounts must be HostMount values")
        names = [k for k, _ in self.env]
        bad = [k for k in names if not _ENV_NAME.match(k)]
        if bad:
            fail(f"invalid env names {bad}")
        if len(set(names)) != len(names):
            fail("duplicate env names")
        for f in ("cpu_cores", "memory_bytes", "ephemeral_bytes", "cache_size_limit_bytes"):
            v = getattr(self, f)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                fail(f"{f} must be None or a positive integer")
        if self.exclusive_topology_key is not None and not self.exclusive_topology_key:
            fail("exclusive_topology_key must be None or a node label key")
