"""``infworld train``: train a recipe (single process, or one rank under torchrun).

    infworld train --recipe NAME_OR_PATH [--set KEY=VALUE ...] [--out DIR] [--resume]
                   [--max-minutes M] [--until-step N] [--dry-run] [--no-progress]
    infworld train --list
    torchrun --nproc_per_node 2 -m infworld train --recipe NAME ...

See docs/training.md.
"""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train a recipe (tokenizer, world model)",
        description="Train a recipe. Overrides: --set train.steps=100 model.channels=32 (YAML values).",
    )
    p.add_argument("--recipe", help="recipe name (see --list) or path to a .yaml file")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. train.steps=100 (repeatable)")
    p.add_argument("--out", help="run folder (default: train.out of the recipe, runs/NAME)")
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoints/last.pt")
    p.add_argument("--max-minutes", type=float, help="wall-clock budget of this session (saves and stops)")
    p.add_argument("--until-step", type=int, help="stop this session at this global step")
    p.add_argument("--dry-run", action="store_true", help="print the resolved recipe as JSON and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list", action="store_true", help="list the recipes found by name and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from infworld.errors import ConfigError
    from infworld.train.recipe import list_recipes, load_recipe, recipe_dirs, recipe_to_dict

    if args.list:
        print(f"recipes (from {', '.join(str(d) for d in recipe_dirs())}):")
        for name in list_recipes():
            print(f"  {name}")
        return 0
    if not args.recipe:
        raise ConfigError("--recipe is required (a name from `infworld train --list`, or a .yaml path)")
    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"train.out={json.dumps(args.out)}")
    if args.max_minutes is not None:
        overrides.append(f"train.max_minutes={args.max_minutes}")
    recipe = load_recipe(args.recipe, overrides)
    if args.dry_run:
        print(json.dumps(recipe_to_dict(recipe), indent=2))
        return 0
    if args.until_step is not None and args.until_step < 1:
        raise ConfigError(f"--until-step: expected an int >= 1, got {args.until_step}")
    from infworld.train.trainer import train

    run_dir = train(recipe, resume=args.resume, until_step=args.until_step,
                    progress=False if args.no_progress else None)
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run folder: {run_dir}")
    return 0
