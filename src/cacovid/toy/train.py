"""Training recipe for the embedded toy video LLM (`cacovid toy train`).

A tiny model trained from scratch on one answer letter per video learns far too slowly on a CPU
(see shared/toy-notes.md), so the recipe adds the two signals a real video LLM gets from pretraining:
- a dense auxiliary loss on every video token: the projected token must "read" as the words for the
  colour and shape of the object under it (logits against the language model's word embeddings),
  plus a linear probe for its (row, column) — the stand-in for a pretrained vision encoder;
- token dropout with original positions kept: most training prompts keep the evidence tokens and a
  random share of the others, so, like large pretrained models, the toy tolerates pruned inputs and
  compression methods are judged on *which* tokens they keep.
- a grounding loss: at one middle layer the last prompt token's attention should rest on the
  evidence tokens, as a pretrained model has learnt to look at what a question is about;
- a tracking loss on the language model's video tokens at that layer: every target token should
  know how many frames its object has been visible so far and, for a moving target, which way it
  went since it was last seen. Motion and counting are questions about *several* frames, and a
  pretrained video LLM has learnt to relate frames; the answer letter alone teaches it far too
  slowly (the first GPU run learnt colour and order to 85-95 % while motion and count stayed at
  chance).
Stage 1 trains the vision tower and projector on the auxiliary loss alone; stage 2 trains everything
on the answer (the option text, then end-of-turn) plus the auxiliary and grounding losses.
The toy answers with the option's text ("red"), not its letter: with a letter, a first
CPU run kept the letter at chance for 2 500 steps even though the answer *value* was being learnt — the
value → letter lookup through the option list is an induction-style circuit a from-scratch model
forms late. Scoring in the package accepts either answer.
Every step's data and randomness derive from (seed, step), so a resumed run repeats exactly, on
any device and with any number of data workers (items are rendered in worker processes when
`workers` > 0; that is what keeps a GPU busy).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cacovid.models.attention import capture_inputs
from cacovid.toy.model import BACKGROUND_WORD, ToyModelConfig, build_toy_model
from cacovid.types import QAItem


@dataclass
class ToyTrainConfig:
    out_dir: str = "runs/toy"
    seed: int = 0
    world: dict[str, str] = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    vision_steps: int = 2000
    qa_steps: int = 2500
    batch_size: int = 8
    lr: float = 1e-3
    vision_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 100
    aux_weight: float = 0.5
    attend_weight: float = 0.5
    attn_layer: int = 2
    track_weight: float = 0.5
    full_keep_prob: float = 0.1
    other_keep_max: float = 0.25
    # Robustness to what a selector keeps (see `sample_keep`): the share of pruned training prompts
    # that lose part of their evidence, the most each evidence token may be dropped with, and the
    # share whose other kept tokens are whole objects in some frames instead of scattered tokens.
    evidence_drop_prob: float = 0.0
    evidence_drop_max: float = 0.5
    object_keep_prob: float = 0.0
    val_every: int = 500
    val_n: int = 160
    stage1_frames: int = 4
    checkpoint_every: int = 50
    threads: int = 1
    device: str = "cpu"
    workers: int = 0
    # When set, stage 2 lasts about this many minutes: after 30 timed steps `qa_steps` is fixed from
    # the measured rate (and stored in the checkpoint, so a resumed run keeps the same schedule).
    qa_minutes: float | None = None
    # Start from these weights (a `weights_state.pt` or trainer `checkpoint.pt`): model and the heads
    # that exist in both, before step 0. Used to continue a finished run with a changed recipe.
    init_from: str | None = None
    # Share of each question family in training batches, e.g. {"count": 0.5, "color": 0.2, …};
    # families left out get no items. None: the world's round-robin (equal shares).
    family_weights: dict[str, float] | None = None
    # Train on several worlds at once: {world override string: weight}, e.g.
    # {"preset=classic": 1, "preset=decoys": 2}. Each step draws one world (a batch shares its frame
    # count); `world` then only names the world validated on. None: `world` alone.
    mix_worlds: dict[str, float] | None = None
    # Extra validation worlds (override strings), reported as "<world>/<row>" in the log.
    val_worlds: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class ToyBatcher:
    """Turns QA items into model inputs through the model's own processor (the inference path)."""

    def __init__(self, processor, world) -> None:
        self.processor = processor
        self.world = world
        tok = processor.tokenizer
        self.tok = tok
        self.eos_id = tok.eos_token_id
        self.video_id = tok.convert_tokens_to_ids("<video>")
        self.bg_id = tok.convert_tokens_to_ids(BACKGROUND_WORD)
        from cacovid.data.synthetic.palette import COLOR_NAMES, SHAPE_NAMES

        # label 0 = background; label k = NAMES[k-1]
        self.color_word = torch.tensor([self.bg_id] + [tok.convert_tokens_to_ids(c) for c in COLOR_NAMES])
        self.shape_word = torch.tensor([self.bg_id] + [tok.convert_tokens_to_ids(s) for s in SHAPE_NAMES])

    def answer_id(self, item: QAItem) -> int:
        """The single token the toy answers with (the option text, or the letter)."""
        ids = self.tok(item.answer_text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"item {item.id}: answer {item.answer_text!r} is not one toy token ({ids})")
        return ids[0]

    def encode(self, items: list[QAItem], device: torch.device | str | None = None) -> dict:
        """Token ids (video marker unexpanded) and pixel values, processed on `device` (default CPU)."""
        texts, videos = [], []
        for it in items:
            msgs = [
                {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": it.prompt_text()}]}
            ]
            texts.append(self.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False))
            videos.append(torch.from_numpy(np.ascontiguousarray(it.frames)))
        ids = [self.tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        pix = self.processor.video_processor(videos=videos, return_tensors="pt", device=device)[
            "pixel_values_videos"
        ]
        return {"texts": texts, "ids": ids, "pixel_values_videos": pix}


def _expand_video(ids: list[int], video_id: int, n_video: int) -> torch.Tensor:
    """Replace the single <video> marker by n_video placeholders (what the processor does)."""
    pos = ids.index(video_id)
    return torch.tensor(ids[:pos] + [video_id] * n_video + ids[pos + 1 :])


def build_rows(
    model,
    batcher: ToyBatcher,
    items: list[QAItem],
    ids_list: list[list[int]],
    keeps: list[torch.Tensor | None],
    video_feats: torch.Tensor,
    with_answer: bool,
    evidence: list[torch.Tensor] | None = None,
):
    """Left-padded (inputs_embeds, attention_mask, position_ids) for pruned prompts (+ answer token).

    `video_feats` (B, N+1, D) from get_video_features (grid tokens then image_newline). Kept tokens keep
    their original 1-D positions; text and the newline token are always kept. With `evidence` ((N,)
    bool per item) two more values: where kept evidence tokens sit in the padded rows, and which
    video token (0..N-1, -1 for text) each padded position holds.
    """
    embed = model.get_input_embeddings()
    dev = video_feats.device
    seqs, poss, evs, idx_rows = [], [], [], []
    n_video = video_feats.shape[1]
    for b, it in enumerate(items):
        # Index bookkeeping on the CPU, then one move of each row's tensors to the model's device.
        ids = _expand_video(ids_list[b], batcher.video_id, n_video)
        vid = (ids == batcher.video_id).nonzero().squeeze(1)
        keep_seq = torch.ones(len(ids), dtype=torch.bool)
        if keeps[b] is not None:
            keep_seq[vid[:-1]] = keeps[b].cpu()
        pos = torch.arange(len(ids))
        ev_seq = torch.zeros(len(ids), dtype=torch.bool)
        if evidence is not None:
            ev_seq[vid[:-1]] = evidence[b].cpu()
        vid_index = torch.full((len(ids),), -1, dtype=torch.long)
        vid_index[vid[:-1]] = torch.arange(len(vid) - 1)
        if with_answer:
            ids = torch.cat([ids, torch.tensor([batcher.answer_id(it)])])
            vid_index = torch.cat([vid_index, torch.full((1,), -1, dtype=torch.long)])
            keep_seq = torch.cat([keep_seq, torch.ones(1, dtype=torch.bool)])
            pos = torch.cat([pos, pos[-1:] + 1])
            ev_seq = torch.cat([ev_seq, torch.zeros(1, dtype=torch.bool)])
        ids_dev = ids.to(dev)
        e = embed(ids_dev).index_copy(0, vid.to(dev), video_feats[b].to(embed.weight.dtype))
        keep_dev = keep_seq.to(dev)
        e, pos, ev_seq, vid_index = e[keep_dev], pos[keep_seq], ev_seq[keep_seq], vid_index[keep_seq]
        seqs.append(e)
        poss.append(pos)
        evs.append(ev_seq)
        idx_rows.append(vid_index)
    L = max(s.shape[0] for s in seqs)
    D = seqs[0].shape[1]
    B = len(seqs)
    x = seqs[0].new_zeros(B, L, D)
    mask = torch.zeros(B, L, dtype=torch.long)
    pid = torch.zeros(B, L, dtype=torch.long)
    ev_mask = torch.zeros(B, L, dtype=torch.bool)
    vid_pad = torch.full((B, L), -1, dtype=torch.long)
    for b, (s, p) in enumerate(zip(seqs, poss, strict=True)):
        x[b, L - s.shape[0] :] = s
        mask[b, L - s.shape[0] :] = 1
        pid[b, L - s.shape[0] :] = p
        ev_mask[b, L - s.shape[0] :] = evs[b]
        vid_pad[b, L - s.shape[0] :] = idx_rows[b]
    mask, pid = mask.to(dev), pid.to(dev)
    if evidence is not None:
        return x, mask, pid, ev_mask.to(dev), vid_pad.to(dev)
    return x, mask, pid


def video_features(model, pixel_values_videos: torch.Tensor, train_tower: bool) -> torch.Tensor:
    """(B, T*P + 1, D) projected, pooled video tokens + image_newline, as `get_video_features` makes them.

    Split into tower / projector so stage 2 can run the frozen tower without autograd (a test checks
    equality with the model's own `get_video_features`).
    """
    m = model.model
    B, T = pixel_values_videos.shape[:2]
    flat = pixel_values_videos.reshape(B * T, *pixel_values_videos.shape[2:])
    with torch.set_grad_enabled(train_tower and torch.is_grad_enabled()):
        hidden = m.vision_tower(flat, output_hidden_states=True).hidden_states[
            model.config.vision_feature_layer
        ]
    feats = m.apply_pooling(m.multi_modal_projector(hidden))
    feats = feats.reshape(B, -1, feats.shape[-1])
    newline = m.image_newline[None, None, :].expand(B, 1, -1).to(feats.dtype)
    return torch.cat([feats, newline], dim=1)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1)


