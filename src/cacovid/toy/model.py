"""The embedded video LLM's architecture: a real `transformers` LLaVA-OneVision, sized for a CPU.

Why LLaVA-OneVision: the same adapter and compression code must serve this toy and a 7B checkpoint,
so the toy is an ordinary `LlavaOnevisionForConditionalGeneration` (SigLIP tower + projector + Qwen2
language model) with a word-level tokenizer over the synthetic world's vocabulary.
112 px frames, 8 px patches, 2x2 pooling: 49 tokens per frame, 784 for the default 16 frames.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from cacovid.data.synthetic.questions import VOCABULARY
from cacovid.testing.tiny import tiny_llava_onevision

# Label word for token cells that show no object: the dense auxiliary loss maps background cells to it.
BACKGROUND_WORD = "background"


@dataclass(frozen=True)
class ToyModelConfig:
    frame_size: int = 112
    patch: int = 8
    text_hidden: int = 192
    text_layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    vision_hidden: int = 128
    vision_layers: int = 3
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def toy_vocabulary() -> list[str]:
    return [*VOCABULARY, BACKGROUND_WORD]


def build_toy_model(config: ToyModelConfig | None = None):
    """A freshly initialised toy model and its processor (LlavaOnevision*, real classes)."""
    cfg = config or ToyModelConfig()
    return tiny_llava_onevision(
        toy_vocabulary(),
        frame_size=cfg.frame_size,
        patch=cfg.patch,
        text_hidden=cfg.text_hidden,
        text_layers=cfg.text_layers,
        heads=cfg.heads,
        kv_heads=cfg.kv_heads,
        vision_hidden=cfg.vision_hidden,
        vision_layers=cfg.vision_layers,
        seed=cfg.seed,
    )


def shipped_weights_dir() -> Path:
    """Where the trained toy model ships inside the package (`load_video_llm("toy")` reads it)."""
    return Path(str(resources.files("cacovid.toy"))) / "weights"
