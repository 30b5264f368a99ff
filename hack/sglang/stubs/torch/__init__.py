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

from _inert_stub import ACCESS_LOG, Inert, install  # hack/sglang/stubs is on sys.path

__version__ = "2.14.1"
IS_STUB = True


def _false(*_a, **_k):
    return False


def _zero(*_a, **_k):
    return 0


# Real (empty) classes where SGLang's dependencies need an actual type, e.g. pydantic models in
# compressed-tensors declare `torch.dtype` fields (isinstance validators need a class).
class _StubType:
    def __init__(self, *args, **kwargs):
        self._args = args

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        ACCESS_LOG.append(f"torch.{type(self).__name__}(...).{attr}")
        return Inert(f"torch.{type(self).__name__}(...).{attr}")

    def __repr__(self):
        return f"torch.{type(self).__name__}{self._args!r} (stub)"


class dtype(_StubType):  # noqa: N801
    pass


class device(_StubType):  # noqa: N801
    pass


class Tensor(_StubType):
    pass


class Generator(_StubType):
    pass


class Size(tuple):
    pass


# dtype constants are dtype instances (pydantic validators in compressed-tensors check isinstance(x, torch.dtype))
for _name in (
    "float32 float float64 double float16 half bfloat16 complex64 complex128 bool "
    "int8 int16 short int32 int int64 long uint8 uint16 uint32 uint64 "
    "float8_e4m3fn float8_e5m2 float8_e4m3fnuz float8_e5m2fnuz float8_e8m0fnu float4_e2m1fn_x2"
).split():
    globals()[_name] = dtype(_name)
del _name


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
