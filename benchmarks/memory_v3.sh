#!/usr/bin/env bash
# Memory v3 on the doom-v2 long-revisit suite (docs/memory.md, "Memory v3"): the memory-trained model
# whose bounded strategies read their frames in the causal layout (recipes/doom-tiny-mem-causal.yaml),
# against the same model's window and its full-history oracle (isolated layout, 512 frames, plain).
# Two benchmark processes at a time (one torch thread each, the 2-core CPU); finished parts are
# resumed, so the last call of each block only assembles the report.
#   MEM=runs/doom-tiny-mem-causal/export bash benchmarks/memory_v3.sh [OUT_ROOT]   (default out/memory-v3)
# The backbone's and the stage-1 model's figures are benchmarks/results/memory-v2/ (memory_v2.sh).
# MEM defaults to the memory v2 run (`infworld train --recipe doom-tiny-mem` then `infworld export
# runs/doom-tiny-mem --out runs/doom-tiny-mem/export`): checkpoints/doom-tiny-mem is memory v6.
set -euo pipefail
OUT=${1:-out/memory-v3}
MEM=${MEM:-runs/doom-tiny-mem/export}
common=(--suite doom-v2 --protocols replay,revisit --threads 1 --no-progress)
full_opt=(--memory-opt full.budget=512 --memory-opt full.plain=true)

# 1. window, the oracle and HPMC | kv and vrag as trained by default (marked: memory frame kind,
#    relative poses), then vrag with its frames shown plain (kind 0, no poses)
infworld bench --model "$MEM" --memory window,full,hpmc "${full_opt[@]}" --out "$OUT/mem" "${common[@]}" &
( infworld bench --model "$MEM" --memory kv,vrag --out "$OUT/mem" "${common[@]}" &&
  infworld bench --model "$MEM" --memory vrag --memory-opt plain=true --out "$OUT/mem-plain" "${common[@]}" ) &
wait
infworld bench --model "$MEM" --memory window,full,hpmc,kv,vrag "${full_opt[@]}" --out "$OUT/mem" "${common[@]}"
