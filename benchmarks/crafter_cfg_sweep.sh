#!/usr/bin/env bash
# How crafter-tiny's inference defaults were chosen (docs/crafter.md, "Inference defaults"): the
# effects and moves protocols of crafter-v1 with the window memory, for action CFG 1, 2, 3 and 5
# (context noise 0 at CFG 1, as trained-out of the export; 0.1 otherwise). Each setting runs on a
# copy of the export whose config.json carries it.
#   bash benchmarks/crafter_cfg_sweep.sh [MODEL_DIR] [OUT_ROOT]
set -euo pipefail
MODEL=${1:-checkpoints/crafter-tiny}
OUT=${2:-out/crafter-cfg}
for cfg in 1 2 3 5; do
  noise=$([ "$cfg" = 1 ] && echo 0.0 || echo 0.1)
  copy="$OUT/model-cfg$cfg"
  rm -rf "$copy" && mkdir -p "$OUT" && cp -r "$MODEL" "$copy"
  python - "$copy/config.json" "$cfg" "$noise" <<'PY'
import json, sys
path, cfg, noise = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
conf = json.load(open(path))
conf["model_config"]["sampler"]["cfg_scale"] = cfg
conf["model_config"]["context_noise"] = noise
json.dump(conf, open(path, "w"), indent=1)
PY
  infworld bench --model "$copy" --suite crafter-v1 --memory window --protocols effects,moves \
      --threads 1 --no-progress --out "$OUT/cfg$cfg"
done