def query_attention(
    attn: nn.Module, args: tuple, kwargs: dict, mask: torch.Tensor, query: int
) -> torch.Tensor:
    """(B, H, L) attention probabilities of one query position in a Qwen2 attention layer.

    Recomputed from the layer's captured inputs for that single query row (causal + padding mask),
    so the model keeps running fused attention and no (L, L) map is built.
    """
    h = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    cos, sin = kwargs["position_embeddings"]
    B, L, _ = h.shape
    hd = attn.head_dim
    q = attn.q_proj(h[:, query:][:, :1]).view(B, 1, -1, hd).transpose(1, 2)  # (B, H, 1, hd)
    k = attn.k_proj(h).view(B, L, -1, hd).transpose(1, 2)  # (B, Hkv, L, hd)
    qi = query % L
    q = _rotate(q, cos[:, qi : qi + 1], sin[:, qi : qi + 1])
    k = _rotate(k, cos, sin)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    scores = (q @ k.transpose(-1, -2)).squeeze(2) * attn.scaling  # (B, H, L)
    allowed = mask.bool() & (torch.arange(L, device=mask.device) <= qi)  # (B, L)
    scores = scores.masked_fill(~allowed[:, None, :], float("-inf"))
    return scores.softmax(-1)


def lm_hidden_tail(model, x, mask, pid, n_tail: int) -> torch.Tensor:
    """(B, n_tail, D) last hidden states of the language model at the last `n_tail` positions."""
    out = model.model.language_model(inputs_embeds=x, attention_mask=mask, position_ids=pid)
    return out.last_hidden_state[:, -n_tail:]


