"""STUB of `tvm_ffi` (apache-tvm-ffi) for the SGLang conformance venv (.venv-sglang) — NOT tvm-ffi.

Replaces: apache-tvm-ffi==0.1.11, the FFI loader for SGLang's JIT CUDA kernels. Reached only by import, through
`kernels/ops/communication/all_reduce.py` (`import tvm_ffi` at module level) on the chain
resolution pipeline -> kv_shard_hook -> configs/model_config -> layers -> dp_attention -> custom all-reduce.
The real package is not usable here anyway: on import it registers converters against `torch.Tensor` and fails
on the torch stub. No flag parsing or resolution step calls a kernel. Inert placeholders, every access logged;
see `../_inert_stub.py`.
"""

import sys

from _inert_stub import install

__version__ = "0.1.11"
IS_STUB = True

install(sys.modules[__name__], absent_attrs=set(), absent_submodules=set(), configure=lambda mod: None)
