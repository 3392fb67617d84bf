"""LLaVA-OneVision adapter (SigLIP vision tower + projector + 2x2 bilinear pooling, Qwen2 LM).

Sequence layout for one video: text, then T*H*W pooled grid tokens in (t, h, w) order, then one
`image_newline` token (part of the video block, not of the grid, always kept), then text. Position
ids are plain 1-D `arange(L)`, exactly what the HF model uses; the language model needs them 2-D
(B, L) — a 3-D tensor is silently misread.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from cacovid.models.attention import capture_output, eager_attention, received_attention
from cacovid.models.base import VideoLLM
from cacovid.models.frames import as_frames, evidence_mask, one_video_inputs
from cacovid.types import EncodedPrompt


class LlavaOneVisionVideoLLM(VideoLLM):
    """Adapter over `LlavaOnevisionForConditionalGeneration` + `LlavaOnevisionProcessor`."""

    family = "llava_onevision"

    @property
    def text_config(self):
        return self.model.config.text_config

    def language_model(self) -> nn.Module:
        return self.model.model.language_model

    @property
    def video_token_id(self) -> int:
        return int(self.model.config.video_token_id)

    def patch_grid(self) -> int:
        """Patches per side of one frame inside the vision tower (before pooling)."""
        vc = self.model.config.vision_config
        return vc.image_size // vc.patch_size

    def token_grid(self) -> tuple[int, int]:
        """(H, W) of the pooled token grid per frame."""
        n = math.ceil(self.patch_grid() / 2)
        return n, n

    @torch.no_grad()
    def encode(
        self,
        frames: np.ndarray | Sequence,
        question: str,
        *,
        evidence: np.ndarray | None = None,
        vision_attention: bool = False,
        features: torch.Tensor | None = None,
        blind: bool = False,
    ) -> EncodedPrompt:
        """Frames (T, H, W, 3) uint8 + question -> EncodedPrompt with T*H*W grid tokens.

        Runs the processor (chat template, frame resizing/normalisation, placeholder expansion), then
        `encode_inputs` on its outputs. `features` / `blind` skip the vision tower (`VideoLLM.encode`).
        """
        frames = as_frames(frames)
        T = frames.shape[0]
        inputs = self.processor(text=self.chat_text(question), videos=[frames], return_tensors="pt")
        if inputs["pixel_values_videos"].shape[1] != T:
            raise ValueError(
                f"the processor returned {inputs['pixel_values_videos'].shape[1]} frames for {T} input frames"
            )
        return self.encode_inputs(
            inputs, evidence=evidence, vision_attention=vision_attention, features=features, blind=blind
        )

    @torch.no_grad()
    def encode_inputs(
        self,
        inputs: Mapping[str, torch.Tensor],
        *,
        evidence: np.ndarray | None = None,
        num_frames: int | None = None,
        vision_attention: bool = False,
        features: torch.Tensor | None = None,
        blind: bool = False,
    ) -> EncodedPrompt:
        """The processor's outputs for one prompt with one video -> EncodedPrompt.

        Runs the model's own `get_video_features` and writes the features into the placeholders,
        exactly as the model's forward would (unless `features` / `blind` say what they hold, see
        `VideoLLM.encode`). `evidence` is (T, H, W) at the token grid.
        """
        input_ids, pixels = one_video_inputs(inputs, "pixel_values_videos")
        if pixels.dim() != 5 or pixels.shape[0] != 1:
            raise ValueError(
                f"pixel_values_videos must hold one video (1, T, 3, h, w), got shape {tuple(pixels.shape)}"
            )
        input_ids = input_ids.to(self.device)
        pixels = pixels.to(self.device, self.dtype)  # (1, T, 3, h, w)
        T = pixels.shape[1]
        H, W = self.token_grid()
        ev = evidence_mask(evidence, num_frames or T, (T, H, W))
        ev = ev.to(self.device) if ev is not None else None

        attn_store = None
        n_placeholders = int((input_ids == self.video_token_id).sum())
        feats = self._given_features(features, blind, n_placeholders, vision_attention)
        if feats is None and vision_attention:
            vt = self.model.model.vision_tower
            with eager_attention(vt), capture_output(self._feature_attention_module(), 1) as got:
                feats = self._video_features(pixels)
            attn_store = got[-1]
        elif feats is None:
            feats = self._video_features(pixels)  # (T*H*W + 1, D), newline last

        embeds = self.input_embeddings()(input_ids)
        video_mask = input_ids == self.video_token_id
        if n_placeholders != feats.shape[0]:
            raise ValueError(
                f"prompt holds {n_placeholders} video placeholders but the vision tower gave "
                f"{feats.shape[0]} tokens"
            )
        embeds = embeds.masked_scatter(video_mask.unsqueeze(-1), feats.to(embeds.dtype))
        placeholder_pos = video_mask.nonzero(as_tuple=True)[0]
        video_positions = placeholder_pos[: T * H * W]  # the trailing newline is not a grid token
        L = input_ids.shape[0]
        extras = {}
        if attn_store is not None:
            extras["vision_attention"] = self._pool_attention(attn_store, T)
        meta = {"family": self.family, "num_frames": T, "newline_position": int(placeholder_pos[-1])}
        if blind:
            meta["blind"] = True
        return EncodedPrompt(
            inputs_embeds=embeds,
            position_ids=torch.arange(L, device=self.device),
            attention_mask=torch.ones(L, dtype=torch.long, device=self.device),
            video_positions=video_positions,
            video_grid=(T, H, W),
            input_ids=input_ids,
            evidence_mask=ev,
            extras=extras,
            meta=meta,
        )

    def _video_features(self, pixels: torch.Tensor) -> torch.Tensor:
        cfg = self.model.config
        out = self.model.model.get_video_features(
            pixels,
            vision_feature_layer=cfg.vision_feature_layer,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy,
            return_dict=True,
        )
        return out.pooler_output.flatten(0, 1)

    def _blind_features(self, n_placeholders: int) -> torch.Tensor:
        """Zeros for the grid, then the learned `image_newline` that closes the video block (it does
        not depend on the pixels, and a blind prompt keeps it like any separator)."""
        grid = super()._blind_features(n_placeholders - 1)
        newline = self.model.model.image_newline.detach().to(grid.device, grid.dtype)
        return torch.cat((grid, newline[None]), dim=0)

    def _feature_attention_module(self) -> nn.Module:
        """The attention module of the vision layer whose output the projector reads (the last
        layer for `vision_feature_layer=-1`)."""
        vt = self.model.model.vision_tower
        encoder = vt.encoder if hasattr(vt, "encoder") else vt.vision_model.encoder
        layer = self.model.config.vision_feature_layer
        if not isinstance(layer, int):
            layer = layer[-1]
        index = layer if layer < 0 else layer - 1  # hidden_states[0] is the patch embedding
        return encoder.layers[index].self_attn

    def _pool_attention(self, weights: torch.Tensor, T: int) -> torch.Tensor:
        """(T, heads, P, P) last-layer attention -> (T*H*W,) received attention on the token grid,
        pooled with the same bilinear 2x2 reduction as the features."""
        n = self.patch_grid()
        recv = received_attention(weights)  # (T, P) mean attention each patch received
        if self.model.config.vision_feature_select_strategy == "default":
            recv = recv[:, 1:]
        recv = recv.view(T, 1, n, n)
        H, W = self.token_grid()
        pooled = nn.functional.interpolate(recv, size=(H, W), mode="bilinear")
        return pooled.reshape(-1)
