"""``infworld probe``: the Crafter world-state probe (a per-cell classifier and inventory reader).

    infworld probe train --data DIR [--data DIR ...] --out DIR [--steps N] [--seed S] [--heldout N]
                         [--batch-size B] [--max-minutes M] [--threads N] [--no-progress]
    infworld probe eval --probe DIR_OR_NAME --data DIR [--data DIR ...] [--json OUT] [--threads N]

``train`` learns, from Crafter datasets (``infworld collect --env crafter``), to read every cell
of the local view (material or creature, or ``outside`` the world) and every inventory count off
one frame; the last episodes are held out and measured, and the export (model.safetensors +
config.json) goes to ``--out``. ``eval`` measures an export on other episodes: per-cell accuracy
overall, per class and at night, inventory accuracy, and the majority-class baseline. See
infworld/bench/crafter_probe.py.
"""

from __future__ import annotations

import argparse
from typing import Any

from infworld.cli.common import check_at_least


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "probe", help="train or evaluate the Crafter world-state probe (cells + inventory from a frame)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("train", "eval"), help="train a probe, or evaluate one")
    p.add_argument("--data", action="append", default=[], metavar="DIR",
                   help="Crafter dataset folder (repeatable)")
    p.add_argument("--out", help="train: export folder")
    p.add_argument("--probe", help="eval: probe export folder, or a name under checkpoints/")
    p.add_argument("--json", help="eval: also write the metrics as JSON here")
    p.add_argument("--steps", type=int, help="train: optimizer steps (default 3000)")
    p.add_argument("--seed", type=int, default=0, help="train: seed (default 0)")
    p.add_argument("--heldout", type=int, help="train: episodes held out (default a tenth, at least 1)")
    p.add_argument("--batch-size", type=int, help="train: frames per step (default 64)")
    p.add_argument("--max-minutes", type=float, help="train: stop after this many minutes")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from infworld.errors import ConfigError

    check_at_least(args, 1, "steps", "heldout", "batch_size", "threads")
    check_at_least(args, 0, "seed")
    if not args.data:
        raise ConfigError(f"probe {args.action}: --data DIR (a Crafter dataset) is required")
    import torch

    torch.set_num_threads(args.threads)
    if args.action == "train":
        return _train(args)
    if not args.probe:
        raise ConfigError("probe eval: --probe DIR (an export of `infworld probe train`) is required")
    from infworld.bench.crafter_probe import evaluate_probe, load_probe_data
    from infworld.bench.crafter_probe_io import load_probe

    probe = load_probe(args.probe)
    metrics = evaluate_probe(probe, load_probe_data(args.data), probe.meta.get("majority"))
    print(format_metrics(metrics))
    if args.json:
        from infworld.data.episode import atomic_write_json

        atomic_write_json(args.json, {"probe": args.probe, "data": args.data, "metrics": metrics})
        print(f"probe eval: metrics -> {args.json}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from infworld.bench.crafter_probe import ProbeTrainConfig, train_probe
    from infworld.errors import ConfigError

    if not args.out:
        raise ConfigError("probe train: --out DIR (where the export goes) is required")
    cfg = ProbeTrainConfig(seed=args.seed, heldout=args.heldout, max_minutes=args.max_minutes)
    if args.steps is not None:
        cfg.steps = args.steps
    if args.batch_size is not None:
        cfg.batch_size = args.batch_size
    meta = train_probe(args.data, args.out, cfg, progress=not args.no_progress)
    print(format_metrics(meta["metrics"]))
    t = meta["train"]
    print(f"probe train: {t['steps']} steps in {t['seconds']:.0f} s on {t['episodes']} episodes "
          f"({t['frames']} frames), {meta['params']} parameters -> {args.out}")
    return 0


def format_metrics(m: dict[str, Any]) -> str:
    """Plain-text table: per-cell accuracy overall, by class and day/night; inventory accuracy."""

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.2f}%"

    c, inv = m["cells"], m["inventory"]
    lines = [f"held-out frames: {m['frames']} ({m['episodes']} episodes, {c['night_frames']} at night)",
             f"cells: accuracy {pct(c['accuracy'])} (day {pct(c['day_accuracy'])}, night "
             f"{pct(c['night_accuracy'])}); majority baseline ({c['majority_class']}, from "
             f"{m['majority_from']}) {pct(c['majority_baseline'])}",
             "  class        accuracy     cells"]
    lines += [f"  {name:<12} {pct(v['accuracy']):>8} {v['cells']:>9}" for name, v in c["per_class"].items()]
    lines.append(f"inventory: accuracy {pct(inv['accuracy'])}, frames with all {len(inv['per_key'])} right "
                 f"{pct(inv['frames_all_correct'])}; majority baseline {pct(inv['majority_baseline'])}")
    worst = sorted(inv["per_key"].items(), key=lambda kv: kv[1])[:3]
    lines.append("  lowest keys: " + ", ".join(f"{k} {pct(v)}" for k, v in worst))
    return "\n".join(lines)