def lm_logits_tail(model, x, mask, pid, n_tail: int) -> torch.Tensor:
    return model.lm_head(lm_hidden_tail(model, x, mask, pid, n_tail))


def sample_keep(item: QAItem, cfg: ToyTrainConfig, gen: torch.Generator) -> torch.Tensor | None:
    """Token dropout: None (all kept) or a keep-mask over the video tokens.

    The base mask is the evidence plus a random share of the other tokens. Two options make the model
    robust to what a learnt selector hands it rather than to a random subset only:
    - `object_keep_prob`: the other kept tokens are whole non-target objects in a random subset of
      frames (a scorer that likes an object keeps all of its cells, in some frames), plus scattered
      background; an object kept in a few frames looks like a target that comes and goes, so the model
      learns not to trust appearance alone;
    - `evidence_drop_prob`: each evidence token is dropped with a random probability up to
      `evidence_drop_max`, keeping at least one cell of every target, so the answer degrades
      gradually with the evidence a selector misses instead of collapsing.
    """
    if torch.rand((), generator=gen).item() < cfg.full_keep_prob:
        return None
    ev = torch.from_numpy(np.ascontiguousarray(item.evidence)).reshape(-1)
    share = torch.rand((), generator=gen).item() * cfg.other_keep_max
    keep = torch.rand(ev.shape, generator=gen) < share
    objects = item.meta.get("objects") if item.meta else None
    cells = torch.from_numpy(np.asarray(item.meta["token_object"]).reshape(-1)) if objects else None
    # Each option draws only when it is on, so runs without them keep their old random stream.
    if (
        cells is not None
        and cfg.object_keep_prob > 0
        and torch.rand((), generator=gen).item() < cfg.object_keep_prob
    ):
        T = int(np.asarray(item.meta["token_object"]).shape[0])
        frame_of = torch.arange(ev.numel()) // (ev.numel() // T)
        keep = torch.rand(ev.shape, generator=gen) < share * 0.5  # scattered background
        for k, o in enumerate(objects, start=1):
            if o["role"] == "target":
                continue
            frames = torch.rand(T, generator=gen) < torch.rand((), generator=gen).item()
            keep |= (cells == k) & frames[frame_of]
    ev_kept = ev.clone()
    if (
        cells is not None
        and cfg.evidence_drop_prob > 0
        and torch.rand((), generator=gen).item() < cfg.evidence_drop_prob
    ):
        drop = torch.rand((), generator=gen).item() * cfg.evidence_drop_max
        ev_kept &= torch.rand(ev.shape, generator=gen) >= drop
        for k, o in enumerate(objects, start=1):  # every target keeps at least one cell
            own = ev & (cells == k)
            if o["role"] == "target" and own.any() and not (ev_kept & own).any():
                idx = own.nonzero().squeeze(1)
                ev_kept[idx[torch.randint(len(idx), (), generator=gen)]] = True
    return (keep & ~ev) | ev_kept


