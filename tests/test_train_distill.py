"""Distillation warm start: targets, loss values, learning, exact resume, and bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cacovid.data.sources import synthetic_source
from cacovid.policy import CaCoVIDPolicy
from cacovid.train.distill import (
    DistillConfig,
    _Teacher,
    attention_targets,
    distill_loss,
    distill_policy,
    evidence_targets,
    validate,
)

WORLD = "preset=decoys,frames=4,target_frames=2:3"


def test_attention_targets_sharpen_and_normalise():
    a = torch.tensor([0.1, 0.2, 0.7])
    assert torch.allclose(attention_targets(a), a / a.sum())
    sharp = attention_targets(a, temperature=0.5)
    assert torch.allclose(sharp, a**2 / (a**2).sum()) and sharp[2] > a[2]
    assert torch.allclose(attention_targets(torch.zeros(4)), torch.full((4,), 0.25))
    with pytest.raises(ValueError, match="non-empty"):
        attention_targets(torch.zeros(2, 2))


def test_distill_loss_hand_values():
    target = torch.tensor([0.5, 0.5, 0.0, 0.0])  # two frames of two tokens; all mass in frame 0
    flat = distill_loss(torch.zeros(4), torch.zeros(2), target, frame_weight=0.5)
    assert flat.item() == pytest.approx(math.log(4) + 0.5 * math.log(2))
    peaked = distill_loss(torch.tensor([9.0, 9.0, -9.0, -9.0]), torch.tensor([9.0, -9.0]), target, 0.5)
    assert peaked.item() == pytest.approx(math.log(2), abs=1e-3)  # the target's own entropy
    with pytest.raises(ValueError, match="shapes do not fit"):
        distill_loss(torch.zeros(5), torch.zeros(2), torch.full((5,), 0.2), 0.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs"),
        ({"temperature": 0.0}, "temperature"),
        ({"val_ratio": 1.5}, "val_ratio"),
        ({"teacher": "oracle"}, "unknown distill teacher 'oracle'"),
    ],
)
def test_bad_config_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DistillConfig(**kwargs)


def _items(n: int):
    return synthetic_source(WORLD, "train", n).sequence


def test_distillation_moves_the_policy_toward_the_teacher(llava_llm, tmp_path):
    items = _items(2)
    policy = CaCoVIDPolicy.from_host(llava_llm, seed=0)
    # a random host attends almost evenly: a low temperature makes its preferences a real target
    config = DistillConfig(layer=1, temperature=0.005, epochs=12, batch_size=2, lr=1e-2, val_every=12)
    distill_policy(policy, llava_llm, items, tmp_path, config, val_items=items)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(log) == 12 and log[-1]["loss"] < log[0]["loss"] - 0.2
    assert 0.0 <= log[-1]["val"]["teacher_agreement"] <= 1.0 and "evidence_recall" in log[-1]["val"]
    saved = CaCoVIDPolicy.from_pretrained(tmp_path / "policy", host=llava_llm)
    for (name, a), (_, b) in zip(policy.state_dict().items(), saved.state_dict().items(), strict=True):
        torch.testing.assert_close(a.cpu(), b, msg=name)


class _Stop(Exception):
    pass


def _stop_after(n: int):
    def on_step(record: dict) -> None:
        if record["step"] == n:
            raise _Stop

    return on_step


def test_evidence_teacher_targets_the_evidence_and_learns_it(llava_llm, tmp_path):
    items = _items(2)
    prompt = llava_llm.encode_item(items[0])
    target = evidence_targets(prompt, items[0].id)
    ev = prompt.evidence_mask.cpu().bool()
    assert torch.allclose(target[ev], torch.full((int(ev.sum()),), 1.0 / int(ev.sum())))
    assert float(target[~ev].abs().sum()) == 0.0 and target.sum().item() == pytest.approx(1.0)
    blank = llava_llm.encode_item(items[0])
    blank.evidence_mask = None
    with pytest.raises(ValueError, match="no evidence annotation"):
        evidence_targets(blank, "x-1")
    policy = CaCoVIDPolicy.from_host(llava_llm, seed=0)
    config = DistillConfig(teacher="evidence", epochs=12, batch_size=2, lr=1e-2, val_every=12, val_ratio=0.25)
    before = validate(policy, _Teacher(llava_llm, config), items, 0.25)["evidence_recall"]
    distill_policy(policy, llava_llm, items, tmp_path, config, val_items=items)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"] - 0.2
    # on the evidence teacher, agreement with its top-K is evidence recall by another name
    assert log[-1]["val"]["evidence_recall"] > before + 0.2


def test_resume_continues_exactly(llava_llm, tmp_path):
    items = _items(4)
    config = DistillConfig(layer=1, temperature=0.005, epochs=2, batch_size=2, checkpoint_every=1)
    fresh = lambda: CaCoVIDPolicy.from_host(llava_llm, seed=0)  # noqa: E731
    straight = distill_policy(fresh(), llava_llm, items, tmp_path / "a", config)
    with pytest.raises(_Stop):  # a run killed after its third step (checkpointed at step 2)
        distill_policy(fresh(), llava_llm, items, tmp_path / "b", config, on_step=_stop_after(3))
    resumed = distill_policy(fresh(), llava_llm, items, tmp_path / "b", config)
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    lines = (tmp_path / "b" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="other settings or items"):
        distill_policy(fresh(), llava_llm, items[:3], tmp_path / "b", config)


def test_no_items_is_an_error(llava_llm, tmp_path):
    with pytest.raises(ValueError, match="no items"):
        distill_policy(CaCoVIDPolicy.from_host(llava_llm), llava_llm, [], tmp_path)


def test_cli_distill_writes_a_policy_and_names_bad_input(tmp_path):
    from typer.testing import CliRunner

    from cacovid.cli import app

    args = ["distill", "--model", "toy", "--world", WORLD, "--n-items", "2", "--val-items", "1"]
    n_threads = torch.get_num_threads()
    try:
        result = CliRunner().invoke(
            app,
            [
                *args,
                "--batch-size",
                "2",
                "--question-match-dim",
                "4",
                "--out",
                str(tmp_path),
                "--threads",
                "1",
            ],
        )
        assert result.exit_code == 0, result.output
        assert (tmp_path / "policy" / "model.safetensors").is_file()
        assert json.loads((tmp_path / "policy" / "config.json").read_text())["question_match_dim"] == 4
        bad = CliRunner().invoke(app, [*args, "--layer", "9", "--out", str(tmp_path / "bad")])
        assert bad.exit_code != 0 and "decoder layers" in bad.output
        missing = CliRunner().invoke(
            app, [*args, "--init-policy", str(tmp_path / "nope"), "--out", str(tmp_path / "m")]
        )
        assert missing.exit_code != 0 and "no saved policy" in missing.output
        teacher = CliRunner().invoke(app, [*args, "--teacher", "oracle", "--out", str(tmp_path / "t")])
        assert teacher.exit_code != 0 and "unknown distill teacher" in teacher.output
    finally:
        torch.set_num_threads(n_threads)
