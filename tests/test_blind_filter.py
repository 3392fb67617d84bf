"""`cacovid filter`: the blind test over a Video-R1 file, its outputs, resume, refusal and bad rows.

The host is the embedded toy model; the data are synthetic test items exported as mp4 files plus a
Video-R1 JSON (with `data_source` fields and a numerical question added, as real Video-R1 rows
have), so the expected decisions come from the trainer's own blind test on the same items.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cacovid.cli import app
from cacovid.data.synthetic import SyntheticWorld, WorldConfig, export_videor1
from cacovid.data.videor1 import load_videor1
from cacovid.models import load_video_llm
from cacovid.train.blind_filter import BlindFilterJob, filter_paths, read_progress
from cacovid.train.validation import blind_filter

N_ITEMS = 8


@pytest.fixture(scope="module")
def toy():
    return load_video_llm("toy")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """8 synthetic test items as files, two data sources, one numerical question (row 5)."""
    folder = tmp_path_factory.mktemp("filter-data")
    path = export_videor1(SyntheticWorld(WorldConfig()), "test", N_ITEMS, folder)
    rows = json.loads(path.read_text())
    for i, row in enumerate(rows):
        row["data_source"] = "clips-a" if i % 2 == 0 else "clips-b"
    rows[5].update(
        problem_type="numerical", problem="how many objects move ?", options=[], solution="<answer>2</answer>"
    )
    path.write_text(json.dumps(rows, indent=1))
    return path


def _copy(src: Path, dst_dir: Path) -> Path:
    """The JSON copied beside the same videos (a symlinked folder keeps relative paths valid)."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    (dst_dir / "videos").symlink_to(src.parent / "videos")
    (dst_dir / "evidence").symlink_to(src.parent / "evidence")
    dst = dst_dir / src.name
    shutil.copy(src, dst)
    return dst