SMALL_OBJECT_PX = 24
_DIRECTION_INDEX = {"left": 1, "right": 2, "up": 3, "down": 4}  # 0: no label


def track_labels(item: QAItem) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) motion and (N,) running-count labels of the video tokens; 0 means "no label".

    On every target's and decoy's token cells: count = how many frames the object has been visible
    up to and including this one; motion = its direction (1..4) from its second visible frame on, for
    objects that move along an axis (`motion` targets, decoys).
    """
    obj = np.asarray(item.meta["token_object"])  # (T, g, g): 0 none, k -> objects[k - 1]
    motion = np.zeros(obj.shape, dtype=np.int64)
    count = np.zeros(obj.shape, dtype=np.int64)
    for k, o in enumerate(item.meta["objects"], start=1):
        if o["role"] not in ("target", "decoy"):
            continue
        for j, t in enumerate(o["frames"]):
            cells = obj[t] == k
            count[t][cells] = j + 1
            if o.get("direction") and j > 0:
                motion[t][cells] = _DIRECTION_INDEX[o["direction"]]
    return torch.from_numpy(motion.reshape(-1)), torch.from_numpy(count.reshape(-1))


def _cell_labels(item: QAItem, key: str) -> np.ndarray:
    """Per-cell label maps from the world's meta; "token_small" marks cells of objects ≤ 24 px."""
    if key != "token_small":
        return item.meta[key]
    obj = np.asarray(item.meta["token_object"])
    small = np.array([False] + [o["size"] <= SMALL_OBJECT_PX for o in item.meta["objects"]])
    return small[obj]


class AuxProbe(nn.Module):
    """Dense per-token heads on projected video tokens: colour, shape, row, column.

    Trained with the model, not shipped: they stand in for the supervision a pretrained vision encoder
    has already absorbed. `scale` is the temperature of the word-alignment logits.
    """

    def __init__(self, hidden: int, grid: int, n_colors: int, n_shapes: int) -> None:
        super().__init__()
        from cacovid.data.synthetic.config import MAX_FRAMES

        self.grid = grid
        # Tracking heads on the language model's video tokens (see `track_labels`).
        self.motion = nn.Linear(hidden, len(_DIRECTION_INDEX) + 1)
        self.count = nn.Linear(hidden, MAX_FRAMES + 1)
        self.color = nn.Linear(hidden, n_colors)
        self.shape = nn.Linear(hidden, n_shapes)
        self.position = nn.Linear(hidden, 2 * grid)
        self.scale = nn.Parameter(torch.tensor(10.0))


