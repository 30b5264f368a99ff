"""Bootstrap for the scripts in hack/sglang/: make SGLang 0.5.23 importable in .venv-sglang without torch.

Import this module before anything from `sglang`. It
1. refuses to run outside a venv that has sglang (these scripts are for `.venv-sglang/bin/python` only);
2. pins transformers' "is torch/torchvision installed?" answers to the truth of this venv (no), *before* the
   stubs become importable, so transformers never drives the stubs as if they were PyTorch (its checks are
   lru-cached);
3. appends hack/sglang/stubs to sys.path (appended: a real torch/triton/torchvision/tvm_ffi, if one is ever
   installed into the venv, wins) — see stubs/_inert_stub.py for what the stubs are and why parsing is unaffected.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
STUBS = os.path.join(HERE, "stubs")
STUBBED = ("torch", "triton", "torchvision", "tvm_ffi", "compressed_tensors")

if importlib.util.find_spec("sglang") is None:
    sys.exit(
        "sglang is not importable: run these scripts with .venv-sglang/bin/python (create it with hack/setup-sglang)"
    )

SGLANG_VERSION = importlib.metadata.version("sglang")

_real = {name: importlib.util.find_spec(name) is not None for name in STUBBED}

if importlib.util.find_spec("transformers") is not None:
    from transformers.utils import import_utils as _tu

    _tu.is_torch_available()
    _tu.is_torchvision_available()

if STUBS not in sys.path:
    sys.path.append(STUBS)


def stubbed_modules() -> list[str]:
    """Which heavy modules are served by hack/sglang/stubs (rather than real installs) in this process."""
    return [name for name in STUBBED if not _real[name]]


def stub_log() -> list[str]:
    """The shared access log of the stubs (empty list if no stub was loaded)."""
    mod = sys.modules.get("_inert_stub")
    return mod.ACCESS_LOG if mod is not None else []
