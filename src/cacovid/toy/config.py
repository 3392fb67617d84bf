"""Everything that defines a toy training run, in one dataclass (`cacovid toy train`'s options).

A run is reproducible from its config alone: the trainer stores it in every checkpoint (a resumed
run reads its fixed schedule back from there) and in the exported model's `cacovid_toy.json`, and
the batching, the losses and the trainer all read their settings from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# The world `world`, `mix_worlds` and `val_worlds` start from when they name no preset. The toy
# trainer keeps the classic world while every other command defaults to `preset=decoys`
# (data/synthetic/config.py): the from-scratch recipe is trained on classic's three question
# families (decoys asks `motion` only), checkpoints store `world` as the overrides given (`{}` for
# none) and a resumed run reads the world from the command line, so `{}` must keep meaning classic.
# The shipped model's fine-tune on both worlds names every world with its preset (`--mix-worlds`).
TOY_TRAIN_PRESET = "classic"


@dataclass
class ToyTrainConfig:
    """`world`: overrides of the world trained and validated on, from `TOY_TRAIN_PRESET` (classic)
    unless they name a preset."""

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
