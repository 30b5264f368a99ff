"""SGLang and SMG (router) command lines.

SGLang pods: leader and workers get the *same* argv; the per-pod parts are
``$(VAR)`` references that the kubelet expands from env (LWS injects
``LWS_LEADER_ADDRESS`` and ``LWS_GROUP_SIZE``; we set ``LWS_WORKER_INDEX``
from the worker-index label), exactly as the official SGLang LWS manifests do.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .inputs import MODEL_MOUNT, PD_DECODE, PD_PREFILL, RenderInput
from .meta import L_DEPLOYMENT, L_PD_ROLE, L_ROLE, L_ROUTABLE, ROLE_LEADER

SGLANG_COMMAND = ("python3", "-m", "sglang.launch_server")
#: The lightseekorg/smg gateway image's binary takes the router flags directly (SMG's own Helm chart renders
#: ``smg <flags>``); the pip wheel's console script spells the same ``smg launch <flags>``, both parsed by
#: smg/router_args.py ``RouterArgs.add_cli_args`` (checked in the conformance tier).
ROUTER_COMMAND = ("smg",)
ROUTER_PORT = 8000
ROUTER_METRICS_PORT = 29000

#: Alias -> canonical spelling, for duplicate detection (SGLang 0.5.23,
#: sglang.md §1.1/§1.2).  argparse prefix abbreviations beyond these
#: well-known ones are not modelled: the webhook should reject them.
FLAG_ALIASES = {
    "--model": "--model-path",
    "--tensor-parallel-size": "--tp-size",
    "--tp": "--tp-size",
    "--expert-parallel-size": "--ep-size",
    "--ep": "--ep-size",
    "--attention-data-parallel-size": "--attn-dp-size",
    "--data-parallel-size": "--dp-size",
    "--dp": "--dp-size",
    "--pipeline-parallel-size": "--pp-size",
    "--pp": "--pp-size",
    "--nccl-init-addr": "--dist-init-addr",
    "--moe-dense-tp": "--moe-dense-tp-size",
}

#: Flags the builder emits itself; neither the plan nor extra_args may set them.
BUILDER_FLAGS = frozenset({"--dist-init-addr", "--nnodes", "--node-rank", "--host", "--port", "--enable-metrics",
                           "--api-key"})
#: The PD flags the builder emits per role (SGLang 0.5.23 srt/arg_groups/fields/disagg.py): spec.disaggregation
#: owns them, so neither the plan nor extra_args may set them.
PD_FLAGS = frozenset({"--disaggregation-mode", "--disaggregation-transfer-backend", "--disaggregation-bootstrap-port",
                      "--disaggregation-ib-device"})
#: env var the API key Secret is read into; the argv refers to it as $(...), so the key is never in the pod spec
API_KEY_ENV = "MOE_SGLANG_API_KEY"


def literal(token: str) -> str:
    """A user's token as the kubelet must pass it: it expands $(VAR) in command, args and env values, and "$$" is
    its escape for "$", so every "$" is doubled (the API documents extraArgs and env values as literal)."""
    return token.replace("$", "$$")


def is_flag(token: str) -> bool:
    return token.startswith("--") and len(token) > 2


def canonical_flag(token: str) -> str:
    """``--tp=16`` -> ``--tp-size``; ``--tensor-parallel-size`` -> ``--tp-size``."""
    flag = token.split("=", 1)[0]
    return FLAG_ALIASES.get(flag, flag)


def flags(argv: Iterable[str]) -> list[str]:
    """Canonical flags of ``argv`` in order (with repetitions)."""
    return [canonical_flag(t) for t in argv if is_flag(t)]


def flag_values(argv: Sequence[str], flag: str) -> list[str] | None:
    """Values following the first occurrence of canonical ``flag`` (``[]`` for a
    bare switch), or None when absent.  Handles ``--flag=value``."""
    for i, tok in enumerate(argv):
        if is_flag(tok) and canonical_flag(tok) == flag:
            if "=" in tok:
                return [tok.split("=", 1)[1]]
            vals = []
            for nxt in argv[i + 1 :]:
                if is_flag(nxt):
                    break
                vals.append(nxt)
            return vals
    return None


def _int_flag(argv: Sequence[str], flag: str, default: int) -> int:
    vals = flag_values(argv, flag)
    if vals is None:
        return default
    if len(vals) != 1:
        raise ValueError(f"{flag} needs exactly one integer value, got {vals!r}")
    try:
        return int(vals[0])
    except ValueError:
        raise ValueError(f"{flag} needs an integer value, got {vals[0]!r}") from None


def attn_dp_size(argv: Sequence[str]) -> int:
    """Attention-DP width of a plan: ``--attn-dp-size N``, or the deprecated
    ``--enable-dp-attention --dp-size N`` spelling (which SGLang 0.5.23 rewrites
    to attn_dp_size=N)."""
    n = _int_flag(argv, "--attn-dp-size", 1)
    if n == 1 and flag_values(argv, "--enable-dp-attention") is not None:
        n = _int_flag(argv, "--dp-size", 1)
    return n


def _world_size(argv: Sequence[str]) -> int | None:
    if flag_values(argv, "--tp-size") is None:
        return None
    tp = _int_flag(argv, "--tp-size", 1)
    pp = _int_flag(argv, "--pp-size", 1)
    # --dp-size means model replicas since 0.5.x, except in the deprecated
    # --enable-dp-attention spelling where it is the attention-DP width (inside TP).
    dp = 1 if flag_values(argv, "--enable-dp-attention") is not None else _int_flag(argv, "--dp-size", 1)
    return tp * pp * dp


def check_no_duplicate_flags(argv: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    for f in flags(argv):
        if f in seen:
            raise ValueError(f"{what}: flag {f} appears more than once")
        seen.add(f)


def per_pod_args(inp: RenderInput) -> list[str]:
    """The builder-owned tail: rendezvous (multi-node only), bind address, metrics."""
    args: list[str] = []
    if inp.nodes_per_group > 1:
        args += [
            "--dist-init-addr",
            f"$(LWS_LEADER_ADDRESS):{inp.dist_port}",
            "--nnodes",
            "$(LWS_GROUP_SIZE)",
            "--node-rank",
            "$(LWS_WORKER_INDEX)",
        ]
    # Every rank binds the HTTP port: rank 0 serves the API, ranks > 0 a dummy
    # server with /health and (with --enable-metrics) their schedulers' /metrics.
    args += ["--host", "0.0.0.0", "--port", str(inp.port)]
    if inp.metrics_enabled:
        args.append("--enable-metrics")
    if inp.api_key_secret is not None:
        args += ["--api-key", f"$({API_KEY_ENV})"]
    return args + pd_args(inp)


def pd_args(inp: RenderInput) -> list[str]:
    """The role's disaggregation flags: mode and transfer engine on both; the bootstrap port on prefill servers (the
    decode side learns it from each request, which the router stamps with the prefill's bootstrap host and port);
    the pool's IB devices where it names them."""
    if not inp.pd:
        return []
    args = ["--disaggregation-mode", inp.pd_role, "--disaggregation-transfer-backend", inp.transfer_backend]
    if inp.pd_role == PD_PREFILL:
        args += ["--disaggregation-bootstrap-port", str(inp.bootstrap_port)]
    if inp.ib_devices and inp.transfer_backend in ("mooncake", "nixl"):
        args += ["--disaggregation-ib-device", ",".join(inp.ib_devices)]
    return args


