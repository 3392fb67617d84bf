"""Exporting the world (mp4 + Video-R1 JSON), contact sheets, and the `cacovid world` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cacovid.cli.world import app
from cacovid.data.synthetic import SyntheticWorld, WorldConfig, contact_sheet, export_videor1
from cacovid.data.video import read_video
from cacovid.data.videor1 import load_videor1

SMALL = WorldConfig(frames=8, target_frames=(2, 3))


def test_export_round_trip(tmp_path):
    world = SyntheticWorld(SMALL)
    json_path = export_videor1(world, "val", 5, tmp_path / "export", start=3)
    loaded = load_videor1(json_path)
    assert len(loaded) == 5
    for item, back in zip(world.items("val", 5, start=3), loaded, strict=True):
        assert (back.id, back.problem, back.options, back.solution, back.family) == (
            item.id,
            item.problem,
            item.options,
            item.solution,
            item.family,
        )
        np.testing.assert_array_equal(back.evidence, item.evidence)
        frames = read_video(back.video_path, num_frames=SMALL.frames)
        assert frames.shape == item.frames.shape
        err = np.abs(frames.astype(int) - item.frames.astype(int))
        assert err.mean() < 1.0 and err.max() <= 4
    assert sorted(p.name for p in (tmp_path / "export" / "videos").iterdir())[0] == "val_000003.mp4"


def test_contact_sheet_shows_frames_and_evidence(tmp_path):
    item = SyntheticWorld(SMALL).item("test", 2)
    path = contact_sheet(item, tmp_path / "sheet.png", scale=2, columns=4)
    image = np.asarray(Image.open(path).convert("RGB"))
    # 4 columns of 224 px frames plus gaps; two rows plus a title band.
    assert image.shape[1] == 6 + 4 * (224 + 6)
    assert image.shape[0] > 2 * 224
    # Evidence outlines are drawn in pure green, a colour no object or background uses.
    assert np.all(image == (0, 255, 0), axis=-1).sum() > 8 * int(item.evidence.sum())


def test_contact_sheet_needs_frames(tmp_path):
    item = SyntheticWorld(SMALL).item("test", 0)
    item.frames = None
    with pytest.raises(ValueError, match="no frames"):
        contact_sheet(item, tmp_path / "x.png")


def test_cli_sample_writes_videos_json_and_sheets(tmp_path):
    out = tmp_path / "sample"
    result = CliRunner().invoke(
        app, ["sample", "--out", str(out), "--n", "3", "--split", "val", "--world", "frames=12"]
    )
    assert result.exit_code == 0, result.output
    assert len(list((out / "videos").glob("*.mp4"))) == 3
    assert len(list((out / "sheets").glob("*.png"))) == 3
    items = load_videor1(out / "synthetic_val.json")
    assert [it.id for it in items] == ["synthetic:val:0", "synthetic:val:1", "synthetic:val:2"]
    saved = WorldConfig.from_dict(json.loads((out / "world.json").read_text()))
    # keys without a preset change the default world, decoys
    assert saved == WorldConfig.preset("decoys").with_overrides("frames=12")


def test_cli_sample_of_the_classic_world_is_the_classic_world(tmp_path):
    out = tmp_path / "classic"
    args = ["sample", "--out", str(out), "--n", "1", "--world", "preset=classic,frames=8"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "world.json").read_text()) == WorldConfig(frames=8).to_dict()


def test_cli_stats_prints_a_table(tmp_path):
    world = "preset=classic,families=color:count"
    result = CliRunner().invoke(app, ["stats", "--n", "10", "--world", world])
    assert result.exit_code == 0, result.output
    assert "color" in result.output and "count" in result.output and "motion" not in result.output
    assert "decoy tokens:" not in result.output  # the classic world has no decoys


def test_cli_stats_without_a_world_reports_the_decoys_world():
    result = CliRunner().invoke(app, ["stats", "--n", "8", "--split", "val"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "motion" in out and "color" not in out and "order" not in out  # decoys asks motion only
    assert "decoy tokens:" in out  # and counts the cells of the objects that come and go
    assert f"{WorldConfig.preset('decoys').num_tokens} video tokens per item" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["stats", "--n", "5", "--world", "colour=3"], "unknown world config key"),
        (["stats", "--n", "5", "--world", "families=color"], "preset=classic"),
        (["stats", "--n", "5", "--split", "dev"], "unknown split"),
    ],
)
def test_cli_rejects_bad_options(args, message):
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert message in result.output
