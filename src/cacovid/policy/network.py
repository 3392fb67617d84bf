"""The CaCoVID policy network (docs/method.md §2): a question-aware scorer over video tokens.

One decoder layer of the host language model's own class, initialised as a copy of the host's first
layer, reads the whole [system, video, question] embedding sequence with its original position ids and
**bidirectional** attention, so every video token's score depends on the question after it. An RMSNorm
and two small MLP heads turn the layer's video outputs into per-token (drop, keep) logits and, from the
per-frame mean, per-frame (drop, keep) logits. Only this module is trained; the host stays frozen.
With `PolicyConfig.pool_size` k > 1 the layer reads k x k spatial cell means of the video tokens
(`policy/pooling.py`) and its outputs go back to every member of a cell; the output is the same shape.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from cacovid.ops.novelty import standardise, temporal_novelty
from cacovid.policy.config import PolicyConfig, structural_mismatches
from cacovid.policy.context import CrossFrameContext, cross_frame_similarities
from cacovid.policy.layer_attention import apply_layer_attention
from cacovid.policy.layers import (
    bidirectional_mask,
    build_host_modules,
    host_attn_implementation,
    make_bidirectional,
)
from cacovid.policy.pooling import PooledPrompt, frame_means, pool_prompt
from cacovid.policy.question import QuestionMatch
from cacovid.types import EncodedPrompt

if TYPE_CHECKING:
    from cacovid.models.base import VideoLLM

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


@dataclass
class PolicyOutput:
    """Policy logits for one prompt. Column 0 is "drop", column 1 is "keep".

    - `token_logits` (N, 2) for the N = T*P video tokens in (t, h, w) order.
    - `frame_logits` (T, 2).
    """

    token_logits: torch.Tensor
    frame_logits: torch.Tensor

    @property
    def token_scores(self) -> torch.Tensor:
        """(N,) s = z_keep − z_drop."""
        return self.token_logits[:, 1] - self.token_logits[:, 0]

    @property
    def frame_scores(self) -> torch.Tensor:
        """(T,) u = z_keep − z_drop."""
        return self.frame_logits[:, 1] - self.frame_logits[:, 0]

    def detach(self) -> PolicyOutput:
        return PolicyOutput(self.token_logits.detach(), self.frame_logits.detach())


def _head(hidden: int, widths: Sequence[int], init_scale: float, gen: torch.Generator) -> nn.Sequential:
    """MLP hidden → widths… → 2 with SiLU between; seeded init, tiny last layer so logits start ≈ 0."""
    dims = [hidden, *widths, 2]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        lin = nn.Linear(a, b)
        with torch.no_grad():
            if i == len(dims) - 2:
                lin.weight.normal_(0.0, init_scale, generator=gen)
            else:
                bound = (6.0 / (a + b)) ** 0.5  # Glorot-uniform keeps the hidden signal alive
                lin.weight.uniform_(-bound, bound, generator=gen)
            lin.bias.zero_()
        layers.append(lin)
        if i < len(dims) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class CaCoVIDPolicy(nn.Module):
    """Question-aware token/frame scorer.

    Build it from a host with `CaCoVIDPolicy.from_host(adapter)`, or from a saved directory with
    `CaCoVIDPolicy.from_pretrained(dir, host=None)`. Parameters are float32 whatever the host's
    dtype; inputs are cast on the way in.
    """

    def __init__(
        self,
        config: PolicyConfig,
        layer: nn.Module | None = None,
        rotary: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if (layer is None) != (rotary is None):
            raise ValueError("pass both the host decoder layer and its rotary embedding, or neither")
        if layer is None:
            # Weights are normally overwritten by a checkpoint; seeding keeps a host-less policy
            # reproducible anyway without touching the caller's global RNG.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(config.seed))
                layer, rotary = build_host_modules(config.text_config)
        self.config = config
        D = config.hidden_size
        # Our own copies: the policy must never mutate (or share parameters with) the frozen host.
        self.layer = copy.deepcopy(layer).float()
        self.rotary = copy.deepcopy(rotary).float()
        make_bidirectional(self.layer, config.attn_implementation)
        apply_layer_attention(self)  # PolicyConfig.layer_attention (docs/method.md §8)
        for p in self.layer.parameters():
            p.requires_grad_(True)
        eps = float(config.text_config.get("rms_norm_eps", 1e-6))
        self.norm = nn.RMSNorm(D, eps=eps)
        gen = torch.Generator().manual_seed(int(config.seed))
        widths = config.resolved_head_widths()
        self.token_head = _head(D, widths, config.init_scale, gen)
        self.frame_head = _head(D, widths, config.init_scale, gen)
        self.question_match = (
            QuestionMatch(D, config.question_match_dim, gen, eps=eps, init=config.question_match_init)
            if config.question_match_dim
            else None
        )
        self.context = CrossFrameContext(config.context_width, gen) if config.context_width else None

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_host(cls, host: VideoLLM, **config_kwargs) -> CaCoVIDPolicy:
        """A fresh policy for `host`: its first decoder layer copied, new heads (seeded).

        Unless `attn_implementation` is given, the copied layer keeps the host's attention kernel
        (`host_attn_implementation`), so a host loaded with sdpa or flash attention gets a policy
        layer on the same kernel rather than the config default.
        """
        if config_kwargs.get("attn_implementation") is None:
            config_kwargs["attn_implementation"] = host_attn_implementation(host)
        config = PolicyConfig(
            host_name=str(getattr(host, "name_or_path", "")),
            host_family=str(host.family),
            text_config=host.text_config.to_dict(),
            **config_kwargs,
        )
        return cls(config, host.first_decoder_layer(), host.rotary_embedding())

    @property
    def device(self) -> torch.device:
        return self.norm.weight.device

    def head_parameters(self) -> list[nn.Parameter]:
        """Norm, heads, question-match and context terms: trained at the full learning rate."""
        extra = [m for m in (self.question_match, self.context) if m is not None]
        return [
            *self.norm.parameters(),
            *self.token_head.parameters(),
            *self.frame_head.parameters(),
            *(p for m in extra for p in m.parameters()),
        ]

    def layer_parameters(self) -> list[nn.Parameter]:
        """The copied decoder layer: trained at a 10× smaller learning rate."""
        return list(self.layer.parameters())

    def with_pool_size(self, k: int) -> CaCoVIDPolicy:
        """A copy of this policy (same weights, same device) whose layer reads k x k cell means
        (`PolicyConfig.pool_size`); `self` is unchanged. Why a copy: the same trained weights can be
        compared at two pool sizes side by side."""
        config = dataclasses.replace(self.config, pool_size=k)  # validates k
        twin = copy.deepcopy(self)
        twin.config = config
        return twin

    # ---- forward -----------------------------------------------------------------------------
    def forward(self, prompt: EncodedPrompt | Sequence[EncodedPrompt]) -> PolicyOutput | list[PolicyOutput]:
        """Logits for one prompt (→ PolicyOutput) or a batch of prompts (→ list[PolicyOutput])."""
        if isinstance(prompt, EncodedPrompt):
            return self.forward_batch([prompt])[0]
        return self.forward_batch(list(prompt))

    def forward_batch(self, prompts: Sequence[EncodedPrompt]) -> list[PolicyOutput]:
        """Run the bidirectional layer once over a right-padded batch; heads per prompt.

        Shapes inside: hidden (B, L, D); position ids (B, L) or (3, B, L); padding keys masked. With
        `pool_size` k > 1 the layer runs on each prompt's pooled sequence (`policy/pooling.py`), the
        token head's logits go back to every member of a cell, the frame head reads the frame mean
        of the broadcast outputs, and the novelty prior and question term are computed on the full
        grid, so every member of a cell can still score differently.
        """
        if not prompts:
            raise ValueError("forward_batch needs at least one prompt")
        D = self.config.hidden_size
        for p in prompts:
            if not isinstance(p, EncodedPrompt):
                raise ValueError(f"expected EncodedPrompt, got {type(p).__name__}")
            if p.hidden_size != D:
                raise ValueError(f"prompt hidden size {p.hidden_size} does not match the policy's host ({D})")
        mrope = prompts[0].position_ids.dim() == 2
        if any((p.position_ids.dim() == 2) != mrope for p in prompts):
            raise ValueError("cannot batch 1-D and 3-D (M-RoPE) position ids together")
        k = self.config.pool_size
        pooled = [pool_prompt(p, k) for p in prompts] if k > 1 else None
        inputs = [q.prompt for q in pooled] if pooled is not None else list(prompts)
        out = self._layer_outputs(inputs, mrope)
        dev, dtype = self.device, self.norm.weight.dtype
        results = []
        for b, p in enumerate(prompts):
            T, P = p.num_frames, p.tokens_per_frame
            # clone(): prompts are often built under inference_mode, and autograd must save the index.
            video = out[b, inputs[b].video_positions.to(dev).clone()].to(dtype)  # float32 after autocast
            if pooled is None:
                token_logits = self.token_head(self.norm(video))  # (N, 2)
                frame_mean = video.reshape(T, P, D).mean(dim=1)
            else:
                token_logits, frame_mean = self._broadcast(video, pooled[b])
            if self.config.novelty_weight:
                token_logits = token_logits + self.novelty_prior(p)
            if self.question_match is not None:
                token_logits = token_logits + self.question_term(p)
            frame_logits = self.frame_head(self.norm(frame_mean))  # (T, 2)
            results.append(PolicyOutput(token_logits, frame_logits))
        return results

    def _layer_outputs(self, prompts: Sequence[EncodedPrompt], mrope: bool) -> torch.Tensor:
        """(B, L, D) outputs of the copied layer over the right-padded batch of `prompts`."""
        D = self.config.hidden_size
        dev, dtype = self.device, self.norm.weight.dtype
        B, L = len(prompts), max(p.inputs_embeds.shape[0] for p in prompts)
        hidden = torch.zeros(B, L, D, dtype=dtype, device=dev)
        valid = torch.zeros(B, L, dtype=torch.bool, device=dev)
        pos = torch.zeros((3, B, L) if mrope else (B, L), dtype=torch.long, device=dev)
        for b, p in enumerate(prompts):
            n = p.inputs_embeds.shape[0]
            hidden[b, :n] = p.inputs_embeds.to(dev, dtype)
            valid[b, :n] = p.attention_mask.to(dev).bool()
            pos[..., b, :n] = p.position_ids.to(dev)
        position_embeddings = self.rotary(hidden, pos)
        mask = bidirectional_mask(valid, self.config.attn_implementation, dtype)
        # Flash kernels take half precision only; the policy's parameters stay float32, so its layer
        # runs under bf16 autocast when the host's kernel is a flash one (they exist on CUDA only).
        flash = self.config.attn_implementation.startswith("flash") and dtype == torch.float32
        with torch.autocast(dev.type, dtype=torch.bfloat16) if flash else contextlib.nullcontext():
            out = self.layer(
                hidden,
                attention_mask=mask,
                position_embeddings=position_embeddings,
                position_ids=None,
                is_causal=False,
            )
        if isinstance(out, tuple):  # older layer classes return (hidden, …)
            out = out[0]
        return out

    def _broadcast(self, cells: torch.Tensor, pooled: PooledPrompt) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 2) token-head logits of the layer's (N', D) pooled video outputs `cells`, each cell's
        logits given to its members, and (T, D) the frame means of the outputs so broadcast. The head
        runs on the N' cells only: it is per token, so this equals running it on the broadcast."""
        members = pooled.members.to(self.device).clone()
        return self.token_head(self.norm(cells))[members], frame_means(cells, pooled)

    def question_term(self, prompt: EncodedPrompt) -> torch.Tensor:
        """(N, 2) logit offsets ±s/2 from the question-match term r (`policy/question.py`) and, where
        the policy has one, the cross-frame context term built on r (`policy/context.py`): s = r + c."""
        assert self.question_match is not None
        dev, dtype = self.device, self.norm.weight.dtype
        embeds = prompt.inputs_embeds.to(dev, dtype)
        video = embeds[prompt.video_positions.to(dev).clone()]
        question = embeds[prompt.question_positions().to(dev).clone()]
        score = self.question_match(video, question)
        if self.context is not None:
            with torch.no_grad():
                similarities = cross_frame_similarities(video.reshape(*prompt.video_grid, -1))
            score = score + self.context(score, prompt.video_grid, similarities.to(dtype))
        half = 0.5 * score.unsqueeze(1)
        return torch.cat([-half, half], dim=1)

    def novelty_prior(self, prompt: EncodedPrompt) -> torch.Tensor:
        """(N, 2) logit offsets ±w·n/2 (n: standardised temporal novelty of the input video tokens).

        Split evenly over (drop, keep) so s = z_keep − z_drop moves by w·n; it depends on the input only,
        so it carries no gradient and the heads learn a correction to it.
        """
        with torch.no_grad():
            n = standardise(temporal_novelty(prompt.frame_features().to(self.device))).reshape(-1, 1)
        half = 0.5 * self.config.novelty_weight * n.to(self.norm.weight.dtype)
        return torch.cat([-half, half], dim=1)

    # ---- persistence -------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        """Write `config.json` (host name, family, text config, heads) and `model.safetensors`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save(directory / CONFIG_NAME)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt", "cacovid": "policy"})

    @classmethod
    def from_pretrained(cls, directory: str | Path, host: VideoLLM | None = None) -> CaCoVIDPolicy:
        """Load a saved policy. With `host`, check it fits (same family and layer structure) first."""
        directory = Path(directory)
        cfg_path, w_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        if not cfg_path.is_file() or not w_path.is_file():
            raise ValueError(f"{directory} is not a saved CaCoVID policy ({CONFIG_NAME}, {WEIGHTS_NAME})")
        try:
            config = PolicyConfig.load(cfg_path)
        except (json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"unreadable policy config {cfg_path}: {e}") from e
        if host is not None:
            check_host_fits(config, host)
            policy = cls(config, host.first_decoder_layer(), host.rotary_embedding())
        else:
            policy = cls(config)
        state = load_file(str(w_path))
        missing, unexpected = policy.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"policy weights in {w_path} do not fit: missing {sorted(missing)}, "
                f"unexpected {sorted(unexpected)}"
            )
        return policy


def check_host_fits(config: PolicyConfig, host: VideoLLM) -> None:
    """Raise ValueError if a policy saved for one host is being loaded onto an incompatible one."""
    fam = str(host.family)
    if config.host_family and fam != config.host_family:
        raise ValueError(
            f"policy was trained for a {config.host_family!r} host "
            f"({config.host_name or 'unnamed'}), not a {fam!r} one"
        )
    diffs = structural_mismatches(config.text_config, host.text_config.to_dict())
    if diffs:
        raise ValueError("policy does not fit this host's language model: " + "; ".join(diffs))
