"""Print, as JSON, what SGLang 0.5.23's scheduler does that the compute-aware replay (sim/moe_sim/pd.py) copies:
the admission estimate's constants, new_token_ratio's schedule, the retraction order and ratio, where a retracted
request goes, and the default schedule policy. Read from the wheel itself (imported with hack/sglang's stubs) so
tests/conformance/test_sim_scheduler.py fails when a re-pin changes them.

    .venv-sglang/bin/python hack/sglang/scheduler_constants.py
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _sglang_env  # noqa: E402,F401  (must precede any sglang import)


def main() -> None:
    from sglang.srt.environ import envs

    order_src = _function_text("sglang.srt.managers.schedule_batch", "_get_decode_retraction_order")
    ratio_src = _function_text("sglang.srt.managers.scheduler_components.new_token_ratio_tracker",
                               "estimate_new_token_ratio_after_retract")
    queue_src = _function_text("sglang.srt.managers.scheduler", "_add_request_to_queue")
    offset_src = _function_text("sglang.srt.managers.schedule_policy", "_get_running_request_total_token_offset")
    clip = re.search(r'CLIP_MAX_NEW_TOKENS = int\(\s*os\.environ\.get\('
                     r'"SGLANG_CLIP_MAX_NEW_TOKENS_ESTIMATION", "(\d+)"\)',
                     _module_text("sglang.srt.managers.schedule_policy"))
    assert clip is not None, "CLIP_MAX_NEW_TOKENS is no longer defined as it was"
    out = {
        "CLIP_MAX_NEW_TOKENS": int(clip.group(1)),
        "INIT_NEW_TOKEN_RATIO": envs.SGLANG_INIT_NEW_TOKEN_RATIO.get(),
        "MIN_NEW_TOKEN_RATIO_FACTOR": envs.SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR.get(),
        "NEW_TOKEN_RATIO_DECAY_STEPS": envs.SGLANG_NEW_TOKEN_RATIO_DECAY_STEPS.get(),
        "RETRACT_DECODE_STEPS": envs.SGLANG_RETRACT_DECODE_STEPS.get(),
        # retract the fewest output tokens first, then the longest prompt: sorted descending by this key, popped
        # from the end
        "retraction_key_output_then_minus_input": "(len(req.output_ids), -len(req.origin_input_ids))" in order_src
        and "reverse=True" in order_src,
        "ratio_after_retract_formula": "total_decoded_tokens + envs.SGLANG_RETRACT_DECODE_STEPS.get() * len(reqs)"
        in ratio_src and "(total_max_new_tokens + 1)" in ratio_src,
        "retracted_appended_to_waiting_queue": "self.waiting_queue.append(req)" in queue_src,
        "running_offset_clipped_times_ratio": "CLIP_MAX_NEW_TOKENS" in offset_src and "* ratio" in offset_src,
        "default_schedule_policy": _default_schedule_policy(),
    }
    print(json.dumps(out, sort_keys=True))


def _module_text(module: str) -> str:
    """A module's source, read from its file: importing the scheduler's modules pulls in the OpenAI server stack."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    with open(spec.origin, encoding="utf-8") as f:
        return f.read()


def _function_text(module: str, name: str) -> str:
    """A method's source (from its `def` to the next method of the class)."""
    text = _module_text(module)
    start = text.index(f"    def {name}(")
    end = text.find("\n    def ", start + 1)
    return text[start:end if end > 0 else None]


def _default_schedule_policy() -> str:
    """The `schedule_policy` field's default (arg_groups/fields/schedule.py: `schedule_policy: A[...] = "..."`)."""
    text = _module_text("sglang.srt.arg_groups.fields.schedule")
    m = re.compile(r'\] = "([\w-]+)"').search(text, text.index("    schedule_policy: A["))
    assert m is not None
    return m.group(1)


if __name__ == "__main__":
    main()
