"""Adapters over real `transformers` video LLMs (LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL)."""

from cacovid.models.base import Row, VideoLLM
from cacovid.models.llava_onevision import LlavaOneVisionVideoLLM
from cacovid.models.loading import ADAPTERS, adapter_for, as_video_llm, load_video_llm, toy_weights_dir
from cacovid.models.pruning import PrunedInputs, prune_inputs
from cacovid.models.qwen2_vl import Qwen2_5_VLVideoLLM, Qwen2VLVideoLLM

__all__ = [
    "ADAPTERS",
    "LlavaOneVisionVideoLLM",
    "PrunedInputs",
    "Qwen2VLVideoLLM",
    "Qwen2_5_VLVideoLLM",
    "Row",
    "VideoLLM",
    "adapter_for",
    "as_video_llm",
    "load_video_llm",
    "prune_inputs",
    "toy_weights_dir",
]
