"""STUB of `triton` for the SGLang conformance venv (.venv-sglang) — NOT Triton.

Replaces: triton (a GPU kernel compiler, ~150 MB wheel, pulled in by torch). SGLang's kernel modules decorate
functions with `@triton.jit` / `@triton.autotune(...)` and annotate with `tl.constexpr` at import time; none of
that runs while the argument parser parses an argv. Every attribute is an inert placeholder (decorators return
the function unchanged) and every access is logged; see `../_inert_stub.py` for why parsing is unaffected.
"""

import sys

from _inert_stub import install

__version__ = "3.8.0"  # what torch 2.14.1 pins (triton~=3.8.0)
IS_STUB = True

install(sys.modules[__name__], absent_attrs=set(), absent_submodules=set(), configure=lambda mod: None)
