"""Torch-only token-selection primitives shared by CaCoVID's selection/training and the baselines.

Everything here works on plain tensors (no prompts, no models), so it can be tested by hand and reused
by any selector: even spreading (`fill`), per-frame budget allocation (`budget`), density-peak
diversity scoring (`density`), per-row top-k masks (`topk`), feature merging (`merge`) and
temporal novelty (`novelty`).
"""

from cacovid.ops.budget import allocate, even_frame_budgets
from cacovid.ops.density import dpc_knn_scores, dpc_knn_scores_batched, dpc_knn_select, dpc_knn_select_batched
from cacovid.ops.fill import even_fill, even_fill_rows, uniform_indices
from cacovid.ops.merge import merge_assigned
from cacovid.ops.novelty import standardise, temporal_novelty
from cacovid.ops.topk import topk_rows_mask

__all__ = [
    "allocate",
    "dpc_knn_scores",
    "dpc_knn_scores_batched",
    "dpc_knn_select",
    "dpc_knn_select_batched",
    "even_fill",
    "even_fill_rows",
    "even_frame_budgets",
    "merge_assigned",
    "standardise",
    "temporal_novelty",
    "topk_rows_mask",
    "uniform_indices",
]
