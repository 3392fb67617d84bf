"""cacovid as an lmms-eval model (`--model cacovid`, src/cacovid/integrations/lmms_eval.py).

End to end: synthetic test items exported as mp4 + Video-R1 JSON, a local lmms-eval task over them
(tests/lmms_eval_task.py: cacovid's prompt and scorer), lmms-eval's own evaluator with the embedded
toy model, and `cacovid eval` on the same file: the same selector at the same ratio must give the same
answers, item for item, hence the same accuracy. Tests that need lmms-eval skip cleanly without it
(`pip install "cacovid[eval]"`); the packaging checks run everywhere.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import torch
from lmms_eval_task import TASK, write_task
from typer.testing import CliRunner

from cacovid.cli import app
from cacovid.data.synthetic import SyntheticWorld, WorldConfig, export_videor1
from cacovid.integrations import lmms_eval as plugin

ROOT = Path(__file__).resolve().parents[1]
HAVE_LMMS_EVAL = importlib.util.find_spec("lmms_eval") is not None
needs_lmms_eval = pytest.mark.skipif(
    not HAVE_LMMS_EVAL, reason='lmms-eval is not installed (pip install "cacovid[eval]")'
)
SHIPPED_POLICY = str(resources.files("cacovid.policy") / "shipped" / "toy")
N_ITEMS = 6
MAX_NEW_TOKENS = 8


def test_the_eval_extra_and_the_entry_point_are_installed():
    requires = importlib.metadata.requires("cacovid") or []
    assert any(r.startswith("lmms-eval") and 'extra == "eval"' in r for r in requires), requires
    [entry] = [e for e in importlib.metadata.entry_points(group="lmms_eval.models") if e.name == "cacovid"]
    module, function = entry.value.split(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_the_entry_point_module_stays_light():
    """lmms-eval loads every entry point whenever its registry starts: no transformers, no adapters."""
    code = (
        "import sys, cacovid.integrations.lmms_eval_manifest as m\n"
        "heavy = [k for k in ('transformers', 'cacovid.models', 'cacovid.evaluate') if k in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.skipif(HAVE_LMMS_EVAL, reason="checks the message shown without lmms-eval")
def test_without_lmms_eval_the_model_says_what_to_install():
    with pytest.raises(ImportError, match=r"cacovid\[eval\]"):
        plugin.CacovidLMM(pretrained="toy")


# ---- with lmms-eval ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    return export_videor1(SyntheticWorld(WorldConfig()), "test", N_ITEMS, tmp_path_factory.mktemp("items"))


@pytest.fixture(scope="module")
def task_dir(exported, tmp_path_factory) -> Path:
    return write_task(exported, tmp_path_factory.mktemp("task"), max_new_tokens=MAX_NEW_TOKENS)


@pytest.fixture
def datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LMMS_EVAL_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _cacovid_eval(data: Path, out: Path, selector: str, ratio: float, policy: str | None) -> list[dict]:
    args = ["eval", "--model", "toy", "--data", str(data), "--methods", selector, "--ratios", str(ratio)]
    args += ["--no-references", "--no-efficiency", "--no-report", "--device", "cpu"]
    args += ["--max-new-tokens", str(MAX_NEW_TOKENS), "--out", str(out)]
    if policy:
        args += ["--policy", policy]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]


@needs_lmms_eval
def test_lmms_eval_finds_the_model_through_the_entry_point():
    from lmms_eval.models import get_model

    assert get_model("cacovid") is plugin.CacovidLMM


@needs_lmms_eval
@pytest.mark.slow
@pytest.mark.parametrize(
    ("selector", "ratio", "policy"),
    [("cacovid", 0.1, SHIPPED_POLICY), ("random", 0.1, None), ("uniform", 0.25, None)],
)
def test_lmms_eval_agrees_with_cacovid_eval(
    exported, task_dir, tmp_path, datasets_cache, selector, ratio, policy
):
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    rows = _cacovid_eval(exported, tmp_path / "eval", selector, ratio, policy)
    model_args = f"pretrained=toy,selector={selector},ratio={ratio}" + (f",policy={policy}" if policy else "")
    results = simple_evaluate(
        model="cacovid",
        model_args=model_args,
        tasks=[TASK],
        task_manager=TaskManager("WARNING", include_path=str(task_dir)),
        batch_size=4,
        device="cpu",
        log_samples=True,
    )
    accuracy = results["results"][TASK]["accuracy,none"]
    ours = {r["item_id"]: r for r in rows}
    theirs = {s["doc"]["id"]: s for s in results["samples"][TASK]}
    assert set(theirs) == set(ours) and len(ours) == N_ITEMS
    for item_id, sample in theirs.items():
        assert sample["resps"][0][0] == ours[item_id]["prediction"], item_id
        assert sample["accuracy"] == ours[item_id]["correct"], item_id
    assert accuracy == pytest.approx(sum(r["correct"] for r in rows) / N_ITEMS)
    if selector == "cacovid":
        assert accuracy >= 0.5  # the shipped policy answers most of these at 10 %


def _requests(lm, docs, contexts, kind, args_for):
    from lmms_eval.api.instance import Instance

    lm.task_dict = {"t": {"test": docs}}
    return [
        Instance(
            request_type=kind,
            doc=docs[i],
            arguments=(contexts[i], args_for(i), lambda d: [d["video"]], i, "t", "test"),
            idx=0,
            metadata={"task": "t", "doc_id": i, "repeats": 1},
        )
        for i in range(len(docs))
    ]


@pytest.mark.float_paths
@needs_lmms_eval
def test_generate_until_cuts_at_stop_strings_and_survives_a_bad_video(exported, tmp_path):
    from cacovid.data.videor1 import load_videor1

    items = load_videor1(exported)[:2]
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    docs = [
        {"id": items[0].id, "video": items[0].video_path},
        {"id": "bad", "video": str(tmp_path / "bad.mp4")},
    ]
    lm = plugin.CacovidLMM(pretrained="toy", selector="uniform", ratio=0.25, device="cpu", batch_size=2)
    contexts = [items[0].prompt_text(), items[1].prompt_text()]
    answers = lm.generate_until(
        _requests(lm, docs, contexts, "generate_until", lambda i: {"max_new_tokens": 8})
    )
    prompt = lm.adapter.encode_item(items[0])
    keep = lm.method.select(prompt, 0.25).keep
    [expected] = lm.adapter.generate(prompt, keep, max_new_tokens=8)
    assert answers == [expected, ""]
    assert [f["doc_id"] for f in lm.failures] == [1]
    cut = lm.generate_until(
        _requests(
            lm, docs[:1], contexts, "generate_until", lambda i: {"max_new_tokens": 8, "until": [expected[1:]]}
        )
    )
    assert cut == [expected[:1]]


@pytest.mark.float_paths
@needs_lmms_eval
def test_loglikelihood_scores_options_after_the_compressed_prompt(exported):
    from cacovid.data.videor1 import load_videor1

    item = load_videor1(exported)[0]
    doc = {"id": item.id, "video": item.video_path}
    lm = plugin.CacovidLMM(pretrained="toy", selector="uniform", ratio=0.25, device="cpu")
    options = item.options[:2]
    out = lm.loglikelihood(
        _requests(lm, [doc, doc], [item.prompt_text()] * 2, "loglikelihood", lambda i: options[i])
    )
    prompt = lm.adapter.encode_item(item)
    keep = lm.method.select(prompt, 0.25).keep
    expected = lm.adapter.answer_logprobs(prompt, keep, options)[0]
    assert [lp for lp, _ in out] == pytest.approx(expected.tolist(), abs=1e-4)
    greedy = lm.adapter.generate(prompt, keep, max_new_tokens=1)[0]
    assert [g for _, g in out] == [greedy == o for o in options]
    assert all(isinstance(lp, float) and lp < 0 for lp, _ in out)
    assert torch.isfinite(expected).all()


@needs_lmms_eval
def test_bad_model_args_are_refused_by_name():
    with pytest.raises(ValueError, match="unknown cacovid model args"):
        plugin.CacovidLMM(pretrained="toy", retention=0.1)
    with pytest.raises(ValueError, match="oracle"):
        plugin.CacovidLMM(pretrained="toy", selector="oracle")
    with pytest.raises(ValueError, match="ratio"):
        plugin.CacovidLMM(pretrained="toy", selector="uniform", ratio=0)
    with pytest.raises(ValueError, match="no-such-selector"):
        plugin.CacovidLMM(pretrained="toy", selector="no-such-selector")
    with pytest.raises(ValueError, match="policy"):
        plugin.CacovidLMM(pretrained="toy", selector="cacovid")
    with pytest.raises(NotImplementedError, match="single-turn"):
        plugin.CacovidLMM(pretrained="toy", selector="full").generate_until_multi_round([])
