"""Conformance tier: the operator against SGLang 0.5.23's own parser (the real wheel, in .venv-sglang).

Runs in the main venv and shells out to `.venv-sglang/bin/python hack/sglang/…` (the operator never imports
sglang). Create the venv with `hack/setup-sglang`. Without it these tests are skipped LOUDLY, unless
MOE_REQUIRE_CONFORMANCE=1, where a missing venv is a failure.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.conformance

ROOT = Path(__file__).resolve().parents[2]
SGL_PY = ROOT / ".venv-sglang" / "bin" / "python"
PARSE = ROOT / "hack" / "sglang" / "parse_argv.py"
GEN = ROOT / "hack" / "sglang" / "gen_flag_table.py"
TABLE = ROOT / "operator" / "moe_operator" / "data" / "sglang_flags.json"
RENDERER_ARGS = [
    "--dist-init-addr", "10.0.0.1:20000", "--nnodes", "{nodes}", "--node-rank", "0",
    "--host", "0.0.0.0", "--port", "30000", "--enable-metrics",
]  # fmt: skip


def _require_venv() -> None:
    if SGL_PY.exists():
        return
    msg = (
        "!!! SGLang CONFORMANCE TESTS SKIPPED: .venv-sglang is missing — the operator's SGLang argv and flag table "
        "were NOT checked against the real sglang==0.5.23 parser. Run `hack/setup-sglang` (about a minute, ~620 MB)."
    )
    if os.environ.get("MOE_REQUIRE_CONFORMANCE") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def run_sglang(script: Path, *args: str, stdin: str | None = None, timeout: float = 300) -> str:
    _require_venv()
    proc = subprocess.run(
        [str(SGL_PY), str(script), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert proc.returncode == 0, f"{script.name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return proc.stdout


def parse(argvs: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """id -> result of SGLang's prepare_server_args (+ model-independent resolution) for each argv."""
    items = [{"id": k, "argv": v} for k, v in argvs.items()]
    out = json.loads(run_sglang(PARSE, stdin=json.dumps(items)))
    assert out["sglang_version"] == "0.5.23"
    return {r["id"]: r for r in out["results"]}


@functools.lru_cache(maxsize=1)
def _known() -> dict[str, dict[str, Any]]:
    return parse(
        {
            "ok": ["--model-path", "m", "--tp-size", "16", "--attn-dp-size", "16", "--ep-size", "16"],
            "enable-ep-moe": ["--model-path", "m", "--enable-ep-moe"],
            "enable-deepep-moe": ["--model-path", "m", "--enable-deepep-moe"],
            "cuda-graph-max-bs": ["--model-path", "m", "--cuda-graph-max-bs", "64"],
            "cuda-graph-bs": ["--model-path", "m", "--cuda-graph-bs", "8", "16"],
            "nsa-prefill-backend": ["--model-path", "m", "--nsa-prefill-backend", "x"],
            "lb-method": ["--model-path", "m", "--load-balance-method", "decode_round_robin"],
            "bad-int": ["--model-path", "m", "--tp-size", "x"],
            "dp-attention": ["--model-path", "m", "--tp-size", "8", "--enable-dp-attention", "--dp-size", "8"],
            "disable-cuda-graph": ["--model-path", "m", "--disable-cuda-graph"],
            "tool-parser-glm45": ["--model-path", "m", "--tool-call-parser", "glm45"],
        }
    )


def test_flag_table_has_not_drifted() -> None:
    """The committed table equals what the pinned SGLang's parser produces now."""
    fresh = run_sglang(GEN, "--stdout")
    committed = TABLE.read_text(encoding="utf-8")
    if fresh != committed:
        a, b = json.loads(committed), json.loads(fresh)
        changed = sorted(k for k in set(a["flags"]) | set(b["flags"]) if a["flags"].get(k) != b["flags"].get(k))
        pytest.fail(
            f"operator/moe_operator/data/sglang_flags.json is stale ({len(changed)} flags differ, e.g. {changed[:10]});"
            " regenerate: .venv-sglang/bin/python hack/sglang/gen_flag_table.py"
        )


def test_parser_is_real_and_never_touches_the_stubs() -> None:
    r = _known()
    for rid, res in r.items():
        assert res["stub_touched"] == [], (rid, res["stub_touched"])
    ok = r["ok"]
    assert ok["accepted"] and ok["resolution_error"] is None, ok
    assert (ok["resolved"]["tp_size"], ok["resolved"]["attn_dp_size"], ok["resolved"]["ep_size"]) == (16, 16, 16)


