"""Group restarts seen in the pod stream, as events on the MoEDeployment.

A failing group pod is often back within seconds (LWS RecreateGroupOnPodRestart deletes and recreates the whole
group; a container restart is quicker still), so the status refresh can miss it entirely; the pod events cannot.
Pure bookkeeping: `observe` is fed every pod event and says what to report, the handler posts it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from moe_operator.render.meta import LWS_GROUP_INDEX_LABEL as GROUP_INDEX
from moe_operator.render.meta import LWS_REVISION_LABEL as REVISION

MAX_TRACKED = 100_000  # pods; past it the oldest are forgotten (a forgotten pod only misses one report)


@dataclass(frozen=True)
class Seen:
    uid: str
    revision: str
    restarts: int


def _restarts(pod: Mapping[str, Any]) -> tuple[int, str]:
    """Total container restarts and the last termination's reason (with exit code) of the most restarted one."""
    total, why, most = 0, "", -1
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        n = int(cs.get("restartCount") or 0)
        total += n
        if n > most:
            most = n
            term = (cs.get("lastState") or {}).get("terminated") or {}
            if term:
                why = f"{cs.get('name')}: {term.get('reason') or 'terminated'}, exit code {term.get('exitCode')}"
    return total, why


class RestartTracker:
    """(namespace, pod name) -> what was last seen of it."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], Seen] = {}

    def observe(self, event: str, pod: Mapping[str, Any]) -> str | None:
        """The message of a group restart this event shows, or None. A container restart (restartCount up) and a
        pod replaced under the same name at the same revision (LWS recreated the group) count; a pod replaced at a
        new revision is a rollout, a pod removed for good a scale-down."""
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        if GROUP_INDEX not in labels:
            return None
        key = (meta.get("namespace") or "", meta.get("name") or "")
        if event == "DELETED":
            return None  # keep what was seen: a replacement under the same name is compared with it
        restarts, why = _restarts(pod)
        now = Seen(uid=meta.get("uid") or "", revision=labels.get(REVISION, ""), restarts=restarts)
        before = self.seen.get(key)
        self.seen[key] = now
        if len(self.seen) > MAX_TRACKED:
            self.seen.pop(next(iter(self.seen)))
        if before is None:
            return None
        group = labels[GROUP_INDEX]
        if before.uid == now.uid and now.restarts > before.restarts:
            return (f"group {group}: pod {key[1]} restarted a container (restart count {now.restarts}"
                    + (f"; last {why}" if why else "") + "); LWS recreates the whole group")
        if before.uid != now.uid and before.revision == now.revision:
            return f"group {group}: pod {key[1]} was recreated (the group restarted at the same revision)"
        return None
