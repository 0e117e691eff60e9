#!/usr/bin/env bash
# The secfm-270m chain (cpt-lora.yaml, then sft-lora.yaml), in resumable chunks: each chunk runs
# under the team lock (flock ~/.secfm-heavy.lock) for at most the recipe's max_minutes, saves a
# checkpoint and releases the lock, so other jobs interleave; the next chunk resumes. A stage is
# done when its summary.json says it was not stopped by its time budget. Run from the repo root.
set -euo pipefail
lock=${SECFM_LOCK:-$HOME/.secfm-heavy.lock}
recipes=training/recipes/gemma-3-270m
done_stage() {  # done when the last chunk finished the schedule
  python - "$1/summary.json" <<'PY'
import json, sys
from pathlib import Path
p = Path(sys.argv[1])
sys.exit(0 if p.is_file() and not json.loads(p.read_text()).get("stopped_by_time_budget") else 1)
PY
}
for stage in cpt sft; do
  out=runs/gemma-3-270m/$stage-lora
  until done_stage "$out"; do
    flock "$lock" nice -n 5 secfm train "$stage" --config "$recipes/$stage-lora.yaml"
    sleep 5  # let a waiting job take the lock
  done
done
# the record of the runs, next to the figures
mkdir -p training/results
for stage in cpt sft; do
  cp runs/gemma-3-270m/$stage-lora/summary.json training/results/secfm-270m-$stage-summary.json
  cp runs/gemma-3-270m/$stage-lora/loss_curve.png training/results/secfm-270m-$stage-loss.png 2>/dev/null || true
done
cp runs/data/corpus/data_card.md training/results/corpus-data-card.md
cp runs/data/sft/data_card.json training/results/sft-data-card.json
# the protocol's test figures, scored once (a rerun reads the same cached result), then the adapter ships
if [ "${SECFM_SKIP_TEST_EVAL:-0}" != 1 ]; then
  flock "$lock" nice -n 5 secfm train eval --split test --corpus runs/data/corpus --sft runs/data/sft --max-tokens 20000 \
    --adapter runs/gemma-3-270m/sft-lora/adapter --out training/results/secfm-270m.json
  python -m secfm.training.ship --adapter runs/gemma-3-270m/sft-lora/adapter
  secfm results
fi
echo "chain done: runs/gemma-3-270m/sft-lora/adapter (shipped to secfm/adapters/secfm-270m)"
