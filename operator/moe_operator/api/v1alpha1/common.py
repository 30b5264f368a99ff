"""Kubernetes-shaped pieces reused by both kinds: object metadata, conditions, tolerations, key references."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from moe_operator.api.base import (
    DNS_SUBDOMAIN,
    ENV_NAME,
    LABEL_VALUE,
    QUALIFIED_NAME,
    ApiModel,
    Rule,
    StatusModel,
    Timestamp,
)

ConditionStatus = Literal["True", "False", "Unknown"]
CONDITION_TYPE = QUALIFIED_NAME
CONDITION_REASON = r"^([A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?)?$"

MAX_CONDITIONS = 16


class ObjectMeta(BaseModel):
    """The parts of metav1.ObjectMeta the operator reads; everything else is kept as is."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True, extra="allow"
    )

    name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Condition(StatusModel):
    """A metav1.Condition: one aspect of the object's state (Ready, Planned, Scaling, ...)."""

    type: str = Field(
        max_length=316,
        pattern=CONDITION_TYPE,
        description="Condition type in CamelCase, e.g. Ready, Planned, Progressing, Degraded.",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str | None = Field(
        default=None,
        max_length=1024,
        pattern=CONDITION_REASON,
        description="Machine-readable CamelCase reason for the last transition, e.g. InsufficientCapacity.",
    )
    message: str | None = Field(
        default=None, max_length=32768, description="Human-readable details about the last transition."
    )
    last_transition_time: Timestamp | None = Field(
        default=None, description="When the condition last changed status (RFC 3339)."
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the condition was computed from."
    )


class Toleration(ApiModel):
    """A core/v1 Toleration, copied onto every pod the operator creates for the pool."""

    cel_rules = (
        Rule(
            rule="!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
            message="tolerations[].value must be empty when operator is Exists",
            check=lambda m: m.operator != "Exists" or not m.value,
            field_path=".value",
        ),
        # A key-less toleration tolerates every taint, node.kubernetes.io/not-ready and /unreachable (NoExecute)
        # included: the pods would never leave a dead node and their group would never be recreated elsewhere.
        Rule(
            rule="has(self.key)",
            message="tolerations[].key is required: a key-less toleration tolerates every taint, including "
            "node.kubernetes.io/not-ready and unreachable, so pods would never leave a dead node",
            check=lambda m: m.key is not None,
            field_path=".key",
            reason="FieldValueRequired",
        ),
    )

    key: str | None = Field(
        default=None,
        max_length=317,
        pattern=QUALIFIED_NAME,
        description="Taint key the toleration applies to (required: tolerating every taint would keep pods on "
        "NotReady nodes).",
    )
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists or Equal (Kubernetes' default when unset: Equal)."
    )
    value: str | None = Field(
        default=None, max_length=63, pattern=LABEL_VALUE, description="Taint value to match when operator is Equal."
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; unset matches every effect."
    )
    toleration_seconds: int | None = Field(
        default=None,
        ge=0,
        le=2**31 - 1,
        description="For NoExecute: how long the pod stays bound after the taint appears; unset means forever.",
    )


class SecretKeyRef(ApiModel):
    """A key of a Secret in the MoEDeployment's namespace."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN, description="Secret name (same namespace).")
    key: str = Field(
        default="token", max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="Key within the Secret."
    )


class ConfigMapKeyRef(ApiModel):
    """A key of a ConfigMap in the MoEDeployment's namespace."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN, description="ConfigMap name (same namespace).")
    key: str = Field(
        default="config.json",
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key holding the Hugging Face config.json content.",
    )


class EnvVar(ApiModel):
    """An environment variable for the SGLang containers."""

    name: str = Field(min_length=1, max_length=253, pattern=ENV_NAME, description="Variable name.")
    value: str = Field(
        default="", max_length=32768,
        description="Variable value, literal: $(VAR) is not expanded (the operator escapes $ as $$ for the kubelet).",
    )


def conditions_field(what: str) -> Any:
    return Field(
        default_factory=list,
        max_length=MAX_CONDITIONS,
        description=f"Standard conditions of the {what}, keyed by type; Ready summarises them.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