def test_filter_matches_the_trainers_blind_test(toy, exported, tmp_path):
    data = _copy(exported, tmp_path / "d")
    rows = json.loads(data.read_text())
    kept_expected = blind_filter(toy, load_videor1(data), max_new_tokens=4)
    assert 0 < len(kept_expected) < N_ITEMS  # the data set exercises both decisions

    summary = BlindFilterJob(toy, data, tmp_path / "d" / "kept.json", model="toy", batch_size=3).run()

    out = json.loads((tmp_path / "d" / "kept.json").read_text())
    assert out == [rows[i] for i in kept_expected]  # rows verbatim, in input order
    assert (summary["kept"], summary["dropped"], summary["failed"]) == (
        len(kept_expected),
        N_ITEMS - len(kept_expected),
        0,
    )
    per_source = summary["per_data_source"]
    assert set(per_source) == {"clips-a", "clips-b"}
    for name, parity in (("clips-a", 0), ("clips-b", 1)):
        kept = sum(1 for i in kept_expected if i % 2 == parity)
        assert per_source[name] == {"kept": kept, "dropped": N_ITEMS // 2 - kept, "failed": 0}
    per_type = summary["per_problem_type"]
    assert set(per_type) == {"multiple choice", "numerical"}
    assert sum(per_type["numerical"].values()) == 1
    assert summary == json.loads((tmp_path / "d" / "kept.summary.json").read_text())
    assert load_videor1(tmp_path / "d" / "kept.json")  # the output is a valid Video-R1 file


def test_bad_rows_are_recorded_with_their_index(toy, exported, tmp_path):
    data = _copy(exported, tmp_path / "d")
    rows = json.loads(data.read_text())
    del rows[2]["problem"]  # not a Video-R1 entry
    (tmp_path / "d" / "broken.mp4").write_bytes(b"not a video")
    rows[6]["path"] = "broken.mp4"  # a video that cannot be decoded
    data.write_text(json.dumps(rows))

    summary = BlindFilterJob(toy, data, tmp_path / "d" / "out.json", model="toy", batch_size=4).run()

    failures = {f["index"]: f["error"] for f in summary["failures"]}
    assert set(failures) == {2, 6}
    assert "'problem'" in failures[2]
    assert failures[6]
    assert summary["failed"] == 2 and summary["kept"] + summary["dropped"] == N_ITEMS - 2
    assert summary["per_data_source"]["clips-a"]["failed"] == 2  # rows 2 and 6
    kept_rows = json.loads((tmp_path / "d" / "out.json").read_text())
    assert rows[2] not in kept_rows and rows[6] not in kept_rows


def test_resume_continues_where_an_interrupted_run_stopped(toy, exported, tmp_path, monkeypatch):
    data = _copy(exported, tmp_path / "d")
    full = BlindFilterJob(toy, data, tmp_path / "d" / "ref.json", model="toy", batch_size=2).run()

    out = tmp_path / "d" / "kept.json"

    class Stop(Exception):
        pass

    def stop_after_three(event) -> None:
        if event.index == 2:
            raise Stop

    with pytest.raises(Stop):
        BlindFilterJob(toy, data, out, model="toy", batch_size=1, on_row=stop_after_three).run()
    progress = filter_paths(out).progress
    assert sorted(read_progress(progress).decisions) == [0, 1, 2]
    assert not out.exists()  # nothing is written as the result of a run that did not finish
    with open(progress, "a") as fh:
        fh.write('{"index": 3, "decis')  # a write torn by the kill

    answered: list[int] = []
    original = type(toy).generate_rows

    def counting(self, rows, **kwargs):
        answered.append(len(rows))
        return original(self, rows, **kwargs)

    monkeypatch.setattr(type(toy), "generate_rows", counting)
    summary = BlindFilterJob(toy, data, out, model="toy", batch_size=1).run()
    assert sum(answered) == N_ITEMS - 3  # rows 0..2 are not asked again
    for key in ("kept", "dropped", "failed", "per_problem_type", "per_data_source"):
        assert summary[key] == full[key]
    assert json.loads(out.read_text()) == json.loads((tmp_path / "d" / "ref.json").read_text())
    assert len(read_progress(progress).decisions) == N_ITEMS


def test_a_rerun_on_another_input_is_refused(toy, exported, tmp_path):
    data = _copy(exported, tmp_path / "d")
    out = tmp_path / "d" / "kept.json"
    BlindFilterJob(toy, data, out, model="toy").run()
    other = tmp_path / "d" / "other.json"
    other.write_text(json.dumps(json.loads(data.read_text())[:3]))
    with pytest.raises(ValueError) as err:
        BlindFilterJob(toy, other, out, model="toy")
    assert str(data.resolve()) in str(err.value) and str(other.resolve()) in str(err.value)
    moved = tmp_path / "d" / "moved.json"
    shutil.copy(data, moved)
    BlindFilterJob(toy, moved, out, model="toy")  # the same content under another name: accepted
    data.write_text(data.read_text().replace('"problem_id": 0', '"problem_id": 100'))
    with pytest.raises(ValueError, match="sha256"):  # the same file, edited
        BlindFilterJob(toy, data, out, model="toy")
    shutil.copy(moved, data)
    with pytest.raises(ValueError, match="model"):
        BlindFilterJob(toy, data, out, model="another-model")
    with pytest.raises(ValueError, match="overwrite"):
        BlindFilterJob(toy, data, data, model="toy")


def test_output_in_another_folder_rebases_video_paths(toy, exported, tmp_path):
    data = _copy(exported, tmp_path / "d")
    out = tmp_path / "elsewhere" / "deeper" / "kept.json"
    summary = BlindFilterJob(toy, data, out, model="toy", batch_size=4).run()
    assert summary["paths_rebased"]
    kept = load_videor1(out)
    assert len(kept) == summary["kept"]
    for item in kept:
        assert Path(item.video_path).resolve().is_file()


def _unwrapped(output: str) -> str:
    """CLI output without whitespace and rich's panel borders: the error panel folds a long path at its
    80-column width mid-name (pytest-xdist's temporary folders are long enough), so names are looked
    for in the text with the folds taken out."""
    return re.sub(r"[\s│╭╮╰╯─]", "", output)


def test_cli_filter_writes_outputs_and_refuses_another_input(exported, tmp_path):
    data = _copy(exported, tmp_path / "d")
    runner = CliRunner()
    result = runner.invoke(app, ["filter", "--data", str(data), "--device", "cpu", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    out = data.with_name("synthetic_test.blind-filtered.json")
    summary = json.loads(out.with_name("synthetic_test.blind-filtered.summary.json").read_text())
    assert summary["kept"] == len(json.loads(out.read_text()))
    assert "kept" in result.output and "clips-a" in result.output
    # Again: everything is resumed, nothing recomputed, the same result.
    again = runner.invoke(app, ["filter", "--data", str(data), "--device", "cpu"])
    assert again.exit_code == 0, again.output
    assert json.loads(out.with_name("synthetic_test.blind-filtered.summary.json").read_text()) == summary

    other = tmp_path / "d" / "other.json"
    other.write_text(json.dumps(json.loads(data.read_text())[:2]))
    refused = runner.invoke(app, ["filter", "--data", str(other), "--out", str(out), "--device", "cpu"])
    assert refused.exit_code == 1
    flat = _unwrapped(refused.output)
    assert "other.json" in flat and "synthetic_test.json" in flat
    bad = tmp_path / "d" / "bad.json"
    rows = json.loads(data.read_text())[:2]
    del rows[1]["solution"]
    bad.write_text(json.dumps(rows))
    shown = runner.invoke(app, ["filter", "--data", str(bad), "--device", "cpu"])
    assert shown.exit_code == 0, shown.output
    assert "row 1 failed" in shown.output and "'solution'" in shown.output
    missing = runner.invoke(app, ["filter", "--data", str(tmp_path / "nope.json"), "--device", "cpu"])
    assert missing.exit_code == 2 and "nope.json" in _unwrapped(missing.output)
