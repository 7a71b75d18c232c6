"""``infworld export``: turn a training run into a slim inference model.

    infworld export RUN --out MODEL_DIR [--weights ema|raw]

RUN is a run folder (its checkpoints/last.pt is used) or a checkpoint file. MODEL_DIR receives
model.safetensors and config.json; load it with ``infworld.train.export.load_model(MODEL_DIR)``.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export a training run to model.safetensors + config.json",
                              description="Export a run (folder or .pt) for inference.")
    p.add_argument("run", help="run folder (uses checkpoints/last.pt) or a checkpoint .pt file")
    p.add_argument("--out", required=True, help="output model folder")
    p.add_argument("--weights", choices=("ema", "raw"), default="ema",
                   help="EMA weights (default, what evaluation measured) or the raw optimizer weights")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from infworld.train.export import CONFIG, export_run

    out = export_run(args.run, args.out, weights=args.weights)
    config = json.loads((out / CONFIG).read_text())
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in config["metrics"].items())
    print(f"exported {config['task']} ({args.weights} weights, {config['trained_steps']} steps"
          f"{'; ' + metrics if metrics else ''}) to {out}")
    return 0
