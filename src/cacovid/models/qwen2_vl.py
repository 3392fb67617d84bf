"""Qwen2-VL and Qwen2.5-VL adapters (M-RoPE language model, patch-merging vision tower).

Sequence layout for one video: text, `<|vision_start|>`, T*H*W `<|video_pad|>` grid tokens in
(t, h, w) order, `<|vision_end|>`, text. Separators are text: always kept. Position ids are the 3-D
(t, h, w) M-RoPE ids of the model's own `get_rope_index` (Qwen2.5-VL: temporal ids scaled by
`second_per_grid_ts`), so a kept token keeps its original (t, h, w) coordinates.

Temporal merging: the vision tower embeds pairs of frames (temporal patch 2), so F input frames give
T = ceil(F / 2) temporal tokens (an odd last frame is repeated by the processor). Per-frame evidence
(F, H, W) maps onto the merged grid as: token (t, h, w) is evidence if cell (h, w) is evidence in
frame 2t or frame 2t+1.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from cacovid.models.attention import capture_inputs
from cacovid.models.base import VideoLLM
from cacovid.models.frames import as_frames, evidence_mask, one_video_inputs
from cacovid.types import EncodedPrompt


class Qwen2VLVideoLLM(VideoLLM):
    """Adapter over `Qwen2VLForConditionalGeneration` + `Qwen2VLProcessor`."""

    family = "qwen2_vl"

    @property
    def text_config(self):
        return self.model.config.text_config

    def language_model(self) -> nn.Module:
        return self.model.model.language_model

    @property
    def visual(self) -> nn.Module:
        return self.model.model.visual

    @property
    def video_token_id(self) -> int:
        return int(self.model.config.video_token_id)

    @property
    def temporal_merge(self) -> int:
        return int(self.model.config.vision_config.temporal_patch_size)

    @property
    def spatial_merge(self) -> int:
        return int(self.model.config.vision_config.spatial_merge_size)

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
        """Frames (F, H, W, 3) uint8 + question -> EncodedPrompt over the merged (T, H', W') grid.

        Runs the processor (chat template, resizing, patchifying, placeholder expansion,
        `mm_token_type_ids`), then `encode_inputs` on its outputs. `features` / `blind` skip the
        vision tower (`VideoLLM.encode`).
        """
        frames = as_frames(frames)
        inputs = self.processor(text=self.chat_text(question), videos=[frames], return_tensors="pt")
        self._set_frame_rate(inputs)
        return self.encode_inputs(
            inputs,
            evidence=evidence,
            num_frames=frames.shape[0],
            vision_attention=vision_attention,
            features=features,
            blind=blind,
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

        Runs the model's own `get_video_features` and `get_rope_index` (its 3-D M-RoPE ids), exactly
        as the model's forward would (unless `features` / `blind` say what the placeholders hold,
        see `VideoLLM.encode`). `num_frames` is the number of input frames F (default: the
        merged grid's T times the temporal patch); `evidence` is (F, H', W').
        """
        ids, pixels = one_video_inputs(inputs, "pixel_values_videos")
        for key in ("video_grid_thw", "mm_token_type_ids"):
            if inputs.get(key) is None:
                raise ValueError(
                    f"the processor's outputs have no {key!r} (transformers 5.x processors return it)"
                )
        grid_thw = inputs["video_grid_thw"].to(self.device)
        if grid_thw.shape != (1, 3):
            raise ValueError(
                f"expected one video (video_grid_thw of shape (1, 3)), got {tuple(grid_thw.shape)}"
            )
        input_ids = ids.unsqueeze(0).to(self.device)
        t, gh, gw = (int(x) for x in grid_thw[0])
        m = self.spatial_merge
        grid = (t, gh // m, gw // m)
        F = int(num_frames) if num_frames is not None else t * self.temporal_merge
        ev = evidence_mask(evidence, F, grid, temporal_merge=self.temporal_merge)
        ev = ev.to(self.device) if ev is not None else None
        pixels = pixels.to(self.device, self.dtype)

        block_inputs = None
        n_placeholders = int((input_ids[0] == self.video_token_id).sum())
        feats = self._given_features(features, blind, n_placeholders, vision_attention)
        if feats is None and vision_attention:
            with capture_inputs(self._last_vision_attention()) as got:
                feats = self._video_features(pixels, grid_thw)
            block_inputs = got[-1]
        elif feats is None:
            feats = self._video_features(pixels, grid_thw)

        ids = input_ids[0]
        embeds = self.input_embeddings()(ids)
        video_mask = ids == self.video_token_id
        if int(video_mask.sum()) != feats.shape[0] or feats.shape[0] != grid[0] * grid[1] * grid[2]:
            raise ValueError(
                f"prompt holds {int(video_mask.sum())} video placeholders, the vision tower gave "
                f"{feats.shape[0]} tokens for grid {grid}"
            )
        embeds = embeds.masked_scatter(video_mask.unsqueeze(-1), feats.to(embeds.dtype))
        position_ids = self._rope_index(inputs, input_ids, grid_thw)  # (3, L)
        extras = {}
        if block_inputs is not None:
            extras["vision_attention"] = self._received_on_grid(block_inputs, grid_thw)
        L = ids.shape[0]
        meta = {"family": self.family, "num_frames": F}
        if inputs.get("second_per_grid_ts") is not None:
            meta["second_per_grid_ts"] = float(inputs["second_per_grid_ts"][0])
        if blind:
            meta["blind"] = True
        return EncodedPrompt(
            inputs_embeds=embeds,
            position_ids=position_ids,
            attention_mask=torch.ones(L, dtype=torch.long, device=self.device),
            video_positions=video_mask.nonzero(as_tuple=True)[0],
            video_grid=grid,
            input_ids=ids,
            evidence_mask=ev,
            extras=extras,
            meta=meta,
        )

    def _set_frame_rate(self, inputs) -> None:
        """Hook for families whose positions depend on the frame rate (Qwen2.5-VL)."""

    def _video_features(self, pixels: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        out = self.model.model.get_video_features(pixels, grid_thw, return_dict=True)
        return torch.cat(tuple(out.pooler_output), dim=0)

    def _rope_index(self, inputs, input_ids: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """(3, L) M-RoPE ids, computed by the model's own `get_rope_index` as its forward would."""
        attention_mask = inputs.get("attention_mask")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        kwargs = {
            "video_grid_thw": grid_thw,
            "attention_mask": attention_mask.reshape(input_ids.shape).to(self.device),
            "mm_token_type_ids": inputs["mm_token_type_ids"].reshape(input_ids.shape).to(self.device),
        }
        params = inspect.signature(self.model.model.get_rope_index).parameters
        if "second_per_grid_ts" in params and inputs.get("second_per_grid_ts") is not None:
            kwargs["second_per_grid_ts"] = inputs["second_per_grid_ts"].to(self.device)
        position_ids, _ = self.model.model.get_rope_index(input_ids, **kwargs)
        return position_ids[:, 0]

    # ---- vision attention --------------------------------------------------------------------
    def _last_vision_attention(self) -> nn.Module:
        return self.visual.blocks[-1].attn

    def _window_index(self, grid_thw: torch.Tensor) -> torch.Tensor | None:
        """Merged-token order inside the vision blocks (Qwen2.5-VL windows), or None (in order)."""
        return None

    def _vision_attention_probs(self, block_inputs) -> list[tuple[int, int, torch.Tensor]]:
        """Recompute the last vision block's attention probabilities from its captured inputs:
        one (start, end, probs (heads, n_s, n_s)) per attention segment (frame pair or window).

        Fused attention never materialises the probabilities and the eager path of these blocks
        discards them, so they are recomputed with the block's own projections and rotary
        embedding (the same math as the block's forward; a test checks the block's output).
        """
        args, kwargs = block_inputs
        attn = self._last_vision_attention()
        hidden = args[0] if args else kwargs["hidden_states"]
        cu = kwargs["cu_seqlens"] if "cu_seqlens" in kwargs else args[1]
        cos_sin = kwargs["position_embeddings"] if "position_embeddings" in kwargs else args[2]
        n = hidden.shape[0]
        qkv = attn.qkv(hidden).reshape(n, 3, attn.num_heads, -1).permute(1, 0, 2, 3)
        rotate = sys.modules[type(attn).__module__].apply_rotary_pos_emb_vision
        q, k = rotate(qkv[0], qkv[1], *cos_sin)
        q, k = q.transpose(0, 1).float(), k.transpose(0, 1).float()  # (heads, n, d)
        bounds = [int(x) for x in cu.tolist()]
        return [
            (s, e, torch.softmax(q[:, s:e] @ k[:, s:e].transpose(-1, -2) * attn.scaling, dim=-1))
            for s, e in zip(bounds[:-1], bounds[1:], strict=True)
        ]

    def _received_on_grid(self, block_inputs, grid_thw: torch.Tensor) -> torch.Tensor:
        """(T*H*W,) mean attention each merged token received in the last vision block: mean over
        heads, over the queries of its attention segment, and over the merge x merge patches it is
        made of, returned in (t, h, w) order."""
        segments = self._vision_attention_probs(block_inputs)
        n = segments[-1][1]
        received = torch.empty(n, dtype=torch.float32, device=segments[0][2].device)
        for s, e, probs in segments:
            received[s:e] = probs.mean(dim=(0, 1))
        merged = received.view(-1, self.spatial_merge**2).mean(-1)  # merge blocks are contiguous
        order = self._window_index(grid_thw)
        if order is not None:
            merged = merged[torch.argsort(order.to(merged.device))]
        return merged


class Qwen2_5_VLVideoLLM(Qwen2VLVideoLLM):
    """Adapter over `Qwen2_5_VLForConditionalGeneration` + `Qwen2_5_VLProcessor` (windowed vision
    attention, absolute-time temporal ids through `second_per_grid_ts`)."""

    family = "qwen2_5_vl"
    # Frames per second of the frames given to `encode` (after any sampling). Temporal M-RoPE ids are
    # t * tokens_per_second * temporal_patch / fps; None keeps the processor's default (24 fps).
    video_fps: float | None = None

    def _set_frame_rate(self, inputs) -> None:
        if self.video_fps is None:
            return
        if not self.video_fps > 0:
            raise ValueError(f"video_fps must be positive, got {self.video_fps!r}")
        seconds = self.temporal_merge / float(self.video_fps)
        inputs["second_per_grid_ts"] = torch.full_like(inputs["second_per_grid_ts"], seconds)

    def _window_index(self, grid_thw: torch.Tensor) -> torch.Tensor | None:
        from transformers.vision_utils import get_vision_window_index

        vc = self.model.config.vision_config
        index, _ = get_vision_window_index(
            grid_thw,
            spatial_merge_size=vc.spatial_merge_size,
            window_size=vc.window_size,
            patch_size=vc.patch_size,
        )
        return index
