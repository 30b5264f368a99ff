"""Conformance tier: the compute-aware replay's copy of SGLang's scheduler and SMG's cache_aware router
(sim/moe_sim/pd.py) against the pinned wheels: sglang==0.5.23 (hack/sglang/scheduler_constants.py reads them from the
wheel) and smg==1.13.0 (its RouterArgs defaults; the operator renders none of the cache_aware knobs, so the defaults
are what runs). The 1.13.0 wheel ships its router as compiled Rust: the rules the replay models are its option
definitions and help texts, checked here as the effective values of the argv the operator renders and as the words
the rules are taken from."""

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


_EFFECTIVE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import parse_router_argv as p
argv = json.loads(sys.stdin.read())
got = p.parse(argv)
helps = {}
for a in p._parser()._actions:
    for o in a.option_strings:
        helps[o] = " ".join((a.help or "").split())
print(json.dumps({"effective": got, "help": helps}))
"""


def test_spill_gate_and_overload_protection_are_smgs() -> None:
    """The replay's _Router rules (pd.py) as SMG 1.13.0 runs them behind the rendered argv: overload protection on
    (8 waiting requests summed over DP ranks, 0.8 KV usage, polled every 10 s, no shedding), the spill gate against
    the healthy-fleet mean with a margin of two standard deviations never under four, the KV-usage triggers off,
    the tree index."""
    if not SMG_PY.exists():
        pytest.skip(f"!!! SMG CONFORMANCE TEST SKIPPED: no smg==1.13.0 at {SMG_PY}; run hack/setup-router")
    argv = _router_argv(make())
    out = subprocess.run([str(SMG_PY), "-c", _EFFECTIVE, str(ROOT / "hack" / "smg")], input=json.dumps(argv),
                         capture_output=True, text=True, timeout=120, check=True).stdout
    got = json.loads(out)
    eff, helps = got["effective"], got["help"]
    assert "error" not in eff, eff
    assert eff["policy"] == "cache_aware" and eff["dp_aware"] is True  # attention DP: rank workers (router_ranks)
    assert eff["cache_index"] == "tree"
    assert eff["worker_overload_protection"] is True
    assert eff["worker_overload_waiting_requests"] == pd.WORKER_OVERLOAD_WAITING_REQUESTS
    assert eff["worker_overload_token_usage"] == pd.WORKER_OVERLOAD_TOKEN_USAGE
    assert eff["worker_overload_shed"] is False  # all overloaded: routed to the least loaded, not refused
    assert eff["load_monitor_interval"] == pd.LOAD_MONITOR_INTERVAL_S
    assert eff["balance_token_usage_threshold"] >= 1.0 and eff["overload_token_usage_threshold"] >= 1.0  # off
    gate = helps["--balance-abs-threshold"]
    for words in ("healthy-fleet mean", "AND by the relative threshold", "two standard deviations",
                  "never under four"):
        assert words in gate, (words, gate)
    assert pd.SPILL_MIN_MARGIN == 4
    assert "multiple of the healthy-fleet mean" in helps["--balance-rel-threshold"]
    waiting = helps["--worker-overload-waiting-requests"]
    assert "summed across DP ranks" in waiting and "least-loaded" in waiting
    assert "mean KV-cache token usage across DP ranks" in helps["--worker-overload-token-usage"]
