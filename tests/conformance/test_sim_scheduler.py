"""Conformance tier: the compute-aware replay's copy of SGLang's scheduler and SMG's cache_aware router
(sim/moe_sim/pd.py) against the pinned wheels: sglang==0.5.23 (hack/sglang/scheduler_constants.py reads them from the
wheel) and smg==1.13.0 (its RouterArgs defaults; the operator renders none of the cache_aware knobs, so the defaults
are what runs)."""

from __future__ import annotations

import json
import subprocess

import pytest
from tests.conformance.test_sglang_conformance import ROOT, run_sglang
from tests.conformance.test_smg_conformance import SMG_PY, _router_argv, make

from moe_sim import pd

pytestmark = pytest.mark.conformance


def test_admission_and_retraction_constants_are_sglangs() -> None:
    got = json.loads(run_sglang(ROOT / "hack" / "sglang" / "scheduler_constants.py").strip().splitlines()[-1])
    assert got == {
        "CLIP_MAX_NEW_TOKENS": pd.CLIP_MAX_NEW_TOKENS,
        "INIT_NEW_TOKEN_RATIO": pd.INIT_NEW_TOKEN_RATIO,
        "MIN_NEW_TOKEN_RATIO_FACTOR": pd.MIN_NEW_TOKEN_RATIO_FACTOR,
        "NEW_TOKEN_RATIO_DECAY_STEPS": pd.NEW_TOKEN_RATIO_DECAY_STEPS,
        "RETRACT_DECODE_STEPS": pd.RETRACT_DECODE_STEPS,
        # the replay's rules (pd.replay `retract`, `try_admit`) stand on these
        "retraction_key_output_then_minus_input": True,
        "ratio_after_retract_formula": True,
        "retracted_appended_to_waiting_queue": True,
        "running_offset_clipped_times_ratio": True,
        "default_schedule_policy": "fcfs",
    }


def test_cache_aware_defaults_are_smgs() -> None:
    if not SMG_PY.exists():
        pytest.skip(f"!!! SMG CONFORMANCE TEST SKIPPED: no smg==1.13.0 at {SMG_PY}; run hack/setup-router")
    code = ("import json; from smg.router_args import RouterArgs as A; print(json.dumps([A.cache_threshold, "
            "A.balance_abs_threshold, A.balance_rel_threshold]))")
    out = subprocess.run([str(SMG_PY), "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert json.loads(out) == [pd.CACHE_THRESHOLD, pd.BALANCE_ABS_THRESHOLD, pd.BALANCE_REL_THRESHOLD]
    argv = _router_argv(make())
    assert argv[argv.index("--policy") + 1] == "cache_aware"
    for knob in ("--cache-threshold", "--balance-abs-threshold", "--balance-rel-threshold"):
        assert knob not in argv  # so SMG's defaults are what the router runs
