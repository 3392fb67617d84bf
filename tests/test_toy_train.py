"""The toy model's training recipe: its forward is the inference path, and resume is exact."""

from __future__ import annotations

import pytest
import torch

from cacovid.models.llava_onevision import LlavaOneVisionVideoLLM
from cacovid.toy.batching import build_rows
from cacovid.toy.config import ToyTrainConfig
from cacovid.toy.forward import lm_logits_tail, video_features
from cacovid.toy.train import ToyTrainer

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
    )
    base.update(kw)
    return ToyTrainConfig(**base)


@pytest.mark.float_paths
def test_video_features_equal_the_model_path(tmp_path):
    tr = ToyTrainer(_config(tmp_path))
    enc = tr.batcher.encode(tr._items(0))
    with torch.no_grad():
        ours = video_features(tr.model, enc["pixel_values_videos"], train_tower=False)
        theirs = tr.model.model.get_video_features(
            pixel_values_videos=enc["pixel_values_videos"]
        ).pooler_output
    torch.testing.assert_close(ours, theirs)


@pytest.mark.float_paths
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


@pytest.mark.float_paths
def test_query_attention_matches_eager_attention(tmp_path):
    """The recomputed attention row of the grounding loss equals the layer's own eager attention."""
    from cacovid.models.attention import capture_inputs, capture_output, eager_attention
    from cacovid.toy.forward import lm_hidden_tail, query_attention

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


def test_data_workers_do_not_change_training(tmp_path):
    """Batches rendered in worker processes give the same run as batches rendered inline."""
    inline = ToyTrainer(_config(tmp_path / "inline"))
    inline.fit(progress=False)
    workers = ToyTrainer(_config(tmp_path / "workers", workers=2))
    workers.fit(progress=False)
    for (name, a), (_, b) in zip(
        inline.model.state_dict().items(), workers.model.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)


def test_time_budget_fixes_the_schedule_and_resume_keeps_it(tmp_path):
    """--qa-minutes: stage 2's length is set once from the measured pace and stored in the checkpoint."""
    cfg = _config(tmp_path, qa_steps=10_000, qa_minutes=0.01, batch_size=1)
    tr = ToyTrainer(cfg)
    tr.fit(progress=False)
    lo, hi = ToyTrainer._RATE_STEPS
    fixed = tr.cfg.qa_steps
    assert hi <= fixed < 10_000  # 0.6 s of budget: set right after the pace was measured
    assert tr.step == cfg.vision_steps + fixed
    again = ToyTrainer(_config(tmp_path, qa_steps=10_000, qa_minutes=0.01, batch_size=1))
    assert again.cfg.qa_steps == fixed and again.step == tr.step


def test_answer_targets_are_the_option_text_or_the_letter(tmp_path):
    tr = ToyTrainer(_config(tmp_path))
    item = tr._items(0)[0]
    assert item.answer_format == "option"
    tok = tr.batcher.tok
    assert tok.convert_ids_to_tokens(tr.batcher.answer_id(item)) == item.options["ABCD".index(item.solution)]
    letter_world = ToyTrainer(_config(tmp_path / "l", world={"frames": "6", "answer_format": "letter"}))
    letter_item = letter_world._items(0)[0]
    assert tok.convert_ids_to_tokens(letter_world.batcher.answer_id(letter_item)) == letter_item.solution
    assert letter_item.prompt_text().endswith("answer with the letter .")
    assert item.prompt_text().endswith("answer with the option .")


def test_track_labels_count_frames_and_mark_motion_after_the_first_frame():
    from cacovid.data.synthetic import SyntheticWorld, WorldConfig
    from cacovid.toy.losses import _DIRECTION_INDEX, track_labels

    world = SyntheticWorld(WorldConfig(families=("motion", "count")))
    for i in range(6):
        item = world.item("train", i)
        motion, count = track_labels(item)
        T = item.evidence.shape[0]
        target = item.meta["objects"][-1]
        frames = target["frames"]
        per_frame_count = count.reshape(T, -1).max(1).values
        for j, t in enumerate(frames):
            assert per_frame_count[t] == j + 1
        assert per_frame_count.sum() == sum(range(1, len(frames) + 1))  # nothing off the target's frames
        assert ((count > 0) == torch.from_numpy(item.evidence.reshape(-1))).all()
        per_frame_motion = motion.reshape(T, -1).max(1).values
        if item.family == "motion":
            want = _DIRECTION_INDEX[item.meta["answer"]]
            assert per_frame_motion[frames[0]] == 0 and all(per_frame_motion[t] == want for t in frames[1:])
        else:
            assert motion.sum() == 0


