"""cacovid as an lmms-eval model: any supported video LLM, with any selector's token compression.

    python -m lmms_eval --model cacovid \\
        --model_args pretrained=llava-hf/llava-onevision-qwen2-7b-ov-hf,policy=runs/policy/policy,ratio=0.1 \\
        --tasks videomme --batch_size 1

Why a plugin rather than a copy of lmms-eval's own model classes: the compression has to happen where
cacovid's adapters put it (between the vision tower and the language model, kept tokens at their
original positions), and the selectors are built exactly as `cacovid eval` builds them
(`cacovid.evaluate.methods.build_methods`), so a benchmark score from lmms-eval and a row of
`cacovid eval` come from the same selection, item for item (tests/test_lmms_eval_plugin.py checks
that they give the same accuracy on the same items).

Registration: `pip install cacovid[eval]` installs lmms-eval, and cacovid's `lmms_eval.models` entry
point (`cacovid.integrations.lmms_eval_manifest`) tells lmms-eval's model registry where the class
lives, so no lmms-eval file or environment variable is touched.

Model arguments (`--model_args key=value,…`):
- `pretrained`: "toy", a checkpoint folder or a hub id (LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL).
- `selector`: any name `cacovid eval --methods` accepts (every registered selector, `cacovid`,
  `full`, `blind`); default `cacovid` when `policy` is given, else `full`. `oracle` is refused: it
  needs the ground-truth evidence only the synthetic world has.
- `policy`: a saved CaCoVID policy folder (its `selection.json` settings apply, as in `cacovid eval`).
- `ratio`: the retention ratio in (0, 1] (default 0.1; `full` and `blind` ignore it).
- `device` ("auto"), `dtype` ("float32", "bfloat16", "float16"), `batch_size` (questions per batched
  answer call), `max_frames` (frames decoded per video; default the adapter's 32), `seed` (random
  choices: each question's generator is seeded from the seed, the question's id, the selector and
  the ratio, as `cacovid eval` seeds its rows; the id is the document's `id` field where it has one,
  else "TASK/SPLIT/INDEX").

Requests: one video per question (`doc_to_visual` gives a video path, or a list of equally sized
images taken as the frames of one video). Answers are decoded greedily (a task's sampling settings
are not used; a warning says so), up to the task's `max_new_tokens` (default 16), and cut at the
first of its `until` strings. A question whose video cannot be read or whose selection fails is
answered with an empty string (scored wrong by any task) and listed in `failures`, so a long run is
not lost to one bad file. `loglikelihood` (multiple-choice perplexity tasks) scores each option by
teacher forcing after the compressed prompt. The model runs in one process (rank 0 of 1): launch
lmms-eval plainly, not through `accelerate launch`, and run several ratios as separate jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

try:
    from lmms_eval.api.model import lmms as _LmmsBase

    HAVE_LMMS_EVAL = True
except ImportError:  # the module stays importable (docs, `import cacovid…` walks); the class refuses
    _LmmsBase = object
    HAVE_LMMS_EVAL = False

from cacovid.evaluate.harness import row_generator
from cacovid.evaluate.methods import Method, build_methods, parse_methods
from cacovid.models import load_video_llm
from cacovid.types import EncodedPrompt, QAItem, Selection

if TYPE_CHECKING:
    from lmms_eval.api.instance import Instance

__all__ = ["HAVE_LMMS_EVAL", "CacovidLMM"]

DEFAULT_MAX_NEW_TOKENS = 16

log = logging.getLogger(__name__)


def _device(name: str | None) -> str:
    if name in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(name)


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _positive_int(name: str, value: Any, default: int) -> int:
    if value in (None, "", "auto"):
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or isinstance(value, bool):
        raise ValueError(f"model arg {name} must be a positive integer, got {value!r}")
    return number


@dataclass
class _Prepared:
    """One question ready to answer: its prompt and the selector's choice over its video tokens."""

    prompt: EncodedPrompt
    selection: Selection


