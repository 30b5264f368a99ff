"""STUB of `torchvision` for the SGLang conformance venv (.venv-sglang) — NOT torchvision.

Replaces: torchvision (image transforms; its PyPI wheel is built against CUDA torch and needs the real torch).
Reached only by import: `arg_groups/pipeline.py` (resolution) and `observability/metrics_collector.py` import
`sglang.srt.configs`, whose `__init__` imports every model config, including the multimodal ones whose helper
modules do `import torchvision.transforms as T` at module level for image preprocessing constants/classes.
No argument parsing, flag resolution or metric definition calls into it. Inert placeholders, every access
logged; see `../_inert_stub.py`.
"""

import sys

from _inert_stub import install

__version__ = "0.29.1"
IS_STUB = True

install(sys.modules[__name__], absent_attrs=set(), absent_submodules=set(), configure=lambda mod: None)
