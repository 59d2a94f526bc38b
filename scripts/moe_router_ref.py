#!/usr/bin/env python3
"""Reference routing for tests/moe_router.rs: transformers 5.23's own DeepSeek-V3 router
(DeepseekV3TopkRouter: sigmoid scores, e_score_correction_bias for the choice only,
group-limited top-k, renormalisation, routed_scaling_factor) on inputs both sides compute
from the same formulas. Prints the Rust constants the test holds.

Run with .venv-ref/bin/python scripts/moe_router_ref.py.
"""

import math

import numpy as np

import torch
from transformers import DeepseekV3Config
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3TopkRouter

T, H, E, GROUPS, TOP_GROUPS, K, SCALE = 6, 8, 16, 4, 2, 4, 2.5


def x_at(t, h):
    return math.sin(0.37 * t + 0.11 * h + 0.5 * t * h / H)


def w_at(e, h):
    return 0.8 * math.cos(0.23 * e * e - 0.41 * h + 0.07 * e * h)


def bias_at(e):
    return 0.03 * ((e * 7) % 5) - 0.05


def main():
    cfg = DeepseekV3Config(
        hidden_size=H,
        n_routed_experts=E,
        num_experts_per_tok=K,
        n_group=GROUPS,
        topk_group=TOP_GROUPS,
        norm_topk_prob=True,
        routed_scaling_factor=SCALE,
    )
    router = DeepseekV3TopkRouter(cfg)
    with torch.no_grad():
        router.weight.copy_(torch.tensor([[w_at(e, h) for h in range(H)] for e in range(E)]))
        router.e_score_correction_bias.copy_(torch.tensor([bias_at(e) for e in range(E)]))
        x = torch.tensor([[x_at(t, h) for h in range(H)] for t in range(T)])
        logits, weights, idx = router(x)
    order = torch.argsort(idx, dim=-1)
    idx, weights = torch.gather(idx, 1, order), torch.gather(weights, 1, order)
    print("// experts (ascending per token)")
    print(f"const EXPERTS: [[u32; {K}]; {T}] = {idx.tolist()};".replace("], [", "], ["))
    print("// weights, in the same order")
    # The shortest decimal that reads back as the same float32.
    rows = ", ".join("[" + ", ".join(str(np.float32(v)) for v in r) + "]" for r in weights.tolist())
    print(f"const WEIGHTS: [[f32; {K}]; {T}] = [{rows}];")
    # The choice must not hang on rounding: the kept groups stand apart from the dropped ones,
    # and within the kept groups the chosen experts from the others.
    choice = torch.sigmoid(logits) + router.e_score_correction_bias
    grouped = choice.view(T, GROUPS, E // GROUPS)
    group_scores = grouped.topk(2, dim=-1).values.sum(-1).sort(dim=-1, descending=True).values
    group_gap = (group_scores[:, TOP_GROUPS - 1] - group_scores[:, TOP_GROUPS]).min()
    chosen = torch.zeros_like(choice, dtype=torch.bool).scatter_(1, idx, True)
    kept_groups = torch.zeros(T, GROUPS, dtype=torch.bool).scatter_(
        1, grouped.topk(2, dim=-1).values.sum(-1).topk(TOP_GROUPS, dim=-1).indices, True)
    kept = kept_groups.repeat_interleave(E // GROUPS, dim=1)
    expert_gap = (choice.masked_fill(~chosen, 1e9).min(-1).values
                  - choice.masked_fill(chosen | ~kept, -1e9).max(-1).values).min()
    # Experts the group limit excludes although they outscore a chosen one.
    excluded = ((choice.masked_fill(kept, -1e9).max(-1).values
                 > choice.masked_fill(~chosen, 1e9).min(-1).values).sum())
    # Tokens whose experts the correction bias changes.
    bias = router.e_score_correction_bias.clone()
    with torch.no_grad():
        router.e_score_correction_bias.zero_()
        unbiased = router(x)[2]
        router.e_score_correction_bias.copy_(bias)
    moved = [t for t in range(T) if sorted(unbiased[t].tolist()) != idx[t].tolist()]
    print(f"// tokens whose experts the correction bias changes: {moved}")
    print(f"// margins: groups {float(group_gap):.4f}, experts {float(expert_gap):.4f}; "
          f"tokens where the group limit excludes a better expert: {int(excluded)}")

if __name__ == "__main__":
    main()
