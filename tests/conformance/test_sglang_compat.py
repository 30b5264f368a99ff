"""Conformance: every rule of data/sglang_compat.yaml (the MoE compatibility table and the memory rules the planner
copies) against the pinned SGLang wheel's own code, read with hack/sglang/check_compat.py in .venv-sglang."""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest
from tests.conformance.test_sglang_conformance import ROOT, run_sglang

pytestmark = pytest.mark.conformance
CHECK = ROOT / "hack" / "sglang" / "check_compat.py"


@functools.lru_cache(maxsize=1)
def _report() -> dict[str, Any]:
    return json.loads(run_sglang(CHECK))


def test_table_is_for_the_pinned_wheel() -> None:
    r = _report()
    assert r["sglang_version"] == r["table_sglang"] == "0.5.23"


def test_every_rule_matches_the_code_that_decides_it() -> None:
    from moe_operator.planner.compat import memory_rule_ids, moe_rules

    r = _report()
    checked = {x["rule"] for x in r["results"]}
    assert checked == {m.id for m in moe_rules()} | memory_rule_ids(), "a rule without evidence is not checked"
    bad = [x for x in r["results"] if x["missing"] or x["present"] or x["error"]]
    assert not bad, "SGLang's code no longer says what these rules claim:\n" + "\n".join(
        f"{x['rule']}: {x['file']}::{x['function']}: missing {x['missing']} present {x['present']} {x['error'] or ''}"
        for x in bad
    )


def test_deepep_forces_ep_size_to_tp_size() -> None:
    """arg_groups/overrides.py::_a2a_ep_size, called: why the planner's DeepEP layouts always have EP = TP and why a
    layout without an all-to-all backend keeps the EP size it asks for."""
    assert _report()["a2a_ep_size"] == {"none": {}, "deepep": {"ep_size": 16}}