def sglang_argv(inp: RenderInput) -> list[str]:
    """Full SGLang args (after :data:`SGLANG_COMMAND`), identical for leader and
    workers.  Raises ValueError on duplicate flags (plan vs extra_args vs the
    builder-owned flags), a missing --model-path, a world size that does not
    match the group, or a local model path outside the weights mount."""
    plan = list(inp.sglang_args)
    extra = list(inp.extra_args)
    check_no_duplicate_flags(plan, "planner argv")
    check_no_duplicate_flags(extra, "extra_args")
    owned = sorted((BUILDER_FLAGS | PD_FLAGS).intersection(flags(plan)))
    if owned:
        raise ValueError(f"planner argv must not contain per-pod flags {owned} (the render layer sets them)")
    owned = sorted((BUILDER_FLAGS | PD_FLAGS).intersection(flags(extra)))
    if owned:
        raise ValueError(f"extra_args must not contain per-pod flags {owned} (the render layer sets them)")
    clash = sorted(set(flags(plan)).intersection(flags(extra)))
    if clash:
        raise ValueError(f"extra_args repeat flags the plan already sets: {clash}")
    if extra and not is_flag(extra[0]):
        # a leading value would attach to the plan's last flag
        raise ValueError(f"extra_args must start with a flag, got {extra[0]!r}")

    argv = plan + [literal(a) for a in extra]
    model = flag_values(argv, "--model-path")
    if not model or len(model) != 1:
        raise ValueError("planner argv must contain --model-path <path or HF repo id>")
    if inp.weights.mode != "hf" and not (model[0] == MODEL_MOUNT or model[0].startswith(MODEL_MOUNT + "/")):
        raise ValueError(
            f"--model-path {model[0]!r} is outside {MODEL_MOUNT}, where the {inp.weights.mode} weights are mounted "
            "(use render.model_path_for)"
        )
    world = _world_size(argv)
    gpus = inp.nodes_per_group * inp.devices_per_node
    if world is not None and world != gpus:
        raise ValueError(
            f"tp*pp*dp = {world} does not match nodes_per_group*devices_per_node = "
            f"{inp.nodes_per_group}*{inp.devices_per_node} = {gpus}"
        )
    argv += per_pod_args(inp)
    check_no_duplicate_flags(argv, "merged argv")
    return argv


