"""Evaluation: the resumable harness (methods × ratios × items → items.jsonl + summary.json),
efficiency accounting (times, FLOPs, memory → efficiency.json) and reports (markdown, plots,
token heat-maps). See `harness.py`, `efficiency.py` and `report.py`; result files are described in
`records.py` and docs/result-files.md. Items come from `cacovid.data.sources`
(re-exported here: `ItemSource`, `synthetic_source`, `videor1_source`, `source_from_args`).
"""

from cacovid.data.sources import ItemSource, source_from_args, synthetic_source, videor1_source
from cacovid.evaluate.efficiency import (
    fastv_prefill_flops,
    layer_flops,
    measure_efficiency,
    prefill_flops,
)
from cacovid.evaluate.harness import EvalConfig, Harness, ItemEvent, run_evaluation
from cacovid.evaluate.methods import Method, build_methods, parse_methods
from cacovid.evaluate.records import decode_mask, encode_mask, read_rows
from cacovid.evaluate.report import build_report
from cacovid.evaluate.summary import summarize

__all__ = [
    "EvalConfig",
    "Harness",
    "ItemEvent",
    "ItemSource",
    "Method",
    "build_methods",
    "build_report",
    "decode_mask",
    "encode_mask",
    "fastv_prefill_flops",
    "layer_flops",
    "measure_efficiency",
    "parse_methods",
    "prefill_flops",
    "read_rows",
    "run_evaluation",
    "source_from_args",
    "summarize",
    "synthetic_source",
    "videor1_source",
]