def aux_loss(
    model,
    probe: AuxProbe,
    batcher: ToyBatcher,
    items: list[QAItem],
    feats: torch.Tensor,
    frames: torch.Tensor | None = None,
):
    """Dense per-token loss: colour, shape and (row, column) heads, plus word alignment.

    Word alignment: the cosine logits of a token against the word embeddings put half the mass on the
    colour word and half on the shape word of the object under it ("background" for empty cells), so
    video tokens start out in the space the question words live in.
    `feats` (B, F*P + 1, D); `frames` (B, F) says which frames of each item they are (None: all).
    Returns (loss, accuracy of the colour and shape heads on object cells).
    """

    def labels(key: str) -> torch.Tensor:
        per_item = []
        for b, it in enumerate(items):
            lab = torch.from_numpy(np.asarray(_cell_labels(it, key))).long()  # (T, g, g)
            if frames is not None:
                lab = lab[frames[b]]
            per_item.append(lab.reshape(-1))
        return torch.stack(per_item).to(feats.device)

    grid_feats = feats[:, :-1]  # (B, N, D) drop image_newline
    B, N, _ = grid_feats.shape
    col, shp = labels("token_color"), labels("token_shape")
    col_logits, shp_logits = probe.color(grid_feats), probe.shape(grid_feats)
    # Inside a large object a 16 px cell is a patch of flat colour whatever the shape, so its shape
    # label is mostly noise: small objects (target-sized) carry the shape signal.
    small = labels("token_small").float()
    shape_w = torch.where(col > 0, 0.2 + 0.8 * small, torch.ones_like(small))
    shape_ce = F.cross_entropy(shp_logits.reshape(B * N, -1), shp.reshape(-1), reduction="none")
    head_loss = (
        F.cross_entropy(col_logits.reshape(B * N, -1), col.reshape(-1))
        + (shape_ce * shape_w.reshape(-1)).sum() / shape_w.sum()
    )
    g = probe.grid
    rc = probe.position(grid_feats)  # (B, N, 2g)
    idx = torch.arange(N, device=feats.device) % (g * g)
    rows, cols = (idx // g).expand(B, N), (idx % g).expand(B, N)
    pos_loss = F.cross_entropy(rc[..., :g].reshape(-1, g), rows.reshape(-1)) + F.cross_entropy(
        rc[..., g:].reshape(-1, g), cols.reshape(-1)
    )
    # Detached: video tokens move toward the words, not the words toward the video (and the all-zero
    # <pad> row would otherwise send 1/eps gradients through the normalisation).
    W = F.normalize(model.get_input_embeddings().weight.detach(), dim=-1)  # (V, D)
    logp = (probe.scale * F.normalize(grid_feats, dim=-1) @ W.t()).log_softmax(-1)
    cw, sw = batcher.color_word.to(col.device)[col], batcher.shape_word.to(shp.device)[shp]
    align = -0.5 * (logp.gather(-1, cw[..., None]) + logp.gather(-1, sw[..., None])).mean()
    with torch.no_grad():
        obj = col > 0
        tiny = obj & (small > 0)
        acc = 0.5 * (
            (col_logits.argmax(-1) == col)[obj].float().mean()
            + (shp_logits.argmax(-1) == shp)[tiny].float().mean()
        )
    return head_loss + 0.5 * pos_loss + 0.5 * align, acc.item()


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class _StepBatches(torch.utils.data.Dataset):
    """The items of training batch `step`: a pure function of the step index.

    A map-style data set over step indices, so a DataLoader's workers can render batches ahead of the
    training loop while the batch contents stay exactly what the step alone decides. Workers return
    the items (numpy frames travel through the worker pipe, not shared memory, which container
    machines often cap at 64 MB); the processor then runs on the training device.
    """

    def __init__(
        self,
        world,
        batcher: ToyBatcher,
        batch_size: int,
        family_weights: dict[str, float] | None = None,
        mix_worlds: dict[str, float] | None = None,
    ) -> None:
        self.world, self.batcher, self.batch_size = world, batcher, batch_size
        self.weights = None
        self.mix = None
        if mix_worlds:
            from cacovid.data.synthetic.config import WorldConfig
            from cacovid.data.synthetic.world import SyntheticWorld

            if any(w < 0 for w in mix_worlds.values()) or sum(mix_worlds.values()) <= 0:
                raise ValueError(f"mix_worlds weights {mix_worlds} must be >= 0 and not all 0")
            parts = [
                _StepBatches(
                    SyntheticWorld(WorldConfig().with_overrides(text)), batcher, batch_size, family_weights
                )
                for text in mix_worlds
            ]
            w = np.array(list(mix_worlds.values()), dtype=float)
            self.mix = (parts, w / w.sum())
        if family_weights:
            fams = list(world.config.families)
            unknown = set(family_weights) - set(fams)
            if unknown or any(w < 0 for w in family_weights.values()) or sum(family_weights.values()) <= 0:
                raise ValueError(f"family_weights {family_weights} must be >= 0 over families {fams}")
            w = np.array([family_weights.get(f, 0.0) for f in fams], dtype=float)
            self.weights = w / w.sum()

    def __len__(self) -> int:
        return 2**31 - 1

    def __getitem__(self, step: int) -> list[QAItem]:
        if self.mix is not None:
            worlds, p = self.mix
            pick = int(np.random.default_rng([step, 104729]).choice(len(worlds), p=p))
            return worlds[pick][step]
        B = self.batch_size
        if self.weights is None:
            return [self.world.item("train", step * B + b) for b in range(B)]
        # Family f lives at indices ≡ f (mod #families); slot (step, b) owns one index of each residue.
        n = len(self.weights)
        picks = np.random.default_rng([step, 7919]).choice(n, size=B, p=self.weights)
        return [self.world.item("train", (step * B + b) * n + int(f)) for b, f in enumerate(picks)]


def _keep_batch(batch):
    return batch


class ToyTrainer:
    """Two-stage trainer with checkpoint + exact resume (data and randomness derive from the step)."""

    def __init__(self, cfg: ToyTrainConfig) -> None:
        from cacovid.data.synthetic.config import WorldConfig
        from cacovid.data.synthetic.world import SyntheticWorld

        self.cfg = cfg
        torch.set_num_threads(cfg.threads)
        self.device = torch.device(cfg.device)
        self.out = Path(cfg.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.world = SyntheticWorld(WorldConfig().with_overrides(cfg.world))
        self.model_cfg = ToyModelConfig(**cfg.model)
        self.model, self.processor = build_toy_model(self.model_cfg)
        self.batcher = ToyBatcher(self.processor, self.world)
        grid = self.model_cfg.frame_size // self.model_cfg.patch // 2
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.probe = AuxProbe(
                self.model.config.text_config.hidden_size,
                grid,
                n_colors=len(self.batcher.color_word),
                n_shapes=len(self.batcher.shape_word),
            )
        self.model.to(self.device).train()
        self.probe.to(self.device)
        vision = [
            p for n, p in self.model.named_parameters() if "vision_tower" in n or "multi_modal_projector" in n
        ]
        vision_ids = {id(p) for p in vision}
        rest = [p for p in self.model.parameters() if id(p) not in vision_ids]
        self.opt = torch.optim.AdamW(
            [
                {
                    "params": vision + list(self.probe.parameters()),
                    "lr": cfg.vision_lr,
                    "base": cfg.vision_lr,
                },
                {"params": rest, "lr": cfg.lr, "base": cfg.lr},
            ],
            weight_decay=cfg.weight_decay,
        )
        self.step = 0
        self.ckpt = self.out / "checkpoint.pt"
        self.log = self.out / "log.jsonl"
        if self.ckpt.exists():
            self._load()
        elif cfg.init_from:
            self._init_from(Path(cfg.init_from))

    # ---- checkpointing ---------------------------------------------------------------------------
    def _save(self) -> None:
        state = {
            "step": self.step,
            "model": self.model.state_dict(),
            "probe": self.probe.state_dict(),
            "opt": self.opt.state_dict(),
            "config": {**self.cfg.to_dict(), "qa_fixed": self._qa_fixed},
        }
        tmp = self.ckpt.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.ckpt)

    def _load(self) -> None:
        state = torch.load(self.ckpt, weights_only=False, map_location=self.device)
        self.model.load_state_dict(state["model"])
        self.probe.load_state_dict(state["probe"])
        self.opt.load_state_dict(state["opt"])
        self.step = int(state["step"])
        if self.cfg.qa_minutes is not None:  # a time-budgeted schedule, once fixed, is kept
            self.cfg.qa_steps = int(state["config"]["qa_steps"])
            self._qa_fixed = bool(state["config"].get("qa_fixed", False))

    def _init_from(self, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(f"init_from: no weights at {str(path)!r}")
        if path.is_dir():  # an exported checkpoint (e.g. the shipped toy): model weights only
            from transformers import LlavaOnevisionForConditionalGeneration

            loaded = LlavaOnevisionForConditionalGeneration.from_pretrained(path, dtype=torch.float32)
            state = {"model": loaded.state_dict()}
        else:
            state = torch.load(path, weights_only=False, map_location=self.device)
        self.model.load_state_dict(state["model"])
        own = self.probe.state_dict()
        probe = {k: v for k, v in state.get("probe", {}).items() if k in own and own[k].shape == v.shape}
        self.probe.load_state_dict(probe, strict=False)

    # ---- one step --------------------------------------------------------------------------------
    def _items(self, step: int) -> list[QAItem]:
        return self._data()[step]

    def _data(self) -> _StepBatches:
        return _StepBatches(
            self.world, self.batcher, self.cfg.batch_size, self.cfg.family_weights, self.cfg.mix_worlds
        )

    def train_step(self, step: int, items: list[QAItem] | None = None) -> dict:
        cfg = self.cfg
        dev = self.device
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        items = items if items is not None else self._items(step)
        enc = self.batcher.encode(items, device=dev)
        vision_stage = step < cfg.vision_steps
        pix = enc["pixel_values_videos"]
        frames = None
        if vision_stage:  # the auxiliary loss is per frame: a few frames of many videos are enough
            T = pix.shape[1]
            frames = torch.stack([torch.randperm(T, generator=gen)[: cfg.stage1_frames] for _ in items])
            pix = torch.stack([pix[b, frames[b].to(pix.device)] for b in range(len(items))])
        feats = video_features(self.model, pix, train_tower=vision_stage)
        aux, word_acc = aux_loss(self.model, self.probe, self.batcher, items, feats, frames)
        metrics = {"step": step, "aux": aux.item(), "word_acc": word_acc}
        total_steps = cfg.vision_steps + cfg.qa_steps
        if vision_stage:
            loss = aux
            lr_scale = _lr_factor(step, cfg.warmup, cfg.vision_steps)
        else:
            keeps = [sample_keep(it, cfg, gen) for it in items]
            evidence = [torch.from_numpy(np.ascontiguousarray(it.evidence)).reshape(-1) for it in items]
            x, mask, pid, ev_mask, vid_pad = build_rows(
                self.model, self.batcher, items, enc["ids"], keeps, feats, with_answer=True, evidence=evidence
            )
            lm = self.model.model.language_model
            with capture_inputs(lm.layers[cfg.attn_layer].self_attn) as got:
                hidden = lm_hidden_tail(self.model, x, mask, pid, 2)  # (B, 2, D)
            # Grounding signal: the last prompt token (-2; the answer token follows) should put its
            # attention mass on the evidence tokens at one layer, as a pretrained model has learnt to.
            att = query_attention(lm.layers[cfg.attn_layer].self_attn, *got[-1], mask, query=-2).mean(1)
            has = ev_mask.any(-1)
            attend = -((att * ev_mask).sum(-1)[has] + 1e-6).log().mean()
            track, track_acc = self._track_loss(items, got[-1], vid_pad)
            logits = self.model.lm_head(hidden)  # (B, 2, V)
            answers = torch.tensor([self.batcher.answer_id(it) for it in items], device=dev)
            targets = torch.stack([answers, torch.full_like(answers, self.batcher.eos_id)], 1)
            qa = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
            loss = qa + cfg.aux_weight * aux + cfg.attend_weight * attend + cfg.track_weight * track
            metrics["track"] = track.item()
            metrics["track_acc"] = track_acc
            metrics["qa"] = qa.item()
            metrics["attend"] = attend.item()
            metrics["acc"] = (logits[:, 0].argmax(-1) == answers).float().mean().item()
            lr_scale = _lr_factor(step - cfg.vision_steps, cfg.warmup, total_steps - cfg.vision_steps)
        for g in self.opt.param_groups:
            g["lr"] = g["base"] * lr_scale
        if vision_stage:
            self.opt.param_groups[1]["lr"] = 0.0
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        metrics["loss"] = loss.item()
        return metrics

    def _track_loss(self, items: list[QAItem], captured: tuple, vid_pad: torch.Tensor):
        """Motion + running-count cross-entropy on the video tokens entering layer `attn_layer`.

        Reads the layer's normalised input (what its attention turns into values), so the answer
        position can gather what the target tokens know. Returns (loss, accuracy on labelled tokens).
        """
        args, kwargs = captured
        h = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]  # (B, L, D)
        pairs = [track_labels(it) for it in items]
        total, hits, n_all = h.new_zeros(()), 0.0, 0
        for head, which in ((self.probe.motion, 0), (self.probe.count, 1)):
            per_item = torch.stack([p[which] for p in pairs]).to(h.device)  # (B, N)
            lab = torch.where(vid_pad >= 0, per_item.gather(1, vid_pad.clamp(min=0)), 0)
            sel = lab > 0
            if not bool(sel.any()):
                continue
            logits = head(h[sel])
            total = total + F.cross_entropy(logits, lab[sel])
            hits += float((logits.argmax(-1) == lab[sel]).sum())
            n_all += int(sel.sum())
        return total, hits / max(1, n_all)

    # ---- validation ------------------------------------------------------------------------------
    def validate_all(self, n: int, split: str = "val") -> dict:
        """`validate` on the training world and on every world of `val_worlds` ("<world>/<row>")."""
        from cacovid.data.synthetic.config import WorldConfig
        from cacovid.data.synthetic.world import SyntheticWorld

        out = self.validate(n, split)
        for text in self.cfg.val_worlds:
            world = SyntheticWorld(WorldConfig().with_overrides(text))
            out.update({f"{text}/{k}": v for k, v in self.validate(n, split, world).items()})
        return out

    @torch.no_grad()
    def validate(self, n: int, split: str = "val", world=None) -> dict:
        """Greedy first-token accuracy with full / no / evidence-only / random-10 % video tokens."""
        world = world if world is not None else self.world
        self.model.eval()
        gen = torch.Generator().manual_seed(12345)
        rows: dict[str, list] = {"full": [], "blind": [], "oracle": [], "random10": []}
        fam: dict[str, list] = {}
        B = 16
        for start in range(0, n, B):
            items = [world.item(split, i) for i in range(start, min(n, start + B))]
            enc = self.batcher.encode(items, device=self.device)
            feats = video_features(self.model, enc["pixel_values_videos"], train_tower=False)
            answers = torch.tensor([self.batcher.answer_id(it) for it in items], device=self.device)
            N = feats.shape[1] - 1
            for name in rows:
                keeps = []
                for it in items:
                    ev = torch.from_numpy(np.ascontiguousarray(it.evidence)).reshape(-1)
                    if name == "full":
                        keeps.append(None)
                    elif name == "blind":
                        keeps.append(torch.zeros(N, dtype=torch.bool))
                    elif name == "oracle":
                        keeps.append(ev.clone())
                    else:
                        k = max(1, int(0.1 * N))
                        m = torch.zeros(N, dtype=torch.bool)
                        m[torch.randperm(N, generator=gen)[:k]] = True
                        keeps.append(m)
                x, mask, pid = build_rows(
                    self.model, self.batcher, items, enc["ids"], keeps, feats, with_answer=False
                )
                pred = lm_logits_tail(self.model, x, mask, pid, 1)[:, 0].argmax(-1)
                ok = (pred == answers).tolist()
                rows[name] += ok
                if name == "full":
                    for it, o in zip(items, ok, strict=True):
                        fam.setdefault(it.family, []).append(o)
        self.model.train()
        out = {k: float(np.mean(v)) for k, v in rows.items()}
        out.update({f"full_{k}": float(np.mean(v)) for k, v in sorted(fam.items())})
        return out

    # ---- the loop --------------------------------------------------------------------------------
    _qa_fixed = False
    _RATE_STEPS = (10, 40)  # stage-2 steps between which a time-budgeted run measures its pace

    def _fix_schedule(self, qa_step: int, elapsed: float, rate_window: float) -> None:
        """Set `qa_steps` so stage 2 ends near `qa_minutes` (measured pace, 8 % held back for validation)."""
        lo, hi = self._RATE_STEPS
        per_step = rate_window / (hi - lo)
        left = 60 * self.cfg.qa_minutes * 0.92 - elapsed
        self.cfg.qa_steps = max(qa_step + 1, qa_step + int(left / per_step))
        self._qa_fixed = True

    def _loader(self):
        data = self._data()
        steps = range(self.step, 2**31 - 1)
        if self.cfg.workers <= 0:
            return (data[s] for s in steps)
        return iter(
            torch.utils.data.DataLoader(
                data,
                batch_size=None,
                sampler=steps,
                num_workers=self.cfg.workers,
                collate_fn=_keep_batch,
                prefetch_factor=4,
                persistent_workers=False,
            )
        )

    def fit(self, max_minutes: float | None = None, progress: bool = True) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        cfg = self.cfg
        t0 = time.time()
        loader = self._loader()
        stage2_t0 = rate_t0 = None
        with Progress(
            TextColumn("[bold]toy train"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            disable=not progress,
        ) as bar:
            task = bar.add_task("train", total=cfg.vision_steps + cfg.qa_steps, completed=self.step, info="")
            ema: dict[str, float] = {}
            while self.step < cfg.vision_steps + cfg.qa_steps:
                m = self.train_step(self.step, next(loader))
                for k, v in m.items():
                    if k != "step":
                        ema[k] = v if k not in ema else 0.95 * ema[k] + 0.05 * v
                self.step += 1
                qa_step = self.step - cfg.vision_steps
                if cfg.qa_minutes is not None and not self._qa_fixed and qa_step > 0:
                    now = time.time()
                    if stage2_t0 is None:
                        stage2_t0 = now
                    if qa_step == self._RATE_STEPS[0]:
                        rate_t0 = now
                    if qa_step == self._RATE_STEPS[1] and rate_t0 is not None:
                        self._fix_schedule(qa_step, now - stage2_t0, now - rate_t0)
                        bar.console.print(f"time budget: stage 2 fixed at {cfg.qa_steps} steps")
                        bar.update(task, total=cfg.vision_steps + cfg.qa_steps)
                total = cfg.vision_steps + cfg.qa_steps
                info = " ".join(f"{k}={ema[k]:.3f}" for k in ("loss", "word_acc", "acc") if k in ema)
                bar.update(task, completed=self.step, info=info)
                record = {"step": self.step, **{k: round(v, 5) for k, v in ema.items()}}
                if self.step % cfg.val_every == 0 or self.step == total:
                    record["val"] = self.validate_all(cfg.val_n)
                    bar.console.print(f"step {self.step} val {json.dumps(record['val'])}")
                if self.step % cfg.checkpoint_every == 0 or self.step == total or "val" in record:
                    with open(self.log, "a") as f:
                        f.write(json.dumps(record) + "\n")
                    self._save()
                if max_minutes is not None and (time.time() - t0) > 60 * max_minutes:
                    self._save()
                    break

    def export(
        self, out_dir: str | Path, dtype: torch.dtype = torch.float16, quality_items: int = 100
    ) -> Path:
        """Save the trained model + processor as an ordinary HF checkpoint (what `load_video_llm` reads).

        The quick quality check is run on the exported files and recorded in `cacovid_toy.json`.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        import copy

        m = copy.deepcopy(self.model).eval().to("cpu", dtype)
        m.save_pretrained(out_dir)
        self.processor.save_pretrained(out_dir)
        meta = {
            "trained_steps": self.step,
            "train_config": self.cfg.to_dict(),
            "model_config": self.model_cfg.to_dict(),
            "world": self.world.config.to_dict(),
        }
        from cacovid.models import load_video_llm
        from cacovid.toy.quality import meets_bar, quick_quality

        quality = quick_quality(load_video_llm(out_dir), n=quality_items)
        meta["quality"] = {"n": quality_items, **quality}
        meta["meets_quality_bar"] = meets_bar(quality)
        (out_dir / "cacovid_toy.json").write_text(json.dumps(meta, indent=2))
        return out_dir
