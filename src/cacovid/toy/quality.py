"""The toy model's quick quality check, shared by its export step and the shipped-weights test.

Greedy first-token accuracy (first token of the answer in the item's answer format) on the first
test items with all, none and only the evidence video tokens: cheap (one batched forward per
item), deterministic, and enough to catch a broken checkpoint.
"""

from __future__ import annotations

import torch

from cacovid.data.synthetic import SyntheticWorld

# The quality bar of the embedded model: full ≥ 85 %, blind ≤ 35 %, evidence only ≥ 80 %.
QUALITY_BAR = {"full": (">=", 0.85), "blind": ("<=", 0.35), "oracle": (">=", 0.80)}


@torch.no_grad()
def quick_quality(adapter, n: int = 100, split: str = "test") -> dict[str, float]:
    """{"full", "blind", "oracle"} accuracies of `adapter` on the first `n` items of the default world."""
    tok = adapter.tokenizer
    hits: dict[str, list[bool]] = {"full": [], "blind": [], "oracle": []}
    for item in SyntheticWorld().items(split, n):
        prompt = adapter.encode_item(item)
        n_tok = prompt.num_video_tokens
        keeps = {
            "full": torch.ones(n_tok, dtype=torch.bool),
            "blind": torch.zeros(n_tok, dtype=torch.bool),
            "oracle": prompt.evidence_mask.clone(),
        }
        want = tok(item.answer_text, add_special_tokens=False)["input_ids"][0]
        logits = adapter.next_token_logits_rows([(prompt, k) for k in keeps.values()])
        for name, row in zip(keeps, logits, strict=True):
            hits[name].append(int(row.argmax()) == want)
    return {name: sum(v) / len(v) for name, v in hits.items()}


def meets_bar(quality: dict[str, float]) -> bool:
    return all(quality[k] >= v if op == ">=" else quality[k] <= v for k, (op, v) in QUALITY_BAR.items())