def test_init_from_starts_from_saved_weights(tmp_path):
    first = ToyTrainer(_config(tmp_path / "a"))
    first.fit(progress=False)
    path = tmp_path / "w.pt"
    torch.save({"model": first.model.state_dict(), "probe": first.probe.state_dict()}, path)
    second = ToyTrainer(_config(tmp_path / "b", init_from=str(path)))
    assert second.step == 0
    for (name, a), (_, b) in zip(
        first.model.state_dict().items(), second.model.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)


def test_family_weights_pick_families_deterministically(tmp_path):
    from cacovid.toy.batching import _StepBatches

    tr = ToyTrainer(_config(tmp_path, world={"frames": "6", "families": "color:motion:order"}))
    only = _StepBatches(tr.world, tr.batcher, 6, {"motion": 1.0})
    assert {it.family for it in only[3]} == {"motion"}
    mixed = _StepBatches(tr.world, tr.batcher, 6, {"color": 0.5, "order": 0.5})
    first, again = mixed[5], mixed[5]
    assert [it.id for it in first] == [it.id for it in again]
    assert {it.family for it in first} <= {"color", "order"}
    ids = {it.id for s in range(4) for it in mixed[s]}
    assert len(ids) == 24  # no item repeats across slots
    with pytest.raises(ValueError, match="family_weights"):
        _StepBatches(tr.world, tr.batcher, 6, {"count": 1.0})


def _world_items(n: int):
    from cacovid.data.synthetic.world import SyntheticWorld

    return list(SyntheticWorld().items("train", n))


def test_sample_keep_default_keeps_all_evidence():
    from cacovid.toy.batching import sample_keep

    cfg = ToyTrainConfig(full_keep_prob=0.0)
    gen = torch.Generator().manual_seed(0)
    for it in _world_items(6):
        keep = sample_keep(it, cfg, gen)
        ev = torch.from_numpy(it.evidence.reshape(-1).copy())
        assert bool(keep[ev].all())


def test_sample_keep_evidence_dropout_keeps_a_cell_of_every_target():
    import numpy as np

    from cacovid.toy.batching import sample_keep

    cfg = ToyTrainConfig(
        full_keep_prob=0.0, evidence_drop_prob=1.0, evidence_drop_max=1.0, other_keep_max=0.0
    )
    gen = torch.Generator().manual_seed(1)
    dropped_some = False
    for it in _world_items(12):
        keep = sample_keep(it, cfg, gen)
        ev = torch.from_numpy(it.evidence.reshape(-1).copy())
        cells = torch.from_numpy(np.asarray(it.meta["token_object"]).reshape(-1))
        assert not bool(keep[~ev].any())  # nothing but evidence at other_keep_max 0
        dropped_some |= bool((ev & ~keep).any())
        for k, o in enumerate(it.meta["objects"], start=1):
            own = ev & (cells == k)
            if o["role"] == "target" and own.any():
                assert bool(keep[own].any()), f"target {k} of {it.item_id} lost every cell"
    assert dropped_some


def test_sample_keep_object_mode_keeps_whole_objects_per_frame():
    import numpy as np

    from cacovid.toy.batching import sample_keep

    cfg = ToyTrainConfig(full_keep_prob=0.0, object_keep_prob=1.0, other_keep_max=0.0)
    gen = torch.Generator().manual_seed(2)
    partial_video = False
    for it in _world_items(6):
        keep = sample_keep(it, cfg, gen)
        obj = torch.from_numpy(np.asarray(it.meta["token_object"]))  # (T, g, g)
        kept = keep.reshape(obj.shape)
        ev = torch.from_numpy(it.evidence.copy())
        for k, o in enumerate(it.meta["objects"], start=1):
            if o["role"] == "target":
                continue
            per_frame = [kept[t][(obj[t] == k) & ~ev[t]] for t in range(obj.shape[0]) if (obj[t] == k).any()]
            for cells in per_frame:
                assert bool(cells.all()) or not bool(cells.any())  # all of its cells or none
            shown = [bool(c.any()) for c in per_frame if c.numel()]
            partial_video |= any(shown) and not all(shown)
    assert partial_video  # some object is kept in some frames only


def test_sample_keep_without_the_options_draws_what_it_drew_before():
    # The robustness options draw from the generator only when switched on, so a run without them
    # (and a resumed older run) keeps the old random stream: evidence + `share` of the rest.
    import numpy as np

    from cacovid.toy.batching import sample_keep

    cfg = ToyTrainConfig(full_keep_prob=0.0)
    for it in _world_items(3):
        gen, ref = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        keep = sample_keep(it, cfg, gen)
        torch.rand((), generator=ref)  # the full-keep draw
        ev = torch.from_numpy(np.ascontiguousarray(it.evidence)).reshape(-1)
        share = torch.rand((), generator=ref).item() * cfg.other_keep_max
        assert torch.equal(keep, (torch.rand(ev.shape, generator=ref) < share) | ev)
        assert torch.equal(gen.get_state(), ref.get_state())


