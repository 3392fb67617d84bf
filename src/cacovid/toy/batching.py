"""What the toy model trains on at each step: items, their token-dropout masks and the model's input rows.

Every step's data and randomness derive from (seed, step), so a resumed run repeats exactly, on any
device and with any number of data workers (items are rendered in worker processes when `workers`
> 0; that is what keeps a GPU busy).

Token dropout with original positions kept: most training prompts keep the evidence tokens and a
random share of the others, so, like large pretrained models, the toy tolerates pruned inputs and
compression methods are judged on *which* tokens they keep. The rows are built the way the adapters
prune a prompt (kept video tokens keep their original 1-D positions), so training sees exactly what
inference with a selector sees.
"""

from __future__ import annotations

import numpy as np
import torch

from cacovid.data.synthetic.config import world_from_overrides
from cacovid.data.synthetic.palette import COLOR_NAMES, SHAPE_NAMES
from cacovid.data.synthetic.world import SyntheticWorld
from cacovid.toy.config import TOY_TRAIN_PRESET, ToyTrainConfig
from cacovid.toy.model import BACKGROUND_WORD
from cacovid.types import QAItem


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
            if any(w < 0 for w in mix_worlds.values()) or sum(mix_worlds.values()) <= 0:
                raise ValueError(f"mix_worlds weights {mix_worlds} must be >= 0 and not all 0")
            parts = [
                _StepBatches(
                    SyntheticWorld(world_from_overrides(text, TOY_TRAIN_PRESET)),
                    batcher,
                    batch_size,
                    family_weights,
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
    """The DataLoader's collate function: a step's batch is already its list of items."""
    return batch


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
