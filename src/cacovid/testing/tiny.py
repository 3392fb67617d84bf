"""Tiny random-weight video LLMs with real `transformers` processors, built offline from configs.

Why: tests, benchmarks and the embedded toy model need the *real* model classes and processors of
each supported family (so adapters are exercised on the exact HF code paths), but no weights can be
downloaded. These builders make a word-level tokenizer with a chat template and a few-million-parameter
model per family, deterministically from a seed.

Token-grid layout (LLaVA-OneVision, defaults): 112x112 frames, SigLIP patch 8 -> 14x14 patches ->
2x2 bilinear pooling -> 7x7 = 49 tokens per frame. Token (t, i, j) is the mean of patches
(2i..2i+1, 2j..2j+1), i.e. it covers pixels [16i:16i+16, 16j:16j+16] of frame t, the synthetic
world's 16 px cells. Qwen2-VL / Qwen2.5-VL defaults: patch 8, spatial merge 2 -> the same 7x7 grid of
16 px cells, temporal patch 2 -> T/2 merged temporal tokens (see `cacovid.models.qwen2_vl`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GenerationConfig, PreTrainedTokenizerFast

# Words every tiny model knows besides the caller's: chat roles, option letters, digits, punctuation.
BASE_WORDS: tuple[str, ...] = (
    ("system", "user", "assistant", "answer", "with", "the", "letter", "what", "which", "is", "of", "a")
    + tuple("ABCDEFGH")
    + tuple("0123456789")
    + tuple(".,?!:;'\"()-")
)

UNK, PAD = "<unk>", "<pad>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"

# ChatML-style template, whitespace separated so the word-level tokenizer splits it cleanly.
# `{video_marker}` is substituted per family (LLaVA-OV: "<video>", Qwen: vision_start+video_pad+vision_end).
_CHAT_TEMPLATE = (
    "{{% for message in messages %}}" + IM_START + "{{{{ message['role'] }}}} "
    "{{% if message['content'] is string %}}{{{{ message['content'] }}}}"
    "{{% else %}}{{% for c in message['content'] %}}"
    "{{% if c['type'] == 'video' %}}{video_marker} "
    "{{% elif c['type'] == 'image' %}}{image_marker} "
    "{{% elif c['type'] == 'text' %}}{{{{ c['text'] }}}}{{% endif %}}"
    "{{% endfor %}}{{% endif %}} " + IM_END + " {{% endfor %}}"
    "{{% if add_generation_prompt %}}" + IM_START + "assistant {{% endif %}}"
)


def chat_template(video_marker: str, image_marker: str) -> str:
    """A ChatML-like Jinja template that renders a video entry as `video_marker`."""
    return _CHAT_TEMPLATE.format(video_marker=video_marker, image_marker=image_marker)


def build_word_tokenizer(
    words: Sequence[str],
    special_tokens: Sequence[str],
    chat_template: str,
    *,
    eos_token: str = IM_END,
) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer: one id per (case-sensitive) word, punctuation split off.

    Ids: `<unk>`=0, `<pad>`=1, then `special_tokens` (never split, e.g. `<video>`), then `words` in
    order without duplicates. Unknown words map to `<unk>`. Padding is on the left (decoder-only
    batching); `eos_token` must be one of the special tokens.
    """
    specials = [UNK, PAD] + [t for t in special_tokens if t not in (UNK, PAD)]
    if eos_token not in specials:
        raise ValueError(f"eos token {eos_token!r} must be one of the special tokens {specials}")
    vocab: dict[str, int] = {}
    for tok in [*specials, *words]:
        if not isinstance(tok, str) or not tok or any(ch.isspace() for ch in tok):
            raise ValueError(f"vocabulary entries must be non-empty strings without spaces, got {tok!r}")
        vocab.setdefault(tok, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    extra = [t for t in specials if t not in (UNK, PAD, eos_token)]
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=UNK,
        pad_token=PAD,
        eos_token=eos_token,
        padding_side="left",
        chat_template=chat_template,
        additional_special_tokens=extra,
    )
    return tok


