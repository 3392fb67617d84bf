"""Packing rows into a left-padded batch, on hand-made prompts (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cacovid.models.frames import as_frames, evidence_mask
from cacovid.models.packing import normalize_rows, pack_rows
from cacovid.types import EncodedPrompt


def _prompt(L=9, vp=(2, 3, 4, 5), D=3, mrope=False):
    embeds = torch.arange(L * D, dtype=torch.float32).view(L, D)
    pos = torch.arange(L) * 10
    if mrope:
        pos = torch.stack([pos, pos + 1, pos + 2])
    return EncodedPrompt(
        inputs_embeds=embeds,
        position_ids=pos,
        attention_mask=torch.ones(L, dtype=torch.long),
        video_positions=torch.tensor(vp),
        video_grid=(1, 2, 2),
    )


@pytest.mark.parametrize("mrope", [False, True])
def test_left_padding_keeps_original_positions(mrope):
    p = _prompt(mrope=mrope)
    keeps = torch.tensor([[1, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 1]], dtype=torch.bool)
    pad = torch.full((3,), -1.0)
    batch = pack_rows(normalize_rows([(p, k) for k in keeps]), pad)
    assert batch.padded and batch.lengths.tolist() == [7, 9, 6]
    S = 9
    for b, k in enumerate(keeps):
        full = torch.ones(9, dtype=torch.bool)
        full[p.video_positions] = k
        n = int(full.sum())
        assert torch.equal(batch.inputs_embeds[b, S - n :], p.inputs_embeds[full])
        assert torch.all(batch.inputs_embeds[b, : S - n] == -1.0)
        assert batch.attention_mask[b].tolist() == [0] * (S - n) + [1] * n
        assert torch.equal(batch.position_ids[..., b, S - n :], p.position_ids[..., full])
    assert torch.equal(batch.last_positions, p.position_ids[..., -1:].expand(*p.position_ids.shape[:-1], 3))


def test_equal_lengths_are_not_padded_and_prompts_mix():
    p, q = _prompt(), _prompt(L=7, vp=(1, 2, 3, 4))
    k = torch.tensor([1, 0, 1, 0], dtype=torch.bool)
    batch = pack_rows(normalize_rows([(p, k), (p, k.flip(0))]), torch.zeros(3))
    assert not batch.padded and batch.attention_mask.all()
    mixed = pack_rows(normalize_rows([(p, k), (q, k)]), torch.zeros(3))
    assert mixed.lengths.tolist() == [7, 5]
    assert torch.equal(mixed.inputs_embeds[1, 2:], q.inputs_embeds[[0, 1, 3, 5, 6]])


def test_replacement_embeds_go_to_kept_tokens_in_order():
    p = _prompt()
    k = torch.tensor([0, 1, 0, 1], dtype=torch.bool)
    repl = torch.tensor([[100.0, 100, 100], [200, 200, 200]])
    batch = pack_rows(normalize_rows([(p, k, repl), (p, k, None)]), torch.zeros(3))
    # kept sequence: text 0, 1, video idx 1 (pos 3), video idx 3 (pos 5), text 6, 7, 8
    assert torch.equal(batch.inputs_embeds[0, 2], repl[0]) and torch.equal(batch.inputs_embeds[0, 3], repl[1])
    assert torch.equal(batch.inputs_embeds[1, 2], p.inputs_embeds[3])


def test_row_validation():
    p = _prompt()
    with pytest.raises(ValueError, match="no rows"):
        normalize_rows([])
    with pytest.raises(ValueError, match="N=4"):
        normalize_rows([(p, torch.ones(5, dtype=torch.bool))])
    with pytest.raises(ValueError, match="bool"):
        normalize_rows([(p, torch.ones(4, dtype=torch.int64))])
    with pytest.raises(ValueError, match="torch.Tensor"):
        normalize_rows([(p, [True] * 4)])
    with pytest.raises(ValueError, match=r"\(K, D\)"):
        normalize_rows([(p, torch.ones(4, dtype=torch.bool), torch.zeros(3, 3))])
    with pytest.raises(ValueError, match="floating"):
        normalize_rows([(p, torch.ones(4, dtype=torch.bool), torch.zeros(4, 3, dtype=torch.long))])
    with pytest.raises(ValueError, match="EncodedPrompt"):
        normalize_rows([("prompt", torch.ones(4, dtype=torch.bool))])
    with pytest.raises(ValueError, match="same model"):
        normalize_rows(
            [(p, torch.ones(4, dtype=torch.bool)), (_prompt(mrope=True), torch.ones(4, dtype=torch.bool))]
        )


def test_frames_and_evidence_helpers():
    with pytest.raises(ValueError, match="zero frames"):
        as_frames(np.zeros((0, 4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        as_frames(np.full((1, 4, 4, 3), 300))
    assert as_frames(torch.zeros(2, 4, 4, 3, dtype=torch.uint8)).shape == (2, 4, 4, 3)
    assert as_frames([np.zeros((4, 4, 3), np.uint8)] * 3).dtype == np.uint8
    ev = np.zeros((3, 2, 2), dtype=bool)
    ev[2, 1, 1] = True
    assert evidence_mask(None, 3, (2, 2, 2), 2) is None
    merged = evidence_mask(ev, 3, (2, 2, 2), temporal_merge=2)
    assert merged.tolist() == [False] * 7 + [True]
    with pytest.raises(ValueError, match="temporal tokens"):
        evidence_mask(ev, 3, (1, 2, 2), temporal_merge=2)
