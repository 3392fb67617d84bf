#!/usr/bin/env bash
# One GPU stage of CaCoVID policy training: `cacovid train` on one GPU, stopped by a hard time limit
# (when the run is sized larger than the limit, its learning rate is still near its peak), then the
# last checkpoint's policy and the log are copied out, for a CPU stage to continue from (--init-policy).
# The policy shipped for the toy model was trained on a CPU alone (docs/experiments.md).
# Usage: OUT=results_dir bash scripts/train_policy_device.sh
# Env: PY (python3), DEVICE (cuda), LIMIT_S (420), N_ITEMS (3000), LR (5e-4), EPS (advantage ε, 1e-4),
#      REWARD (accuracy | dense),
#      INIT (policy folder to start from; empty: a fresh copy of the host's first layer),
#      WORLD (synthetic world overrides, e.g. seed_offset=3000000 for items no earlier stage saw).
set -uo pipefail
PY=${PY:-python3}
OUT=${OUT:?set OUT to a results folder}
RUN=${RUN:-/tmp/policy-run}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then  # pinned wheels carried to a machine without them
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/src
INIT_ARGS=()
if [ -n "${INIT:-}" ]; then INIT_ARGS=(--init-policy "$INIT"); fi
timeout "${LIMIT_S:-420}" $PY -m cacovid train --device "${DEVICE:-cuda}" --reward "${REWARD:-accuracy}" \
  --lr "${LR:-5e-4}" --advantage-eps "${EPS:-1e-4}" --n-items "${N_ITEMS:-3000}" --world "${WORLD:-}" \
  --val-items 0 --checkpoint-every 100 --threads 4 --no-progress --out "$RUN" "${INIT_ARGS[@]}" \
  2>&1 | tail -20 | tee "$OUT/train.txt"
cp "$RUN/log.jsonl" "$OUT/log.jsonl"
if [ -d "$RUN/policy" ]; then cp -r "$RUN/policy" "$OUT/policy"  # the run finished
else cp -r "$RUN/checkpoint/policy" "$OUT/policy"; fi  # stopped by the limit: its last checkpoint
cp "$RUN/train_config.json" "$OUT/train_config.json" 2>/dev/null || true
grep -c '"item"' "$OUT/log.jsonl"
ls -la "$OUT" "$OUT/policy"
