"""Run SGLang 0.5.23's own launch-time argument handling on argvs, without launching anything.

Usage (only with the conformance venv, see hack/setup-sglang):
    echo '[{"id": "a", "argv": ["--model-path", "m", "--tp-size", "8"]}]' \
      | .venv-sglang/bin/python hack/sglang/parse_argv.py
    .venv-sglang/bin/python hack/sglang/parse_argv.py --self-check

For every item it runs, in order, SGLang's own code, unmodified:

1. ``prepare_server_args(argv)`` — exactly what ``sglang serve`` / ``python -m sglang.launch_server`` call first:
   builds the 532-action argparse parser (``ServerArgs.add_cli_args``), parses, ``ServerArgs.from_cli_args``.
   This validates: unknown flags, ambiguous abbreviations, missing values, ``type=`` conversion (int/float/json),
   ``choices=``, and parse-time deprecations (``Deprecated*Action``: --enable-dp-attention, --disable-cuda-graph,
   --monokernel-backend). It does NOT read the model (no config.json), and its values are raw (unresolved).
   ``accepted`` is the outcome of this stage; argparse errors (SystemExit) are reported as ``error``.
2. ``resolve_once()`` on the same record with ``model_path="dummy"`` — SGLang's resolution pipeline has a
   built-in short circuit for model "dummy"/"none" that runs every *model-independent* resolution and validation
   hook first (``arg_groups/pipeline.py``: the deprecated --enable-dp-attention rewrite to attn_dp_size/dp_size,
   hicache/offload/watermark/prefill-interval/hardware-runtime checks, ...) and returns before anything that needs
   the checkpoint or a GPU. Its resolved values are reported under ``resolved``; a ValueError there is reported as
   ``resolution_error`` (a real rejection SGLang would raise at launch).
3. ``handle_deprecated_args`` (``arg_groups/serving_hook.py``) on a fresh record — the hook that warns about
   deprecated *values* and booleans (tool-call-parser glm45/qwen25, --enable-flashinfer-allreduce-fusion,
   --disable-fast-image-processor). It runs after the dummy short circuit in the real pipeline, so it is called
   directly here; it reads only flags.

NOT validated (needs the checkpoint or the hardware, i.e. the rest of the pipeline): model-specific overrides
(attention backend, KV dtype defaults, DSA/MLA rules), memory heuristics (mem_fraction_static default,
chunked-prefill defaults), divisibility of tp/ep/attn-dp by the model's heads/experts, device auto-detection
(``device`` stays None unless given), CUDA-graph and PD-disaggregation cross-checks, quantization vs checkpoint.

Every warning logged by an ``sglang`` logger or issued via ``warnings.warn`` while these run is captured;
those mentioning "deprecat" are listed in ``deprecations``. ``stub_touched`` lists any use of the torch/triton
stand-ins during the stages (after imports); it must be empty — parsing never consults them.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import sys
import warnings
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _sglang_env  # noqa: E402  (must precede any sglang import)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
VALUE_FIELDS = (
    "model_path",
    "tp_size",
    "ep_size",
    "attn_dp_size",
    "dp_size",
    "pp_size",
    "nnodes",
    "node_rank",
    "kv_cache_dtype",
    "mem_fraction_static",
    "context_length",
    "device",
    "moe_a2a_backend",
    "quantization",
    "enable_dp_attention",
    "tool_call_parser",
    "reasoning_parser",
    "disaggregation_mode",
    "disaggregation_transfer_backend",
    "disaggregation_bootstrap_port",
    "disaggregation_ib_device",
)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(_ANSI.sub("", record.getMessage()).strip())


def _load() -> dict[str, Any]:
    # Lazy modules that the stages import on first use: import them now so that stub_touched
    # only reflects what the stages themselves do.
    import sglang.srt.arg_groups.pipeline  # noqa: F401
    import sglang.srt.sampling.watermarking.core  # noqa: F401
    from sglang.srt.arg_groups.arg_utils import record_fields
    from sglang.srt.arg_groups.overrides import resolving_view
    from sglang.srt.arg_groups.resolution_hooks import run_hook
    from sglang.srt.arg_groups.serving_hook import handle_deprecated_args
    from sglang.srt.server_args import prepare_server_args

    return {
        "prepare_server_args": prepare_server_args,
        "resolving_view": resolving_view,
        "run_hook": run_hook,
        "handle_deprecated_args": handle_deprecated_args,
        "record_fields": record_fields,
    }


def _values(obj: Any) -> dict[str, Any]:
    out = {}
    for name in VALUE_FIELDS:
        v = getattr(obj, name, None)
        out[name] = v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)
    return out


@contextlib.contextmanager
def _captured():
    """Capture sglang log warnings, warnings.warn, and argparse's stdout/stderr."""
    cap = _Capture()
    sg = logging.getLogger("sglang")
    sg.addHandler(cap)
    out, err = io.StringIO(), io.StringIO()
    try:
        with (
            warnings.catch_warnings(record=True) as wlist,
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            warnings.simplefilter("always")
            yield cap, wlist, out, err
    finally:
        sg.removeHandler(cap)


def _argparse_error(stderr_text: str) -> str:
    lines = [ln for ln in stderr_text.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ": error: " in ln:
            return ln.split(": error: ", 1)[1]
    return lines[-1] if lines else "exited without a message"


def check(argv: list[str], api: dict[str, Any]) -> dict[str, Any]:
    log = _sglang_env.stub_log()
    log.clear()
    res: dict[str, Any] = {"accepted": False, "error": None, "warnings": [], "deprecations": []}
    with _captured() as (cap, wlist, _out, err):
        # stage 1: parse (what launch_server runs first)
        try:
            sa = api["prepare_server_args"](list(argv))
        except SystemExit as e:
            res["error"] = _argparse_error(err.getvalue()) if e.code else "exited (--help/--version?)"
            sa = None
        except Exception as e:  # noqa: BLE001 - report whatever SGLang raised
            res["error"] = f"{type(e).__name__}: {e}"
            sa = None
        if sa is not None:
            res["accepted"] = True
            res["values"] = _values(sa)
            # stage 3 first (needs an unresolved record): the deprecated-args hook on a fresh parse
            try:
                fresh = api["prepare_server_args"](list(argv))
                fresh._raw_input = {f.name: getattr(fresh, f.name) for f in api["record_fields"](type(fresh))}
                fresh._resolved_overrides = []
                api["run_hook"](api["handle_deprecated_args"], fresh)
            except Exception as e:  # noqa: BLE001
                res["deprecated_args_hook_error"] = f"{type(e).__name__}: {e}"
            # stage 2: model-independent resolution (SGLang's own dummy-model short circuit)
            try:
                sa.model_path = "dummy"
                sa.resolve_once()
                cfg = api["resolving_view"](sa)
                res["resolved"] = _values(cfg)
                res["resolved"]["model_path"] = res["values"]["model_path"]
                res["resolution_error"] = None
            except Exception as e:  # noqa: BLE001
                res["resolution_error"] = f"{type(e).__name__}: {e}"
        msgs = list(cap.messages) + [_ANSI.sub("", str(w.message)).strip() for w in wlist]
    # import-time platform warnings of quantization modules are noise, not about the argv
    msgs = [m for m in msgs if not m.startswith("Only ")]
    res["warnings"] = list(dict.fromkeys(msgs))
    res["deprecations"] = [m for m in res["warnings"] if "deprecat" in m.lower()]
    res["stub_touched"] = [x for x in log if not x.startswith("import ")]
    return res


def main() -> int:
    logging.getLogger("sglang").setLevel(logging.INFO)
    api = _load()
    if "--self-check" in sys.argv[1:]:
        items = [
            {"id": "ok", "argv": ["--model-path", "m", "--tp-size", "8"]},
            {"id": "bad", "argv": ["--model-path", "m", "--enable-ep-moe"]},
            {"id": "dep", "argv": ["--model-path", "m", "--enable-dp-attention", "--dp-size", "8"]},
        ]
    else:
        items = json.load(sys.stdin)
    results = []
    for item in items:
        r = check(item["argv"], api)
        r["id"] = item["id"]
        results.append(r)
    out = {
        "sglang_version": _sglang_env.SGLANG_VERSION,
        "stubbed_modules": _sglang_env.stubbed_modules(),
        "results": results,
    }
    if "--self-check" in sys.argv[1:]:
        ok, bad, dep = results
        assert ok["accepted"] and ok["resolved"]["tp_size"] == 8, ok
        assert not bad["accepted"] and "--enable-ep-moe" in bad["error"], bad
        assert dep["accepted"] and dep["deprecations"] and dep["resolved"]["attn_dp_size"] == 8, dep
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
