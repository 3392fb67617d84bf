#!/usr/bin/env bash
# How the shipped toy weights were trained: the whole `cacovid toy train` recipe on one GPU.
# Usage: OUT=results_dir bash scripts/train_toy_device.sh
# Env: PY (python, default python3), DEVICE (cuda), WORKERS (12), BATCH (64), VISION_STEPS (500),
#      QA_MINUTES (6), LIMIT_S (hard stop for the training process, 480), LR (1e-3),
#      INIT_FROM (weights to start from instead of from scratch), BENCH (1: GPU selector timings),
#      EVIDENCE_DROP / OBJECT_KEEP (robustness to what a selector keeps; ToyTrainConfig).
# The same recipe runs on the CPU (DEVICE=cpu), only slower; phases, commands and figures are in
# docs/experiments.md, "The embedded toy model".
set -uo pipefail
PY=${PY:-python3}
OUT=${OUT:?set OUT to a results folder}
RUN=${RUN:-/tmp/toy-run}
mkdir -p "$OUT" "$RUN"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then  # pinned wheels carried to a machine without them
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/src
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
timeout "${LIMIT_S:-480}" $PY - "$RUN" <<PYEOF 2>&1 | tee "$OUT/train.txt"
import sys, time
from cacovid.toy.config import ToyTrainConfig
from cacovid.toy.train import ToyTrainer
cfg = ToyTrainConfig(
    out_dir=sys.argv[1], device="${DEVICE:-cuda}", workers=${WORKERS:-12}, threads=4,
    batch_size=${BATCH:-64}, vision_steps=${VISION_STEPS:-500}, qa_minutes=${QA_MINUTES:-6},
    val_every=${VAL_EVERY:-500}, checkpoint_every=250, lr=${LR:-1e-3}, vision_lr=${LR:-1e-3},
    init_from=("${INIT_FROM:-}" or None),
    evidence_drop_prob=${EVIDENCE_DROP:-0.0}, object_keep_prob=${OBJECT_KEEP:-0.0},
)
t = time.time()
tr = ToyTrainer(cfg)
tr.fit(progress=False)
print(f"trained {tr.step} steps in {time.time() - t:.0f} s", flush=True)
PYEOF
# Export whatever the last checkpoint holds (also after a hard stop), plus a weights-only state.
$PY - "$RUN" "$OUT" <<'PYEOF' 2>&1 | tee "$OUT/export.txt"
import json, sys, tarfile, torch
from pathlib import Path
from cacovid.toy.config import ToyTrainConfig
from cacovid.toy.train import ToyTrainer
run, out = Path(sys.argv[1]), Path(sys.argv[2])
state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
cfg = ToyTrainConfig(**{k: v for k, v in state["config"].items() if k != "qa_fixed"})
cfg.device = "cpu"
cfg.qa_minutes = None
tr = ToyTrainer(cfg)
print("step", tr.step, "of", cfg.vision_steps + cfg.qa_steps)
torch.save({"step": tr.step, "model": tr.model.state_dict(), "probe": tr.probe.state_dict(), "config": state["config"]}, out / "weights_state.pt")
tr.export(run / "export")
print(json.dumps(json.loads((run / "export" / "cacovid_toy.json").read_text())["quality"]))
with tarfile.open(out / "export.tgz", "w:gz") as t:
    t.add(run / "export", arcname="export")
    t.add(run / "log.jsonl", arcname="log.jsonl")
PYEOF
ls -la "$OUT"
# GPU selection timings at LLaVA-OneVision-7B prompt size (bench/README.md), when CUDA is available.
if [ "${BENCH:-1}" = 1 ] && $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  timeout "${BENCH_LIMIT_S:-60}" $PY bench/selectors_speed.py --device cuda --dtype bfloat16 --sizes 7b \
    --repeats 5 --json "$OUT/selectors_7b_cuda.json" 2>&1 | tee "$OUT/bench.txt"
fi
