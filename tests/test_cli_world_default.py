"""Every command's `--world` starts from `preset=decoys`; runs made on another world are not mixed in.

The world rules themselves (keys without a preset change decoys, `preset=classic` is the classic world
byte for byte, old run files mean classic) are in test_sources.py and test_world_presets.py; here the
commands are run end to end on the embedded toy model.
"""

from __future__ import annotations

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

from cacovid.cli import app
from cacovid.cli.train import _check_same_world
from cacovid.data.synthetic import WorldConfig
from cacovid.data.synthetic.config import DEFAULT_WORLD
from cacovid.train.checkpoint import CHECKPOINT_DIR, STATE_NAME


def _invoke(*args: str):
    n = torch.get_num_threads()
    try:
        return CliRunner().invoke(app, list(args))
    finally:
        torch.set_num_threads(n)


def _text(output: str) -> str:
    """CLI output with rich's box drawing and line wrapping taken out."""
    return " ".join(output.replace("│", " ").split())


def test_the_default_world_is_the_decoys_preset():
    assert DEFAULT_WORLD == "preset=decoys"
    assert WorldConfig().preset_name == "classic"  # the Python API's default is unchanged


@pytest.mark.parametrize(
    ("world", "preset"), [(None, "decoys"), ("preset=classic", "classic"), ("seed_offset=7", None)]
)
def test_eval_records_the_world_it_ran_on(tmp_path, world, preset):
    args = ["eval", "--model", "toy", "--n", "1", "--methods", "random", "--ratios", "0.5"]
    args += ["--no-references", "--no-efficiency", "--no-report", "--device", "cpu", "--out", str(tmp_path)]
    result = _invoke(*args, *(["--world", world] if world else []))
    assert result.exit_code == 0, result.output
    config = WorldConfig.from_dict(json.loads((tmp_path / "run.json").read_text())["world"])
    assert config.preset_name == preset
    if world == "seed_offset=7":  # the decoys world, shifted
        assert config == WorldConfig.preset("decoys").with_overrides("seed_offset=7")


def test_eval_does_not_resume_a_results_folder_of_another_world(tmp_path):
    args = ["eval", "--model", "toy", "--n", "1", "--methods", "random", "--ratios", "0.5"]
    args += ["--no-references", "--no-efficiency", "--no-report", "--device", "cpu", "--out", str(tmp_path)]
    assert _invoke(*args, "--world", "preset=classic").exit_code == 0
    again = _invoke(*args)  # the default world now: decoys
    assert again.exit_code != 0 and "different run (world" in _text(again.output)


def test_toy_eval_runs_on_the_default_world(tmp_path):
    result = _invoke("toy", "eval", "--n", "1", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    world = json.loads((tmp_path / "run.json").read_text())["world"]
    assert WorldConfig.from_dict(world).preset_name == "decoys"


def _fake_run(out, world: WorldConfig) -> None:
    """A `cacovid train` run folder as far as `find_checkpoint` and the world check look."""
    (out / CHECKPOINT_DIR / "policy").mkdir(parents=True)
    (out / CHECKPOINT_DIR / STATE_NAME).write_bytes(b"")
    (out / CHECKPOINT_DIR / "policy" / "model.safetensors").write_bytes(b"")
    (out / "world.json").write_text(json.dumps(world.to_dict()))


def test_train_refuses_to_resume_a_run_of_another_world(tmp_path):
    _fake_run(tmp_path, WorldConfig())  # started without --world when the default was classic
    result = _invoke("train", "--model", "toy", "--out", str(tmp_path), "--n-items", "2", "--val-items", "0")
    assert result.exit_code == 2, result.output
    text = _text(result.output)
    assert "holds a run on another world" in text and "preset=classic" in text


def test_the_world_check_lets_the_same_world_and_fresh_folders_through(tmp_path):
    decoys = WorldConfig.preset("decoys").to_dict()
    _check_same_world(tmp_path / "absent", decoys)  # nothing there yet
    _fake_run(tmp_path / "run", WorldConfig.preset("decoys"))
    _check_same_world(tmp_path / "run", decoys)
    _check_same_world(tmp_path / "run", None)  # a file's items: no world to compare
    with pytest.raises(typer.BadParameter, match="preset=decoys"):
        _check_same_world(tmp_path / "run", WorldConfig().to_dict())
    (tmp_path / "ready").mkdir()
    (tmp_path / "ready" / "world.json").write_text(json.dumps(WorldConfig().to_dict()))
    _check_same_world(tmp_path / "ready", decoys)  # no checkpoint: nothing would be continued
