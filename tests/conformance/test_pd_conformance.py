"""Conformance tier for prefill/decode disaggregation: the argv of BOTH roles, as desired_state renders them into the
two LeaderWorkerSets (`<name>` = decode, `<name>-prefill`), through SGLang 0.5.23's own parser (hack/sglang/
parse_argv.py), and then through SGLang's own PD hook (srt/arg_groups/pd_disaggregation_hook.py
handle_pd_disaggregation), which the parser's model-independent resolution does not reach: it runs after the
dummy-model short circuit of arg_groups/pipeline.py. Also: the transfer backends we render are SGLang's choices, and
admission refuses extraArgs that set a PD flag the builder owns, naming the field.

Skipped loudly without .venv-sglang, like the rest of the tier (MOE_REQUIRE_CONFORMANCE=1 makes that a failure).
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import subprocess
from typing import Any

import pytest
from tests.conformance.test_sglang_conformance import ROOT, SGL_PY, _require_venv, parse

pytestmark = pytest.mark.conformance

IB = ["mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3"]
POOLS: dict[str, dict[str, Any]] = {
    "h200": {"accelerator": {"profile": "h200"}, "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H200"},
             "rdma": {"resourceName": "rdma/ib", "count": 8, "devices": ["/dev/infiniband"], "ibDevices": IB}},
    "h200-no-ib": {"accelerator": {"profile": "h200"}, "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H200"},
                   "rdma": {"resourceName": "rdma/ib", "count": 8}},
    "ascend-910c": {"accelerator": {"profile": "ascend-910c"}, "nodeSelector": {"accelerator": "huawei-Ascend910"},
                    "modelCache": {"hostPathPrefixes": ["/mnt/models"]},
                    "rdma": {"resourceName": "rdma/roce", "count": 1}},  # GLM-5 W8A8 groups span two nodes
}
KIMI: dict[str, Any] = {
    "model": {"catalog": "kimi-k2.5"}, "weights": {"huggingFace": {"repo": "moonshotai/Kimi-K2.5"}},
    "precision": "int4", "pool": "h200",
    "sessions": {"target": 64, "contextTokens": 131072, "averageContextTokens": 32768},
    "sglang": {"extraArgs": ["--tool-call-parser=kimi_k2"]},
}
GLM5_ASCEND: dict[str, Any] = {
    "model": {"catalog": "glm-5"}, "weights": {"hostPath": {"path": "/mnt/models/GLM-5-w8a8"}},
    "precision": "w8a8", "pool": "ascend-910c", "sessions": {"target": 32, "contextTokens": 65536},
}
# id -> (spec, expected transfer backend, expected bootstrap port, expected --disaggregation-ib-device)
CASES: dict[str, tuple[dict[str, Any], str, int, str | None]] = {
    "h200-mooncake-ib": ({**KIMI, "disaggregation": {"prefill": {"promptTokensPerSecond": 60000}}},
                         "mooncake", 8998, ",".join(IB)),
    "h200-nixl-ib-multinode-decode": (
        {**KIMI, "sessions": {"target": 256, "contextTokens": 131072, "averageContextTokens": 32768},
         "planning": {"objective": "max-sessions-per-gpu"},
         "disaggregation": {"transferBackend": "nixl", "bootstrapPort": 9000,
                            "prefill": {"promptTokensPerSecond": 60000}}},
        "nixl", 9000, ",".join(IB)),
    "h200-mooncake-no-ib": ({**KIMI, "pool": "h200-no-ib",
                             "disaggregation": {"prefill": {"promptTokensPerSecond": 60000}}},
                            "mooncake", 8998, None),
    "ascend-910c-ascend": ({**GLM5_ASCEND, "disaggregation": {
        "transferBackend": "ascend", "bootstrapPort": 8999, "ascendStoreUrl": "tcp://10.0.0.9:6379",
        "prefill": {"promptTokensPerSecond": 5000}}}, "ascend", 8999, None),
    "ascend-910c-default-backend": ({**GLM5_ASCEND, "disaggregation": {
        "ascendStoreUrl": "tcp://10.0.0.9:6379", "prefill": {"promptTokensPerSecond": 5000}}}, "ascend", 8998, None),
}
SGLANG_DEFAULT_BOOTSTRAP_PORT = 8998  # srt/arg_groups/fields/disagg.py disaggregation_bootstrap_port
NAME = "pd"


def body(spec: dict[str, Any], name: str = NAME) -> dict[str, Any]:
    return {"apiVersion": "moe-operator.io/v1alpha1", "kind": "MoEDeployment",
            "metadata": {"name": name, "namespace": "ns", "uid": "00000000-0000-0000-0000-000000000009"},
            "spec": spec}


async def get_pool(name: str) -> dict[str, Any] | None:
    return {"apiVersion": "moe-operator.io/v1alpha1", "kind": "AcceleratorPool", "metadata": {"name": name},
            "spec": POOLS[name]} if name in POOLS else None


_VAR = re.compile(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(argv: list[str], env: dict[str, str]) -> list[str]:
    """What the kubelet passes: $(VAR) from the container's env (here: what LWS injects), "$$" -> "$"."""
    def one(tok: str) -> str:
        out = _VAR.sub(lambda m: env[m.group(1)], tok)
        return out.replace("$$", "$")
    return [one(t) for t in argv]


