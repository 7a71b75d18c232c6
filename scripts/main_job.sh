#!/usr/bin/env bash
# The main job: collect a small revisit-dense ViZDoom dataset, validate it, print its statistics.
# (Will become `infworld play` on the shipped model once that lands.)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=${OUT:-data/demo-doom}
$BIN/infworld collect --env vizdoom --scenario my_way_home --policy revisit \
    --episodes 2 --steps 300 --out "$OUT" --workers 2 --seed 0
$BIN/infworld data validate "$OUT"
$BIN/infworld data info "$OUT"
