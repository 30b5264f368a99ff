"""MoEDeployment (namespaced): one MoE model served on multi-node SGLang groups, sized from a sessions target."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from moe_operator import API_GROUP, API_VERSION
from moe_operator.api.base import (
    CLEAN_PATH,
    DNS_SUBDOMAIN,
    IMAGE,
    QUALIFIED_NAME,
    QUANTITY,
    ApiModel,
    Fraction,
    InvalidResource,
    Rule,
    StatusModel,
    Timestamp,
    format_validation_error,
)
from moe_operator.api.v1alpha1.common import (
    Condition,
    ConfigMapKeyRef,
    EnvVar,
    ObjectMeta,
    SecretKeyRef,
    conditions_field,
)

CatalogModel = Literal["kimi-k2.5", "kimi-k2", "glm-5", "glm-4.7", "deepseek-v3", "deepseek-v3.2", "qwen3-235b-a22b"]
CATALOG_MODELS: tuple[str, ...] = CatalogModel.__args__  # type: ignore[attr-defined]
Precision = Literal["bf16", "fp8", "int4", "w8a8", "w4a8", "nvfp4"]
PRECISIONS: tuple[str, ...] = Precision.__args__  # type: ignore[attr-defined]
KVCacheDtype = Literal["auto", "bf16", "fp8_e4m3", "fp8_e5m2"]
PlanObjective = Literal["min-cost", "min-group", "max-sessions-per-gpu"]
#: SMG 1.13.0 `--policy` choices that need nothing per request (`manual` and `passthrough` route on a client header)
RouterPolicy = Literal["cache_aware", "round_robin", "random", "power_of_two", "least_load", "prefix_hash",
                       "consistent_hashing"]

Arg = Annotated[str, StringConstraints(max_length=1024)]
PoolName = Annotated[str, StringConstraints(max_length=253, pattern=DNS_SUBDOMAIN)]

MAX_GROUPS = 1000
MAX_NODES_PER_GROUP = 64
MAX_POOLS = 8
MAX_EXTRA_ARGS = 64
MAX_ENV = 64
# metadata.name: DNS-1035 label (Service names) short enough for LWS/StatefulSet/pod names and label values:
# the StatefulSet "<name>-<group>" plus the 11-character controller-revision-hash suffix must stay within 63.
MAX_NAME_LENGTH = 45
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"

# SGLang flags the operator derives from the plan or the group layout; overriding them in extraArgs would make the
# pods disagree with the plan (a wrong --nnodes hangs the group at rendezvous).
MANAGED_SGLANG_FLAGS: tuple[str, ...] = (
    "--model-path",
    "--model",
    "--tp-size",
    "--tp",
    "--tensor-parallel-size",
    "--ep-size",
    "--ep",
    "--expert-parallel-size",
    "--dp-size",
    "--dp",
    "--attn-dp-size",
    "--nnodes",
    "--node-rank",
    "--dist-init-addr",
    "--host",
    "--port",
)


# Visible-device variables the device plugin sets from the devices it allocated: overriding them hides devices the
# plan counts (a --tp-size larger than the visible devices fails at start) or exposes another pod's.
DEVICE_ENV: tuple[str, ...] = (
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "ASCEND_VISIBLE_DEVICES",
    "ASCEND_RT_VISIBLE_DEVICES",
)


def _cel_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{i}'" for i in items) + "]"


def _count_set(*values: object) -> int:
    return sum(v is not None for v in values)


# ------------------------------------------------------------------------------------------------ model source
class ModelSource(ApiModel):
    """Which model to serve: a catalog id, or a Hugging Face config.json (inline or in a ConfigMap). Exactly one."""

    cel_rules = (
        Rule(
            rule="(has(self.catalog) ? 1 : 0) + (has(self.config) ? 1 : 0) + (has(self.configMapRef) ? 1 : 0) == 1",
            message="model: exactly one of model.catalog, model.config or model.configMapRef must be set",
            check=lambda m: _count_set(m.catalog, m.config, m.config_map_ref) == 1,
        ),
    )

    catalog: CatalogModel | None = Field(
        default=None,
        description="Built-in model id whose geometry the planner knows: kimi-k2.5, kimi-k2, glm-5, glm-4.7, "
        "deepseek-v3, deepseek-v3.2 or qwen3-235b-a22b.",
    )
    config: dict[str, Any] | None = Field(
        default=None,
        description="Inline Hugging Face config.json content (layers, heads, experts, ...) for a model outside the "
        "catalog; kept verbatim.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True, "maxProperties": 1024},
    )
    config_map_ref: ConfigMapKeyRef | None = Field(
        default=None, description="A ConfigMap key holding the Hugging Face config.json of a model outside the catalog."
    )
    served_model_name: str | None = Field(
        default=None,
        max_length=256,
        pattern=r"^[^\s]+$",
        description="Model name exposed by the OpenAI-compatible API (--served-model-name); defaults to the catalog "
        "id or the config's name.",
    )


# ------------------------------------------------------------------------------------------------ weights
def _safe_subpath(p: str) -> bool:
    return not (p.startswith("/") or p == ".." or p.startswith("../") or p.endswith("/..") or "/../" in p)


class PVCWeights(ApiModel):
    """Weights on a PersistentVolumeClaim (mounted read-only on every node of every group)."""

    cel_rules = (
        Rule(
            rule="!has(self.subPath) || (!self.subPath.startsWith('/') && self.subPath != '..' && "
            "!self.subPath.startsWith('../') && !self.subPath.endsWith('/..') && !self.subPath.contains('/../'))",
            message="weights.pvc.subPath must be a relative path without '..' segments",
            check=lambda m: m.sub_path is None or _safe_subpath(m.sub_path),
            field_path=".subPath",
        ),
    )

    claim_name: str = Field(
        max_length=253, pattern=DNS_SUBDOMAIN, description="PersistentVolumeClaim name in the same namespace."
    )
    sub_path: str | None = Field(
        default=None, min_length=1, max_length=1024, description="Directory inside the volume holding the model."
    )


class HostPathWeights(ApiModel):
    """Weights already present on every node at the same path (pre-staged local NVMe)."""

    path: str = Field(
        max_length=1024,
        pattern=CLEAN_PATH,
        description="Absolute directory path on the node, under one of the pool's modelCache.hostPathPrefixes.",
    )


class HuggingFaceWeights(ApiModel):
    """Weights downloaded from the Hugging Face Hub when a group starts."""

    repo: str = Field(
        max_length=256,
        pattern=r"^([A-Za-z0-9][A-Za-z0-9_.-]*/)?[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Repository id, e.g. moonshotai/Kimi-K2.5.",
    )
    revision: str = Field(
        default="main",
        max_length=256,
        pattern=r"^[^\s]+$",
        description="Branch, tag or commit; pin a commit for reproducible rollouts.",
    )
    token_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding a Hugging Face token (HF_TOKEN) for gated repositories."
    )


class WeightsSource(ApiModel):
    """Where the model weights come from. Exactly one of pvc, hostPath or huggingFace."""

    cel_rules = (
        Rule(
            rule="(has(self.pvc) ? 1 : 0) + (has(self.hostPath) ? 1 : 0) + (has(self.huggingFace) ? 1 : 0) == 1",
            message="weights: exactly one of weights.pvc, weights.hostPath or weights.huggingFace must be set",
            check=lambda m: _count_set(m.pvc, m.host_path, m.hugging_face) == 1,
        ),
    )

    pvc: PVCWeights | None = Field(default=None, description="Weights on a PersistentVolumeClaim.")
    host_path: HostPathWeights | None = Field(default=None, description="Weights at a path on every node.")
    hugging_face: HuggingFaceWeights | None = Field(default=None, description="Weights pulled from Hugging Face.")


# ------------------------------------------------------------------------------------------------ sessions
class Sessions(ApiModel):
    """The capacity target: how many concurrent sessions of how many context tokens must fit in the KV cache."""

    cel_rules = (
        Rule(
            rule="!has(self.averageContextTokens) || self.averageContextTokens <= self.contextTokens",
            message="sessions.averageContextTokens must be <= sessions.contextTokens",
            message_expression="'sessions.averageContextTokens (%d) must be <= sessions.contextTokens (%d)'"
            ".format([self.averageContextTokens, self.contextTokens])",
            field_path=".averageContextTokens",
            check=lambda m: m.average_context_tokens is None or m.average_context_tokens <= m.context_tokens,
            py_message=lambda m: (
                f"sessions.averageContextTokens ({m.average_context_tokens}) must be <= "
                f"sessions.contextTokens ({m.context_tokens})"
            ),
        ),
    )

    target: int = Field(ge=1, le=1_000_000, description="Concurrent sessions the deployment must hold (1..1000000).")
    context_tokens: int = Field(
        ge=1, le=10_485_760, description="Maximum context length of one session in tokens (1..10485760)."
    )
    average_context_tokens: int | None = Field(
        default=None,
        ge=1,
        le=10_485_760,
        description="Average context a session actually uses; when set, capacity is planned on it instead of the "
        "worst case contextTokens (must be <= contextTokens).",
    )


# ------------------------------------------------------------------------------------------------ autoscaling
def _at_least(attr: str, low: float) -> Callable[[Any], bool]:
    return lambda m: getattr(m, attr) is None or getattr(m, attr) >= low


class Autoscaling(ApiModel):
    """KV-cache-occupancy autoscaling in whole groups."""

    cel_rules = (
        Rule(
            rule="!has(self.maxGroups) || !has(self.minGroups) || self.minGroups <= self.maxGroups",
            message="autoscaling.minGroups must be <= autoscaling.maxGroups",
            message_expression="'autoscaling.minGroups (%d) must be <= autoscaling.maxGroups (%d)'"
            ".format([self.minGroups, self.maxGroups])",
            field_path=".minGroups",
            check=lambda m: m.max_groups is None or m.min_groups <= m.max_groups,
            py_message=lambda m: (
                f"autoscaling.minGroups ({m.min_groups}) must be <= autoscaling.maxGroups ({m.max_groups})"
            ),
        ),
        # The structural schema's `minimum` does not hold for an integer: the apiserver compares an int value with
        # the minimum truncated to an int (0 >= int(0.001) = 0 passes). CEL compares numbers as doubles.
        *(
            Rule(
                rule=f"!has(self.{name}) || self.{name} >= {low}",
                message=f"autoscaling.{name} must be >= {low}",
                message_expression=f"'autoscaling.{name} (%s) must be >= {low}'.format([self.{name}])",
                field_path=f".{name}",
                check=_at_least(attr, low),
            )
            for name, attr, low in (("targetKVUtilization", "target_kv_utilization", 0.1),
                                    ("targetInterTokenLatencySeconds", "target_inter_token_latency_seconds", 0.001),
                                    ("targetTimeToFirstTokenSeconds", "target_time_to_first_token_seconds", 0.01))
        ),
    )

    enabled: bool = Field(
        default=False,
        description="Let the operator set spec.replicas from KV-cache occupancy. Leave false when an HPA or KEDA "
        "drives the scale subresource instead.",
    )
    min_groups: int = Field(
        default=1, ge=0, le=MAX_GROUPS, description="Fewest groups to keep (0 allows scale to zero)."
    )
    max_groups: int | None = Field(
        default=None,
        ge=1,
        le=MAX_GROUPS,
        description="Most groups to scale to; required (here or as spec.maxGroups) when enabled.",
    )
    target_kv_utilization: float = Field(
        default=0.7,
        ge=0.1,
        le=0.95,
        alias="targetKVUtilization",
        description="KV-cache occupancy (0.1..0.95) the autoscaler steers the average group towards.",
    )
    target_inter_token_latency_seconds: float | None = Field(
        default=None,
        ge=0.001,
        le=10.0,
        alias="targetInterTokenLatencySeconds",
        description="Mean inter-token latency (0.001..10 s) a group may run at: also scale on compute, with the "
        "groups' mean ITL from SGLang's sglang:inter_token_latency_seconds histogram over this target as each "
        "group's load (unset: KV-cache occupancy only). Groups are sized so that the mean stays at 0.7 of it "
        "(requests spread around the mean) and scale-down waits until it would stay at 0.6.",
    )
    target_time_to_first_token_seconds: float | None = Field(
        default=None,
        ge=0.01,
        le=600.0,
        alias="targetTimeToFirstTokenSeconds",
        description="Mean time to first token (0.01..600 s, prefill queue included) a group may run at, from "
        "sglang:time_to_first_token_seconds, like targetInterTokenLatencySeconds (unset: not used).",
    )
    scale_down_stabilization_seconds: int = Field(
        default=600,
        ge=0,
        le=86400,
        description="How long demand must stay low before a group is removed (0..86400 s).",
    )
    cold_start_seconds: int | None = Field(
        default=None,
        ge=0,
        le=86400,
        description="Override of the expected time for a new group to become ready; scale-up decisions credit "
        "pending groups for this long.",
    )
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="Port of the SGLang /metrics endpoint; defaults to sglang.port."
    )


# ------------------------------------------------------------------------------------------------ sglang, router
class SGLangSpec(ApiModel):
    """SGLang server container settings."""

    cel_rules = (
        Rule(
            rule="!has(self.extraArgs) || self.extraArgs.all(a, !(a in " + _cel_list(MANAGED_SGLANG_FLAGS) + ") && "
            "!" + _cel_list(MANAGED_SGLANG_FLAGS) + ".exists(f, a.startsWith(f + '=')))",
            message="sglang.extraArgs must not set flags the operator manages: " + ", ".join(MANAGED_SGLANG_FLAGS),
            field_path=".extraArgs",
            reason="FieldValueForbidden",
            check=lambda m: all(a.split("=", 1)[0] not in MANAGED_SGLANG_FLAGS for a in m.extra_args),
        ),
        Rule(
            rule="!has(self.env) || !self.env.exists(e, e.name in " + _cel_list(DEVICE_ENV) + ")",
            message="sglang.env must not set " + ", ".join(DEVICE_ENV) + ": the device plugin chooses the pod's "
            "devices and the plan's parallelism counts all of them",
            field_path=".env",
            reason="FieldValueForbidden",
            check=lambda m: not any(e.name in DEVICE_ENV for e in m.env),
        ),
    )

    image: str | None = Field(
        default=None,
        max_length=512,
        pattern=IMAGE,
        description="SGLang image; defaults to the pool's sglangImage, then the operator's default for the profile.",
    )
    extra_args: list[Arg] = Field(
        default_factory=list,
        max_length=MAX_EXTRA_ARGS,
        description="Extra sglang.launch_server arguments appended after the planned ones (parallelism, model path, "
        "host and port flags are managed and rejected here).",
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=MAX_ENV,
        description="Extra environment variables for every SGLang container (e.g. NCCL_IB_GID_INDEX).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    port: int = Field(default=30000, ge=1, le=65535, description="HTTP port of the SGLang server on the group leader.")
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding the API key SGLang requires on its OpenAI and native endpoints (--api-key); "
        "the router sends it to the groups. /health, /ready and /metrics stay open (SGLang exempts them).",
    )

    @field_validator("env")
    @classmethod
    def _unique_env(cls, v: list[EnvVar]) -> list[EnvVar]:
        seen: set[str] = set()
        for e in v:
            if e.name in seen:
                raise ValueError(f"sglang.env: duplicate name {e.name!r}")
            seen.add(e.name)
        return v


class RouterSpec(ApiModel):
    """The router (SMG) in front of the groups."""

    enabled: bool = Field(default=True, description="Deploy a router in front of the groups.")
    policy: RouterPolicy = Field(
        default="cache_aware",
        description="SMG load-balancing policy: cache_aware (prefix-cache affinity), round_robin, random, "
        "power_of_two, least_load, prefix_hash, consistent_hashing.",
    )
    replicas: int = Field(default=1, ge=1, le=16, description="Router pods (1..16).")
    image: str | None = Field(
        default=None, max_length=512, pattern=IMAGE, description="Router image; defaults to the operator's."
    )


class Placement(ApiModel):
    """Where the nodes of one group go."""

    exclusive_topology_key: str | None = Field(
        default=None,
        max_length=317,
        pattern=QUALIFIED_NAME,
        description="Node label key (e.g. moe-operator.io/nvlink-domain) whose value a group owns exclusively; "
        "defaults to the pool's topologyKey.",
    )


class Drain(ApiModel):
    """How a group is retired (scale-down, rollout): unrouted first, then deleted."""

    timeout_seconds: int = Field(
        default=600,
        ge=0,
        le=86400,
        description="Longest wait for in-flight requests on an unrouted group before it is deleted (0..86400 s).",
    )


Quantity = Annotated[str, StringConstraints(max_length=64, pattern=QUANTITY)]


class EngineResources(ApiModel):
    """CPU, memory and node disk of every SGLang pod, instead of the size the operator derives from the pool."""

    cpu: Quantity | None = Field(
        default=None, description="CPU request = limit of each SGLang pod, in whole cores (e.g. 96) so the "
        "kubelet's static CPU manager can give it exclusive cores."
    )
    memory: Quantity | None = Field(
        default=None, description="Memory request = limit of each SGLang pod; covers the memory-backed /dev/shm."
    )
    ephemeral_storage: Quantity | None = Field(
        default=None, description="Ephemeral-storage request of each SGLang pod (downloaded weights, JIT caches)."
    )


class LabelSelector(ApiModel):
    """matchLabels of a Kubernetes label selector."""

    match_labels: dict[str, str] = Field(
        default_factory=dict, description="Labels the selected objects carry.",
        json_schema_extra={"maxProperties": 32, "additionalProperties": {"type": "string", "maxLength": 317}},
    )


class NetworkPeer(ApiModel):
    """A NetworkPolicy peer: pods (podSelector) in namespaces (namespaceSelector); both empty = every pod of the
    deployment's namespace."""

    namespace_selector: LabelSelector | None = Field(default=None, description="Namespaces of the peer pods.")
    pod_selector: LabelSelector | None = Field(default=None, description="The peer pods.")


