"""Print docs/planning.md's scenario table: every catalog model at 100 sessions x 131,072 tokens on every pool,
the min-cost plan next to the min-group one (v0.1's default), as markdown.

    .venv/bin/python bench/planner_scenarios.py [--sessions 100] [--context 131072]
"""

from __future__ import annotations

import argparse

from moe_operator.planner import ACCELERATORS, CATALOG, PlanError, PlanRequest, plan

SCENARIOS = [
    ("kimi-k2.5", "int4", "fp8_e4m3"), ("kimi-k2.5", "int4", "auto"), ("kimi-k2", "fp8", "auto"),
    ("glm-5", "fp8", "auto"), ("glm-5", "fp8", "fp8_e4m3"), ("glm-4.7", "fp8", "auto"), ("glm-4.7", "bf16", "auto"),
    ("deepseek-v3", "fp8", "auto"), ("deepseek-v3.2", "fp8", "auto"), ("qwen3-235b-a22b", "fp8", "auto"),
]  # fmt: skip
ASCEND_PRECISION = "w8a8"


def _layout(p) -> str:  # noqa: ANN001
    s = f"{p.nodes_per_group}n TP{p.tp_size}"
    s += f" DP{p.attn_dp_size}" if p.attn_dp_size > 1 else ""
    s += f" EP{p.ep_size}" if p.ep_size > 1 else ""
    return s + (f" {p.moe_a2a_backend}" if p.moe_a2a_backend != "none" else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--context", type=int, default=131_072)
    a = ap.parse_args()
    print("| model, weights | KV | pool | B/token/GPU | layout (min-cost) | sessions/group | groups x nodes = nodes |"
          " $/h | runner-up | min-group: layout, nodes |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model, prec, kv in SCENARIOS:
        for acc in ACCELERATORS:
            pr = ASCEND_PRECISION if acc.startswith("ascend") else prec
            if acc.startswith("ascend") and kv != "auto":
                continue  # no FP8 KV on Ascend
            ctx = min(a.context, CATALOG[model].max_position_embeddings or a.context)
            req = dict(model=model, precision=pr, kv_dtype=kv, sessions=a.sessions, context=ctx, accelerator=acc)
            label = f"| {model} {pr}{'' if ctx == a.context else f' ({ctx:,} ctx)'} | {kv} | {acc} |"
            try:
                p = plan(PlanRequest(**req))  # type: ignore[arg-type]
                g = plan(PlanRequest(**req, objective="min-group"))  # type: ignore[arg-type]
            except PlanError as e:
                print(f"{label} — | {e.constraint}: {e.message[:110]}… | | | | | |")
                continue
            ru = p.runner_up
            rus = f"{ru['layout']}, {ru['total_nodes']} nodes" if ru else "—"
            cost = f"{p.cost_per_hour:,.0f}" if p.cost_per_hour is not None else f"{p.total_gpus} NPUs"
            print(f"{label} {p.kv_bytes_per_token:,} | {_layout(p)} | {p.sessions_per_group} | {p.groups} x "
                  f"{p.nodes_per_group} = {p.total_nodes} | {cost} | {rus} | {_layout(g)}, {g.total_nodes} |")


if __name__ == "__main__":
    main()
