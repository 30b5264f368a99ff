"""AcceleratorPool (cluster-scoped): a set of identical accelerator nodes MoEDeployments can be planned onto."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from moe_operator import API_GROUP, API_VERSION
from moe_operator.api.base import (
    CLEAN_PATH,
    IMAGE,
    IMAGE_DIGEST,
    LABEL_VALUE,
    QUALIFIED_NAME,
    QUANTITY,
    ApiModel,
    InvalidResource,
    Rule,
    StatusModel,
    format_validation_error,
)
from moe_operator.api.v1alpha1.common import Condition, ObjectMeta, Toleration, conditions_field
from moe_operator.api.v1alpha1.moedeployment import PRECISIONS, Precision

AcceleratorProfile = Literal["h200", "b200", "ascend-910b", "ascend-910c", "custom"]
ACCELERATOR_PROFILES: tuple[str, ...] = AcceleratorProfile.__args__  # type: ignore[attr-defined]
Vendor = Literal["nvidia", "huawei"]
NVIDIA_PROFILES = ("h200", "b200")
HUAWEI_PROFILES = ("ascend-910b", "ascend-910c")

LabelKey = Annotated[str, StringConstraints(max_length=317, pattern=QUALIFIED_NAME)]
LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE)]
DevicePath = Annotated[str, StringConstraints(max_length=256, pattern=CLEAN_PATH)]
HostPathPrefix = Annotated[str, StringConstraints(max_length=1024, pattern=CLEAN_PATH)]

#: Host directories no hostPath prefix may equal, lie under or contain: node credentials and configuration, the
#: kubelet's pod volumes (every pod's secrets), runtime sockets, kernel interfaces and devices.
PROTECTED_HOST_PATHS: tuple[str, ...] = (
    "/etc", "/proc", "/sys", "/dev", "/boot", "/root", "/home", "/run", "/var/run", "/var/lib/kubelet",
    "/var/lib/containerd", "/var/lib/docker", "/var/log", "/usr", "/bin", "/sbin", "/lib", "/lib64",
)
#: RDMA device nodes the pool may mount into pods (the verbs and RDMA-CM devices); anything else under /dev comes
#: from a device plugin, which the kubelet checks, not from a hostPath the operator writes into every pod.
RDMA_DEVICE_ROOT = "/dev/infiniband"
#: the extended-resource domain each vendor's device plugin registers
VENDOR_RESOURCE_DOMAIN = {"nvidia": "nvidia.com/", "huawei": "huawei.com/"}


def _protected(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") or p.startswith(path + "/") for p in PROTECTED_HOST_PATHS)


def _cel_strings(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{i}'" for i in items) + "]"


def _vendor_matches(profile: str, vendor: str | None) -> bool:
    if vendor is None or profile == "custom":
        return True
    return (profile in NVIDIA_PROFILES) == (vendor == "nvidia")


class AcceleratorSpec(ApiModel):
    """The device model of the pool's nodes. Profiles carry known specs; custom needs them spelled out."""

    cel_rules = (
        Rule(
            rule="self.profile != 'custom' || (has(self.memoryGB) && has(self.devicesPerNode) && "
            "has(self.supportedPrecisions) && has(self.vendor))",
            message="accelerator: profile 'custom' requires memoryGB, devicesPerNode, supportedPrecisions and vendor",
            reason="FieldValueRequired",
            check=lambda m: (
                m.profile != "custom" or None not in (m.memory_gb, m.devices_per_node, m.supported_precisions, m.vendor)
            ),
        ),
        Rule(
            rule="!has(self.vendor) || self.profile == 'custom' || "
            "((self.profile in ['h200', 'b200']) == (self.vendor == 'nvidia'))",
            message="accelerator.vendor must match the profile (h200, b200: nvidia; ascend-910b, ascend-910c: huawei)",
            field_path=".vendor",
            check=lambda m: _vendor_matches(m.profile, m.vendor),
        ),
    )

    profile: AcceleratorProfile = Field(
        description="Known device profile (h200, b200, ascend-910b, ascend-910c) or custom (then memoryGB, "
        "devicesPerNode, supportedPrecisions and vendor are required)."
    )
    memory_gb: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        alias="memoryGB",
        description="Device memory per accelerator in GB (10^9 bytes); overrides the profile's value.",
    )
    devices_per_node: int | None = Field(
        default=None, ge=1, le=64, description="Accelerators per node; overrides the profile's value."
    )
    supported_precisions: list[Precision] | None = Field(
        default=None,
        min_length=1,
        max_length=len(PRECISIONS),
        description="Weight precisions the devices run natively; overrides the profile's list.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    vendor: Vendor | None = Field(default=None, description="Device vendor: nvidia or huawei.")


class RDMA(ApiModel):
    """RDMA NICs for the expert-parallel all-to-all (DeepEP) and NCCL/HCCL between the nodes of a group."""

    resource_name: str = Field(
        max_length=317,
        pattern=QUALIFIED_NAME,
        description="Extended resource of the RDMA devices, e.g. rdma/ib or nvidia.com/hostdev.",
    )
    count: int = Field(default=1, ge=1, le=64, description="RDMA devices requested per pod (1..64).")
    devices: list[DevicePath] = Field(
        default_factory=list,
        max_length=32,
        description=f"Host device paths mounted into the pods where no device plugin injects them: "
        f"{RDMA_DEVICE_ROOT} or paths under it.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"self.all(d, d == '{RDMA_DEVICE_ROOT}' || d.startsWith('{RDMA_DEVICE_ROOT}/'))",
                    "message": f"spec.rdma.devices: only {RDMA_DEVICE_ROOT} and paths under it may be mounted (other "
                    "device nodes come from a device plugin)",
                }
            ]
        },
    )

    ib_devices: list[Annotated[str, StringConstraints(max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]] = Field(
        default_factory=list,
        max_length=32,
        alias="ibDevices",
        description="InfiniBand HCA names of a node (e.g. mlx5_0), for the KV transfer of prefill/decode "
        "disaggregation (--disaggregation-ib-device, comma-joined); empty: the transfer engine picks.",
    )

    @field_validator("devices")
    @classmethod
    def _rdma_devices(cls, v: list[str]) -> list[str]:
        for d in v:
            if d != RDMA_DEVICE_ROOT and not d.startswith(RDMA_DEVICE_ROOT + "/"):
                raise ValueError(f"{d!r}: only {RDMA_DEVICE_ROOT} and paths under it may be mounted (other device "
                                 "nodes come from a device plugin)")
        return v


class ModelCache(ApiModel):
    """Where on the pool's nodes MoEDeployments may read pre-staged weights (weights.hostPath)."""

    host_path_prefixes: list[HostPathPrefix] = Field(
        default_factory=list,
        max_length=16,
        description="Node directories under which weights.hostPath may point (e.g. /mnt/models); a hostPath "
        "outside them is refused. Empty: no hostPath weights on this pool. System directories (/etc, /proc, /dev, "
        "/var/lib/kubelet, ...) and their parents are refused here.",
        json_schema_extra={
            "x-kubernetes-list-type": "set",
            "x-kubernetes-validations": [
                {
                    "rule": "self.all(p, !" + _cel_strings(PROTECTED_HOST_PATHS) + ".exists(s, p == s || "
                    "p.startsWith(s + '/') || s.startsWith(p + '/')))",
                    "message": "spec.modelCache.hostPathPrefixes must not equal, lie under or contain a system "
                    "directory: " + ", ".join(PROTECTED_HOST_PATHS),
                }
            ],
        },
    )

    @field_validator("host_path_prefixes")
    @classmethod
    def _not_system(cls, v: list[str]) -> list[str]:
        for p in v:
            if _protected(p):
                raise ValueError(f"{p!r} equals, lies under or contains a system directory (one of "
                                 f"{', '.join(PROTECTED_HOST_PATHS)}): pods would read the node's files")
        return v


Quantity = Annotated[str, StringConstraints(max_length=64, pattern=QUANTITY)]


class NodeResources(ApiModel):
    """What one node of the pool offers to pods (its allocatable CPU, memory and ephemeral storage)."""

    cpu: Quantity | None = Field(default=None, description="Allocatable CPU of one node, e.g. 224 or 223500m.")
    memory: Quantity | None = Field(default=None, description="Allocatable memory of one node, e.g. 2000Gi.")
    ephemeral_storage: Quantity | None = Field(
        default=None, description="Allocatable ephemeral storage (node disk for emptyDirs) of one node, e.g. 3Ti."
    )


def _vendor_of(acc: AcceleratorSpec) -> str | None:
    if acc.vendor is not None:
        return acc.vendor
    if acc.profile in NVIDIA_PROFILES:
        return "nvidia"
    if acc.profile in HUAWEI_PROFILES:
        return "huawei"
    return None


def _resource_matches_vendor(m: AcceleratorPoolSpec) -> bool:
    vendor = _vendor_of(m.accelerator)
    if m.device_resource_name is None or vendor is None:
        return True
    return m.device_resource_name.startswith(VENDOR_RESOURCE_DOMAIN[vendor])


class AcceleratorPoolSpec(ApiModel):
    """Which nodes form the pool and how to place and price work on them."""

    cel_rules = (
        Rule(
            rule="!has(self.deviceResourceName) || (self.deviceResourceName.contains('/') && "
            "!self.deviceResourceName.startsWith('kubernetes.io/') && "
            "!self.deviceResourceName.startsWith('requests.'))",
            message="spec.deviceResourceName must be an extended resource (<domain>/<name>, e.g. nvidia.com/gpu), "
            "not a native one such as cpu or memory",
            field_path=".deviceResourceName",
            check=lambda m: m.device_resource_name is None or (
                "/" in m.device_resource_name and not m.device_resource_name.startswith("kubernetes.io/")
                and not m.device_resource_name.startswith("requests.")),
        ),
        Rule(
            rule="!has(self.deviceResourceName) || "
            "((self.accelerator.profile in ['h200', 'b200'] || (has(self.accelerator.vendor) && "
            "self.accelerator.vendor == 'nvidia')) ? self.deviceResourceName.startsWith('nvidia.com/') : true) && "
            "((self.accelerator.profile in ['ascend-910b', 'ascend-910c'] || (has(self.accelerator.vendor) && "
            "self.accelerator.vendor == 'huawei')) ? self.deviceResourceName.startsWith('huawei.com/') : true)",
            message="spec.deviceResourceName must be the accelerator vendor's resource (nvidia: nvidia.com/..., "
            "huawei: huawei.com/...)",
            field_path=".deviceResourceName",
            check=_resource_matches_vendor,
        ),
        Rule(
            rule="!has(self.requireImageDigests) || !self.requireImageDigests || !has(self.sglangImage) || "
            "self.sglangImage.matches(r'" + IMAGE_DIGEST + "')",
            message="spec.sglangImage must be pinned by digest (repo@sha256:<64 hex>) when requireImageDigests is "
            "true",
            field_path=".sglangImage",
            check=lambda m: not m.require_image_digests or m.sglang_image is None
            or re.match(IMAGE_DIGEST, m.sglang_image) is not None,
        ),
    )

    accelerator: AcceleratorSpec = Field(description="Device model of the nodes.")
    device_resource_name: str | None = Field(
        default=None,
        max_length=317,
        pattern=QUALIFIED_NAME,
        description="Extended resource the pods request, e.g. nvidia.com/gpu or huawei.com/Ascend910; the "
        "operator picks the profile's usual one when unset.",
    )
    node_selector: dict[LabelKey, LabelValue] = Field(
        default_factory=dict,
        description="Node labels that select the pool's nodes (also set as the pods' nodeSelector).",
        json_schema_extra={
            "maxProperties": 32,
            "x-kubernetes-validations": [
                {
                    "rule": "self.all(k, k.size() <= 317 && k.matches(r'" + QUALIFIED_NAME + "'))",
                    "message": "spec.nodeSelector keys must be label keys ([prefix/]name, at most 317 characters)",
                }
            ],
        },
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Tolerations added to every pod placed on the pool."
    )
    rdma: RDMA | None = Field(default=None, description="RDMA devices for inter-node traffic within a group.")
    sglang_image: str | None = Field(
        default=None,
        max_length=512,
        pattern=IMAGE,
        description="Default SGLang image for deployments on this pool (CUDA vs CANN builds differ).",
    )
    cost_per_node_hour: float | None = Field(
        default=None, ge=0, le=1_000_000, description="Price of one node-hour, used to rank candidate pools."
    )
    topology_key: str | None = Field(
        default=None,
        max_length=317,
        pattern=QUALIFIED_NAME,
        description="Node label key of the fast-interconnect domain (rack, NVLink or HCCS domain), e.g. "
        "moe-operator.io/nvlink-domain; a multi-node group is packed into one value of it (LWS exclusive placement, "
        "unless placement.exclusiveTopologyKey says otherwise).",
    )
    model_cache: ModelCache | None = Field(
        default=None,
        description="Node directories MoEDeployments may mount weights from (weights.hostPath); unset, none.",
    )
    node: NodeResources | None = Field(
        default=None,
        description="What one node offers, for sizing the engine pods' CPU, memory and disk: set it for a pool "
        "that has no nodes yet, or to keep the pods' size fixed; unset, the smallest allocatable among the "
        "pool's Ready nodes is used (status.nodeAllocatable).",
    )
    node_failure_toleration_seconds: int | None = Field(
        default=None,
        ge=0,
        le=86_400,
        description="How long an SGLang pod stays bound to a node the node controller marked not-ready or "
        "unreachable (NoExecute taints) before it is evicted and its group recreated on other nodes. Unset: "
        "Kubernetes' default of 300 s. A group with a pod on a dead node serves nothing; a short value brings it "
        "back sooner, at the price of a full group restart (a cold start) on a brief node flap.",
    )
    require_image_digests: bool = Field(
        default=False,
        description="Refuse MoEDeployments (and this pool's sglangImage) whose images are not pinned by digest "
        "(repo@sha256:...).",
    )
    max_nodes: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Most nodes the pool may grow to: the planner keeps both the group and the planned fleet "
        "(groups x nodes per group) within it.",
    )


