#!/usr/bin/env bash
# Memory v2 on the doom-v2 long-revisit suite (docs/memory.md, "Memory v2: measured").
# Two benchmark processes at a time (one torch thread each, the 2-core CPU), then one pass that
# assembles every variant of a model into one report (finished parts are resumed, not rerun).
#   bash benchmarks/memory_v2.sh [OUT_ROOT]     (default out/memory-v2)
set -euo pipefail
OUT=${1:-out/memory-v2}
MEM=${MEM:-doom-tiny-mem}
BASE=${BASE:-doom-tiny-world}
common=(--suite doom-v2 --protocols replay,revisit --threads 1 --no-progress)
full_opt=(--memory-opt full.budget=512)

# 1. the memory-trained model, marked presentation (memory kind; poses for kv/vrag)
infworld bench --model "$MEM" --memory window,full "${full_opt[@]}" --out "$OUT/mem" "${common[@]}" &
infworld bench --model "$MEM" --memory hpmc,kv,vrag --out "$OUT/mem" "${common[@]}" &
wait
infworld bench --model "$MEM" --memory window,full,hpmc,kv,vrag "${full_opt[@]}" --out "$OUT/mem" "${common[@]}"

# 2. the same weights, raw frames shown plain (kind 0, no poses; HPMC's compressed latents marked)
infworld bench --model "$MEM" --memory window,full --memory-opt plain=true "${full_opt[@]}" \
    --out "$OUT/mem-plain" "${common[@]}" &
infworld bench --model "$MEM" --memory hpmc,kv,vrag --memory-opt plain=true --out "$OUT/mem-plain" "${common[@]}" &
wait
infworld bench --model "$MEM" --memory window,full,hpmc,kv,vrag --memory-opt plain=true "${full_opt[@]}" \
    --out "$OUT/mem-plain" "${common[@]}"

# 3. the backbone never trained with memory, the same frames as plain context (its 16-frame window
#    is trained; kv/vrag return 8 frames)
infworld bench --model "$BASE" --memory window,kv,vrag --out "$OUT/base" "${common[@]}"
