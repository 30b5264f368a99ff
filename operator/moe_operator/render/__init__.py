"""Pure render layer: plain-dict Kubernetes manifests from a :class:`RenderInput`.

Builders are deterministic pure functions (same input -> equal output), never
talk to the API server and never import the planner or the API models.  The
handler layer maps CR + plan + pool into a RenderInput, applies
:func:`children` in order and deletes owned objects whose
``(apiVersion, kind, name)`` is not in :func:`child_keys`.
"""

from .argv import (
    ROUTER_COMMAND,
    ROUTER_METRICS_PORT,
    ROUTER_PORT,
    SGLANG_COMMAND,
    attn_dp_size,
    router_args,
    router_selector,
    sglang_argv,
)
from .children import ChildKey, child_key, child_keys, children
from .inputs import (
    CACHE_MOUNT,
    MAX_NAME_LEN,
    MODEL_MOUNT,
    ROUTER_POLICIES,
    HostMount,
    Owner,
    RenderInput,
    WeightsSource,
    model_args_for,
    model_path_for,
)
from .lws import leaderworkerset, pod_template
from .meta import (
    A_SPEC_HASH,
    L_DEPLOYMENT,
    L_ROLE,
    L_ROUTABLE,
    leaders_service_name,
    lws_name,
    router_name,
    spec_hash,
)
from .pdb import group_pod_selector, pod_disruption_budget, router_pod_disruption_budget
from .router import (
    leader_service,
    router_deployment,
    router_pod_selector,
    router_role,
    router_role_binding,
    router_service,
    router_service_account,
)

__all__ = [
    "A_SPEC_HASH",
    "CACHE_MOUNT",
    "L_DEPLOYMENT",
    "L_ROLE",
    "L_ROUTABLE",
    "MAX_NAME_LEN",
    "MODEL_MOUNT",
    "ROUTER_COMMAND",
    "ROUTER_METRICS_PORT",
    "ROUTER_POLICIES",
    "ROUTER_PORT",
    "SGLANG_COMMAND",
    "ChildKey",
    "HostMount",
    "Owner",
    "RenderInput",
    "WeightsSource",
    "attn_dp_size",
    "child_key",
    "child_keys",
    "children",
    "group_pod_selector",
    "leader_service",
    "leaders_service_name",
    "leaderworkerset",
    "lws_name",
    "model_args_for",
    "model_path_for",
    "pod_disruption_budget",
    "pod_template",
    "router_args",
    "router_deployment",
    "router_name",
    "router_pod_disruption_budget",
    "router_pod_selector",
    "router_role",
    "router_role_binding",
    "router_selector",
    "router_service",
    "router_service_account",
    "sglang_argv",
    "spec_hash",
]
