#!/usr/bin/env bash
# The world-model v2 ablation of docs/model.md: four 400-step runs of the doom-tiny-world recipe on
# the same data, seed and settings, each followed by its validation (loss, action gap, next-frame
# PSNR: RUN/summary.json) and the action-response benchmark on 6 held-out starts x 12 frames.
#   bash benchmarks/ablate_world_v2.sh [OUT=runs/ablate]     (about 40 minutes on 2 CPU cores)
# Needs checkpoints/doom-tiny-tokenizer and data/doom-diverse (README: the `diverse` collection).
set -euo pipefail
OUT=${1:-runs/ablate}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
declare -A VARIANTS=(
  [v1arch]="model.dit.action_adaln=false model.dit.conv.width=0 model.forcing.context_noise=0.0"
  [adaln-only]="model.dit.conv.width=0"
  [conv-noshift]="model.dit.conv.shift_kernel=0"
  [v2]=""
)
for name in v1arch adaln-only conv-noshift v2; do
  # shellcheck disable=SC2086
  infworld train --recipe doom-tiny-world --out "$OUT/$name" --no-progress \
    --set train.steps=400 train.eval_every=400 train.ckpt_every=0 ${VARIANTS[$name]}
  infworld export "$OUT/$name" --out "$OUT/$name/export"
  python benchmarks/action_response.py --model "$OUT/$name/export" --starts 6 --frames 12 --idm none \
    --out "$OUT/$name/action_response.json"
done