class NetworkPolicySpec(ApiModel):
    """Ingress to the deployment's pods: the NetworkPolicies the operator renders."""

    enabled: bool = Field(
        default=True,
        description="Render NetworkPolicies: SGLang pods accept traffic only from their router, the operator, "
        "metricsFrom and each other; the router's port only from routerFrom.",
    )
    metrics_from: list[NetworkPeer] = Field(
        default_factory=list,
        max_length=16,
        description="Who may scrape the SGLang pods' /metrics (e.g. the Prometheus namespace).",
    )
    router_from: list[NetworkPeer] | None = Field(
        default=None,
        max_length=16,
        description="Who may call the router's port; default: every pod of the deployment's namespace.",
    )


class Planning(ApiModel):
    """How the planner picks one layout among those SGLang can run."""

    objective: PlanObjective = Field(
        default="min-cost",
        description="min-cost: the cheapest fleet for sessions.target (nodes x the pool's costPerNodeHour, devices "
        "when it has none), ties to fewer nodes per group, then the simpler layout; min-group: the smallest group "
        "that fits; max-sessions-per-gpu: the densest layout.",
    )


# ------------------------------------------------------------------------------------------------ disaggregation
#: KV transfer engines SGLang 0.5.23 accepts for --disaggregation-transfer-backend that the operator renders
#: (srt/arg_groups/fields/disagg.py `disaggregation_transfer_backend`, choices DISAGG_TRANSFER_BACKEND_CHOICES; "fake"
#: and "mori" are test / ROCm engines): mooncake and nixl on NVIDIA, ascend on Huawei Ascend.
TransferBackend = Literal["mooncake", "nixl", "ascend"]
#: the prefill LeaderWorkerSet is <name>-prefill: LWS's StatefulSet <lws>-<group> with its pods'
#: controller-revision-hash label (<sts>-<10 chars>, at most 63) leaves 37 characters for the name
MAX_PD_NAME_LENGTH = 37