def test_track_labels_cover_decoys():
    from cacovid.data.synthetic import SyntheticWorld, WorldConfig
    from cacovid.toy.losses import _DIRECTION_INDEX, track_labels

    item = SyntheticWorld(WorldConfig.preset("decoys")).item("train", 0)
    motion, count = track_labels(item)
    cells = item.meta["token_object"].reshape(-1)
    for k, o in enumerate(item.meta["objects"], start=1):
        own = torch.from_numpy(cells == k)
        if o["role"] == "decoy" and own.any():
            labelled = motion[own]
            assert set(labelled.tolist()) <= {0, _DIRECTION_INDEX[o["direction"]]}
            assert (count[own] > 0).all()
        elif o["role"] in ("salient", "distractor"):
            assert (count[own] == 0).all()


def test_mix_worlds_draw_one_world_per_step_deterministically(tmp_path):
    from cacovid.toy.batching import _StepBatches

    tr = ToyTrainer(_config(tmp_path))
    mix = {"frames=6": 1.0, "preset=decoys,frames=8,target_frames=2:4": 1.0}
    data = _StepBatches(tr.world, tr.batcher, 2, mix_worlds=mix)
    frames = [data[s][0].frames.shape[0] for s in range(12)]
    assert set(frames) == {6, 8}
    assert frames == [data[s][0].frames.shape[0] for s in range(12)]  # a pure function of the step
    assert all(len({it.frames.shape[0] for it in data[s]}) == 1 for s in range(6))  # one world a batch
    with pytest.raises(ValueError, match="mix_worlds"):
        _StepBatches(tr.world, tr.batcher, 2, mix_worlds={"frames=6": 0.0})
    tr2 = ToyTrainer(
        _config(tmp_path / "mix", mix_worlds=mix, val_worlds=["preset=decoys,frames=8,target_frames=2:4"])
    )
    tr2.fit(progress=False)  # steps on both worlds
    val = tr2.validate_all(4)
    assert {"full", "preset=decoys,frames=8,target_frames=2:4/full"} <= set(val)


def test_init_from_an_exported_checkpoint_folder(tmp_path):
    first = ToyTrainer(_config(tmp_path / "a"))
    first.model.save_pretrained(tmp_path / "export")
    second = ToyTrainer(
        _config(tmp_path / "b", init_from=str(tmp_path / "export"), aux_weight=0.0, track_weight=0.0)
    )
    for (name, a), (_, b) in zip(
        first.model.state_dict().items(), second.model.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)


def test_init_from_an_export_warns_about_the_fresh_probe_unless_its_losses_are_off(tmp_path):
    """An export has no auxiliary probe; its random heads must not steer a fine-tune unannounced."""
    import warnings

    first = ToyTrainer(_config(tmp_path / "a"))
    first.model.save_pretrained(tmp_path / "export")
    with pytest.warns(UserWarning, match="without the auxiliary probe"):
        ToyTrainer(_config(tmp_path / "b", init_from=str(tmp_path / "export")))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = ToyTrainer(
            _config(tmp_path / "c", init_from=str(tmp_path / "export"), aux_weight=0.0, track_weight=0.0)
        )
    quiet.train_step(quiet.cfg.vision_steps)  # a stage-2 step: the probe's losses weigh nothing
    for name, p in quiet.probe.named_parameters():
        assert p.grad is None or not p.grad.any(), name


def test_mix_worlds_option_is_parsed_and_checked():
    import typer

    from cacovid.cli.toy import _parse_mix

    assert _parse_mix("preset=classic@1;preset=decoys,frames=32@2") == {
        "preset=classic": 1.0,
        "preset=decoys,frames=32": 2.0,
    }
    assert _parse_mix(" ") is None
    for bad, message in (("preset=decoys", "WORLD@WEIGHT"), ("preset=nope@1", "unknown world preset")):
        with pytest.raises(typer.BadParameter, match=message):
            _parse_mix(bad)


def test_toy_training_worlds_start_from_the_classic_world(tmp_path):
    """`cacovid toy train` keeps classic as the world its keys change (TOY_TRAIN_PRESET), unlike every
    other command's decoys default: a checkpoint stores the overrides, so `{}` must keep meaning classic."""
    from cacovid.cli.toy import _parse_mix
    from cacovid.data.synthetic import WorldConfig

    assert ToyTrainer(_config(tmp_path)).world.config == WorldConfig(frames=6)
    assert ToyTrainer(_config(tmp_path / "none", world={})).world.config == WorldConfig()
    # frames=6 and families=color would be refused on decoys (targets show for 6-10 frames; motion only)
    assert _parse_mix("frames=6@1;families=color@1") == {"frames=6": 1.0, "families=color": 1.0}
