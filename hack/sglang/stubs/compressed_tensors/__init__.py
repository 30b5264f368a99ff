"""STUB of `compressed_tensors` for the SGLang conformance venv (.venv-sglang) — NOT compressed-tensors.

Replaces: compressed-tensors==0.18.0 (weight (de)compression for compressed-tensors checkpoints). Reached only
by import: resolution -> configs/model_config -> layers/quantization/__init__ (registers every quantization
method) -> compressed_tensors/compressed_tensors.py. The real package cannot load here: at import it builds
pydantic models over torch dtypes and imports transformers.modeling_utils, both of which need a real PyTorch.
`--quantization compressed-tensors` is validated by SGLang's own choices list and quantization registry, which
are SGLang code; no checkpoint is loaded or decompressed by the conformance scripts. Inert placeholders, every
access logged; see `../_inert_stub.py`.
"""

import sys

from _inert_stub import install

__version__ = "0.18.0"
IS_STUB = True

install(sys.modules[__name__], absent_attrs=set(), absent_submodules=set(), configure=lambda mod: None)
