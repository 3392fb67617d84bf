"""docs/real-models.md runs: every command of its bash blocks, in order, on a tiny LLaVA-OneVision saved
as a checkpoint folder and on synthetic videos exported as Video-R1 files.

Only what cannot exist in a test is swapped: the checkpoint name for the tiny folder, the `/data/…`
paths for the exported files, `--device cuda` for the CPU, and lmms-eval's `--tasks videomme` for a
local task over the exported test questions (tests/lmms_eval_task.py). Every swapped text must appear
in the page, so the page and this test move together. `pip install "cacovid[eval]"` is checked
against the installed package's metadata (the extra exists and names lmms-eval); the lmms-eval
commands run when lmms-eval is installed.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_SIZES
from lmms_eval_task import TASK, write_task
from typer.testing import CliRunner

from cacovid.cli import app
from cacovid.data.synthetic import VOCABULARY, SyntheticWorld, WorldConfig, export_videor1
from cacovid.testing.tiny import tiny_llava_onevision

DOC = Path(__file__).resolve().parents[1] / "docs" / "real-models.md"
CHECKPOINT = "llava-hf/llava-onevision-qwen2-7b-ov-hf"


def doc_commands() -> list[str]:
    """The commands of the page's bash blocks, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    text = "\n".join(blocks).replace("\\\n", " ")
    return [line.split(" #")[0].strip() for line in text.splitlines() if line.strip()]


def _export(world: SyntheticWorld, split: str, n: int, folder: Path, name: str) -> Path:
    path = export_videor1(world, split, n, folder)
    return path.rename(folder / name)


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    """tmp/tiny-llava (checkpoint), tmp/data/video-r1/{train,val}.json, tmp/data/eval/test.json."""
    model, processor = tiny_llava_onevision(VOCABULARY, seed=0, **TINY_SIZES)
    model.save_pretrained(tmp_path / "tiny-llava")
    processor.save_pretrained(tmp_path / "tiny-llava")
    world = SyntheticWorld(WorldConfig(frames=8))
    _export(world, "train", 6, tmp_path / "data" / "video-r1", "train.json")
    _export(world, "val", 4, tmp_path / "data" / "video-r1", "val.json")
    test = _export(world, "test", 4, tmp_path / "data" / "eval", "test.json")
    write_task(test, tmp_path / "lmms-task", max_new_tokens=16)
    monkeypatch.chdir(tmp_path)  # runs/… in the page lands in tmp_path
    return tmp_path


def _swap(args: list[str], root: Path) -> list[str]:
    out = []
    for arg in args:
        arg = arg.replace(CHECKPOINT, str(root / "tiny-llava")).replace("/data/", f"{root}/data/")
        out.append(arg)
    for i, arg in enumerate(out[:-1]):
        if arg == "--device" and out[i + 1] == "cuda":
            out[i + 1] = "cpu"
        if arg == "--tasks" and out[i + 1] == "videomme":
            out[i + 1] = TASK
            out += ["--include_path", str(root / "lmms-task")]
    return out


def _check_extra() -> None:
    requires = importlib.metadata.requires("cacovid") or []
    assert any(r.startswith("lmms-eval") and 'extra == "eval"' in r for r in requires), requires


@pytest.mark.slow
def test_every_command_of_the_page_runs(workspace):
    commands = doc_commands()
    text = DOC.read_text(encoding="utf-8")
    for needed in (CHECKPOINT, "/data/video-r1/train.json", "--device cuda", "--tasks videomme"):
        assert needed in text, f"docs/real-models.md no longer holds {needed!r}: update this test"
    have_lmms_eval = importlib.util.find_spec("lmms_eval") is not None
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env["LMMS_EVAL_DATASETS_CACHE"] = str(workspace / "datasets-cache")
    ran = []
    for command in commands:
        args = shlex.split(command)
        if args[:2] == ["pip", "install"]:
            assert args[2:] == ["cacovid[eval]"], command
            _check_extra()
            ran.append("pip")
        elif args[0] == "cacovid":
            res = CliRunner().invoke(app, _swap(args[1:], workspace))
            assert res.exit_code == 0, f"{command}\n{res.output}"
            ran.append(args[1])
        elif args[:3] == ["python", "-m", "lmms_eval"]:
            ran.append("lmms_eval")
            if not have_lmms_eval:
                continue
            swapped = [sys.executable, *_swap(args[1:], workspace)]
            res = subprocess.run(swapped, capture_output=True, text=True, env=env, timeout=600)
            assert res.returncode == 0, f"{command}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
            out = workspace / args[args.index("--output_path") + 1]
            results = [p for p in out.rglob("*results*.json")]
            assert results, f"{command}: no results under {out}"
            scores = json.loads(results[0].read_text())["results"][TASK]
            assert 0.0 <= scores["accuracy,none"] <= 1.0
        else:
            raise AssertionError(f"docs/real-models.md: no test runs {command!r}")
    assert ran == [
        "pip",
        "filter",
        "train",
        "tune-selection",
        "train",  # the same with pooled scoring
        "eval",
        "report",
        "lmms_eval",
        "lmms_eval",
    ]

    filtered = workspace / "data" / "video-r1" / "train.blind-filtered.json"
    summary = json.loads(filtered.with_name("train.blind-filtered.summary.json").read_text())
    assert summary["kept"] == len(json.loads(filtered.read_text())) > 0
    policy = workspace / "runs" / "llava-ov-7b" / "cacovid" / "policy"
    assert (policy / "model.safetensors").is_file() and (policy / "selection.json").is_file()
    pooled = json.loads((policy.parents[1] / "cacovid-pool2" / "policy" / "config.json").read_text())
    assert pooled["pool_size"] == 2 and json.loads((policy / "config.json").read_text())["pool_size"] == 1
    rows = json.loads((workspace / "runs" / "llava-ov-7b" / "eval" / "summary.json").read_text())["rows"]
    assert {r["method"] for r in rows} >= {"full", "blind", "cacovid", "divprune", "vidcom2", "uniform"}
    report = (workspace / "runs" / "llava-ov-7b" / "eval" / "report.md").read_text()
    assert "LLaVA-OneVision-7B, 32 frames, bfloat16." in report
    shutil.rmtree(workspace / "datasets-cache", ignore_errors=True)
