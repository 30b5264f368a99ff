"""Prefill/decode disaggregation: sizing the prefill role next to the decode plan.

Decode groups are what :func:`planner.plan` already sizes: KV cache for the target sessions. Prefill groups hold only
the prompts being prefilled (and their KV until the decode side has pulled it), so their layout is the cheapest one
that fits the weights plus one full-context prompt; their *count* comes from prefill throughput
(:mod:`planner.throughput`, calibrated on published SGLang numbers) for the stated prompt rate, and the TTFT target:

- a group prefills ``tput`` uncached prompt tokens/s; ``g`` groups at prompt rate ``λ`` run at ``ρ = λ / (g·tput)``;
- a typical prompt of ``P`` tokens takes ``s = P / tput`` on one group; with Poisson arrivals and near-deterministic
  service (one prefill queue per group, the router spreading prompts) the mean wait is M/D/1's ``ρ·s / (2(1-ρ))``;
- TTFT ≈ wait + s + KV transfer (``P`` × the model's KV bytes per token / link bandwidth);
- ``g`` = the fewest groups with ``ρ ≤ targetUtilization`` and TTFT ≤ the target, within min/max and the
  prefill:decode ratio bounds.

SGLang's rule that under PD the *local* role decides its KV layout (srt/mem_cache/kv_cache_configurator.py: e.g.
``_should_elide_dsa_index_k`` keeps the DSA index-K entries on Ascend PD, ``_pd_prefill_skips_mamba_spec_state`` drops
the speculative state on a prefill server) means the two roles' pools are planned separately, each from its own plan,
never by copying the decode pool's token count.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from moe_operator.planner.errors import PlanError
from moe_operator.planner.plan import Plan, PlanRequest, plan

#: KV transfer link per prefill->decode pair: 400 Gb/s (one ConnectX-7 NDR port, the H200/B200 nodes' compute NIC)
#: with RDMA, 25 Gb/s TCP without; the transfer engines (mooncake, nixl) stripe over the NICs they are given, so this
#: is a floor for multi-NIC nodes.
RDMA_LINK_BYTES_PER_S = 400e9 / 8
TCP_LINK_BYTES_PER_S = 25e9 / 8


@dataclass(frozen=True)
class PrefillRequest:
    prompt_tokens_per_second: float  #: uncached prompt tokens/s at peak
    prompt_tokens: int  #: a typical uncached prompt
    ttft_seconds: float  #: TTFT target for that prompt
    target_utilization: float = 0.7
    max_nodes_per_group: int | None = None
    min_groups: int = 1
    max_groups: int | None = None
    fixed_groups: int | None = None  #: the user's count (no sizing; TTFT still estimated)
    ratio_min: float | None = None  #: prefill groups per decode group
    ratio_max: float | None = None


@dataclass
class PrefillPlan:
    plan: Plan  #: the prefill layout's own plan (weights + one full-context prompt per DP rank)
    groups: int
    tokens_per_second_per_group: float
    prefill_seconds: float  #: one typical prompt on an idle group
    queue_seconds: float  #: M/D/1 mean wait at the planned count
    transfer_seconds: float
    ttft_seconds: float
    utilization: float
    decode_groups: int
    cost_per_hour: float | None
    warnings: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.groups / self.decode_groups if self.decode_groups else math.inf

    def to_dict(self) -> dict[str, Any]:
        p = self.plan
        return {
            "nodes_per_group": p.nodes_per_group, "gpus_per_group": p.gpus_per_group, "tp_size": p.tp_size,
            "ep_size": p.ep_size, "attn_dp_size": p.attn_dp_size, "groups": self.groups,
            "total_nodes": self.groups * p.nodes_per_group,
            "prompt_tokens_per_second_per_group": round(self.tokens_per_second_per_group),
            "prefill_seconds": round(self.prefill_seconds, 3), "queue_seconds": round(self.queue_seconds, 3),
            "transfer_seconds": round(self.transfer_seconds, 4), "ttft_seconds": round(self.ttft_seconds, 3),
            "utilization": round(self.utilization, 3), "decode_groups": self.decode_groups,
            "ratio": round(self.ratio, 3) if self.decode_groups else None,
            "cost_per_hour": self.cost_per_hour, "sglang_args": list(p.sglang_args), "warnings": list(self.warnings),
        }


def md1_wait(rho: float, service_s: float) -> float:
    """Mean wait in an M/D/1 queue (Pollaczek-Khinchine with zero service variance)."""
    if rho >= 1.0:
        return math.inf
    return rho * service_s / (2.0 * (1.0 - rho))


def prefill_layout(base: PlanRequest, max_nodes_per_group: int | None) -> Plan:
    """The cheapest layout that holds the weights and one prompt of the full context (what a prefill server must
    accept): the planner with one session, min-cost, no group cap from the decode fleet."""
    req = dataclasses.replace(base, sessions=1, avg_context=None, max_groups=None, objective="min-cost",
                              max_nodes_per_group=max_nodes_per_group or base.max_nodes_per_group)
    return plan(req)


def _estimate(req: PrefillRequest, groups: int, tput: float, transfer_s: float) -> tuple[float, float, float, float]:
    """(utilization, wait, prefill, ttft) for `groups` prefill groups."""
    s = req.prompt_tokens / tput
    rho = req.prompt_tokens_per_second / (groups * tput) if groups > 0 else math.inf
    wait = md1_wait(rho, s)
    return rho, wait, s, wait + s + transfer_s


def plan_prefill(base: PlanRequest, req: PrefillRequest, decode: Plan, decode_groups: int | None = None) -> PrefillPlan:
    """Size the prefill role. Raises PlanError (constraint "prefill") naming the numbers when the TTFT target
    cannot be met by any count within the bounds."""
    from moe_operator.planner import throughput
    from moe_operator.planner.accelerators import resolve_accelerator

    layout = prefill_layout(base, req.max_nodes_per_group)
    acc = resolve_accelerator(base.accelerator)
    try:
        tput = throughput.prefill_tokens_per_second(base.model, acc, layout.gpus_per_group, base.precision,
                                                    req.prompt_tokens)
        kv_per_token = throughput.kv_bytes_per_token(base.model, acc, base.kv_dtype)
    except (KeyError, ValueError) as exc:
        raise PlanError("prefill", f"no prefill throughput figures for this accelerator/model ({exc}); set "
                        "disaggregation.prefill.groups") from None
    link = RDMA_LINK_BYTES_PER_S if base.rdma else TCP_LINK_BYTES_PER_S
    transfer_s = throughput.kv_transfer_seconds(req.prompt_tokens, kv_per_token, link)
    d_groups = decode_groups if decode_groups is not None else decode.groups
    lo = max(req.min_groups, math.ceil(req.ratio_min * d_groups) if req.ratio_min is not None else 0)
    hi_bounds = [b for b in (req.max_groups,
                             math.floor(req.ratio_max * d_groups) if req.ratio_max is not None else None)
                 if b is not None]
    hi = min(hi_bounds) if hi_bounds else None
    warnings: list[str] = []
    s_idle = req.prompt_tokens / tput
    if req.fixed_groups is not None:
        groups = req.fixed_groups
    else:
        if s_idle + transfer_s > req.ttft_seconds:
            raise PlanError("prefill", f"a {req.prompt_tokens}-token prompt takes {s_idle:.1f} s to prefill on one "
                            f"{layout.nodes_per_group}-node prefill group ({layout.gpus_per_group} x "
                            f"{layout.accelerator}, ~{tput:,.0f} prompt tokens/s) plus {transfer_s:.2f} s of KV "
                            f"transfer: more than disaggregation.prefill.ttftSeconds ({req.ttft_seconds:g} s) "
                            "with an empty queue")
        groups = max(lo, 1, math.ceil(req.prompt_tokens_per_second / (tput * req.target_utilization)))
        while _estimate(req, groups, tput, transfer_s)[3] > req.ttft_seconds:
            groups += 1
        if hi is not None and groups > hi:
            if req.max_groups is not None and groups > req.max_groups:
                raise PlanError("prefill", f"{groups} prefill groups of ~{tput:,.0f} prompt tokens/s are needed for "
                                f"{req.prompt_tokens_per_second:,.0f} prompt tokens/s at utilization "
                                f"{req.target_utilization:g} and TTFT {req.ttft_seconds:g} s; "
                                f"disaggregation.prefill.maxGroups is {req.max_groups}")
            warnings.append(f"ratio.max {req.ratio_max:g} caps prefill at {hi} groups where {groups} meet the "
                            "TTFT target")
            groups = hi
        groups = max(groups, lo)
    rho, wait, s, ttft = _estimate(req, groups, tput, transfer_s)
    if rho >= 1.0:
        warnings.append(f"{groups} prefill groups run at {rho:.0%} of their throughput: the prefill queue grows")
    price = layout.cost_per_node_hour
    return PrefillPlan(plan=layout, groups=groups, tokens_per_second_per_group=tput, prefill_seconds=s,
                       queue_seconds=wait, transfer_seconds=transfer_s, ttft_seconds=ttft, utilization=rho,
                       decode_groups=d_groups,
                       cost_per_hour=round(price * groups * layout.nodes_per_group, 2) if price is not None else None,
                       warnings=warnings)
