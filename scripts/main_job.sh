#!/usr/bin/env bash
# The main job: collect a small revisit-dense ViZDoom dataset, validate it, print its statistics,
# then let the shipped world model (checkpoints/doom-tiny-world) dream 300 frames from its first
# frames and actions. (Will become `infworld play` once the play page lands.)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=${OUT:-data/demo-doom}
$BIN/infworld collect --env vizdoom --scenario my_way_home --policy revisit \
    --episodes 2 --steps 300 --out "$OUT" --workers 2 --seed 0
$BIN/infworld data validate "$OUT"
$BIN/infworld data info "$OUT"
$BIN/infworld rollout --model doom-tiny-world --episode "$OUT:0" --context 8 --frames 300 \
    --memory window --out out/demo-rollout
echo "video (generated | ground truth): out/demo-rollout/video.mp4"