class AcceleratorPoolStatus(StatusModel):
    """Observed state of the pool's nodes, written by the operator."""

    observed_generation: int | None = Field(default=None, ge=0, description="metadata.generation this status reflects.")
    nodes: int | None = Field(default=None, ge=0, description="Ready nodes matching nodeSelector.")
    allocatable_devices: int | None = Field(
        default=None, ge=0, description="Sum of the device resource allocatable on those nodes."
    )
    node_allocatable: NodeResources | None = Field(
        default=None, description="The smallest allocatable CPU, memory and ephemeral storage among those nodes."
    )
    conditions: list[Condition] = conditions_field("AcceleratorPool")


class AcceleratorPool(BaseModel):
    """An AcceleratorPool object as stored by the apiserver (or as a kopf body)."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True, extra="ignore"
    )

    KIND: ClassVar[str] = "AcceleratorPool"
    PLURAL: ClassVar[str] = "acceleratorpools"

    api_version: Literal["moe-operator.io/v1alpha1"] = f"{API_GROUP}/{API_VERSION}"  # type: ignore[assignment]
    kind: Literal["AcceleratorPool"] = "AcceleratorPool"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: AcceleratorPoolSpec
    status: AcceleratorPoolStatus | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> AcceleratorPool:
        """Validate a full object; raises InvalidResource whose `errors` name each bad field."""
        try:
            return cls.model_validate(dict(body))
        except ValidationError as exc:
            name = (body.get("metadata") or {}).get("name")
            raise InvalidResource(cls.KIND, name, format_validation_error(exc)) from None

    def to_k8s(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


__all__ = [
    "ACCELERATOR_PROFILES",
    "RDMA",
    "AcceleratorPool",
    "AcceleratorPoolSpec",
    "AcceleratorPoolStatus",
    "AcceleratorProfile",
    "AcceleratorSpec",
    "Condition",
    "ModelCache",
    "Vendor",
]
