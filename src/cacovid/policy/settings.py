"""The selection settings saved beside a policy (`selection.json`: α, cap, fill; docs/method.md §3).

Why a module of its own, in the policy layer: the file belongs to the policy it was tuned for, and is
read wherever that policy selects (evaluation, training's validation, `CaCoVIDSelector.from_pretrained`)
and written by tuning and training. One reader and one writer keep the format in one place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SELECTION_FILE = "selection.json"
SELECTION_KEYS: tuple[str, ...] = ("alpha", "cap", "fill")


def selection_options(policy_dir: str | Path) -> dict[str, Any]:
    """Selection options (alpha, cap, fill) saved beside a policy, or {} for the defaults.

    The inference settings travel with the policy they were chosen for (on validation data), so a
    shipped policy is run the way it was tuned; unknown keys and unreadable files are an error that
    names the file.
    """
    path = Path(policy_dir) / SELECTION_FILE
    if not path.is_file():
        return {}
    try:
        options = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(options, dict):
        raise ValueError(f"{path}: expected one object of options, got {type(options).__name__}")
    unknown = set(options) - {*SELECTION_KEYS, "note"}
    if unknown:
        raise ValueError(
            f"{path}: unknown selection options {sorted(unknown)} (known: {', '.join(SELECTION_KEYS)})"
        )
    return {k: v for k, v in options.items() if k != "note"}


def write_selection(policy_dir: str | Path, options: dict[str, Any], note: str) -> Path:
    """Write `selection.json` (alpha, optional cap, fill, and a note on how they were chosen) beside a
    saved policy; returns its path."""
    path = Path(policy_dir) / SELECTION_FILE
    if not path.parent.is_dir():
        raise FileNotFoundError(f"policy folder {path.parent} does not exist")
    unknown = set(options) - set(SELECTION_KEYS)
    if unknown:
        raise ValueError(f"unknown selection options {sorted(unknown)}")
    path.write_text(json.dumps({**options, "note": note}, indent=2) + "\n")
    return path
