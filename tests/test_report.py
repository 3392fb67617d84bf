"""Tests for reports: markdown table layout, the accuracy plot, token heat-maps (pixel-checked)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cacovid.evaluate import (
    EvalConfig,
    build_methods,
    build_report,
    measure_efficiency,
    parse_methods,
    run_evaluation,
    synthetic_source,
)
from cacovid.evaluate.heatmap import DIM, EVIDENCE_RGB, frame_for_token_step, method_strip, render_tile
from cacovid.evaluate.report import accuracy_table

torch.set_num_threads(1)

WORLD = "frames=4,target_frames=1:2"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A real small results directory: tiny random LLaVA-OV, 2 items, 3 methods, 2 ratios."""
    from cacovid.data.synthetic import VOCABULARY
    from cacovid.models import LlavaOneVisionVideoLLM
    from cacovid.testing.tiny import tiny_llava_onevision

    model, processor = tiny_llava_onevision(
        list(VOCABULARY), text_hidden=64, text_layers=2, vision_hidden=32, vision_layers=1, seed=5
    )
    adapter = LlavaOneVisionVideoLLM(model, processor, name_or_path="tiny-llava")
    out = tmp_path_factory.mktemp("results")
    source = synthetic_source(WORLD, "test", 2)
    methods = build_methods(parse_methods("random,uniform,fastv"), adapter)
    run_evaluation(adapter, source, methods, out, EvalConfig(ratios=(0.25, 0.1)))
    items = list(source.items())[:1]
    measure_efficiency(adapter, items, methods, (0.25, 0.1), repeats=1, warmup=0, out=out)
    return out


def test_report_renders_markdown_and_pngs(results, tmp_path):
    files = build_report(results, tmp_path / "report", n_heatmap_items=1)
    md = files.markdown.read_text()
    assert "| Method | Retention | color | motion | Avg. | % of full | Ev. recall |" in md
    assert "Prefill speed-up" in md and "## Efficiency" in md
    for name in ("*full*", "*blind*", "*oracle*", "random", "uniform", "fastv†"):
        assert f"| {name} |" in md
    assert "**Retention 25%**" in md and "**Retention 10%**" in md
    assert "FLOP-eq.)" in md and "† FastV-style" in md
    # the table's blocks come in order: references, 25 %, 10 %
    assert md.index("| *full* |") < md.index("**Retention 25%**") < md.index("**Retention 10%**")

    plot = Image.open(files.plot)
    assert plot.format == "PNG" and plot.size[0] > 400 and plot.size[1] > 300
    # one heat-map per ratio for the chosen item; rows for oracle, fastv, random, uniform
    assert [p.name for p in files.heatmaps] == [
        "heatmap_synthetic_test_0_r0250.png",
        "heatmap_synthetic_test_0_r0100.png",
    ]
    for p in files.heatmaps:
        img = np.asarray(Image.open(p).convert("RGB")).astype(int)
        assert img.shape[0] > 300 and img.shape[1] > 300
        red = (np.abs(img - EVIDENCE_RGB.astype(int)).sum(-1) < 60).sum()
        assert red > 50  # evidence outlines are drawn
        assert f"![{p.stem}]({p.name})" in md


def test_report_without_efficiency_or_frames(results, tmp_path):
    # Copy the results without efficiency.json and with an unknown dataset: the table has no
    # speed-up column and heat-maps fall back to a grey background.
    for name in ("summary.json", "items.jsonl"):
        (tmp_path / name).write_bytes((results / name).read_bytes())
    run = json.loads((results / "run.json").read_text())
    run["dataset"] = "elsewhere:gone"
    (tmp_path / "run.json").write_text(json.dumps(run))
    files = build_report(tmp_path, n_heatmap_items=1)
    md = files.markdown.read_text()
    assert "Prefill speed-up" not in md and "## Efficiency" not in md
    assert len(files.heatmaps) == 2


def test_accuracy_table_numbers():
    summary = {
        "families": ["color"],
        "rows": [
            {
                "method": "full",
                "ratio": 1.0,
                "accuracy": 0.8,
                "pct_of_full": 100.0,
                "per_family": {"color": 0.8},
            },
            {
                "method": "uniform",
                "ratio": 0.25,
                "accuracy": 0.4,
                "pct_of_full": 50.0,
                "per_family": {"color": 0.4},
            },
        ],
    }
    table = accuracy_table(summary)
    assert "| *full* | 100% | 80.0 | **80.0** | 100.0 |" in table
    assert "| uniform | 25% | 40.0 | **40.0** | 50.0 |" in table


def test_tile_pixels():
    frame = np.full((14, 14, 3), 200, dtype=np.uint8)
    kept = np.zeros((7, 7), bool)
    kept[0, 0] = True
    ev = np.zeros((7, 7), bool)
    ev[6, 6] = True
    tile = render_tile(frame, kept, ev)
    assert (tile[0:2, 0:2] == 200).all()  # kept cell at full brightness
    assert (tile[4:6, 4:6] == int(200 * DIM)).all()  # dropped cell dimmed
    assert (tile[13, 13] == EVIDENCE_RGB).all()  # evidence cell outlined


def test_strip_layout_and_temporal_merge():
    frames = np.stack([np.full((14, 14, 3), 10 * (i + 1), np.uint8) for i in range(4)])
    keep = np.ones(2 * 7 * 7, bool)  # 2 token steps over 4 frames (Qwen-style temporal merge)
    strip = method_strip(frames, keep, None, (2, 7, 7))
    assert strip.shape == (14, 2 * 14 + 3, 3)
    assert strip[0, 0, 0] == 10 and strip[0, 17, 0] == 30  # steps show frames 0 and 2
    assert [frame_for_token_step(4, 2, t) for t in range(2)] == [0, 2]
