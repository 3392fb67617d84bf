"""MVBench: 20 temporal tasks, 200 questions each.

Source: the `OpenGVLab/MVBench` hub data set: `json/<task>.json`, one file per task, each a list of
rows with `video` (a file name inside the task's video folder), `question`, `candidates` (option
texts), `answer` (the correct option's text) and, for five tasks, `start` / `end` (seconds: the part
of the video the question is about). Videos sit in `video/<folder>/`, where each task's folder is
MVBench's own task map (`TASKS` below, as in its evaluation notebook).

Prompt: MVBench's own (VideoChat2's evaluation): "Carefully watch the video and pay attention to the
cause and sequence of events, the detail and movement of objects, and the action and pose of
persons. Based on your observations, select the best option that accurately addresses the
question.", "Question: …", "Options:", "(A) …" per option, "Only give the best option."
Category: the task.

Two parts of MVBench need more than a video file: the five tasks with `start` / `end` are about that
window (recorded in `meta["clip"]`; the adapters decode the whole video), and Episodic Reasoning's
videos are folders of JPEG frames, which the video decoder does not read (each such item records a
decoding error). docs/benchmarks.md says how to read the scores of those tasks.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from cacovid.data.benchmarks.common import (
    AnnotationError,
    BenchmarkItem,
    Row,
    bracketed_options_prompt,
    make_item,
    read_json,
)

__all__ = ["TASKS", "MVBenchTask", "load_mvbench", "mvbench_prompt"]

NAME = "MVBench"


class MVBenchTask(NamedTuple):
    """One task: its name in MVBench's tables, its video folder under video/, whether its rows carry
    a start/end window and whether its videos are frame folders."""

    title: str
    folder: str
    windowed: bool = False
    frames: bool = False


# json/<key>.json → task (MVBench's order).
TASKS: dict[str, MVBenchTask] = {
    "action_sequence": MVBenchTask("Action Sequence", "star/Charades_v1_480", windowed=True),
    "action_prediction": MVBenchTask("Action Prediction", "star/Charades_v1_480", windowed=True),
    "action_antonym": MVBenchTask("Action Antonym", "ssv2_video"),
    "fine_grained_action": MVBenchTask("Fine-grained Action", "Moments_in_Time_Raw/videos"),
    "unexpected_action": MVBenchTask("Unexpected Action", "FunQA_test/test"),
    "object_existence": MVBenchTask("Object Existence", "clevrer/video_validation"),
    "object_interaction": MVBenchTask("Object Interaction", "star/Charades_v1_480", windowed=True),
    "object_shuffle": MVBenchTask("Object Shuffle", "perception/videos"),
    "moving_direction": MVBenchTask("Moving Direction", "clevrer/video_validation"),
    "action_localization": MVBenchTask("Action Localization", "sta/sta_video", windowed=True),
    "scene_transition": MVBenchTask("Scene Transition", "scene_qa/video"),
    "action_count": MVBenchTask("Action Count", "perception/videos"),
    "moving_count": MVBenchTask("Moving Count", "clevrer/video_validation"),
    "moving_attribute": MVBenchTask("Moving Attribute", "clevrer/video_validation"),
    "state_change": MVBenchTask("State Change", "perception/videos"),
    "fine_grained_pose": MVBenchTask("Fine-grained Pose", "nturgbd"),
    "character_order": MVBenchTask("Character Order", "perception/videos"),
    "egocentric_navigation": MVBenchTask("Egocentric Navigation", "vlnqa"),
    "episodic_reasoning": MVBenchTask(
        "Episodic Reasoning", "tvqa/frames_fps3_hq", windowed=True, frames=True
    ),
    "counterfactual_inference": MVBenchTask("Counterfactual Inference", "clevrer/video_validation"),
}

INSTRUCTION = (
    "Carefully watch the video and pay attention to the cause and sequence of events, the detail "
    "and movement of objects, and the action and pose of persons. Based on your observations, "
    "select the best option that accurately addresses the question."
)


def mvbench_prompt(question: str, options: list[str]) -> str:
    """MVBench's prompt for a question and its option texts."""
    return bracketed_options_prompt(INSTRUCTION, question, options)


def _window(row: Row) -> list[float] | None:
    start = row.get("start", (int, float), default=None)
    end = row.get("end", (int, float), default=None)
    if start is None and end is None:
        return None
    if start is None or end is None or not 0 <= start < end:
        raise row.error(f"fields 'start'/'end' must be seconds with 0 <= start < end, got {start!r}, {end!r}")
    return [float(start), float(end)]


def load_mvbench(root: str | Path) -> list[BenchmarkItem]:
    """Every task file present under `root/json`, in MVBench's task order."""
    root = Path(root)
    json_dir = root / "json"
    if not json_dir.is_dir():
        raise AnnotationError(f"{NAME}: no json/ folder of task files under {root}")
    strangers = sorted(p.name for p in json_dir.glob("*.json") if p.stem not in TASKS)
    if strangers:
        raise AnnotationError(
            f"{NAME}: {json_dir / strangers[0]} is not an MVBench task file "
            f"(expected json/<task>.json for the tasks {', '.join(TASKS)})"
        )
    items = []
    for key, task in TASKS.items():
        path = json_dir / f"{key}.json"
        if not path.is_file():
            continue
        data = read_json(path, NAME)
        if not isinstance(data, list):
            raise AnnotationError(f"{NAME}: {path} must hold a JSON list of rows, got {type(data).__name__}")
        for i, entry in enumerate(data):
            row = Row(entry, path, i, NAME)
            question = row.text("question")
            options = row.options("candidates")
            answer = row.get("answer", (str, int, float))
            items.append(
                make_item(
                    item_id=f"{key}:{i}",
                    question=question,
                    options=options,
                    solution=row.answer_from_text(str(answer), options),
                    prompt=mvbench_prompt(question, options),
                    video_path=root / "video" / task.folder / row.text("video"),
                    benchmark="mvbench",
                    categories={"task": task.title},
                    source=path,
                    row=i,
                    clip=_window(row) if task.windowed else None,
                    video_kind="frames" if task.frames else None,
                )
            )
    if not items:
        raise AnnotationError(f"{NAME}: no task file in {json_dir} (expected json/<task>.json)")
    return items
