#!/usr/bin/env bash
# Memory v2 on the doom-v2 long-revisit suite (docs/memory.md, "Memory v2: measured").
# Two benchmark processes at a time (one torch thread each, the 2-core CPU); finished parts are
# resumed, so the last call of each block only assembles the report.
#   bash benchmarks/memory_v2.sh [OUT_ROOT]     (default out/memory-v2)
# The oracle `full` holds up to 512 frames and shows them plain: plain raw frames carry no pose
# features, so their keys/values are reused from chunk to chunk (memory/kv_reuse.py).
# MEM defaults to the memory v2 run (`infworld train --recipe doom-tiny-mem` then `infworld export
# runs/doom-tiny-mem --out runs/doom-tiny-mem/export`): checkpoints/doom-tiny-mem is memory v6.
set -euo pipefail
OUT=${1:-out/memory-v2}
MEM=${MEM:-runs/doom-tiny-mem/export}
BASE=${BASE:-doom-tiny-world}
common=(--suite doom-v2 --protocols replay,revisit --threads 1 --no-progress)
full_opt=(--memory-opt full.budget=512 --memory-opt full.plain=true)

# 1. the memory-trained model: window, the full-history oracle, and the bounded strategies as
#    trained by default (marked: memory frame kind; relative poses for kv and vrag)
infworld bench --model "$MEM" --memory window,full "${full_opt[@]}" --out "$OUT/mem" "${common[@]}" &
infworld bench --model "$MEM" --memory hpmc,kv,vrag --out "$OUT/mem" "${common[@]}" &
wait
infworld bench --model "$MEM" --memory window,full,hpmc,kv,vrag "${full_opt[@]}" --out "$OUT/mem" "${common[@]}"

# 2. the same weights with raw frames shown plain (kind 0, no poses; HPMC's compressed latents stay
#    marked), and 3. the backbone never trained with memory, given the same frames as plain context
infworld bench --model "$MEM" --memory hpmc,kv,vrag --memory-opt plain=true --out "$OUT/mem-plain" "${common[@]}" &
infworld bench --model "$BASE" --memory window,kv,vrag --out "$OUT/base" "${common[@]}" &
wait
