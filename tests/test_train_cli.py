"""`cacovid train`'s options are derived from `RunOptions` and `TrainConfig`, and what training logs is
documented (docs/result-files.md)."""

from __future__ import annotations

import dataclasses
import doctest
import json
import re
from pathlib import Path

import torch
from typer.testing import CliRunner

from cacovid.cli.train import RunOptions, app
from cacovid.train import trainer as trainer_module
from cacovid.train.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent


def _help_options() -> set[str]:
    res = CliRunner().invoke(app, ["--help"], terminal_width=200, env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    return set(re.findall(r"--[a-z][a-z0-9-]*", res.output))


def _flags(f: dataclasses.Field) -> list[str]:
    """The flags a field should get: its own spelling, or --name (and --no-name for a switch)."""
    if "flags" in f.metadata:
        return f.metadata["flags"].split("/")
    name = "--" + f.name.replace("_", "-")
    return [name, "--no-" + name[2:]] if isinstance(f.default, bool) else [name]


def test_every_field_is_an_option_and_no_option_has_a_default_of_its_own():
    shown = _help_options()
    fields = [*dataclasses.fields(RunOptions), *dataclasses.fields(TrainConfig)]
    for f in fields:
        for flag in _flags(f):
            assert flag in shown, flag
        assert f.metadata.get("help"), f"{f.name} has no help"
    extra = shown - {flag for f in fields for flag in _flags(f)}
    assert extra <= {"--config", "--print-config", "--help"}, extra
    # The command's parameters all default to None ("not given"): defaults live in the dataclasses.
    import inspect

    from cacovid.cli.train import train

    params = inspect.signature(train).parameters
    for name in (f.name for f in fields):
        assert params[name].default.default is None, name


def test_print_config_shows_the_dataclass_defaults():
    res = CliRunner().invoke(app, ["--print-config"])
    assert res.exit_code == 0, res.output
    shown = json.loads(res.stdout)
    assert shown["train_config"] == TrainConfig().to_dict()
    assert shown["run"] == dataclasses.asdict(RunOptions())


def test_one_validation_rule_from_command_line_recipe_and_python(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="ratio_min <= ratio"):
        TrainConfig(ratio=0.5)
    res = CliRunner().invoke(app, ["--ratio", "0.5", "--print-config"])
    assert res.exit_code != 0 and "ratio_min <= ratio" in " ".join(res.output.split())
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"ratio": 0.5}))
    res = CliRunner().invoke(app, ["--config", str(recipe), "--print-config"])
    assert res.exit_code != 0 and "ratio_min <= ratio" in " ".join(res.output.split())


def test_every_logged_key_is_documented(tmp_path):
    import cacovid
    from cacovid.data.synthetic import SyntheticWorld, WorldConfig
    from cacovid.policy import CaCoVIDPolicy
    from cacovid.train.trainer import Trainer

    torch.set_num_threads(1)
    adapter = cacovid.load_model("toy")
    world = SyntheticWorld(WorldConfig.preset("decoys"))
    items = [world.item("train", i) for i in range(4)]
    vals = [world.item("val", i) for i in range(2)]
    config = TrainConfig(group_size=4, iterations=1, val_every=2, val_ratios=(0.1,), checkpoint_every=2)
    policy = CaCoVIDPolicy.from_host(adapter, seed=0)
    Trainer(adapter, policy, config, items, vals, tmp_path / "run", progress=False).fit(stop_at=2)
    Trainer(adapter, policy, config, items, vals, tmp_path / "run", progress=False).fit()
    lines = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert {x["event"] for x in lines} >= {"filter", "item", "val", "resume", "done"}
    doc = (ROOT / "docs" / "result-files.md").read_text()
    section = doc[doc.index("## Training runs: log.jsonl") :]
    for line in lines:
        for key in line:
            assert f"`{key}`" in section, f"log.jsonl key {key!r} is not documented"


def test_the_trainer_docstring_example_runs():
    globs = {"TrainConfig": TrainConfig, "Trainer": trainer_module.Trainer}
    finder = doctest.DocTestFinder()
    (test,) = [t for t in finder.find(trainer_module.Trainer, "Trainer", globs=globs) if t.examples]
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.failures == 0 and runner.tries >= 5