class PrefillAutoscaling(ApiModel):
    """Prefill groups from the prompt tokens that arrive and the prefill backlog."""

    # the structural minimum lets an integer 0 through (Autoscaling's twins say why)
    cel_rules = (
        Rule(
            rule="!has(self.targetUtilization) || self.targetUtilization >= 0.1",
            message="disaggregation.prefill.autoscaling.targetUtilization must be >= 0.1",
            message_expression="'disaggregation.prefill.autoscaling.targetUtilization (%s) must be >= 0.1'"
            ".format([self.targetUtilization])",
            field_path=".targetUtilization",
            check=_at_least("target_utilization", 0.1),
        ),
    )

    enabled: bool = Field(
        default=False,
        description="Let the operator size the prefill role from the observed prompt rate and the prefill backlog "
        "(queued prompt tokens); off: prefill.groups, else the planner's count.",
    )
    target_utilization: float = Field(
        default=0.7, ge=0.1, le=0.95,
        description="Fraction (0.1..0.95) of a prefill group's throughput the autoscaler steers towards.",
    )
    scale_down_stabilization_seconds: int = Field(
        default=300, ge=0, le=86400,
        description="How long the prefill demand must stay low before a prefill group is removed (0..86400 s).",
    )


class PrefillRole(ApiModel):
    """The prefill role: its own groups (LeaderWorkerSet <name>-prefill), sized from prefill throughput."""

    cel_rules = (
        Rule(
            rule="!has(self.maxGroups) || self.minGroups <= self.maxGroups",
            message="disaggregation.prefill.minGroups must be <= disaggregation.prefill.maxGroups",
            message_expression="'disaggregation.prefill.minGroups (%d) must be <= disaggregation.prefill.maxGroups "
            "(%d)'.format([self.minGroups, self.maxGroups])",
            field_path=".minGroups",
            check=lambda m: m.max_groups is None or m.min_groups <= m.max_groups,
            py_message=lambda m: f"disaggregation.prefill.minGroups ({m.min_groups}) must be <= "
            f"disaggregation.prefill.maxGroups ({m.max_groups})",
        ),
        Rule(
            rule="!has(self.groups) || !has(self.maxGroups) || self.groups <= self.maxGroups",
            message="disaggregation.prefill.groups must be <= disaggregation.prefill.maxGroups",
            message_expression="'disaggregation.prefill.groups (%d) must be <= disaggregation.prefill.maxGroups "
            "(%d)'.format([self.groups, self.maxGroups])",
            field_path=".groups",
            check=lambda m: m.groups is None or m.max_groups is None or m.groups <= m.max_groups,
            py_message=lambda m: f"disaggregation.prefill.groups ({m.groups}) must be <= "
            f"disaggregation.prefill.maxGroups ({m.max_groups})",
        ),
    )

    prompt_tokens_per_second: int = Field(
        ge=1, le=1_000_000_000,
        description="Uncached prompt tokens per second the prefill role must absorb at peak (sizes its groups).",
    )
    prompt_tokens: int | None = Field(
        default=None, ge=1, le=10_000_000,
        description="Typical uncached prompt of one request, for the TTFT estimate; default "
        "sessions.averageContextTokens, else sessions.contextTokens.",
    )
    ttft_seconds: float = Field(
        default=10.0, gt=0, le=3600,
        description="Time-to-first-token target for a typical prompt (prefill queue + prefill + KV transfer).",
    )
    groups: int | None = Field(
        default=None, ge=0, le=MAX_GROUPS,
        description="Fixed number of prefill groups; unset: the planner's count (or the autoscaler's).",
    )
    min_groups: int = Field(default=1, ge=0, le=MAX_GROUPS, description="Fewest prefill groups.")
    max_groups: int | None = Field(default=None, ge=1, le=MAX_GROUPS, description="Most prefill groups.")
    max_nodes_per_group: int | None = Field(
        default=None, ge=1, le=MAX_NODES_PER_GROUP,
        description="Largest prefill group the planner may choose, in nodes (default: as spec.maxNodesPerGroup).",
    )
    autoscaling: PrefillAutoscaling = Field(
        default_factory=PrefillAutoscaling, description="Prefill autoscaling on prompt rate and backlog.",
        json_schema_extra={"default": {}},
    )


