"""The toy model's training recipe: its forward is the inference path, and resume is exact."""

from __future__ import annotations

import torch

from cacovid.models.llava_onevision import LlavaOneVisionVideoLLM
from cacovid.toy.train import ToyTrainConfig, ToyTrainer, build_rows, lm_logits_tail, video_features

SMALL_MODEL = {
    "text_hidden": 32,
    "text_layers": 2,
    "heads": 2,
    "kv_heads": 1,
    "vision_hidden": 32,
    "vision_layers": 1,
}


def _config(tmp_path, **kw) -> ToyTrainConfig:
    base = dict(
        out_dir=str(tmp_path),
        world={"frames": "6"},
        model=SMALL_MODEL,
        vision_steps=2,
        qa_steps=2,
        batch_size=2,
        val_every=1000,
        checkpoint_every=1,
        threads=1,
        warmup=1,
        attn_layer=1,
        option_attn_layer=1,
    )
    base.update(kw)
    return ToyTrainConfig(**base)


def test_video_features_equal_the_model_path(tmp_path):
    tr = ToyTrainer(_config(tmp_path))
    enc = tr.batcher.encode(tr._items(0))
    with torch.no_grad():
        ours = video_features(tr.model, enc["pixel_values_videos"], train_tower=False)
        theirs = tr.model.model.get_video_features(
            pixel_values_videos=enc["pixel_values_videos"]
        ).pooler_output
    torch.testing.assert_close(ours, theirs)


def test_training_forward_matches_the_adapter_on_pruned_prompts(tmp_path):
    """Training rows (pruned, left-padded, original positions) give the adapter's next-token logits."""
    tr = ToyTrainer(_config(tmp_path))
    tr.model.eval()
    items = tr._items(1)
    enc = tr.batcher.encode(items)
    adapter = LlavaOneVisionVideoLLM(tr.model, tr.processor)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        feats = video_features(tr.model, enc["pixel_values_videos"], train_tower=False)
        n = feats.shape[1] - 1
        keeps = [torch.rand(n, generator=gen) < 0.3, torch.rand(n, generator=gen) < 0.7]
        x, mask, pid = build_rows(tr.model, tr.batcher, items, enc["ids"], keeps, feats, with_answer=False)
        ours = lm_logits_tail(tr.model, x, mask, pid, 1)[:, 0]
        prompts = [adapter.encode_item(it) for it in items]
        theirs = adapter.next_token_logits_rows([(p, k) for p, k in zip(prompts, keeps, strict=True)])
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_resume_is_exact(tmp_path):
    straight = ToyTrainer(_config(tmp_path / "a"))
    straight.fit(progress=False)
    first = ToyTrainer(_config(tmp_path / "b", qa_steps=2))
    first.cfg.qa_steps = 0  # "crash" after the vision stage (checkpoint written every step)
    first.fit(progress=False)
    assert first.step == 2
    resumed = ToyTrainer(_config(tmp_path / "b"))
    assert resumed.step == 2
    resumed.fit(progress=False)
    for (name, a), (_, b) in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)
    assert straight.step == resumed.step == 4


def test_query_attention_matches_eager_attention(tmp_path):
    """The recomputed attention row of the grounding loss equals the layer's own eager attention."""
    from cacovid.models.attention import capture_inputs, capture_output, eager_attention
    from cacovid.toy.train import lm_hidden_tail, query_attention

    tr = ToyTrainer(_config(tmp_path))
    items = tr._items(0)
    enc = tr.batcher.encode(items)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        feats = video_features(tr.model, enc["pixel_values_videos"], train_tower=False)
        n = feats.shape[1] - 1
        keeps = [torch.rand(n, generator=gen) < 0.3, None]  # rows of different lengths: left padding
        x, mask, pid = build_rows(tr.model, tr.batcher, items, enc["ids"], keeps, feats, with_answer=True)
        lm = tr.model.model.language_model
        attn = lm.layers[1].self_attn
        with eager_attention(lm), capture_output(attn, index=1) as ref, capture_inputs(attn) as inp:
            lm_hidden_tail(tr.model, x, mask, pid, 2)
        ours = query_attention(attn, *inp[-1], mask, query=-2)
    theirs = ref[-1][:, :, -2, :]
    valid = mask.bool()[:, None, :].expand_as(theirs)
    torch.testing.assert_close(ours[valid], theirs[valid], atol=1e-5, rtol=1e-4)
