"""Training recipe for the embedded toy video LLM (`cacovid toy train`).

A tiny model trained from scratch on one answer letter per video learns far too slowly on a CPU
(see shared/toy-notes.md), so the recipe adds the two signals a real video LLM gets from pretraining:
- a dense auxiliary loss on every video token: the projected token must "read" as the words for the
  colour and shape of the object under it (logits against the language model's word embeddings),
  plus a linear probe for its (row, column) — the stand-in for a pretrained vision encoder;
- token dropout with original positions kept: most training prompts keep the evidence tokens and a
  random share of the others, so, like large pretrained models, the toy tolerates pruned inputs and
  compression methods are judged on *which* tokens they keep.
Stage 1 trains the vision tower and projector on the auxiliary loss alone; stage 2 trains everything
on the answer (letter, then end-of-turn) plus the auxiliary loss.
Every step's data and randomness derive from (seed, step), so a resumed run repeats exactly.
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
    value_weight: float = 0.5
    attend_weight: float = 0.5
    attn_layer: int = 2
    option_attn_layer: int = 3
    full_keep_prob: float = 0.1
    other_keep_max: float = 0.25
    val_every: int = 500
    val_n: int = 160
    stage1_frames: int = 4
    checkpoint_every: int = 50
    threads: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


class ToyBatcher:
    """Turns QA items into model inputs through the model's own processor (the inference path)."""

    def __init__(self, processor, world) -> None:
        self.processor = processor
        self.world = world
        tok = processor.tokenizer
        self.tok = tok
        self.letter_ids = {c: tok.convert_tokens_to_ids(c) for c in "ABCD"}
        self.eos_id = tok.eos_token_id
        self.video_id = tok.convert_tokens_to_ids("<video>")
        self.bg_id = tok.convert_tokens_to_ids(BACKGROUND_WORD)
        from cacovid.data.synthetic.palette import COLOR_NAMES, SHAPE_NAMES

        # label 0 = background; label k = NAMES[k-1]
        self.color_word = torch.tensor([self.bg_id] + [tok.convert_tokens_to_ids(c) for c in COLOR_NAMES])
        self.shape_word = torch.tensor([self.bg_id] + [tok.convert_tokens_to_ids(s) for s in SHAPE_NAMES])

    def encode(self, items: list[QAItem]) -> dict:
        texts, videos = [], []
        for it in items:
            msgs = [
                {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": it.prompt_text()}]}
            ]
            texts.append(self.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False))
            videos.append(it.frames)
        ids = [self.tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        pix = self.processor.video_processor(videos=videos, return_tensors="pt")["pixel_values_videos"]
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
    """Left-padded (inputs_embeds, attention_mask, position_ids) for pruned prompts (+ answer letter).

    `video_feats` (B, N+1, D) from get_video_features (grid tokens then image_newline). Kept tokens keep
    their original 1-D positions; text and the newline token are always kept. With `evidence` ((N,)
    bool per item) a fourth value marks where kept evidence tokens sit in the padded rows.
    """
    embed = model.get_input_embeddings()
    seqs, poss, evs, id_rows = [], [], [], []
    n_video = video_feats.shape[1]
    for b, it in enumerate(items):
        ids = _expand_video(ids_list[b], batcher.video_id, n_video)
        e = embed(ids)
        vid = (ids == batcher.video_id).nonzero().squeeze(1)
        e = e.index_copy(0, vid, video_feats[b].to(e.dtype))
        keep_seq = torch.ones(len(ids), dtype=torch.bool)
        if keeps[b] is not None:
            keep_seq[vid[:-1]] = keeps[b]
        pos = torch.arange(len(ids))
        ev_seq = torch.zeros(len(ids), dtype=torch.bool)
        if evidence is not None:
            ev_seq[vid[:-1]] = evidence[b]
        e, pos, ev_seq, kept_ids = e[keep_seq], pos[keep_seq], ev_seq[keep_seq], ids[keep_seq]
        if with_answer:
            letter = torch.tensor([batcher.letter_ids[it.solution]])
            e = torch.cat([e, embed(letter)])
            pos = torch.cat([pos, pos[-1:] + 1])
            ev_seq = torch.cat([ev_seq, torch.zeros(1, dtype=torch.bool)])
            kept_ids = torch.cat([kept_ids, letter])
        seqs.append(e)
        poss.append(pos)
        evs.append(ev_seq)
        id_rows.append(kept_ids)
    L = max(s.shape[0] for s in seqs)
    D = seqs[0].shape[1]
    B = len(seqs)
    x = seqs[0].new_zeros(B, L, D)
    mask = torch.zeros(B, L, dtype=torch.long)
    pid = torch.zeros(B, L, dtype=torch.long)
    ev_mask = torch.zeros(B, L, dtype=torch.bool)
    ids_pad = torch.full((B, L), -1, dtype=torch.long)
    for b, (s, p) in enumerate(zip(seqs, poss, strict=True)):
        x[b, L - s.shape[0] :] = s
        mask[b, L - s.shape[0] :] = 1
        pid[b, L - s.shape[0] :] = p
        ev_mask[b, L - s.shape[0] :] = evs[b]
        ids_pad[b, L - s.shape[0] :] = id_rows[b]
    if evidence is not None:
        return x, mask, pid, ev_mask, ids_pad
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
    allowed = mask.bool() & (torch.arange(L) <= qi)  # (B, L)
    scores = scores.masked_fill(~allowed[:, None, :], float("-inf"))
    return scores.softmax(-1)


def lm_hidden_tail(model, x, mask, pid, n_tail: int) -> torch.Tensor:
    """(B, n_tail, D) last hidden states of the language model at the last `n_tail` positions."""
    out = model.model.language_model(inputs_embeds=x, attention_mask=mask, position_ids=pid)
    return out.last_hidden_state[:, -n_tail:]


def lm_logits_tail(model, x, mask, pid, n_tail: int) -> torch.Tensor:
    return model.lm_head(lm_hidden_tail(model, x, mask, pid, n_tail))


def sample_keep(item: QAItem, cfg: ToyTrainConfig, gen: torch.Generator) -> torch.Tensor | None:
    """Token dropout: None (all kept) or evidence + a random share of the other video tokens."""
    if torch.rand((), generator=gen).item() < cfg.full_keep_prob:
        return None
    ev = torch.from_numpy(np.ascontiguousarray(item.evidence)).reshape(-1)
    share = torch.rand((), generator=gen).item() * cfg.other_keep_max
    keep = torch.rand(ev.shape, generator=gen) < share
    return keep | ev


SMALL_OBJECT_PX = 24


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

    def __init__(self, hidden: int, grid: int, n_colors: int, n_shapes: int, vocab: int) -> None:
        super().__init__()
        # Answer-value head on the language model's last prompt position: predicting "red" (not just
        # "A") splits the answer into two easier hops, video → value and value → option letter.
        self.value = nn.Linear(hidden, vocab)
        self.grid = grid
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
        return torch.stack(per_item)

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
    idx = torch.arange(N) % (g * g)
    rows, cols = (idx // g).expand(B, N), (idx % g).expand(B, N)
    pos_loss = F.cross_entropy(rc[..., :g].reshape(-1, g), rows.reshape(-1)) + F.cross_entropy(
        rc[..., g:].reshape(-1, g), cols.reshape(-1)
    )
    # Detached: video tokens move toward the words, not the words toward the video (and the all-zero
    # <pad> row would otherwise send 1/eps gradients through the normalisation).
    W = F.normalize(model.get_input_embeddings().weight.detach(), dim=-1)  # (V, D)
    logp = (probe.scale * F.normalize(grid_feats, dim=-1) @ W.t()).log_softmax(-1)
    cw, sw = batcher.color_word[col], batcher.shape_word[shp]
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


class ToyTrainer:
    """Two-stage trainer with checkpoint + exact resume (data and randomness derive from the step)."""

    def __init__(self, cfg: ToyTrainConfig) -> None:
        from cacovid.data.synthetic.config import WorldConfig
        from cacovid.data.synthetic.world import SyntheticWorld

        self.cfg = cfg
        torch.set_num_threads(cfg.threads)
        self.out = Path(cfg.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.world = SyntheticWorld(WorldConfig().with_overrides(cfg.world))
        self.model_cfg = ToyModelConfig(**cfg.model)
        self.model, self.processor = build_toy_model(self.model_cfg)
        self.model.train()
        self.batcher = ToyBatcher(self.processor, self.world)
        grid = self.model_cfg.frame_size // self.model_cfg.patch // 2
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.probe = AuxProbe(
                self.model.config.text_config.hidden_size,
                grid,
                n_colors=len(self.batcher.color_word),
                n_shapes=len(self.batcher.shape_word),
                vocab=self.model.config.text_config.vocab_size,
            )
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

    # ---- checkpointing ---------------------------------------------------------------------------
    def _save(self) -> None:
        state = {
            "step": self.step,
            "model": self.model.state_dict(),
            "probe": self.probe.state_dict(),
            "opt": self.opt.state_dict(),
            "config": self.cfg.to_dict(),
        }
        tmp = self.ckpt.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.ckpt)

    def _load(self) -> None:
        state = torch.load(self.ckpt, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.probe.load_state_dict(state["probe"])
        self.opt.load_state_dict(state["opt"])
        self.step = int(state["step"])

    # ---- one step --------------------------------------------------------------------------------
    def _items(self, step: int) -> list[QAItem]:
        B = self.cfg.batch_size
        return [self.world.item("train", step * B + b) for b in range(B)]

    def train_step(self, step: int) -> dict:
        cfg = self.cfg
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        items = self._items(step)
        enc = self.batcher.encode(items)
        vision_stage = step < cfg.vision_steps
        pix = enc["pixel_values_videos"]
        frames = None
        if vision_stage:  # the auxiliary loss is per frame: a few frames of many videos are enough
            T = pix.shape[1]
            frames = torch.stack([torch.randperm(T, generator=gen)[: cfg.stage1_frames] for _ in items])
            pix = torch.stack([pix[b, frames[b]] for b in range(len(items))])
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
            x, mask, pid, ev_mask, ids_pad = build_rows(
                self.model, self.batcher, items, enc["ids"], keeps, feats, with_answer=True, evidence=evidence
            )
            lm = self.model.model.language_model
            option_layer = lm.layers[cfg.option_attn_layer].self_attn
            with (
                capture_inputs(lm.layers[cfg.attn_layer].self_attn) as got,
                capture_inputs(option_layer) as got_opt,
            ):
                hidden = lm_hidden_tail(self.model, x, mask, pid, 2)  # (B, 2, D)
            # Pointer signal: at a later layer the same token should look at the correct option (its
            # letter and value words), the lookup that turns "red" into "A".
            letters = torch.tensor([self.batcher.letter_ids[it.solution] for it in items])
            opt_mask = ids_pad == letters[:, None]
            opt_mask[:, -1] = False  # the appended answer letter itself
            opt_mask = opt_mask | torch.roll(opt_mask, 2, dims=1)  # letter, ".", value: mark the value too
            opt_att = query_attention(option_layer, *got_opt[-1], mask, query=-2).mean(1)
            point = -((opt_att * opt_mask).sum(-1) + 1e-6).log().mean()
            # Grounding signal: the last prompt token (-2; the answer letter follows) should put its
            # attention mass on the evidence tokens at one layer, as a pretrained model has learnt to.
            att = query_attention(lm.layers[cfg.attn_layer].self_attn, *got[-1], mask, query=-2).mean(1)
            has = ev_mask.any(-1)
            attend = -((att * ev_mask).sum(-1)[has] + 1e-6).log().mean()
            logits = self.model.lm_head(hidden)  # (B, 2, V)
            targets = torch.stack([letters, torch.full_like(letters, self.batcher.eos_id)], 1)
            qa = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
            values = torch.tensor(
                [self.batcher.tok.convert_tokens_to_ids(str(it.meta["answer"])) for it in items]
            )
            value = F.cross_entropy(self.probe.value(hidden[:, 0]), values)
            loss = (
                qa
                + cfg.aux_weight * aux
                + cfg.value_weight * value
                + cfg.attend_weight * attend
                + cfg.attend_weight * point
            )
            metrics["point"] = point.item()
            metrics["qa"] = qa.item()
            metrics["attend"] = attend.item()
            metrics["value"] = value.item()
            metrics["acc"] = (logits[:, 0].argmax(-1) == letters).float().mean().item()
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

    # ---- validation ------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, n: int, split: str = "val") -> dict:
        """Greedy first-token accuracy with full / no / evidence-only / random-10 % video tokens."""
        self.model.eval()
        gen = torch.Generator().manual_seed(12345)
        rows: dict[str, list] = {"full": [], "blind": [], "oracle": [], "random10": []}
        fam: dict[str, list] = {}
        B = 16
        for start in range(0, n, B):
            items = [self.world.item(split, i) for i in range(start, min(n, start + B))]
            enc = self.batcher.encode(items)
            feats = video_features(self.model, enc["pixel_values_videos"], train_tower=False)
            letters = torch.tensor([self.batcher.letter_ids[it.solution] for it in items])
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
                ok = (pred == letters).tolist()
                rows[name] += ok
                if name == "full":
                    for it, o in zip(items, ok, strict=True):
                        fam.setdefault(it.family, []).append(o)
        self.model.train()
        out = {k: float(np.mean(v)) for k, v in rows.items()}
        out.update({f"full_{k}": float(np.mean(v)) for k, v in sorted(fam.items())})
        return out

    # ---- the loop --------------------------------------------------------------------------------
    def fit(self, max_minutes: float | None = None, progress: bool = True) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        cfg = self.cfg
        total = cfg.vision_steps + cfg.qa_steps
        t0 = time.time()
        with Progress(
            TextColumn("[bold]toy train"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            disable=not progress,
        ) as bar:
            task = bar.add_task("train", total=total, completed=self.step, info="")
            ema: dict[str, float] = {}
            while self.step < total:
                m = self.train_step(self.step)
                for k, v in m.items():
                    if k != "step":
                        ema[k] = v if k not in ema else 0.95 * ema[k] + 0.05 * v
                self.step += 1
                info = " ".join(f"{k}={ema[k]:.3f}" for k in ("loss", "word_acc", "acc") if k in ema)
                bar.update(task, completed=self.step, info=info)
                record = {"step": self.step, **{k: round(v, 5) for k, v in ema.items()}}
                if self.step % cfg.val_every == 0 or self.step == total:
                    record["val"] = self.validate(cfg.val_n)
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

        m = copy.deepcopy(self.model).eval().to(dtype)
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