class RatioBounds(ApiModel):
    """Bounds on prefill groups per decode group, applied to every scaling decision of either role."""

    cel_rules = (
        Rule(
            rule="!has(self.min) || !has(self.max) || self.min <= self.max",
            message="disaggregation.ratio.min must be <= disaggregation.ratio.max",
            field_path=".min",
            check=lambda m: m.min is None or m.max is None or m.min <= m.max,
            py_message=lambda m: f"disaggregation.ratio.min ({m.min}) must be <= disaggregation.ratio.max ({m.max})",
        ),
    )

    min: float | None = Field(default=None, ge=0, le=100, description="Fewest prefill groups per decode group.")
    max: float | None = Field(default=None, gt=0, le=100, description="Most prefill groups per decode group.")


class Disaggregation(ApiModel):
    """Prefill/decode disaggregation: prefill groups compute the prompt's KV cache and hand it to decode groups over
    the KV transfer engine; the router (SMG in PD mode) sends each request to one of each. The deployment's own
    layout, sessions, replicas and autoscaling fields describe the decode role (LeaderWorkerSet <name>)."""

    transfer_backend: TransferBackend | None = Field(
        default=None,
        description="KV transfer engine (--disaggregation-transfer-backend): mooncake or nixl on NVIDIA, ascend on "
        "Ascend; default mooncake on NVIDIA, ascend on Ascend.",
    )
    bootstrap_port: int = Field(
        default=8998, ge=1, le=65535,
        description="Prefill servers' bootstrap port (--disaggregation-bootstrap-port; SGLang's default 8998), "
        "announced to the router by the pod annotation sglang.ai/bootstrap-port.",
    )
    ascend_store_url: str | None = Field(
        default=None, max_length=256, pattern=r"^tcp://[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$",
        description="ASCEND_MF_STORE_URL of every server with the ascend backend (tcp://host:port of the "
        "memfabric config store); required with ascend.",
    )
    prefill: PrefillRole = Field(description="The prefill role.")
    ratio: RatioBounds | None = Field(default=None, description="Bounds on prefill groups per decode group.")