def _vocabulary(words: Sequence[str] | None) -> list[str]:
    out = list(BASE_WORDS)
    seen = set(out)
    for w in words or ():
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's global RNG for weight init without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _grid(frame_size: int, patch: int, merge: int = 2) -> int:
    if frame_size <= 0 or patch <= 0 or frame_size % patch:
        raise ValueError(f"frame_size {frame_size} must be a positive multiple of patch {patch}")
    n = frame_size // patch
    if n % merge:
        raise ValueError(f"{n} patches per side cannot be pooled/merged by {merge}")
    return n // merge


def _text_config_kwargs(
    vocab_size: int, hidden: int, layers: int, heads: int, kv_heads: int, pad_id: int, eos_id: int
) -> dict:
    if hidden % heads:
        raise ValueError(f"text hidden size {hidden} must be divisible by {heads} heads")
    return dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=8192,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )


def _generation_config(tok: PreTrainedTokenizerFast) -> GenerationConfig:
    return GenerationConfig(
        do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None
    )


def tiny_llava_onevision(
    words: Sequence[str] | None = None,
    *,
    frame_size: int = 112,
    patch: int = 8,
    text_hidden: int = 256,
    text_layers: int = 4,
    heads: int = 4,
    kv_heads: int = 2,
    vision_hidden: int = 128,
    vision_layers: int = 2,
    seed: int = 0,
):
    """A tiny random LLaVA-OneVision (SigLIP + Qwen2) and its real processor.

    Frames of `frame_size` px, SigLIP patches of `patch` px, 2x2 pooling: (frame_size/patch/2)^2
    tokens per frame (49 by default) in the same row-major cell layout as the image, plus one
    `image_newline` per video. The video processor resizes to exactly `frame_size` (a no-op for
    frames already that size), never crops, and normalises to [-1, 1].
    Returns (LlavaOnevisionForConditionalGeneration, LlavaOnevisionProcessor).
    """
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    grid = _grid(frame_size, patch)
    template = chat_template("<video>", "<image>")
    tok = build_word_tokenizer(_vocabulary(words), [IM_START, IM_END, "<video>", "<image>"], template)
    size = {"height": frame_size, "width": frame_size}
    norm = dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    video_proc = LlavaOnevisionVideoProcessor(size=size, do_center_crop=False, **norm)
    image_proc = LlavaOnevisionImageProcessor(
        size=size, image_grid_pinpoints=[[frame_size, frame_size]], **norm
    )
    processor = LlavaOnevisionProcessor(
        image_processor=image_proc,
        tokenizer=tok,
        video_processor=video_proc,
        num_image_tokens=(2 * grid) ** 2,
        vision_feature_select_strategy="full",
        chat_template=template,
    )
    config = LlavaOnevisionConfig(
        vision_config=dict(
            model_type="siglip_vision_model",
            hidden_size=vision_hidden,
            intermediate_size=2 * vision_hidden,
            num_hidden_layers=vision_layers,
            num_attention_heads=4,
            image_size=frame_size,
            patch_size=patch,
            vision_use_head=False,
        ),
        text_config=dict(
            model_type="qwen2",
            **_text_config_kwargs(
                len(tok), text_hidden, text_layers, heads, kv_heads, tok.pad_token_id, tok.eos_token_id
            ),
        ),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=[[frame_size, frame_size]],
        tie_word_embeddings=False,
    )
    with _seeded(seed):
        model = LlavaOnevisionForConditionalGeneration(config)
    model.generation_config = _generation_config(tok)
    return model.eval(), processor


QWEN_VIDEO_MARKER = "<|vision_start|> <|video_pad|> <|vision_end|>"
QWEN_IMAGE_MARKER = "<|vision_start|> <|image_pad|> <|vision_end|>"
QWEN_SPECIALS = [IM_START, IM_END, "<|vision_start|>", "<|vision_end|>", "<|video_pad|>", "<|image_pad|>"]