def _lws_argvs(lws: dict[str, Any]) -> dict[str, list[str]]:
    """leader and (for multi-node groups) worker 1's argv, with the LWS variables filled in."""
    tmpl = lws["spec"]["leaderWorkerTemplate"]
    size = int(tmpl.get("size", 1))
    env = {"LWS_LEADER_ADDRESS": "10.0.0.1", "LWS_GROUP_SIZE": str(size)}
    out = {}
    for role, index in (("leaderTemplate", 0), ("workerTemplate", 1)):
        if role == "workerTemplate" and size == 1:
            continue
        c = tmpl[role]["spec"]["containers"][0]
        assert tuple(c["command"]) == ("python3", "-m", "sglang.launch_server"), c["command"]
        out[f"{role[:-8]}"] = expand(list(c["args"]), {**env, "LWS_WORKER_INDEX": str(index)})
    return out


@functools.lru_cache(maxsize=1)
def rendered() -> dict[str, tuple[str, int, list[str]]]:
    """argv id "<case>/<role>/<leader|worker>" -> (the role, the group's nodes, the argv), from desired_state."""
    from moe_operator.desired import desired_state

    out: dict[str, tuple[str, int, list[str]]] = {}
    for cid, (spec, _, _, _) in CASES.items():
        d = asyncio.run(desired_state(body(spec), get_pool))
        assert d.prefill is not None and d.planned.prefill is not None, cid
        lws = {o["metadata"]["name"]: o for o in d.children if o["kind"] == "LeaderWorkerSet"}
        assert set(lws) == {NAME, f"{NAME}-prefill"}, (cid, sorted(lws))
        for role, name, inp in (("decode", NAME, d.render), ("prefill", f"{NAME}-prefill", d.prefill)):
            assert inp.pd_role == role, (cid, inp.pd_role)
            for pod, argv in _lws_argvs(lws[name]).items():
                out[f"{cid}/{role}/{pod}"] = (role, inp.nodes_per_group, argv)
    return out


@functools.lru_cache(maxsize=1)
def parsed() -> dict[str, dict[str, Any]]:
    return parse({rid: argv for rid, (_, _, argv) in rendered().items()})


def test_both_roles_and_multi_node_groups_are_covered() -> None:
    ids = rendered()
    assert {rid.split("/")[1] for rid in ids} == {"decode", "prefill"}
    assert any(rid.endswith("/worker") for rid in ids), "no multi-node group: the worker argv was never parsed"
    for cid in CASES:
        assert f"{cid}/decode/leader" in ids and f"{cid}/prefill/leader" in ids, cid