def router_selector(inp: RenderInput, pd_role: str = "") -> dict[str, str]:
    """Pods the router discovers: this deployment's routable leaders (of one PD role)."""
    sel = {L_DEPLOYMENT: inp.name, L_ROLE: ROLE_LEADER, L_ROUTABLE: "true"}
    return {**sel, L_PD_ROLE: pd_role} if pd_role else sel


def _pairs(sel: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in sel.items()]


def router_args(inp: RenderInput) -> list[str]:
    """SMG 1.13.0 args (after :data:`ROUTER_COMMAND`): Kubernetes discovery of the routable leaders; with
    disaggregation (rendered from the decode role's input) PD mode, prefill and decode leaders told apart by the
    pd-role label, each prefill's bootstrap port read from its pod annotation (sglang.ai/bootstrap-port)."""
    args = ["--service-discovery"]
    if inp.pd_role == PD_DECODE:
        args += [
            "--pd-disaggregation",
            "--prefill-selector", *_pairs(router_selector(inp, PD_PREFILL)),
            "--decode-selector", *_pairs(router_selector(inp, PD_DECODE)),
            "--prefill-policy", inp.prefill_policy,
            "--decode-policy", inp.router_policy,
        ]
    else:
        args += ["--selector", *_pairs(router_selector(inp))]
    args += [
        "--service-discovery-port",
        str(inp.port),
        "--service-discovery-namespace",
        inp.namespace,
        "--policy",
        inp.router_policy,
    ]
    # not in PD mode: SGLang pairs a request's prefill and decode DP ranks itself (srt/managers/
    # data_parallel_controller.py follow_bootstrap_room_scheduler: rank = bootstrap_room % DP width), and a rank SMG
    # stamped from one role's width would be applied to the other's, whose width may differ
    if not inp.pd and attn_dp_size(inp.sglang_args) > 1:
        # SMG 1.13 reads the attention-DP width from /server_info's `attn_dp_size` (sglang-router 0.3.2 read
        # `dp_size`, which SGLang 0.5.x keeps at 1, and stamped rank 0 on every request, so we dropped the flag then)
        # and registers one worker per rank (`<url>@<rank>`), stamping each request with its rank: the cache-aware
        # policy then keeps a prefix on the rank whose radix cache holds it, which SGLang's own DP controller
        # (round robin) does not. Checked on the rig: tests/cluster/test_sim_rig.py spreads over every rank.
        args.append("--dp-aware")
    args += [
        "--host",
        "0.0.0.0",
        "--port",
        str(ROUTER_PORT),
        "--prometheus-host",
        "0.0.0.0",
        "--prometheus-port",
        str(ROUTER_METRICS_PORT),
        # let in-flight (streaming) requests finish when a router pod rolls
        "--shutdown-grace-period-secs",
        str(inp.drain_timeout_seconds),
    ]
    if inp.api_key_secret is not None:
        # smg/router_args.py RouterArgs.api_key: "the api key used for the authorization with the worker"
        args += ["--api-key", f"$({API_KEY_ENV})"]
    return args


def without_flags_set_by(plan_args: Sequence[str], extra_args: Sequence[str]) -> tuple[str, ...]:
    """The plan's argv minus every flag (with its values) that ``extra_args`` sets, so a user's
    ``--tool-call-parser=...`` replaces the catalog default instead of duplicating it. Flags the plan's topology
    depends on are rejected at admission before they get here."""
    overridden = set(flags(extra_args))
    out: list[str] = []
    skipping = False
    for tok in plan_args:
        if is_flag(tok):
            skipping = canonical_flag(tok) in overridden
        if not skipping:
            out.append(tok)
    return tuple(out)
