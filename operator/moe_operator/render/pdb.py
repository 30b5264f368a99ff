"""PodDisruptionBudgets for the SGLang groups and the router."""

from __future__ import annotations

from typing import Any

from .inputs import RenderInput
from .meta import (
    COMPONENT_ENGINE,
    COMPONENT_ROUTER,
    L_DEPLOYMENT,
    LWS_NAME_LABEL,
    object_meta,
    router_name,
)
from .router import router_pod_selector


def group_pod_selector(inp: RenderInput) -> dict[str, str]:
    """All pods (leaders and workers) of this deployment's LWS."""
    return {L_DEPLOYMENT: inp.name, LWS_NAME_LABEL: inp.lws_name}


def pod_disruption_budget(inp: RenderInput) -> dict[str, Any]:
    """At most one *group* voluntarily disrupted at a time.

    A PDB counts pods, but the unit of failure is the group: evicting any one
    pod makes LWS (RecreateGroupOnPodRestart) tear down and recreate its whole
    group.  ``maxUnavailable: 1`` plus ``unhealthyPodEvictionPolicy:
    AlwaysAllow`` yields exactly "one group at a time":

    * all groups healthy: one eviction is allowed; it brings that whole group
      down (``nodes_per_group`` pods), which exhausts the budget;
    * a group down or starting (its pods not Ready): Ready pods of *other*
      groups cannot be evicted, so node drains serialise group by group;
    * the not-Ready pods of the broken group itself are always evictable
      (AlwaysAllow), so a crash-looping or stuck group never blocks a drain,
      and the rest of a group that is already going down (whole-rack drain)
      can follow.

    ``maxUnavailable: nodes_per_group`` looks like "one group" but is weaker:
    in the window between the first eviction and LWS tearing that group down
    only one pod is unavailable, so ``nodes_per_group - 1`` further evictions
    (possibly in *other* groups) would pass and take several groups out.

    With replicas == 1 the budget still lets the single group be evicted:
    blocking node maintenance forever is worse.  Scale-down of groups goes
    through the operator's drain and LWS replicas, not eviction, and is not
    governed by this PDB.
    """
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(inp, inp.lws_name, COMPONENT_ENGINE),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": group_pod_selector(inp)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def router_pod_disruption_budget(inp: RenderInput) -> dict[str, Any] | None:
    """One router pod at a time; None with a single router replica (a PDB
    with maxUnavailable 1 over one pod would add nothing but could look like
    protection)."""
    if not inp.router_enabled or inp.router_replicas <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(inp, router_name(inp.name), COMPONENT_ROUTER),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": router_pod_selector(inp)}},
    }