def test_pd_argv_of_both_roles_accepted_by_sglang() -> None:
    problems = []
    argvs = rendered()
    for rid, res in sorted(parsed().items()):
        argv = " ".join(argvs[rid][2])
        if not res["accepted"]:
            problems.append(f"{rid}: REJECTED by SGLang 0.5.23: {res['error']}\n    argv: {argv}")
        elif res["resolution_error"]:
            problems.append(f"{rid}: SGLang resolution failed: {res['resolution_error']}\n    argv: {argv}")
        elif res["stub_touched"]:
            problems.append(f"{rid}: parsing touched the torch stub: {res['stub_touched'][:5]}")
        elif res["deprecations"]:
            problems.append(f"{rid}: deprecated flags/values: {res['deprecations']}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("cid", sorted(CASES))
def test_sglang_resolves_the_pd_values_we_meant(cid: str) -> None:
    _, backend, port, ib = CASES[cid]
    for rid, (role, nodes, argv) in rendered().items():
        if not rid.startswith(f"{cid}/"):
            continue
        res = parsed()[rid]
        got = res["resolved"]
        assert got["disaggregation_mode"] == role, (rid, got)
        assert got["disaggregation_transfer_backend"] == backend, (rid, got)
        if role == "prefill":
            assert got["disaggregation_bootstrap_port"] == port, (rid, got)
        else:
            # the decode side learns each prefill's port from the request (SMG stamps bootstrap_host/port), so the
            # operator does not set it there: SGLang keeps its default
            assert "--disaggregation-bootstrap-port" not in argv, rid
            assert got["disaggregation_bootstrap_port"] == SGLANG_DEFAULT_BOOTSTRAP_PORT, (rid, got)
        assert got["disaggregation_ib_device"] == ib, (rid, got)
        # and the rest of the group still means what the plan says
        worker = rid.endswith("/worker")
        assert (got["nnodes"], got["node_rank"]) == (nodes, 1 if worker else 0), (rid, got)


# SGLang's PD hook on each parsed record (after the model-independent resolution, as the real pipeline runs it), and
# the transfer-backend choices of the pinned wheel. Runs in .venv-sglang; prints one JSON document.
_PD_HOOK = r"""
import json, os, sys
sys.path.insert(0, os.path.join(os.getcwd(), "hack", "sglang"))
import _sglang_env  # must precede any sglang import
import sglang.srt.arg_groups.pipeline  # noqa: F401
from sglang.srt.arg_groups.choices import DISAGG_TRANSFER_BACKEND_CHOICES
from sglang.srt.arg_groups.overrides import resolving_view
from sglang.srt.arg_groups.pd_disaggregation_hook import handle_pd_disaggregation
from sglang.srt.arg_groups.resolution_hooks import run_hook
from sglang.srt.server_args import ServerArgs, prepare_server_args
import argparse

log = _sglang_env.stub_log()
parser = argparse.ArgumentParser()
ServerArgs.add_cli_args(parser)
action = next(a for a in parser._actions if "--disaggregation-transfer-backend" in a.option_strings)
out = {"choices": list(DISAGG_TRANSFER_BACKEND_CHOICES), "parser_choices": list(action.choices or []),
       "results": {}}
for item in json.load(sys.stdin):
    log.clear()
    sa = prepare_server_args(list(item["argv"]))
    sa.model_path = "dummy"
    sa.resolve_once()
    try:
        run_hook(handle_pd_disaggregation, sa)
        v = resolving_view(sa)
        r = {"error": None, "mode": v.disaggregation_mode, "backend": v.disaggregation_transfer_backend,
             "bootstrap_port": v.disaggregation_bootstrap_port, "ib_device": v.disaggregation_ib_device,
             "disable_radix_cache": v.disable_radix_cache}
    except Exception as e:  # report whatever SGLang raised
        r = {"error": f"{type(e).__name__}: {e}"}
    r["stub_touched"] = [x for x in log if not x.startswith("import ")]
    out["results"][item["id"]] = r
print(json.dumps(out))
"""


@functools.lru_cache(maxsize=1)
def pd_hook() -> dict[str, Any]:
    _require_venv()
    items = [{"id": rid, "argv": argv} for rid, (_, _, argv) in rendered().items()]
    proc = subprocess.run([str(SGL_PY), "-c", _PD_HOOK], input=json.dumps(items), capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, f"PD hook script failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_sglang_pd_hook_accepts_both_roles() -> None:
    """handle_pd_disaggregation validates and normalises PD args (decode radix cache, role-switch and staging-buffer
    rules, mooncake_tcp rewrite, ...): it neither raises on our argv nor rewrites what we set."""
    results = pd_hook()["results"]
    assert set(results) == set(rendered())
    for rid, r in sorted(results.items()):
        role = rendered()[rid][0]
        cid = rid.split("/")[0]
        _, backend, port, ib = CASES[cid]
        assert r["error"] is None, (rid, r["error"])
        assert r["stub_touched"] == [], (rid, r["stub_touched"])
        assert (r["mode"], r["backend"], r["ib_device"]) == (role, backend, ib), (rid, r)
        assert r["bootstrap_port"] == (port if role == "prefill" else SGLANG_DEFAULT_BOOTSTRAP_PORT), (rid, r)
        if role == "decode":
            assert r["disable_radix_cache"] is True, (rid, r)  # SGLang's decode default, no extra flag of ours


def test_rendered_transfer_backends_are_sglang_choices() -> None:
    from typing import get_args

    from moe_operator.api.v1alpha1.moedeployment import TransferBackend
    from moe_operator.planning import TRANSFER_BACKENDS as BY_VENDOR
    from moe_operator.render.inputs import TRANSFER_BACKENDS
    from moe_operator.sglang_flags import load_table

    doc = pd_hook()
    choices = set(doc["choices"])
    assert choices == set(doc["parser_choices"]), doc  # what the parser enforces is that list
    assert TRANSFER_BACKENDS <= choices, sorted(TRANSFER_BACKENDS - choices)
    # what SGLang 0.5.23 has that we do not render: the test engine, ROCm's mori, and mooncake over TCP (no RDMA)
    assert choices - TRANSFER_BACKENDS == {"fake", "mori", "mooncake_tcp"}, sorted(choices - TRANSFER_BACKENDS)
    assert set(get_args(TransferBackend)) == TRANSFER_BACKENDS
    assert {b for bs in BY_VENDOR.values() for b in bs} <= TRANSFER_BACKENDS
    # the committed flag table (what the webhook validates extraArgs with) agrees with the wheel
    flag = load_table()["flags"]["--disaggregation-transfer-backend"]
    assert set(flag["choices"]) == choices, flag


# --- admission: extraArgs may not set a flag spec.disaggregation owns -----------------------------------------------
PD_VALUES = {"--disaggregation-mode": "prefill", "--disaggregation-transfer-backend": "nixl",
             "--disaggregation-bootstrap-port": "9000", "--disaggregation-ib-device": "mlx5_0"}


def _with_extra(extra: list[str], pd: bool) -> dict[str, Any]:
    spec = {**CASES["h200-mooncake-ib"][0], "sglang": {"extraArgs": extra}}
    if not pd:
        spec.pop("disaggregation")
    return body(spec)


def test_pd_values_are_what_the_builder_owns() -> None:
    from moe_operator.render.argv import PD_FLAGS

    assert set(PD_VALUES) == PD_FLAGS


@pytest.mark.parametrize("pd", [True, False], ids=["pd", "aggregated"])
@pytest.mark.parametrize("flag", sorted(PD_VALUES))
@pytest.mark.parametrize("form", ["separate", "equals", "abbreviated"])
def test_admission_refuses_extra_args_setting_a_pd_flag(flag: str, form: str, pd: bool) -> None:
    from moe_operator.admission import check_moedeployment
    from moe_operator.desired import desired_state
    from moe_operator.planning import SpecProblem

    value = PD_VALUES[flag]
    extra = {"separate": [flag, value], "equals": [f"{flag}={value}"],
             "abbreviated": [flag[:-1], value]}[form]  # argparse would take the unique prefix
    msg = asyncio.run(check_moedeployment(_with_extra(extra, pd), get_pool))
    assert msg is not None and msg.startswith("spec.sglang.extraArgs: ") and flag in msg, msg
    with pytest.raises(SpecProblem) as e:  # reconcile refuses it the same way (Stalled, groups untouched)
        asyncio.run(desired_state(_with_extra(extra, pd), get_pool))
    assert f"{e.value.field}: {e.value.message}" == msg


def test_sglang_would_take_every_refused_spelling_as_the_pd_flag() -> None:
    """Why the abbreviations must be refused too: SGLang's argparse expands a unique prefix to the flag."""
    argvs = {}
    for flag, value in PD_VALUES.items():
        for form, toks in (("equals", [f"{flag}={value}"]), ("abbreviated", [flag[:-1], value])):
            argvs[f"{flag}/{form}"] = ["--model-path", "m", *toks]
    for rid, res in parse(argvs).items():
        flag = rid.split("/")[0]
        dest = flag[2:].replace("-", "_")
        assert res["accepted"], (rid, res["error"])
        assert str(res["values"][dest]) == PD_VALUES[flag], (rid, res["values"][dest])
