"""``infworld data``: validate, inspect, import and relabel datasets in the episode format.

    infworld data validate DIR [--json]
    infworld data info DIR [--json] [--revisit-gap N] [--revisit-dist D] [--revisit-angle A]
    infworld data import --frames PATH [--poses poses.csv] [--actions actions.csv] --out DIR
                         [--size 64 | --size HxW] [--env NAME] [--fps F]
    infworld data label DIR --out DIR2 [--noise-std POS,ANG]

See docs/episode_format.md and docs/own_data.md.
"""

from __future__ import annotations

import argparse
import json
import sys


def _size(text: str) -> int | tuple[int, int]:
    """``64`` -> 64, ``48x64`` or ``48,64`` -> (48, 64) (H, W)."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}") from None
    if len(values) not in (1, 2) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected N or HxW with positive ints, got {text!r}")
    return values[0] if len(values) == 1 else (values[0], values[1])


def _noise(text: str) -> tuple[float, float]:
    """``POS,ANG`` -> (pos_std, angle_std)."""
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected POS,ANG (two numbers), got {text!r}") from None
    if len(values) != 2 or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected POS,ANG (two numbers >= 0), got {text!r}")
    return values  # type: ignore[return-value]


def _validate(args: argparse.Namespace) -> int:
    from infworld.data.validate import format_report, validate_dataset

    report = validate_dataset(args.dir)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(format_report(report))
    # One line on stderr (through the dispatcher) naming the first bad file and field.
    report.raise_for_errors()
    return 0


def _info(args: argparse.Namespace) -> int:
    from infworld.data.stats import dataset_info, format_info

    info = dataset_info(args.dir, revisit_min_gap=args.revisit_gap, revisit_dist=args.revisit_dist,
                        revisit_angle_deg=args.revisit_angle)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def _import(args: argparse.Namespace) -> int:
    from infworld.data.importer import import_episode

    summary = import_episode(args.frames, args.out, poses=args.poses, actions=args.actions,
                             size=args.size, env=args.env, fps=args.fps)
    verb = "appended to" if summary["appended"] else "created"
    unc_move, unc_view = 100 * summary["move_uncertain_share"], 100 * summary["view_uncertain_share"]
    print(f"{verb} {summary['dataset']}: {summary['episode']} ({summary['frames']} frames, "
          f"{summary['source']} {summary['original_size'][0]}x{summary['original_size'][1]} -> "
          f"{summary['size'][0]}x{summary['size'][1]}, poses: {summary['has_pose']}, "
          f"actions from {summary['actions_from']}, uncertain move {unc_move:.0f}% / view {unc_view:.0f}%)")
    return 0


def _label(args: argparse.Namespace) -> int:
    from infworld.data.relabel import relabel_dataset

    summary = relabel_dataset(args.dir, args.out, noise_std=args.noise_std, overwrite=args.overwrite)
    for key, value in (summary or {}).items():
        print(f"{key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from infworld.data.merge import merge_datasets

    summary = merge_datasets(args.dirs, args.out, repeat=args.repeat, overwrite=args.overwrite)
    parts = ", ".join(f"{p['source']} x{p['repeat']} -> episodes {p['first']}..{p['last']}"
                      for p in summary["sources"])
    print(f"merged {summary['episodes']} episodes into {summary['dataset']} ({parts})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="validate, inspect, import, merge and relabel datasets",
                                   description="Tools for the episode format (docs/episode_format.md).")
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    def no_subcommand(args: argparse.Namespace) -> int:
        parser.print_help(file=sys.stderr)
        return 2

    parser.set_defaults(func=no_subcommand)

    p = sub.add_parser("validate", help="check a dataset against the episode format")
    p.add_argument("dir", help="dataset folder (with meta.json and episodes/)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_validate)

    p = sub.add_parser("info", help="summarise a dataset (sizes, action distribution, poses, revisits)",
                       description="Sizes, lengths, the action distribution (share of each move / view / "
                                   "interact id, entropy in bits, repeat rate), pose extent and revisits.")
    p.add_argument("dir", help="dataset folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--revisit-gap", type=int, default=50, help="min frames between a visit and a revisit")
    p.add_argument("--revisit-dist", type=float, default=None,
                   help="revisit radius in pose units (default: 64 Doom units, 1 Crafter cell)")
    p.add_argument("--revisit-angle", type=float, default=30.0, help="max yaw difference of a revisit, deg")
    p.set_defaults(func=_info)

    p = sub.add_parser("import", help="turn your own video / images / array into an episode")
    p.add_argument("--frames", required=True, help="video file, folder of images, or .npy/.npz (T, H, W, 3)")
    p.add_argument("--poses", default=None, help="CSV with columns frame,x,y,z,yaw,pitch")
    p.add_argument("--actions", default=None,
                   help="CSV with columns frame,forward,right,yaw,pitch[,interact]; a move (view) column "
                        "of ids 0..9 may replace forward,right (yaw,pitch)")
    p.add_argument("--out", required=True, help="dataset folder (created, or appended to)")
    p.add_argument("--size", type=_size, default=None,
                   help="frame size N or HxW (default 64, or the dataset's)")
    p.add_argument("--env", default=None, help="environment name stored in meta.json (default 'custom')")
    p.add_argument("--fps", type=float, default=None, help="frames per second (default: the video's, or 30)")
    p.set_defaults(func=_import)

    p = sub.add_parser("merge", help="merge datasets of one environment into a new dataset (hard links)",
                       description="Episodes are hard-linked (copied across filesystems) and renumbered in "
                                   "source order, so the last source's last episodes form the val split.")
    p.add_argument("dirs", nargs="+", help="source dataset folders")
    p.add_argument("--out", required=True, help="new dataset folder")
    p.add_argument("--repeat", type=int, nargs="+", default=None,
                   help="times each source is included (one int per source; default 1 each)")
    p.add_argument("--overwrite", action="store_true", help="replace the episodes of an existing --out")
    p.set_defaults(func=_merge)

    p = sub.add_parser("label", help="relabel actions from poses (uncertainty-aware) into a new dataset")
    p.add_argument("dir", help="source dataset folder (with poses)")
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--noise-std", type=_noise, default=None, metavar="POS,ANG",
                   help="known pose noise std of the source poses (position units, degrees); "
                        "leave out to estimate it from the data")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out dataset")
    p.set_defaults(func=_label)