class CacovidLMM(_LmmsBase):
    """A cacovid adapter plus one selector at one ratio, behind lmms-eval's simple-model interface."""

    is_simple = True

    def __init__(
        self,
        pretrained: str = "toy",
        selector: str | None = None,
        ratio: float = 0.1,
        policy: str | None = None,
        device: str | None = "auto",
        dtype: str = "float32",
        batch_size: int | str = 1,
        max_frames: int | str | None = None,
        seed: int = 0,
        max_batch_size: Any = None,  # lmms-eval passes it to every model; one batch size is used
        **unknown: Any,
    ) -> None:
        if not HAVE_LMMS_EVAL:
            raise ImportError("the cacovid lmms-eval model needs lmms-eval: pip install 'cacovid[eval]'")
        super().__init__()
        if unknown:
            raise ValueError(
                f"unknown cacovid model args {sorted(unknown)}; known: pretrained, selector, ratio, "
                "policy, device, dtype, batch_size, max_frames, seed"
            )
        name = selector or ("cacovid" if policy else "full")
        if name == "oracle":
            raise ValueError(
                "selector 'oracle' needs ground-truth evidence, which lmms-eval tasks do not carry"
            )
        [name] = parse_methods(str(name), references=False, policy=bool(policy))
        if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0.0 < float(ratio) <= 1.0:
            raise ValueError(f"model arg ratio must be a number in (0, 1], got {ratio!r}")
        if dtype not in _DTYPES:
            raise ValueError(f"model arg dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        self.pretrained = str(pretrained)
        self.ratio = float(ratio)
        self.seed = int(seed)
        self.batch_size_per_call = _positive_int("batch_size", batch_size, 1)
        self._device_name = _device(device)
        self.adapter = load_video_llm(self.pretrained, device=self._device_name, dtype=_DTYPES[dtype])
        if max_frames not in (None, ""):
            self.adapter.max_frames = _positive_int("max_frames", max_frames, self.adapter.max_frames)
        [self.method] = build_methods([name], self.adapter, policy=policy, seed=self.seed)
        self.failures: list[dict[str, Any]] = []
        self._warned_sampling = False

    # ---- what lmms-eval reads ----------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.adapter.device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_call

    @property
    def selector_name(self) -> str:
        return self.method.name

    # ---- one question ------------------------------------------------------------------------
    def _doc(self, task: str, split: str, doc_id: int) -> Any:
        return self.task_dict[task][split][doc_id]

    def _item_id(self, doc: Any, task: str, split: str, doc_id: int) -> str:
        if isinstance(doc, dict) and isinstance(doc.get("id"), (str, int)):
            return str(doc["id"])
        return f"{task}/{split}/{doc_id}"

    def _item(self, context: str, visual: Any, item_id: str) -> QAItem:
        """The question as a QAItem whose prompt text is `context` verbatim (problem_type free-form)."""
        visuals = visual if isinstance(visual, (list, tuple)) else [visual]
        visuals = [v for v in visuals if v is not None]
        if not visuals:
            raise ValueError(f"question {item_id!r} has no video: the cacovid model compresses video tokens")
        if all(isinstance(v, str) for v in visuals):
            if len(visuals) != 1:
                raise ValueError(
                    f"question {item_id!r} has {len(visuals)} videos; one per question is supported"
                )
            return QAItem(
                id=item_id,
                problem=context,
                options=[],
                solution="",
                problem_type="free-form",
                video_path=visuals[0],
            )
        frames = [np.asarray(v.convert("RGB")) if hasattr(v, "convert") else np.asarray(v) for v in visuals]
        if len({f.shape for f in frames}) != 1:
            raise ValueError(f"question {item_id!r}: images of different sizes cannot be frames of one video")
        return QAItem(
            id=item_id,
            problem=context,
            options=[],
            solution="",
            problem_type="free-form",
            frames=np.stack(frames),
        )

    def _prepare(
        self, context: str, doc_to_visual: Callable, doc_id: int, task: str, split: str
    ) -> _Prepared:
        doc = self._doc(task, split, doc_id)
        item_id = self._item_id(doc, task, split, doc_id)
        item = self._item(context, doc_to_visual(doc), item_id)
        method: Method = self.method
        prompt = self.adapter.encode_item(item, vision_attention=method.needs_vision_attention)
        ratio = method.ratios([self.ratio])[0]
        generator = row_generator(self.seed, item_id, method.name, ratio)
        return _Prepared(prompt, method.select(prompt, ratio, generator))

    def _failed(self, task: str, doc_id: int, exc: BaseException) -> None:
        self.failures.append({"task": task, "doc_id": doc_id, "error": f"{type(exc).__name__}: {exc}"[:500]})
        log.warning("cacovid: %s document %s failed: %s", task, doc_id, exc)

    # ---- generation --------------------------------------------------------------------------
    def _generation_settings(self, gen_kwargs: dict[str, Any] | None) -> tuple[int, tuple[str, ...]]:
        kwargs = dict(gen_kwargs or {})
        until = kwargs.get("until") or ()
        if isinstance(until, str):
            until = (until,)
        sampling = bool(kwargs.get("do_sample")) or float(kwargs.get("temperature") or 0.0) > 0.0
        if sampling and not self._warned_sampling:
            log.warning("cacovid decodes greedily; the task's sampling settings are not used")
            self._warned_sampling = True
        max_new = _positive_int("max_new_tokens", kwargs.get("max_new_tokens"), DEFAULT_MAX_NEW_TOKENS)
        return max_new, tuple(str(u) for u in until if u)

    @staticmethod
    def _cut(text: str, until: Sequence[str]) -> str:
        for stop in until:
            at = text.find(stop)
            if at >= 0:
                text = text[:at]
        return text

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Greedy answers from the compressed prompts, in request order (`batch_size` per call)."""
        from tqdm import tqdm

        answers: list[str] = [""] * len(requests)
        bar = tqdm(total=len(requests), disable=self.rank != 0, desc=f"cacovid {self.method.name}")
        step = self.batch_size_per_call
        for start in range(0, len(requests), step):
            groups: dict[tuple[int, tuple[str, ...]], list[tuple[int, _Prepared]]] = {}
            for index in range(start, min(start + step, len(requests))):
                context, gen_kwargs, doc_to_visual, doc_id, task, split = requests[index].args[:6]
                settings = self._generation_settings(gen_kwargs)
                try:
                    prepared = self._prepare(context, doc_to_visual, doc_id, task, split)
                except Exception as exc:  # one bad video must not sink the run
                    self._failed(task, doc_id, exc)
                    continue
                groups.setdefault(settings, []).append((index, prepared))
            for (max_new, until), members in groups.items():
                for index, text in self._answer(members, max_new, requests):
                    answers[index] = self._cut(text, until)
            bar.update(min(step, len(requests) - start))
        bar.close()
        return answers

    def _answer(
        self, members: list[tuple[int, _Prepared]], max_new: int, requests: list[Instance]
    ) -> list[tuple[int, str]]:
        rows = [(p.prompt, p.selection.keep, p.selection.embeds) for _, p in members]
        try:
            texts = self.adapter.generate_rows(rows, max_new_tokens=max_new)
            return [(index, text) for (index, _), text in zip(members, texts, strict=True)]
        except Exception:
            out = []
            for (index, _), row in zip(members, rows, strict=True):
                try:
                    [text] = self.adapter.generate_rows([row], max_new_tokens=max_new)
                except Exception as exc:
                    args = requests[index].args
                    self._failed(args[4], args[3], exc)
                    text = ""
                out.append((index, text))
            return out

    # ---- log-likelihood (multiple-choice perplexity tasks) -----------------------------------
    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """(summed log-probability of the continuation, whether greedy decoding would produce it),
        each continuation scored after its question's compressed prompt. A question's options share
        one encoding and one selection."""
        from tqdm import tqdm

        cache: dict[tuple[str, str, int, str], _Prepared | None] = {}
        out: list[tuple[float, bool]] = []
        for request in tqdm(
            requests, disable=self.rank != 0, desc=f"cacovid {self.method.name} loglikelihood"
        ):
            context, continuation, doc_to_visual, doc_id, task, split = request.args[:6]
            key = (task, split, doc_id, context)
            if key not in cache:
                try:
                    cache[key] = self._prepare(context, doc_to_visual, doc_id, task, split)
                except Exception as exc:
                    self._failed(task, doc_id, exc)
                    cache[key] = None
            prepared = cache[key]
            if prepared is None:
                out.append((float("-inf"), False))
                continue
            row = (prepared.prompt, prepared.selection.keep, prepared.selection.embeds)
            logp = float(self.adapter.answer_logprobs_rows([row], [continuation])[0, 0])
            target = self.adapter.answer_token_ids(continuation).tolist()
            greedy = self.adapter.generate_ids_rows([row], max_new_tokens=len(target))[0].tolist()
            out.append((logp, greedy[: len(target)] == target))
        return out

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError(
            "cacovid answers single-turn video questions: multi-round tasks feed the model's earlier "
            "answers back as new turns, which the compressed-prompt adapters do not model"
        )
