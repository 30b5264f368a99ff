"""Inert stand-in modules for heavy *runtime* dependencies of SGLang (torch, triton) — conformance tier only.

WHY: `sglang.srt.server_args` (the argument parser) is pure argparse + msgspec, but importing it executes
`sglang/__init__.py` -> `srt/utils/common.py` -> platforms/, distributed/, kernels/ ..., whose module bodies touch
torch/triton at import time: `import torch.distributed`, `class X(torch.nn.Module)`, `@torch.library.custom_op`,
`@triton.jit`, annotations like `-> torch.Tensor`, dtype tables. None of that is reached while argparse parses
an argv. The PyPI torch==2.14.1 wheel is a CUDA build (554.6 MB wheel, plus nvidia-* wheels, several GB) and
does not even import without the CUDA libraries; there is no CPU torch on PyPI.

WHAT: a module whose every attribute is an inert placeholder: callable (a decorator returns the function it
decorates unchanged), subclassable (fresh empty class), indexable, falsy, iterable-as-empty. A few facts are
pinned so that SGLang's platform probes see *a CPU-only build with no accelerator* (exactly what a CI machine
is): `torch.cuda.is_available()` is False, `torch.version.cuda/hip` are None, and the out-of-tree device
namespaces (`torch.npu`, `torch.musa`, `torch.hpu`) do not exist, so `hasattr(torch, "npu")` is False.

WHY IT CANNOT CHANGE PARSING: the parser code that runs is SGLang's own, unmodified (`ServerArgs.add_cli_args`,
`argparse`, `prepare_server_args`). Every attribute access on a stub is recorded in `ACCESS_LOG`;
`hack/sglang/parse_argv.py` and `gen_flag_table.py` clear it after import and report anything recorded while
building the parser or parsing an argv (`stub_touched`), and the conformance tests require that to be empty:
if a future SGLang consulted torch while parsing, the tests fail instead of silently trusting a stub.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from typing import Any

ACCESS_LOG: list[str] = []
_CLASSES: dict[str, type] = {}


class Inert:
    """A placeholder for any torch/triton object. Records where it is used."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_name", name)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        ACCESS_LOG.append(f"{self._name}.{attr}")
        return Inert(f"{self._name}.{attr}")

    def __setattr__(self, attr: str, value: Any) -> None:
        ACCESS_LOG.append(f"set {self._name}.{attr}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ACCESS_LOG.append(f"{self._name}()")
        # bare decorator use (@torch.compile, @triton.jit): hand the function back unchanged
        if len(args) == 1 and not kwargs and (callable(args[0]) or isinstance(args[0], type)):
            return args[0]
        return Inert(f"{self._name}()")

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        # `class Foo(torch.nn.Module)`: a fresh empty base per placeholder (keeps MROs consistent)
        cls = _CLASSES.get(self._name)
        if cls is None:
            cls = _CLASSES[self._name] = type(self._name.rsplit(".", 1)[-1], (), {})
        return (cls,)

    def __bool__(self) -> bool:
        return False

    def __iter__(self) -> Any:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __getitem__(self, key: Any) -> Any:
        return Inert(f"{self._name}[]")

    def __or__(self, other: Any) -> Any:  # `torch.Tensor | None` in evaluated annotations
        return self

    __ror__ = __or__

    def _arith(self, *other: Any) -> Any:  # `-torch.finfo(...).max`, `2 ** triton.cdiv(...)`, ...
        return Inert(f"{self._name}<op>")

    __neg__ = __pos__ = __abs__ = __invert__ = _arith
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _arith
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = _arith
    __pow__ = __rpow__ = __and__ = __rand__ = __lshift__ = __rshift__ = _arith

    def _cmp(self, other: Any) -> bool:
        return False

    __lt__ = __le__ = __gt__ = __ge__ = _cmp

    def __int__(self) -> int:  # 1, not 0: module-level math such as log2(torch.finfo(...).max) must not fail
        return 1

    __index__ = __int__

    def __float__(self) -> float:
        return 1.0

    def __eq__(self, other: Any) -> bool:
        return self is other

    def __hash__(self) -> int:
        return hash(self._name)

    def __repr__(self) -> str:
        return f"<inert stub {self._name}>"


class StubModule(types.ModuleType):
    """A stub (sub)module: pinned attributes are set on it, anything else is an Inert placeholder."""

    _absent: frozenset[str] = frozenset()

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") or attr in self._absent:
            raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r} (stub)")
        ACCESS_LOG.append(f"{self.__name__}.{attr}")
        return Inert(f"{self.__name__}.{attr}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves `ROOT.anything` submodule imports as StubModules (the real packages have hundreds)."""

    def __init__(self, root: str, absent_submodules: frozenset[str], configure: Any) -> None:
        self.root, self.absent, self.configure = root, absent_submodules, configure

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if not fullname.startswith(self.root + "."):
            return None
        if fullname in self.absent:
            return None  # -> ModuleNotFoundError, as on a CPU-only build
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: Any) -> Any:
        mod = StubModule(spec.name)
        mod.__path__ = []
        self.configure(mod)
        return mod

    def exec_module(self, module: Any) -> None:
        ACCESS_LOG.append(f"import {module.__name__}")


def install(root_module: types.ModuleType, absent_attrs: set[str], absent_submodules: set[str], configure: Any) -> None:
    """Turn the real-file package `root_module` into a StubModule and serve its submodules."""
    root_module.__class__ = StubModule
    root_module._absent = frozenset(absent_attrs)  # type: ignore[attr-defined]
    finder = _Finder(root_module.__name__, frozenset(absent_submodules), configure)
    sys.meta_path.append(finder)