@pytest.mark.parametrize(
    "rid, needle",
    [
        ("enable-ep-moe", "unrecognized arguments: --enable-ep-moe"),
        ("enable-deepep-moe", "unrecognized arguments: --enable-deepep-moe"),
        ("cuda-graph-max-bs", "ambiguous option: --cuda-graph-max-bs"),
        ("cuda-graph-bs", "ambiguous option: --cuda-graph-bs"),
        ("nsa-prefill-backend", "unrecognized arguments: --nsa-prefill-backend"),
        ("lb-method", "invalid choice: 'decode_round_robin'"),
        ("bad-int", "invalid int value: 'x'"),
    ],
)
def test_known_bad_argv_rejected(rid: str, needle: str) -> None:
    res = _known()[rid]
    assert not res["accepted"], res
    assert needle in res["error"], res["error"]


def test_deprecated_reported_and_resolved() -> None:
    res = _known()["dp-attention"]
    assert res["accepted"]
    assert any("--enable-dp-attention" in d and "--attn-dp-size" in d for d in res["deprecations"]), res
    # raw parse keeps the old meaning; SGLang's resolution rewrites it to attention DP
    assert (res["values"]["dp_size"], res["values"]["attn_dp_size"]) == (8, 1)
    assert (res["resolved"]["dp_size"], res["resolved"]["attn_dp_size"]) == (1, 8)
    assert _known()["disable-cuda-graph"]["deprecations"]
    assert any("glm45" in d for d in _known()["tool-parser-glm45"]["deprecations"])


def test_validator_agrees_with_sglang_on_the_known_cases() -> None:
    """The operator's table-driven validator rejects what SGLang rejects or deprecates."""
    from moe_operator.sglang_flags import validate_extra_args

    for rid, res in _known().items():
        if rid in ("ok", "bad-int"):
            continue  # owned flags / operator-side
        argv = [a for a in _argv_without_model(rid)]
        if not res["accepted"] or res["deprecations"]:
            assert validate_extra_args(argv), (rid, argv)


def _argv_without_model(rid: str) -> list[str]:
    argvs = {
        "enable-ep-moe": ["--enable-ep-moe"],
        "enable-deepep-moe": ["--enable-deepep-moe"],
        "cuda-graph-max-bs": ["--cuda-graph-max-bs", "64"],
        "cuda-graph-bs": ["--cuda-graph-bs", "8", "16"],
        "nsa-prefill-backend": ["--nsa-prefill-backend", "x"],
        "lb-method": ["--load-balance-method", "decode_round_robin"],
        "dp-attention": ["--enable-dp-attention"],
        "disable-cuda-graph": ["--disable-cuda-graph"],
        "tool-parser-glm45": ["--tool-call-parser", "glm45"],
    }
    return argvs[rid]


def _planner_argvs() -> dict[str, list[str]]:
    try:
        from moe_operator.planner import ACCELERATORS, CATALOG, PRECISIONS, PlanError, PlanRequest, plan
    except ImportError as e:  # pragma: no cover - the planner lands separately
        pytest.skip(f"moe_operator.planner is not importable yet ({e}); planner argv conformance not checked")
    # issue 9's acceptance grid (every catalog model x pool x precision x sessions {1, 100, 1000} x context
    # {32k, 128k}) under every objective, plus the v0.1 smoke case; identical argvs are parsed once
    argvs: dict[str, list[str]] = {}
    seen: set[tuple[str, ...]] = set()
    for model in CATALOG:
        for acc in ACCELERATORS:
            for prec in PRECISIONS:
                for sessions, context, objective in [(8, 32768, "min-cost")] + [
                    (n, c, o) for n in (1, 100, 1000) for c in (32_768, 131_072)
                    for o in ("min-cost", "min-group", "max-sessions-per-gpu")
                ]:  # fmt: skip
                    try:
                        p = plan(PlanRequest(model=model, precision=prec, sessions=sessions, context=context,
                                             accelerator=acc, objective=objective))  # fmt: skip
                    except PlanError:
                        continue
                    extra = [a.format(nodes=p.nodes_per_group) for a in RENDERER_ARGS]
                    argv = list(p.sglang_args) + extra
                    if tuple(argv) not in seen:
                        seen.add(tuple(argv))
                        argvs[f"{model}/{acc}/{prec}/{sessions}x{context}/{objective}"] = argv
    return argvs


@functools.lru_cache(maxsize=1)
def _planner_results() -> tuple[dict[str, list[str]], dict[str, dict[str, Any]]]:
    argvs = _planner_argvs()
    assert argvs, "no feasible plan at all: the catalog × accelerator × precision sweep found nothing to check"
    return argvs, parse(argvs)


