"""Which MoE layouts SGLang 0.5.23 can run: the table in data/sglang_compat.yaml (each rule cites the deciding code
and carries the fragments of it that tests/conformance checks against the pinned wheel)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TABLE_PATH = Path(__file__).resolve().parent.parent / "data" / "sglang_compat.yaml"


@dataclass(frozen=True)
class Rule:
    id: str
    match: dict[str, tuple[str, ...]]
    verdict: str  # "supported" | "unsupported"
    runner: str  # --moe-runner-backend the layout needs ("auto": none passed)
    cite: str
    why: str

    @property
    def supported(self) -> bool:
        return self.verdict == "supported"

    def matches(self, **facts: str) -> bool:
        return all(facts.get(k) in allowed for k, allowed in self.match.items())

    def explain(self) -> str:
        return f"{self.why} [sglang 0.5.23 {self.cite}; rule {self.id}]"


def _as_tuple(v: Any) -> tuple[str, ...]:
    return tuple(v) if isinstance(v, list | tuple) else (str(v),)


@functools.cache
def table() -> dict[str, Any]:
    import yaml

    with TABLE_PATH.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


@functools.cache
def moe_rules() -> tuple[Rule, ...]:
    return tuple(
        Rule(
            id=r["id"],
            match={k: _as_tuple(v) for k, v in (r.get("match") or {}).items()},
            verdict=r["verdict"],
            runner=r.get("runner", "auto"),
            cite=r["cite"],
            why=" ".join(str(r["why"]).split()),
        )
        for r in table()["moe"]
    )


def moe_rule(*, a2a: str, quant: str, arch: str) -> Rule:
    """The first rule of the table that decides this combination (the table ends in catch-alls)."""
    for rule in moe_rules():
        if rule.matches(a2a=a2a, quant=quant, arch=arch):
            return rule
    raise LookupError(f"sglang_compat.yaml has no rule for a2a={a2a} quant={quant} arch={arch}")


def memory_rule_ids() -> set[str]:
    return {r["id"] for r in table().get("memory") or []}