# ------------------------------------------------------------------------------------------------ spec
class MoEDeploymentSpec(ApiModel):
    """Desired state: model, precision, weights, session target and accelerator pool(s)."""

    cel_rules = (
        Rule(
            rule="has(self.pool) != has(self.pools)",
            message="exactly one of spec.pool or spec.pools must be set",
            check=lambda m: (m.pool is None) != (m.pools is None),
        ),
        Rule(
            rule="!has(self.replicas) || !has(self.maxGroups) || self.replicas <= self.maxGroups",
            message="spec.replicas must be <= spec.maxGroups",
            message_expression="'spec.replicas (%d) must be <= spec.maxGroups (%d)'"
            ".format([self.replicas, self.maxGroups])",
            field_path=".replicas",
            check=lambda m: m.replicas is None or m.max_groups is None or m.replicas <= m.max_groups,
            py_message=lambda m: f"spec.replicas ({m.replicas}) must be <= spec.maxGroups ({m.max_groups})",
        ),
        Rule(
            rule="!has(self.maxGroups) || !has(self.autoscaling) || !has(self.autoscaling.maxGroups) || "
            "self.autoscaling.maxGroups <= self.maxGroups",
            message="autoscaling.maxGroups must be <= spec.maxGroups",
            message_expression="'autoscaling.maxGroups (%d) must be <= spec.maxGroups (%d)'"
            ".format([self.autoscaling.maxGroups, self.maxGroups])",
            field_path=".autoscaling.maxGroups",
            check=lambda m: (
                m.max_groups is None or m.autoscaling.max_groups is None or m.autoscaling.max_groups <= m.max_groups
            ),
            py_message=lambda m: (
                f"autoscaling.maxGroups ({m.autoscaling.max_groups}) must be <= spec.maxGroups ({m.max_groups})"
            ),
        ),
        Rule(
            rule="!has(self.maxGroups) || !has(self.autoscaling) || !has(self.autoscaling.minGroups) || "
            "self.autoscaling.minGroups <= self.maxGroups",
            message="autoscaling.minGroups must be <= spec.maxGroups",
            message_expression="'autoscaling.minGroups (%d) must be <= spec.maxGroups (%d)'"
            ".format([self.autoscaling.minGroups, self.maxGroups])",
            field_path=".autoscaling.minGroups",
            check=lambda m: m.max_groups is None or m.autoscaling.min_groups <= m.max_groups,
            py_message=lambda m: (
                f"autoscaling.minGroups ({m.autoscaling.min_groups}) must be <= spec.maxGroups ({m.max_groups})"
            ),
        ),
        Rule(
            rule="!has(self.disaggregation) || !has(self.router) || !has(self.router.enabled) || self.router.enabled",
            message="spec.disaggregation needs the router (spec.router.enabled): SMG pairs each request's prefill "
            "and decode servers",
            field_path=".router.enabled",
            check=lambda m: m.disaggregation is None or m.router.enabled,
        ),
        Rule(
            rule="!has(self.disaggregation) || !has(self.disaggregation.transferBackend) || "
            "self.disaggregation.transferBackend != 'ascend' || has(self.disaggregation.ascendStoreUrl)",
            message="spec.disaggregation.ascendStoreUrl is required with transferBackend ascend (SGLang's Ascend "
            "transfer engine reads ASCEND_MF_STORE_URL on every server)",
            field_path=".disaggregation.ascendStoreUrl",
            reason="FieldValueRequired",
            check=lambda m: m.disaggregation is None or m.disaggregation.transfer_backend != "ascend"
            or m.disaggregation.ascend_store_url is not None,
        ),
        Rule(
            rule="!has(self.disaggregation) || self.disaggregation.bootstrapPort != "
            "(has(self.sglang) && has(self.sglang.port) ? self.sglang.port : 30000)",
            message="spec.disaggregation.bootstrapPort must differ from spec.sglang.port",
            field_path=".disaggregation.bootstrapPort",
            check=lambda m: m.disaggregation is None or m.disaggregation.bootstrap_port != m.sglang.port,
        ),
        Rule(
            rule="!has(self.disaggregation) || !has(self.autoscaling) || "
            "!has(self.autoscaling.targetTimeToFirstTokenSeconds)",
            message="spec.autoscaling.targetTimeToFirstTokenSeconds does not apply with spec.disaggregation: the "
            "prefill groups own TTFT (disaggregation.prefill.ttftSeconds)",
            field_path=".autoscaling.targetTimeToFirstTokenSeconds",
            reason="FieldValueForbidden",
            check=lambda m: m.disaggregation is None or m.autoscaling.target_time_to_first_token_seconds is None,
        ),
        Rule(
            rule="!has(self.autoscaling) || !has(self.autoscaling.enabled) || !self.autoscaling.enabled || "
            "has(self.autoscaling.maxGroups) || has(self.maxGroups)",
            message="autoscaling.maxGroups (or spec.maxGroups) is required when autoscaling.enabled is true",
            field_path=".autoscaling.maxGroups",
            reason="FieldValueRequired",
            check=lambda m: (
                not m.autoscaling.enabled or m.autoscaling.max_groups is not None or m.max_groups is not None
            ),
        ),
    )

    model: ModelSource = Field(description="The model to serve (catalog id or Hugging Face config).")
    weights: WeightsSource = Field(description="Where the weights come from (pvc, hostPath or huggingFace).")
    precision: Precision = Field(
        description="Weight precision: bf16, fp8, int4, w8a8, w4a8 or nvfp4; must be supported by the pool's "
        "accelerator."
    )
    kv_cache_dtype: KVCacheDtype = Field(
        default="auto",
        description="KV-cache element type (--kv-cache-dtype): auto (the model's dtype), bf16, fp8_e4m3, fp8_e5m2.",
    )
    sessions: Sessions = Field(description="Capacity target in concurrent sessions x context tokens.")
    pool: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="AcceleratorPool to run on. Exactly one of pool or pools.",
    )
    pools: list[PoolName] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_POOLS,
        description="Candidate AcceleratorPools in order of preference: the first one the plan fits on is used. "
        "Exactly one of pool or pools.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    replicas: int | None = Field(
        default=None,
        ge=0,
        le=MAX_GROUPS,
        description="Number of groups (the scale subresource). Unset: as many as the plan needs for "
        "sessions.target. Written by the autoscaler when autoscaling.enabled, or by an HPA/KEDA through /scale.",
    )
    autoscaling: Autoscaling = Field(
        default_factory=Autoscaling,
        description="KV-occupancy autoscaling of whole groups.",
        json_schema_extra={"default": {}},
    )
    sglang: SGLangSpec = Field(
        default_factory=SGLangSpec, description="SGLang server settings.", json_schema_extra={"default": {}}
    )
    router: RouterSpec = Field(
        default_factory=RouterSpec, description="Router (SMG) settings.", json_schema_extra={"default": {}}
    )
    placement: Placement | None = Field(default=None, description="Topology placement of each group.")
    resources: EngineResources | None = Field(
        default=None,
        description="CPU, memory and disk of every SGLang pod; by default sized from what the pool's nodes offer "
        "(requests = limits: Guaranteed QoS).",
    )
    network_policy: NetworkPolicySpec = Field(
        default_factory=NetworkPolicySpec, description="The NetworkPolicies rendered for the deployment.",
        json_schema_extra={"default": {}},
    )
    planning: Planning = Field(
        default_factory=Planning,
        description="How the layout is chosen (the planner's objective).",
        json_schema_extra={"default": {}},
    )
    drain: Drain = Field(
        default_factory=Drain, description="Graceful retirement of groups.", json_schema_extra={"default": {}}
    )
    max_groups: int | None = Field(
        default=None,
        ge=1,
        le=MAX_GROUPS,
        description="Hard cap on groups for the planner and every scaler (a cost guard).",
    )
    max_nodes_per_group: int | None = Field(
        default=None,
        ge=1,
        le=MAX_NODES_PER_GROUP,
        description="Largest group the planner may choose, in nodes; more, smaller groups are planned instead.",
    )
    disaggregation: Disaggregation | None = Field(
        default=None,
        description="Prefill/decode disaggregation (off when absent): a prefill role of its own next to the decode "
        "groups this spec describes.",
    )

    @field_validator("pools")
    @classmethod
    def _unique_pools(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            dupes = sorted({p for p in v if v.count(p) > 1})
            if dupes:
                raise ValueError(f"spec.pools: duplicate pool names {dupes}")
        return v

    @property
    def candidate_pools(self) -> list[str]:
        """The pools to try, in order."""
        return [self.pool] if self.pool is not None else list(self.pools or [])


# ------------------------------------------------------------------------------------------------ status
class PlanStatus(StatusModel):
    """The part of the planner's result the operator records (sizes in bytes, parallelism per group)."""

    objective: PlanObjective | None = Field(default=None, description="The objective that chose the layout.")
    nodes_per_group: int | None = Field(default=None, ge=0, description="Nodes in one group (LWS size).")
    gpus_per_group: int | None = Field(default=None, ge=0, description="Accelerator devices in one group.")
    tp_size: int | None = Field(default=None, ge=0, description="Tensor-parallel size (--tp-size).")
    ep_size: int | None = Field(default=None, ge=0, description="Expert-parallel size (--ep-size).")
    attn_dp_size: int | None = Field(default=None, ge=0, description="Attention data-parallel size (--attn-dp-size).")
    sessions_per_group: int | None = Field(
        default=None, ge=0, description="Sessions of contextTokens one group holds in its KV cache."
    )
    groups: int | None = Field(default=None, ge=0, description="Groups needed for sessions.target.")
    kv_bytes_per_session: int | None = Field(
        default=None, ge=0, description="KV-cache bytes one session needs.", json_schema_extra={"format": "int64"}
    )
    weights_bytes: int | None = Field(
        default=None, ge=0, description="Weight bytes of one model replica.", json_schema_extra={"format": "int64"}
    )
    download_bytes_per_group: int | None = Field(
        default=None, ge=0, json_schema_extra={"format": "int64"},
        description="With Hugging Face weights: bytes one start of one group downloads (every pod fetches the whole "
        "checkpoint, so egress and start time grow with the group size and the group count); absent with PVC or "
        "hostPath weights, which avoid it.",
    )
    max_total_tokens_per_dp: int | None = Field(
        default=None, ge=0, description="KV-cache token capacity per attention-DP rank (--max-total-tokens)."
    )
    mem_fraction_static: Fraction | None = Field(
        default=None, description="Fraction of device memory for weights + KV cache (--mem-fraction-static)."
    )
    moe_a2a_backend: str | None = Field(
        default=None, max_length=32, description="MoE all-to-all backend (--moe-a2a-backend): none or deepep."
    )
    total_nodes: int | None = Field(default=None, ge=0, description="Nodes of the planned fleet (groups x nodes).")
    cost_per_hour: str | None = Field(
        default=None, max_length=32, description="Planned fleet's cost per hour (USD, from the pool's price)."
    )
    runner_up: str | None = Field(
        default=None,
        max_length=512,
        description="The best other layout under the same objective and what its fleet would cost.",
    )
    sglang_args: list[Arg] = Field(
        default_factory=list,
        max_length=256,
        description="Planned sglang.launch_server arguments (without per-node rank flags).",
    )


class DrainStatus(StatusModel):
    """A group being drained before scale-down: out of routing, waiting for its running requests to finish."""

    group: int = Field(ge=0, le=MAX_GROUPS, description="Group index (LWS group-index) being drained.")
    started_at: Timestamp | None = Field(default=None, description="When the group was taken out of routing.")


class PrefillPlanStatus(StatusModel):
    """The planner's prefill role: layout, throughput and the TTFT it expects at the planned count."""

    nodes_per_group: int | None = Field(default=None, ge=0, description="Nodes in one prefill group.")
    gpus_per_group: int | None = Field(default=None, ge=0, description="Accelerator devices in one prefill group.")
    tp_size: int | None = Field(default=None, ge=0, description="Tensor-parallel size of a prefill group.")
    ep_size: int | None = Field(default=None, ge=0, description="Expert-parallel size of a prefill group.")
    attn_dp_size: int | None = Field(default=None, ge=0, description="Attention-DP size of a prefill group.")
    groups: int | None = Field(default=None, ge=0, description="Prefill groups for the stated prompt rate.")
    prompt_tokens_per_second_per_group: int | None = Field(
        default=None, ge=0, description="Prefill throughput of one group (compute model, planner/throughput.py)."
    )
    ttft_seconds: str | None = Field(
        default=None, max_length=32, description="Expected TTFT of a typical prompt at the planned count."
    )
    ratio: str | None = Field(default=None, max_length=32, description="Planned prefill groups per decode group.")
    cost_per_hour: str | None = Field(
        default=None, max_length=32, description="Cost per hour of the prefill groups (USD, from the pool's price)."
    )
    sglang_args: list[Arg] = Field(
        default_factory=list, max_length=256, description="Planned sglang.launch_server arguments of a prefill server."
    )


class PrefillStatus(StatusModel):
    """The prefill role (LeaderWorkerSet <name>-prefill)."""

    plan: PrefillPlanStatus | None = Field(default=None, description="The prefill plan in force.")
    desired_groups: int | None = Field(default=None, ge=0, description="Prefill groups the operator converges to.")
    ready_groups: int | None = Field(default=None, ge=0, description="Prefill groups whose every pod is ready.")
    group_summary: str | None = Field(
        default=None, max_length=32, description="ready/desired prefill groups (for kubectl get)."
    )
    prompt_tokens_per_second: int | None = Field(
        default=None, ge=0, description="Uncached prompt tokens per second the prefill groups served lately."
    )
    backlog_tokens: int | None = Field(
        default=None, ge=0, description="Prompt tokens waiting in the prefill groups' queues (estimated)."
    )
    last_scale_time: Timestamp | None = Field(default=None, description="When the prefill count last changed.")
    last_scale_reason: str | None = Field(default=None, max_length=1024, description="Why it changed.")
    drain: DrainStatus | None = Field(
        default=None, description="The prefill group being drained before it is removed, if any."
    )

    @model_validator(mode="after")
    def _derive_summary(self) -> Self:
        if self.desired_groups is not None:
            self.__dict__["group_summary"] = f"{self.ready_groups or 0}/{self.desired_groups}"
        return self


class MoEDeploymentStatus(StatusModel):
    """Observed state, written by the operator."""

    observed_generation: int | None = Field(default=None, ge=0, description="metadata.generation this status reflects.")
    pool: str | None = Field(default=None, max_length=253, description="The AcceleratorPool chosen.")
    plan: PlanStatus | None = Field(default=None, description="The capacity plan in force.")
    prefill: PrefillStatus | None = Field(
        default=None, description="The prefill role with spec.disaggregation (plan, groups, prompt rate, backlog)."
    )
    replicas: int | None = Field(
        default=None, ge=0, description="Groups that exist now (the scale subresource's status replicas)."
    )
    ready_groups: int | None = Field(default=None, ge=0, description="Groups whose every node is ready and routed.")
    desired_groups: int | None = Field(default=None, ge=0, description="Groups the operator is converging to.")
    updated_groups: int | None = Field(
        default=None, ge=0,
        description="Groups whose pods run the current spec (LWS updatedReplicas); below replicas during a rollout.",
    )
    group_summary: str | None = Field(
        default=None,
        max_length=32,
        description='"ready/desired" groups for kubectl get; derived from readyGroups and desiredGroups.',
    )
    session_capacity: int | None = Field(
        default=None, ge=0, description="Sessions of contextTokens the ready groups can hold."
    )
    kv_utilization: Fraction | None = Field(
        default=None, description="Average KV-cache occupancy of the ready groups, 0..1 (a decimal string)."
    )
    kv_utilization_percent: int | None = Field(
        default=None, ge=0, le=100, description="kvUtilization in whole percent, for kubectl get; derived."
    )
    live_sessions: int | None = Field(default=None, ge=0, description="Requests running on the groups now.")
    last_scale_time: Timestamp | None = Field(default=None, description="When the number of groups last changed.")
    last_scale_reason: str | None = Field(
        default=None, max_length=1024, description="Why the number of groups last changed."
    )
    drain: DrainStatus | None = Field(
        default=None, description="The group being drained before the next scale-down, if any."
    )
    rollout: DrainStatus | None = Field(
        default=None,
        description="The group being drained before a rollout replaces it (one group at a time), if any.",
    )
    pods_without_metrics: list[Annotated[str, StringConstraints(max_length=253)]] | None = Field(
        default=None,
        max_length=64,
        description="Group pods whose /metrics did not answer at the last autoscaling step (the first 64). Scaling "
        "goes on without them: a silent group is assumed to carry the mean load of the groups that answered.",
    )
    selector: str | None = Field(
        default=None,
        max_length=4096,
        description="Label selector (string form) of the group leader pods, for the scale subresource (HPA/KEDA).",
    )
    conditions: list[Condition] = conditions_field("MoEDeployment")

    @model_validator(mode="after")
    def _derive_display_fields(self) -> Self:
        # written through __dict__: a normal assignment would re-run this validator (validate_assignment)
        if self.desired_groups is not None:
            self.__dict__["group_summary"] = f"{self.ready_groups or 0}/{self.desired_groups}"
        if self.kv_utilization is not None:
            self.__dict__["kv_utilization_percent"] = round(float(self.kv_utilization) * 100)
        return self

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


# ------------------------------------------------------------------------------------------------ the object
class MoEDeployment(BaseModel):
    """A MoEDeployment object as stored by the apiserver (or as a kopf body)."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True, extra="ignore"
    )

    KIND: ClassVar[str] = "MoEDeployment"
    PLURAL: ClassVar[str] = "moedeployments"

    api_version: Literal["moe-operator.io/v1alpha1"] = f"{API_GROUP}/{API_VERSION}"  # type: ignore[assignment]
    kind: Literal["MoEDeployment"] = "MoEDeployment"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: MoEDeploymentSpec
    status: MoEDeploymentStatus | None = None

    @model_validator(mode="after")
    def _check_name(self) -> Self:
        name = self.metadata.name
        if name is not None and (len(name) > MAX_NAME_LENGTH or not re.match(NAME_PATTERN, name)):
            raise ValueError(
                f"metadata.name {name!r} must be a DNS-1035 label of at most {MAX_NAME_LENGTH} characters "
                "(lowercase letters, digits, '-', starting with a letter)"
            )
        if name is not None and self.spec.disaggregation is not None and len(name) > MAX_PD_NAME_LENGTH:
            raise ValueError(
                f"metadata.name {name!r} has {len(name)} characters; with spec.disaggregation at most "
                f"{MAX_PD_NAME_LENGTH} (the prefill LeaderWorkerSet is {name}-prefill)"
            )
        return self

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> MoEDeployment:
        """Validate a full object; raises InvalidResource whose `errors` name each bad field."""
        try:
            return cls.model_validate(dict(body))
        except ValidationError as exc:
            name = (body.get("metadata") or {}).get("name")
            raise InvalidResource(cls.KIND, name, format_validation_error(exc)) from None

    def to_k8s(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
