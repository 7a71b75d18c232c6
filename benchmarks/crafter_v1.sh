#!/usr/bin/env bash
# The Crafter world model on the crafter-v1 suite (docs/crafter.md): probe-judged action effects,
# move following, world-state recall at returns per memory strategy, and the 1000-frame look.
# Two benchmark processes at a time (one torch thread each, the 2-core CPU); finished parts are
# resumed, so the last call only assembles the report.
#   bash benchmarks/crafter_v1.sh [OUT_ROOT]     (default out/crafter-v1)
# The suite is recorded once (12 held-out craft-policy episodes + a 1000-step look episode) into
# ~/.cache/infworld/bench/crafter-v1-v1. The judge is checkpoints/crafter-probe (`infworld probe`).
set -euo pipefail
OUT=${1:-out/crafter-v1}
MODEL=${MODEL:-crafter-tiny}
common=(--model "$MODEL" --suite crafter-v1 --threads 1 --no-progress --out "$OUT")

# window first: it also runs the memory-independent protocols (effects, moves, look)
infworld bench --memory window,vrag "${common[@]}" &
infworld bench --memory kv,full --protocols recall "${common[@]}" &
wait
infworld bench --memory window,vrag,kv,full "${common[@]}"
