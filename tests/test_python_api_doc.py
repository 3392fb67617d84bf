"""docs/python-api.md runs: its `cacovid import-official` command and its Python blocks, in order, on
tiny models of both families saved as checkpoint folders, with the real checkpoint names, paths and
device swapped for test ones. Every swapped line must appear in the page exactly once, so the page
and this test move together."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import typer
from conftest import TINY_SIZES, TINY_WORDS
from test_import_official import write_release
from typer.testing import CliRunner

from cacovid.cli.import_official import import_official_command
from cacovid.data.video import write_video
from cacovid.testing.tiny import tiny_llava_onevision, tiny_qwen2_5_vl

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"
LLAVA = "llava-hf/llava-onevision-qwen2-7b-ov-hf"
QWEN = "Qwen/Qwen2.5-VL-7B-Instruct"


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), flags=re.S)


def _swap(code: str, old: str, new: str) -> str:
    assert code.count(old) == 1, f"docs/python-api.md must hold {old!r} once"
    return code.replace(old, new)


@pytest.mark.slow
def test_the_page_runs_on_tiny_models(tmp_path, monkeypatch, capsys):
    llava, llava_proc = tiny_llava_onevision(TINY_WORDS, seed=0, **TINY_SIZES)
    llava.save_pretrained(tmp_path / "llava")
    llava_proc.save_pretrained(tmp_path / "llava")
    qwen, qwen_proc = tiny_qwen2_5_vl(TINY_WORDS, seed=0, **TINY_SIZES)
    qwen.save_pretrained(tmp_path / "qwen")
    qwen_proc.save_pretrained(tmp_path / "qwen")
    write_release(tmp_path / "release")  # the release's layout, built from the same tiny config
    frames = np.random.default_rng(0).integers(0, 256, size=(8, 112, 112, 3), dtype=np.uint8)
    write_video(tmp_path / "clip.mp4", frames)
    monkeypatch.chdir(tmp_path)

    (command,) = [line for block in _blocks("bash") for line in block.splitlines() if line.strip()]
    args = shlex.split(command)
    assert args[:2] == ["cacovid", "import-official"]
    swaps = {"/path/to/cacovid-llava-onevision-7b": str(tmp_path / "release"), LLAVA: str(tmp_path / "llava")}
    args = [swaps.get(a, a) for a in args[2:]]
    app = typer.Typer()
    app.command()(import_official_command)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "policies" / "llava-ov-7b" / "model.safetensors").is_file()

    first, second = _blocks("python")
    first = _swap(first, f'checkpoint = "{LLAVA}"', f'checkpoint = "{tmp_path / "llava"}"')
    first = _swap(first, 'device, dtype = "cuda", torch.bfloat16', 'device, dtype = "cpu", torch.float32')
    first = _swap(first, 'video = "clip.mp4"', f'video = "{tmp_path / "clip.mp4"}"')
    assert 'policy_dir = "policies/llava-ov-7b"' in first  # what the command above wrote (cwd: tmp_path)
    second = _swap(second, f'checkpoint = "{QWEN}"', f'checkpoint = "{tmp_path / "qwen"}"')
    namespace: dict = {}
    exec(compile(first, "docs/python-api.md (LLaVA-OneVision)", "exec"), namespace)
    assert namespace["pruned"].num_kept == int(0.1 * namespace["pruned"].prompt.num_video_tokens)
    assert namespace["selector"].policy.config.selection_rule == "release"
    exec(compile(second, "docs/python-api.md (Qwen2.5-VL)", "exec"), namespace)
    assert namespace["pruned"].prompt.meta["family"] == "qwen2_5_vl"
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("kept 39 video tokens")  # 10 % of the 8 frames x 49 tokens
    assert len(printed) == 3  # and one answer per model
