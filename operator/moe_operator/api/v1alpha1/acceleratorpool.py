"""AcceleratorPool (cluster-scoped): a set of identical accelerator nodes MoEDeployments can be planned onto."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from pydantic.alias_generators import to_camel

from moe_operator import API_GROUP, API_VERSION
from moe_operator.api.base import (
    ABS_PATH,
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
DevicePath = Annotated[str, StringConstraints(max_length=256, pattern=ABS_PATH)]


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
        description="Host device paths mounted into the pods, e.g. /dev/infiniband.",
    )


Quantity = Annotated[str, StringConstraints(max_length=64, pattern=QUANTITY)]


class NodeResources(ApiModel):
    """What one node of the pool offers to pods (its allocatable CPU, memory and ephemeral storage)."""

    cpu: Quantity | None = Field(default=None, description="Allocatable CPU of one node, e.g. 224 or 223500m.")
    memory: Quantity | None = Field(default=None, description="Allocatable memory of one node, e.g. 2000Gi.")
    ephemeral_storage: Quantity | None = Field(
        default=None, description="Allocatable ephemeral storage (node disk for emptyDirs) of one node, e.g. 3Ti."
    )


class AcceleratorPoolSpec(ApiModel):
    """Which nodes form the pool and how to place and price work on them."""

    cel_rules = (
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
    node: NodeResources | None = Field(
        default=None,
        description="What one node offers, for sizing the engine pods' CPU, memory and disk: set it for a pool "
        "that has no nodes yet, or to keep the pods' size fixed; unset, the smallest allocatable among the "
        "pool's Ready nodes is used (status.nodeAllocatable).",
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
    "Vendor",
]
