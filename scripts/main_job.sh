#!/usr/bin/env bash
# The main job: step inside the shipped world model in the browser. It serves doom-tiny
# (infworld/serve/defaults.py): the doom-tiny-world DiT (3.1M parameters, 64x64 my_way_home) on
# the frozen doom-tiny-tokenizer, with VRAG retrieval memory (stored frames picked by
# dead-reckoned pose, fed back as plain context).
# The memory-trained alternative: infworld play --model doom-tiny-mem --memory hpmc.
# Open http://127.0.0.1:8000/ , click the picture, move with W/A/S/D and the arrow keys.
# Ctrl-C stops the server.
#
#   scripts/main_job.sh             the play page (binds 127.0.0.1 only)
#   scripts/main_job.sh --headless  no browser: a 1000-frame scripted walk that comes back to its
#                                   start, written to out/walk.mp4, with the speed and revisit PSNR
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
if [[ "${1:-}" == "--headless" ]]; then
  $BIN/infworld play --headless --frames 1000 --out out/walk.mp4
  echo "video: out/walk.mp4"
else
  echo "open http://127.0.0.1:8000/ in a browser (Ctrl-C to stop)"
  $BIN/infworld play --no-browser
fi
