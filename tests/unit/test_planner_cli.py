"""`moe-operator plan` end to end (in-process), plus the cold-start import budget."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from moe_operator.cli import main
from moe_operator.planner import ACCELERATORS, CATALOG

KIMI = [
    "plan",
    "--model",
    "kimi-k2.5",
    "--precision",
    "int4",
    "--kv-dtype",
    "fp8_e4m3",
    "--sessions",
    "100",
    "--context",
    "131072",
    "--accelerator",
    "h200",
]


def test_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(KIMI) == 0
    out = capsys.readouterr().out
    for needle in (
        "weights (served)",
        "KV per session",
        "KV all sessions",
        "per-GPU memory",
        "groups",
        "fits",
        "alternatives considered",
        "sglang args: --model-path moonshotai/Kimi-K2.5",
    ):
        assert needle in out


def test_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*KIMI, "-o", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["model"] == "kimi-k2.5" and d["attn_dp_size"] == 8 and d["kv_bytes_per_token"] == 35_136
    assert d["sglang_args"][:2] == ["--model-path", "moonshotai/Kimi-K2.5"]
    assert d["cost_per_hour"] == pytest.approx(d["total_nodes"] * ACCELERATORS["h200"].cost_per_node_hour)


def test_infeasible_exits_nonzero(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "plan",
        "--model",
        "glm-5",
        "--precision",
        "fp8",
        "--sessions",
        "1",
        "--context",
        "4096",
        "--accelerator",
        "ascend-910b",
    ]
    assert main(argv) == 1
    assert "precision_unsupported" in capsys.readouterr().err
    assert main([*argv, "-o", "json"]) == 1
    cap = capsys.readouterr()
    assert json.loads(cap.out)["error"]["constraint"] == "precision_unsupported"
    assert "fp8" in cap.err


def test_compare(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "plan",
        "--model",
        "glm-5",
        "--precision",
        "fp8",
        "--sessions",
        "100",
        "--context",
        "131072",
        "--compare",
        "h200,b200,ascend-910c",
    ]
    assert main(argv) == 1  # one pool cannot run FP8
    out = capsys.readouterr().out
    assert "h200" in out and "b200" in out and "precision_unsupported" in out
    main([*argv, "-o", "json"])
    d = json.loads(capsys.readouterr().out)
    assert d["b200"]["kv_dtype"] == "fp8_e4m3" and d["h200"]["kv_dtype"] == "bfloat16"
    assert d["ascend-910c"]["error"]["constraint"] == "precision_unsupported"


def test_model_config_and_flags(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = {
        "architectures": ["Glm4MoeForCausalLM"],
        "model_type": "glm4_moe",
        "num_hidden_layers": 92,
        "hidden_size": 5120,
        "intermediate_size": 12288,
        "num_attention_heads": 96,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "n_routed_experts": 160,
        "n_shared_experts": 1,
        "num_experts_per_tok": 8,
        "first_k_dense_replace": 3,
        "moe_intermediate_size": 1536,
        "vocab_size": 151552,
        "max_position_embeddings": 202752,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    argv = [
        "plan",
        "--model-config",
        str(path),
        "--sessions",
        "10",
        "--context",
        "32768",
        "--accelerator",
        "b200",
        "--model-path",
        "/models/glm",
        "--avg-context",
        "8192",
        "--max-groups",
        "4",
        "--cost-per-node-hour",
        "10",
        "-o",
        "json",
    ]
    assert main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["precision"] == "bf16" and d["model_path"] == "/models/glm" and d["mode"] == "expected_occupancy"
    assert d["cost_per_node_hour"] == 10 and d["groups"] <= 4
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"architectures": ["Foo"]}))
    assert main(["plan", "--model-config", str(bad), "--sessions", "1", "--context", "1", "-o", "json"]) == 1
    assert "num_hidden_layers" in json.loads(capsys.readouterr().out)["error"]["message"]


def test_every_feasible_catalog_combo_has_json(capsys: pytest.CaptureFixture[str]) -> None:
    n_ok = 0
    for m, spec in CATALOG.items():
        for a, acc in ACCELERATORS.items():
            for p in acc.supported_precisions:
                ctx = str(min(32768, spec.max_position_embeddings))
                rc = main(
                    [
                        "plan",
                        "--model",
                        m,
                        "--precision",
                        p,
                        "--accelerator",
                        a,
                        "--sessions",
                        "16",
                        "--context",
                        ctx,
                        "-o",
                        "json",
                    ]
                )
                d = json.loads(capsys.readouterr().out)
                if rc == 0:
                    n_ok += 1
                    assert d["sglang_args"][0] == "--model-path" and all(isinstance(x, str) for x in d["sglang_args"])
                else:
                    assert d["error"]["constraint"]
    assert n_ok >= 80


def test_planner_imports_no_heavy_modules() -> None:
    """The planner itself is stdlib + PyYAML. (The top-level CLI also builds the other subcommands' parsers;
    their imports are theirs to keep light.)"""
    code = (
        "import sys, argparse, moe_operator.planner.cli as c; p = argparse.ArgumentParser(); c.add_arguments(p);"
        "c.run(p.parse_args(['--model','glm-4.7','--sessions','1','--context','4096','-o','json']));"
        "heavy = [m for m in ('pydantic', 'kopf', 'kubernetes', 'aiohttp', 'torch') if m in sys.modules];"
        "print('HEAVY', heavy, file=sys.stderr)"
    )
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - t
    assert "HEAVY []" in r.stderr
    assert elapsed < 3.0  # measured ~0.1 s; loose bound for a loaded CI machine


def test_cli_cold_start() -> None:
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "moe_operator.cli", *KIMI, "-o", "json"], capture_output=True, text=True, check=True
    )
    assert time.perf_counter() - t < 3.0  # target < 1 s on an idle machine


def test_compare_says_a_failing_pools_error_once(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["plan", "--model", "glm-5", "--precision", "fp8", "--sessions", "100", "--context", "131072",
            "--compare", "h200,ascend-910c"]  # fmt: skip
    assert main(argv) == 1
    cap = capsys.readouterr()
    assert (cap.out + cap.err).count("fp8 weights are not supported on ascend-910c") == 1
    assert cap.out.endswith("\n")


def test_model_config_defaults_model_path_parsers_and_remote_code(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config.json of a catalog architecture keeps its parsers; --model-path defaults to the config's directory
    (not its file stem), said once and without contradicting itself; auto_map asks for --trust-remote-code."""
    glm = CATALOG["glm-4.7"]
    config = {
        "architectures": [glm.architecture], "model_type": glm.model_type, "num_hidden_layers": 92,
        "hidden_size": 5120, "intermediate_size": 12288, "num_attention_heads": 96, "num_key_value_heads": 8,
        "head_dim": 128, "n_routed_experts": 160, "n_shared_experts": 1, "num_experts_per_tok": 8,
        "first_k_dense_replace": 3, "moe_intermediate_size": 1536, "vocab_size": 151552,
        "max_position_embeddings": 202752, "auto_map": {"AutoConfig": "configuration.Glm4MoeConfig"},
    }  # fmt: skip
    d = tmp_path / "my-glm"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    argv = ["plan", "--model-config", str(d / "config.json"), "--sessions", "4", "--context", "8192", "-o", "json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    args = out["sglang_args"]
    assert args[args.index("--model-path") + 1] == str(d)
    assert "--trust-remote-code" in args
    assert args[args.index("--tool-call-parser") + 1] == glm.tool_call_parser
    assert args[args.index("--reasoning-parser") + 1] == glm.reasoning_parser
    assert len([w for w in out["warnings"] if "--model-path" in w]) == 1
    assert not any("no published" in w for w in out["warnings"])


def test_table_counts_agree_in_number(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["plan", "--model", "qwen3-235b-a22b", "--precision", "fp8", "--sessions", "4", "--context", "8192"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "1 group -> 1 node," in out and "1 groups" not in out and "1 nodes" not in out
    assert " GB" not in out and "GiB" in out  # binary units, as SGLang logs them
    assert "chosen by               objective min-cost; runner-up" in out


def test_every_rejected_layout_names_its_own_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*KIMI, "-o", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    three = [a for a in d["alternatives"] if a["nodes_per_group"] == 3]
    reasons = {a["reason"] for a in three}
    assert any("attention heads not divisible" in r for r in reasons)
    assert any("is not a multiple of the int4 block 32" in r for r in reasons)  # the DP variants' own reason
    assert any(r.startswith("rejected: SGLang cannot run int4 experts with deepep") for r in reasons)


# ---------------------------------------------------------------------------------------------------- --pd
PD = ["plan", "--model", "kimi-k2.5", "--precision", "int4", "--sessions", "64", "--context", "131072",
      "--avg-context", "32768", "--accelerator", "h200", "--pd", "--prompt-tokens-per-second", "60000",
      "--ttft", "10"]  # fmt: skip


def test_pd_table_shows_both_roles_the_ratio_ttft_and_cost_against_aggregated(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(PD) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    decode = next(ln for ln in lines if ln.startswith("decode "))
    prefill = next(ln for ln in lines if ln.startswith("prefill "))
    assert "TP8" in decode and "attn-DP8" in decode and "$63.30/h" in decode
    assert "5  " in prefill and "s  $316.50/h" in prefill  # 5 groups, their TTFT, their cost
    for needle in ("TTFT estimate", "queue", "KV transfer", "prefill:decode        5:1", "$379.80/h = decode $63.30/h "
                   "+ prefill $316.50/h", "vs aggregated         1 group, 1 node, $63.30/h -> PD adds 5 nodes",
                   "aggregated + prompts", "decode sglang args: --model-path moonshotai/Kimi-K2.5",
                   "prefill sglang args: --model-path moonshotai/Kimi-K2.5"):
        assert needle in out, needle


def test_pd_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*PD, "-o", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    dec, pre, vs = d["decode"], d["prefill"], d["vs_aggregated"]
    assert (dec["groups"], pre["groups"], d["ratio"], d["ratio_text"]) == (1, 5, 5.0, "5:1")
    assert pre["layout"].startswith("1 node x 8: TP8") and pre["total_nodes"] == 5
    assert pre["ttft_seconds"] == pytest.approx(pre["queue_seconds"] + pre["prefill_seconds"] + pre["transfer_seconds"],
                                                abs=0.01)
    assert pre["ttft_seconds"] <= d["ttft_target_seconds"] == 10 and pre["utilization"] <= 0.7
    # the decode role is the aggregated plan of the same request, its full plan included
    assert dec["sglang_args"][:2] == ["--model-path", "moonshotai/Kimi-K2.5"] and "alternatives" in dec
    assert "--disaggregation-mode" not in dec["sglang_args"] + pre["sglang_args"]  # the renderer adds the PD flags
    price = ACCELERATORS["h200"].cost_per_node_hour
    assert d["cost_per_hour"] == pytest.approx(dec["cost_per_hour"] + pre["cost_per_hour"]) == pytest.approx(6 * price)
    assert vs["aggregated_cost_per_hour"] == pytest.approx(price) and vs["cost_ratio"] == 6.0
    assert vs["cost_delta_per_hour"] == pytest.approx(5 * price) and vs["extra_nodes"] == 5
    wp = vs["aggregated_with_prompt_load"]
    assert wp["utilization_at_planned_groups"] > 1 and wp["ttft_seconds_at_planned_groups"] is None
    assert wp["groups"] == 5 and vs["cost_ratio_vs_aggregated_with_prompt_load"] == 1.2


async def test_pd_plan_is_the_one_the_operator_renders(capsys: pytest.CaptureFixture[str]) -> None:
    """`plan --pd` and spec.disaggregation size the prefill role alike (same planner, same defaults)."""
    from moe_operator.desired import desired_state

    spec = {"model": {"catalog": "kimi-k2.5"}, "weights": {"huggingFace": {"repo": "moonshotai/Kimi-K2.5"}},
            "precision": "int4", "pool": "h200",
            "sessions": {"target": 64, "contextTokens": 131072, "averageContextTokens": 32768},
            "disaggregation": {"prefill": {"promptTokensPerSecond": 60000, "ttftSeconds": 10}}}

    async def get_pool(name: str) -> dict:
        return {"metadata": {"name": name}, "spec": {"accelerator": {"profile": "h200"}, "nodeSelector": {"a": "b"},
                                                     "rdma": {"resourceName": "rdma/ib"}}}

    d = await desired_state({"apiVersion": "moe-operator.io/v1alpha1", "kind": "MoEDeployment",
                             "metadata": {"name": "kimi", "namespace": "ns"}, "spec": spec}, get_pool)
    assert main([*PD, "-o", "json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    pp = d.planned.prefill
    assert pp is not None
    assert (cli["prefill"]["groups"], cli["prefill"]["nodes_per_group"], cli["prefill"]["tp_size"]) == (
        pp.groups, pp.plan.nodes_per_group, pp.plan.tp_size)
    assert cli["prefill"]["ttft_seconds"] == pytest.approx(pp.ttft_seconds, abs=1e-3)
    assert cli["prefill"]["sglang_args"] == list(pp.plan.sglang_args)
    assert cli["decode"]["groups"] == d.planned.plan.groups


def test_pd_prefill_options(capsys: pytest.CaptureFixture[str]) -> None:
    # a shorter typical prompt and a lower utilization target change the count; the prefill group cap holds
    assert main([*PD, "--prompt-tokens", "4096", "--prefill-target-utilization", "0.3",
                 "--prefill-max-nodes-per-group", "1", "-o", "json"]) == 0  # fmt: skip
    d = json.loads(capsys.readouterr().out)
    assert d["prompt_tokens"] == 4096 and d["prefill"]["nodes_per_group"] == 1
    assert d["prefill"]["utilization"] <= 0.3
    # without RDMA the KV moves over TCP: a slower link, a longer transfer
    assert main([*PD, "--no-rdma", "-o", "json"]) == 0
    tcp = json.loads(capsys.readouterr().out)
    assert tcp["kv_link_gbit_per_s"] == 25
    assert main([*PD, "-o", "json"]) == 0
    rdma = json.loads(capsys.readouterr().out)
    assert rdma["kv_link_gbit_per_s"] == 400
    assert tcp["prefill"]["transfer_seconds"] > rdma["prefill"]["transfer_seconds"]


def test_pd_without_a_price_compares_nodes(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["plan", "--model", "glm-5", "--precision", "w8a8", "--sessions", "32", "--context", "65536",
            "--accelerator", "ascend-910c", "--pd", "--prompt-tokens-per-second", "5000", "--prompt-tokens", "8192"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "no price for ascend-910c" in out and "PD adds 2 nodes (x2.00 nodes)" in out
    assert main([*argv, "-o", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["cost_per_hour"] is None and d["vs_aggregated"]["node_ratio"] == 2.0
    assert "--device" in d["prefill"]["sglang_args"]


@pytest.mark.parametrize(("extra", "needle"), [
    (["--ttft", "0.5"], "more than disaggregation.prefill.ttftSeconds (0.5 s)"),
])
def test_pd_infeasible_ttft_exits_1_with_the_numbers(extra: list[str], needle: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*PD, *extra]) == 1
    assert needle in capsys.readouterr().err
    assert main([*PD, *extra, "-o", "json"]) == 1
    cap = capsys.readouterr()
    assert json.loads(cap.out)["error"]["constraint"] == "prefill"


@pytest.mark.parametrize(("argv", "needle"), [
    ([a for a in PD if a not in ("--prompt-tokens-per-second", "60000")], "--prompt-tokens-per-second"),
    ([*PD, "--compare", "h200,b200"], "drop --compare"),
    ([*PD, "--prompt-tokens", "200000"], "--prompt-tokens (200,000) must be between 1 and --context (131,072)"),
    ([*PD, "--ttft", "0"], "--ttft must be > 0"),
    ([*PD, "--prefill-target-utilization", "1.5"], "0.1..0.95"),
])
def test_pd_usage_errors(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_pd_flags_need_no_heavy_modules() -> None:
    code = (
        "import sys, argparse, moe_operator.planner.cli as c; p = argparse.ArgumentParser(); c.add_arguments(p);"
        "c.run(p.parse_args(['--model','kimi-k2.5','--precision','int4','--sessions','8','--context','32768',"
        "'--pd','--prompt-tokens-per-second','10000','-o','json']));"
        "heavy = [m for m in ('pydantic', 'kopf', 'kubernetes', 'aiohttp', 'torch') if m in sys.modules];"
        "print('HEAVY', heavy, file=sys.stderr)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in r.stderr
