"""validate_extra_args against the committed SGLang flag table (main venv, no sglang)."""

from __future__ import annotations

import pytest

from moe_operator.sglang_flags import DEFAULT_OWNED, load_table, sglang_version, validate_extra_args


def one(args: list[str], **kw: object) -> str:
    errs = validate_extra_args(args, **kw)  # type: ignore[arg-type]
    assert len(errs) == 1, errs
    return errs[0]


def test_table_is_the_pinned_sglang() -> None:
    t = load_table()
    assert sglang_version() == "0.5.23"
    assert t["num_actions"] > 500
    assert t["aliases"]["--tensor-parallel-size"] == "--tp-size"
    assert t["flags"]["--tp-size"]["type"] == "int"
    assert t["flags"]["--enable-metrics"]["type"] == "bool-flag"


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--enable-metrics"],
        ["--cuda-graph-max-bs-decode", "64", "--disable-radix-cache"],
        ["--cuda-graph-max-bs-decode=64"],
        ["--watchdog-timeout", "600.5", "--decode-log-interval", "40"],
        ["--tool-call-parser", "glm47", "--reasoning-parser=glm45"],
        ["--enable-eplb", "--ep-num-redundant-experts", "32", "--ep-dispatch-algorithm", "dynamic"],
        ["--cuda-graph-bs-decode", "1", "2", "4", "--trust-remote-code"],
        ["--deepep-mode", "low_latency", "--page-size", "64"],
    ],
)
def test_valid(args: list[str]) -> None:
    assert validate_extra_args(args) == []


def test_unknown_flag_with_suggestion() -> None:
    e = one(["--enable-ep-moe"])
    assert "--enable-ep-moe" in e and "unknown flag" in e and "0.5.23" in e
    e = one(["--nsa-prefill-backend", "x"])
    assert "unknown" in e and "--dsa-prefill-backend" in e


def test_ambiguous_abbreviation() -> None:
    e = one(["--cuda-graph-max-bs", "64"])
    assert "ambiguous" in e and "--cuda-graph-max-bs-decode" in e and "--cuda-graph-max-bs-prefill" in e


def test_unique_abbreviation_rejected() -> None:
    e = one(["--moe-dense-tp", "1"])
    assert "abbreviation of --moe-dense-tp-size" in e and "spell out" in e


def test_deprecated_flag_names_replacement() -> None:
    e = one(["--enable-dp-attention"])
    assert "deprecated" in e and "--attn-dp-size" in e
    assert "--cuda-graph-backend" in one(["--disable-cuda-graph"])
    assert "--smg-grpc-mode" in one(["--grpc-mode"])


def test_deprecated_value() -> None:
    e = one(["--tool-call-parser", "glm45"])
    assert "'glm45'" in e and "deprecated" in e and "glm" in e


def test_bad_choice_and_types() -> None:
    e = one(["--moe-runner-backend", "nope"])
    assert "--moe-runner-backend" in e and "invalid value 'nope'" in e
    assert "integer" in one(["--page-size", "x"])
    assert "number" in one(["--watchdog-timeout=soon"])


def test_value_arity() -> None:
    assert "takes no value" in one(["--enable-metrics=1"])
    assert "expects a value" in one(["--page-size"])
    assert "expects a value" in one(["--page-size", "--enable-metrics"])
    assert "one or more" in one(["--cuda-graph-bs-decode"])
    assert "unexpected value" in one(["stray"])


def test_negative_number_is_a_value() -> None:
    assert validate_extra_args(["--random-seed", "-1"]) == []


@pytest.mark.parametrize(
    "args",
    [
        ["--tp-size", "8"],
        ["--tp-size=8"],
        ["--tensor-parallel-size", "8"],
        ["--ep", "8"],
        ["--attn-dp-size", "2"],
        ["--nnodes", "2"],
        ["--node-rank", "1"],
        ["--dist-init-addr", "a:1"],
        ["--nccl-init-addr", "a:1"],
        ["--host", "0.0.0.0"],
        ["--port", "1"],
        ["--model-path", "m"],
        ["--model", "m"],
        ["--mem-fraction-static", "0.8"],
        ["--context-length", "1"],
        ["--kv-cache-dtype", "fp8_e4m3"],
        # they undercut the plan: the model's layers/experts, the dense layers' TP, the pinned revision
        ["--json-model-override-args", '{"num_hidden_layers": 2}'],
        ["--moe-dense-tp-size", "1"],
        ["--revision", "abc123"],
    ],
)
def test_owned_flags(args: list[str]) -> None:
    e = one(args)
    assert "set by the operator from the plan; use spec." in e
    assert args[0].split("=")[0] in e


def test_owned_override() -> None:
    assert validate_extra_args(["--tp-size", "8"], owned={}) == []
    e = one(["--page-size", "64"], owned={"--page-size": "paging"})
    assert e.endswith("use spec.paging")
    assert "--mem-fraction-static" in DEFAULT_OWNED


def test_forbidden() -> None:
    e = one(["--config", "x.yaml"])
    assert "--config" in e and "not allowed" in e
    assert "not allowed" in one(["--help"])
    e = one(["--api-key", "sk-123"])
    assert "plain text" in e and "spec.sglang.apiKeySecretRef" in e
    assert "plain text" in one(["--admin-api-key=sk-1"])


def test_duplicates_and_several_errors() -> None:
    assert "more than once" in one(["--page-size", "64", "--page-size=32"])
    errs = validate_extra_args(["--enable-ep-moe", "--tp-size", "8", "--page-size", "x", "--enable-metrics"])
    assert len(errs) == 3, errs


def test_custom_table() -> None:
    table = {
        "sglang_version": "9.9",
        "flags": {"--a-b": {"takes_value": True, "nargs": None, "type": "int", "choices": None}},
        "aliases": {"--a-b": "--a-b"},
    }
    assert validate_extra_args(["--a-b", "3"], owned={}, table=table) == []
    assert "9.9" in one(["--zzz"], owned={}, table=table)
