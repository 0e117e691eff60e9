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
echo "chain done: runs/gemma-3-270m/sft-lora/adapter"
