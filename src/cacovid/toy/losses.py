"""The toy recipe's losses besides the answer, and why it needs them.

A tiny model trained from scratch on one answer token per video learns far too slowly on a CPU, so
the recipe adds the signals a real video LLM gets from pretraining (figures in docs/experiments.md,
"The embedded toy model"):
- a dense auxiliary loss on every video token (`aux_loss`): the projected token must "read" as the
  words for the colour and shape of the object under it (logits against the language model's word
  embeddings), plus linear probes for its colour, shape and (row, column) — the stand-in for a
  pretrained vision encoder;
- a grounding loss (`grounding_loss`): at one middle layer the last prompt token's attention should
  rest on the evidence tokens, as a pretrained model has learnt to look at what a question is about;
- a tracking loss on the language model's video tokens at that layer (`track_loss`): every target
  token should know how many frames its object has been visible so far and, for a moving target,
  which way it went since it was last seen. Motion and counting are questions about *several*
  frames, and a pretrained video LLM has learnt to relate frames; the answer alone teaches it far
  too slowly (the first GPU run learnt colour and order to 85-95 % while motion and count stayed at
  chance).
The heads these losses train (`AuxProbe`) are trained with the model and not shipped.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cacovid.data.synthetic.config import MAX_FRAMES
from cacovid.toy.batching import ToyBatcher
from cacovid.toy.forward import query_attention
from cacovid.types import QAItem

# Objects up to this size (px) are target-sized: their cells carry the shape label (see `aux_loss`).
SMALL_OBJECT_PX = 24
_DIRECTION_INDEX = {"left": 1, "right": 2, "up": 3, "down": 4}  # 0: no label


class AuxProbe(nn.Module):
    """Dense per-token heads on projected video tokens: colour, shape, row, column.

    Trained with the model, not shipped: they stand in for the supervision a pretrained vision encoder
    has already absorbed. `scale` is the temperature of the word-alignment logits.
    """

    def __init__(self, hidden: int, grid: int, n_colors: int, n_shapes: int) -> None:
        super().__init__()
        self.grid = grid
        # Tracking heads on the language model's video tokens (see `track_labels`).
        self.motion = nn.Linear(hidden, len(_DIRECTION_INDEX) + 1)
        self.count = nn.Linear(hidden, MAX_FRAMES + 1)
        self.color = nn.Linear(hidden, n_colors)
        self.shape = nn.Linear(hidden, n_shapes)
        self.position = nn.Linear(hidden, 2 * grid)
        self.scale = nn.Parameter(torch.tensor(10.0))


def _cell_labels(item: QAItem, key: str) -> np.ndarray:
    """Per-cell label maps from the world's meta; "token_small" marks cells of objects ≤ 24 px."""
    if key != "token_small":
        return item.meta[key]
    obj = np.asarray(item.meta["token_object"])
    small = np.array([False] + [o["size"] <= SMALL_OBJECT_PX for o in item.meta["objects"]])
    return small[obj]


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


def grounding_loss(
    attn: nn.Module, captured: tuple, mask: torch.Tensor, ev_mask: torch.Tensor
) -> torch.Tensor:
    """-log of the attention mass the last prompt token puts on the evidence tokens at one layer.

    `captured`: the (args, kwargs) of the layer's attention `attn` on rows that end with the answer
    token, so the last prompt token sits at -2. Averaged over heads, then over the rows that keep
    any evidence.
    """
    att = query_attention(attn, *captured, mask, query=-2).mean(1)
    has = ev_mask.any(-1)
    return -((att * ev_mask).sum(-1)[has] + 1e-6).log().mean()


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


def track_loss(probe: AuxProbe, items: list[QAItem], captured: tuple, vid_pad: torch.Tensor):
    """Motion + running-count cross-entropy on the video tokens entering the grounding layer.

    Reads the layer's normalised input (what its attention turns into values), so the answer
    position can gather what the target tokens know. `vid_pad`: which video token each padded row
    position holds (-1 for text, see `build_rows`). Returns (loss, accuracy on labelled tokens).
    """
    args, kwargs = captured
    h = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]  # (B, L, D)
    pairs = [track_labels(it) for it in items]
    total, hits, n_all = h.new_zeros(()), 0.0, 0
    for head, which in ((probe.motion, 0), (probe.count, 1)):
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