def _qwen_parts(
    words: Sequence[str] | None, frame_size: int, patch: int, processor_cls, image_cls, video_cls
):
    template = chat_template(QWEN_VIDEO_MARKER, QWEN_IMAGE_MARKER)
    tok = build_word_tokenizer(_vocabulary(words), QWEN_SPECIALS, template)
    # A fixed pixel budget of exactly one frame: square frames of `frame_size` pass unresized, so the
    # merged token grid is (frame_size / patch / 2)^2 with 16 px cells by default.
    common = dict(
        size={"shortest_edge": frame_size * frame_size, "longest_edge": frame_size * frame_size},
        patch_size=patch,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    image_proc = image_cls(**common)
    video_proc = video_cls(**common, cap_pixels_per_frame=False)
    processor = processor_cls(
        image_processor=image_proc, tokenizer=tok, video_processor=video_proc, chat_template=template
    )
    ids = {
        "image_token_id": tok.convert_tokens_to_ids("<|image_pad|>"),
        "video_token_id": tok.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start_token_id": tok.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tok.convert_tokens_to_ids("<|vision_end|>"),
    }
    return tok, processor, ids


def _mrope_text(tok, hidden: int, layers: int, heads: int, kv_heads: int) -> dict:
    head_dim = hidden // heads
    if head_dim % 2:
        raise ValueError(f"head dim {head_dim} must be even for rotary embeddings")
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    section = [t, h, half - t - h]  # sums to head_dim / 2, as M-RoPE requires
    return dict(
        **_text_config_kwargs(len(tok), hidden, layers, heads, kv_heads, tok.pad_token_id, tok.eos_token_id),
        rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": section},
    )


def tiny_qwen2_vl(
    words: Sequence[str] | None = None,
    *,
    frame_size: int = 112,
    patch: int = 8,
    text_hidden: int = 256,
    text_layers: int = 4,
    heads: int = 4,
    kv_heads: int = 2,
    vision_hidden: int = 128,
    vision_layers: int = 2,
    seed: int = 0,
):
    """A tiny random Qwen2-VL and its real processor (M-RoPE, temporal patch 2, spatial merge 2).

    Square frames of `frame_size` px give (frame_size/patch/2)^2 tokens per temporal token (49 by
    default); every 2 frames share one temporal token. Returns (Qwen2VLForConditionalGeneration,
    Qwen2VLProcessor).
    """
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    _grid(frame_size, patch)
    tok, processor, ids = _qwen_parts(
        words, frame_size, patch, Qwen2VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor
    )
    config = Qwen2VLConfig(
        vision_config=dict(
            depth=vision_layers,
            embed_dim=vision_hidden,
            hidden_size=text_hidden,
            num_heads=4,
            mlp_ratio=2,
            patch_size=patch,
            temporal_patch_size=2,
            spatial_merge_size=2,
        ),
        text_config=_mrope_text(tok, text_hidden, text_layers, heads, kv_heads),
        tie_word_embeddings=False,
        **ids,
    )
    with _seeded(seed):
        model = Qwen2VLForConditionalGeneration(config)
    model.generation_config = _generation_config(tok)
    return model.eval(), processor


def tiny_qwen2_5_vl(
    words: Sequence[str] | None = None,
    *,
    frame_size: int = 112,
    patch: int = 8,
    text_hidden: int = 256,
    text_layers: int = 4,
    heads: int = 4,
    kv_heads: int = 2,
    vision_hidden: int = 128,
    vision_layers: int = 2,
    seed: int = 0,
):
    """A tiny random Qwen2.5-VL and its real processor (windowed vision attention, last vision
    block full attention, absolute-time M-RoPE through `second_per_grid_ts`).

    Same token grid as `tiny_qwen2_vl`. The vision window is 2x2 merged tokens (32 px by default).
    Returns (Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor).
    """
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    _grid(frame_size, patch)
    tok, processor, ids = _qwen_parts(
        words, frame_size, patch, Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor
    )
    config = Qwen2_5_VLConfig(
        vision_config=dict(
            depth=vision_layers,
            hidden_size=vision_hidden,
            intermediate_size=2 * vision_hidden,
            out_hidden_size=text_hidden,
            num_heads=4,
            patch_size=patch,
            temporal_patch_size=2,
            spatial_merge_size=2,
            window_size=4 * patch,
            fullatt_block_indexes=[vision_layers - 1],
            tokens_per_second=2,
        ),
        text_config=_mrope_text(tok, text_hidden, text_layers, heads, kv_heads),
        tie_word_embeddings=False,
        **ids,
    )
    with _seeded(seed):
        model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config = _generation_config(tok)
    return model.eval(), processor