def test_planner_argv_accepted_by_sglang() -> None:
    argvs, results = _planner_results()
    problems = []
    for pid, res in sorted(results.items()):
        if not res["accepted"]:
            problems.append(f"{pid}: REJECTED by SGLang 0.5.23: {res['error']}\n    argv: {' '.join(argvs[pid])}")
        elif res["resolution_error"]:
            problems.append(f"{pid}: SGLang resolution failed: {res['resolution_error']}")
        elif res["stub_touched"]:
            problems.append(f"{pid}: parsing touched the torch stub: {res['stub_touched'][:5]}")
    assert not problems, f"{len(problems)}/{len(argvs)} planner argvs fail SGLang 0.5.23:\n" + "\n".join(problems)


def test_planner_argv_has_no_deprecation_warnings() -> None:
    argvs, results = _planner_results()
    bad = sorted(pid for pid, res in results.items() if res["deprecations"])
    assert not bad, (
        f"{len(bad)}/{len(argvs)} planner argvs use deprecated SGLang 0.5.23 flags/values:\n"
        + "\n".join(sorted({d for pid in bad for d in results[pid]["deprecations"]}))
        + f"\naffected: {bad}"
    )


def test_planner_argv_passes_operator_validator_for_non_owned_flags() -> None:
    """Everything the planner emits must be in the table; the validator (owned={}) agrees with SGLang."""
    from moe_operator.sglang_flags import validate_extra_args

    argvs = _planner_argvs()
    errs = {pid: validate_extra_args(a, owned={}) for pid, a in argvs.items()}
    errs = {k: v for k, v in errs.items() if v}
    assert not errs, errs


def test_metrics_fixture_matches_sglang_collectors() -> None:
    """tests/fixtures/sglang_metrics_0.5.23.txt is what SGLang 0.5.23's own collectors expose (drift check)."""
    fixture = ROOT / "tests" / "fixtures" / "sglang_metrics_0.5.23.txt"
    fresh = run_sglang(ROOT / "hack" / "sglang" / "metrics_exposition.py")
    assert fresh == fixture.read_text(encoding="utf-8"), (
        "metrics fixture is stale; regenerate: .venv-sglang/bin/python hack/sglang/metrics_exposition.py"
        " > tests/fixtures/sglang_metrics_0.5.23.txt"
    )
    for name in ("sglang:token_usage", "sglang:num_queue_reqs", "sglang:kv_used_tokens", "sglang:max_total_num_tokens"):
        assert f"# TYPE {name} gauge" in fresh, name


def test_every_metric_the_autoscaler_reads_is_one_sglang_exposes() -> None:
    """The scraper's names (gauges per DP rank; counters and histogram _count/_sum for the law's arrival rate,
    service time and queued tokens) exist in SGLang 0.5.23's own collectors with that type
    (observability/metrics_collector.py: SchedulerMetricsCollector, TokenizerMetricsCollector)."""
    from moe_operator.autoscale import scrape

    fresh = run_sglang(ROOT / "hack" / "sglang" / "metrics_exposition.py")
    for name in scrape.WANTED:
        assert f"# TYPE {name} gauge" in fresh, name
    for name in scrape.COUNTERS:
        if name.endswith(("_count", "_sum")):
            base = name.rsplit("_", 1)[0]
            assert f"# TYPE {base} histogram" in fresh, name
        else:
            assert f"# TYPE {name} counter" in fresh, name


def test_every_runner_the_compatibility_table_names_is_a_flag_value_sglang_accepts() -> None:
    """The table's `runner` values (passed as --moe-runner-backend with the layouts that need one, e.g. BF16 experts
    under DeepEP) and the all-to-all backends the planner emits parse with the pinned SGLang, DeepEP layouts
    included: they are alternatives more often than winners, so the plan sweep above rarely parses them."""
    from moe_operator.planner.compat import moe_rules

    runners = sorted({r.runner for r in moe_rules() if r.supported and r.runner != "auto"})
    argvs = {
        f"deepep+{runner}": ["--model-path", "m", "--tp-size", "8", "--ep-size", "8", "--attn-dp-size", "8",
                             "--moe-a2a-backend", "deepep", "--moe-runner-backend", runner,
                             "--cuda-graph-max-bs-decode", "128"]
        for runner in runners
    }  # fmt: skip
    argvs["deepep"] = ["--model-path", "m", "--tp-size", "16", "--ep-size", "16", "--moe-a2a-backend", "deepep"]
    assert runners == ["deep_gemm"]
    for rid, res in parse(argvs).items():
        assert res["accepted"] and res["resolution_error"] is None, (rid, res.get("error"), res["resolution_error"])
