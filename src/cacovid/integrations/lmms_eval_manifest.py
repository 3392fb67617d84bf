"""The `lmms_eval.models` entry point: where lmms-eval finds `--model cacovid`.

Why a module of its own: lmms-eval loads every installed entry point each time its model registry
starts, whatever model a run asks for, so this module must stay light (no transformers, no adapters);
the model class itself (`cacovid.integrations.lmms_eval.CacovidLMM`) is imported only when a run asks
for `--model cacovid`.
"""

from __future__ import annotations

MODEL_ID = "cacovid"
CLASS_PATH = "cacovid.integrations.lmms_eval.CacovidLMM"


def model_manifest():
    """lmms-eval's `ModelManifest` for `--model cacovid` (a simple model: it reads the task's text
    prompt and visuals, not chat messages)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=CLASS_PATH)
