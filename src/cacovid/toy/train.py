"""The toy video LLM's trainer (`cacovid toy train`): two stages, validation, checkpoints, export.

Stage 1 trains the vision tower and projector on the dense auxiliary loss alone; stage 2 trains
everything on the answer (the option text, then end-of-turn) plus the auxiliary, grounding and
tracking losses (`cacovid.toy.losses` says why the recipe needs them) on token-dropped prompts
(`cacovid.toy.batching`).
The toy answers with the option's text ("red"), not its letter: with a letter, a first CPU run kept
the letter at chance for 2 500 steps even though the answer *value* was being learnt — the value →
letter lookup through the option list is an induction-style circuit a from-scratch model forms
late. Scoring in the package accepts either answer.
Checkpoints hold the model, the probe heads, the optimiser and the config; since every step's data
and randomness derive from (seed, step), a resumed run repeats the uninterrupted one exactly.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cacovid.data.synthetic.config import world_from_overrides
from cacovid.data.synthetic.world import SyntheticWorld
from cacovid.models import load_video_llm
from cacovid.models.attention import capture_inputs
from cacovid.progress import Progress
from cacovid.toy.batching import ToyBatcher, _keep_batch, _StepBatches, build_rows, sample_keep
from cacovid.toy.config import TOY_TRAIN_PRESET, ToyTrainConfig
from cacovid.toy.forward import lm_hidden_tail, lm_logits_tail, video_features
from cacovid.toy.losses import AuxProbe, aux_loss, grounding_loss, track_loss
from cacovid.toy.model import ToyModelConfig, build_toy_model
from cacovid.toy.quality import meets_bar, quick_quality
from cacovid.types import QAItem


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine decay to 5 % over `total` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class ToyTrainer:
    """Two-stage trainer with checkpoint + exact resume (data and randomness derive from the step)."""

    def __init__(self, cfg: ToyTrainConfig) -> None:
        self.cfg = cfg
        torch.set_num_threads(cfg.threads)
        self.device = torch.device(cfg.device)
        self.out = Path(cfg.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.world = SyntheticWorld(world_from_overrides(cfg.world, TOY_TRAIN_PRESET))
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
            if self.cfg.aux_weight > 0 or self.cfg.track_weight > 0:
                warnings.warn(
                    f"init_from {str(path)!r} is an export without the auxiliary probe: the fresh probe's "
                    "losses (aux_weight, track_weight) send random-head gradients into the model; "
                    "set both to 0 to fine-tune on the answer and grounding losses alone",
                    stacklevel=2,
                )
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
            attend = grounding_loss(lm.layers[cfg.attn_layer].self_attn, got[-1], mask, ev_mask)
            track, track_acc = track_loss(self.probe, items, got[-1], vid_pad)
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

    # ---- validation ------------------------------------------------------------------------------
    def validate_all(self, n: int, split: str = "val") -> dict:
        """`validate` on the training world and on every world of `val_worlds` ("<world>/<row>")."""
        out = self.validate(n, split)
        for text in self.cfg.val_worlds:
            world = SyntheticWorld(world_from_overrides(text, TOY_TRAIN_PRESET))
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
        """Train to the end of stage 2 (or for `max_minutes`), checkpointing as it goes; `progress`
        shows a bar at a terminal and plain lines in a log (`cacovid.progress`)."""
        cfg = self.cfg
        t0 = time.time()
        loader = self._loader()
        stage2_t0 = rate_t0 = None
        total_steps = cfg.vision_steps + cfg.qa_steps
        with Progress(
            "toy train", total=total_steps, completed=self.step, unit="steps", enabled=progress
        ) as bar:
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
                        bar.log(f"time budget: stage 2 fixed at {cfg.qa_steps} steps")
                        bar.update(total=cfg.vision_steps + cfg.qa_steps)
                total = cfg.vision_steps + cfg.qa_steps
                info = " ".join(f"{k}={ema[k]:.3f}" for k in ("loss", "word_acc", "acc") if k in ema)
                bar.update(completed=self.step, info=info)
                record = {"step": self.step, **{k: round(v, 5) for k, v in ema.items()}}
                if self.step % cfg.val_every == 0 or self.step == total:
                    record["val"] = self.validate_all(cfg.val_n)
                    bar.log(f"step {self.step} val {json.dumps(record['val'])}")
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
        m = copy.deepcopy(self.model).eval().to("cpu", dtype)
        m.save_pretrained(out_dir)
        self.processor.save_pretrained(out_dir)
        meta = {
            "trained_steps": self.step,
            "train_config": self.cfg.to_dict(),
            "model_config": self.model_cfg.to_dict(),
            "world": self.world.config.to_dict(),
        }
        quality = quick_quality(load_video_llm(out_dir), n=quality_items)
        meta["quality"] = {"n": quality_items, **quality}
        meta["meets_quality_bar"] = meets_bar(quality)
        (out_dir / "cacovid_toy.json").write_text(json.dumps(meta, indent=2))
        return out_dir
