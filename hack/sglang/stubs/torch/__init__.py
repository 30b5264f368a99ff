"""STUB of `torch` for the SGLang conformance venv (.venv-sglang) — NOT PyTorch.

Replaces: torch==2.14.1 (sglang 0.5.23 pins it; the PyPI wheel is a 554.6 MB CUDA build needing several GB of
nvidia-* wheels, and there is no CPU build on PyPI). Used only so that `import sglang.srt.server_args` succeeds:
the import chain executes torch-touching module bodies (decorators, base classes, annotations, dtype tables)
that the argument parser never calls. See `../_inert_stub.py` for the mechanism and why parsing is unaffected.

Pinned facts (a CPU-only build, as on CI): version 2.14.1 (the wheel's pin, so SGLang's version gates take the
same branch); `cuda.is_available()` False, `cuda.device_count()` 0; `version.cuda`/`version.hip` None; no
`torch.npu` / `torch.musa` / `torch.hpu` (those come from vendor plugins: `hasattr(torch, "npu")` must be False,
or SGLang's `is_npu()` raises). Everything else is an inert placeholder and every access is logged.
"""

import sys

from _inert_stub import ACCESS_LOG, install  # noqa: F401  (hack/sglang/stubs is on sys.path)

__version__ = "2.14.1"
IS_STUB = True


def _false(*_a, **_k):
    return False


def _zero(*_a, **_k):
    return 0


def _configure(mod):
    name = mod.__name__
    if name == "torch.version":
        mod.__version__ = __version__
        mod.cuda = None
        mod.hip = None
        mod.xpu = None
        mod.git_version = "stub"
        mod.debug = False
    elif name in ("torch.cuda", "torch.xpu", "torch.mps", "torch.backends.mps", "torch.backends.cuda"):
        mod.is_available = _false
        mod.device_count = _zero
        mod.is_initialized = _false
        mod.is_built = _false


install(
    sys.modules[__name__],
    absent_attrs={"npu", "musa", "hpu", "mlu"},
    absent_submodules={"torch_npu", "torch.npu", "torch.musa", "torch.hpu"},
    configure=_configure,
)

# eager submodules that `import torch` provides as attributes on the real package
import torch.backends  # noqa: E402
import torch.cuda  # noqa: E402
import torch.mps  # noqa: E402
import torch.version  # noqa: E402
import torch.xpu  # noqa: E402,F401

cuda = sys.modules["torch.cuda"]
version = sys.modules["torch.version"]
