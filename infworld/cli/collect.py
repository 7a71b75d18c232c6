"""``infworld collect``: record episodes from ViZDoom or Crafter with an exploration policy.

Example::

    infworld collect --env vizdoom --scenario freedoom2:MAP01 --policy revisit \\
        --episodes 8 --steps 1000 --out data/doom_revisit --workers 2
"""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "collect",
        help="record episodes (frames, actions, poses, depth) from a real environment",
        description="Record episodes from ViZDoom or Crafter driven by an exploration policy. Writes "
                    "OUT/meta.json, then OUT/episodes/ep_NNNNNN.npz atomically; re-running with the same "
                    "settings resumes (finished episodes are skipped). See docs/environments.md.",
    )
    p.add_argument("--env", required=True, help="environment: vizdoom or crafter")
    p.add_argument("--scenario", default=None,
                   help="vizdoom: my_way_home (default), freedoom2[:MAP01..MAP32], freedoom1[:E1M1..E4M9], "
                        "basic, health_gathering, ...; crafter: default (64x64 world) or small (32x32)")
    p.add_argument("--policy", default="random",
                   help="random, explore, revisit, diverse or craft (Crafter only) (default: random)")
    p.add_argument("--episodes", type=int, default=1, help="number of episodes (default: 1)")
    p.add_argument("--steps", type=int, default=1000,
                   help="actions per episode; an episode has steps + 1 frames (default: 1000)")
    p.add_argument("--out", required=True, help="dataset folder to create or resume")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="base seed; episode i is seeded by (seed, i)")
    p.add_argument("--size", type=int, default=64, help="frame height and width in pixels (default: 64)")
    p.add_argument("--frame-skip", type=int, default=None,
                   help="game tics per step (vizdoom default 4; crafter has none)")
    p.add_argument("--monsters", action=argparse.BooleanOptionalAction, default=None,
                   help="spawn monsters (default: off; god mode keeps the Doom player alive either way)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from infworld.envs.collect import CollectConfig, collect, summary_dict

    cfg = CollectConfig(env=args.env, out=args.out, scenario=args.scenario, policy=args.policy,
                        episodes=args.episodes, steps=args.steps, workers=args.workers, seed=args.seed,
                        size=(args.size, args.size), frame_skip=args.frame_skip, monsters=args.monsters)
    summary = collect(cfg, progress=not args.no_progress)
    if args.json:
        print(json.dumps(summary_dict(summary), indent=2))
        return 0
    print(f"collected {summary.new_episodes} episode(s) ({summary.skipped_episodes} already present) "
          f"into {summary.out}: {summary.frames} frames in {summary.seconds:.1f} s ({summary.fps:.0f} FPS)")
    if summary.ended.get("game_over"):
        print(f"  {summary.ended['game_over']} episode(s) stopped early because the game ended")
    if summary.revisits is not None:
        r = summary.revisits
        params = r.get("params", {})
        heading = "" if params.get("angle_deg") is None else f" and {params['angle_deg']} deg"
        print(f"  revisit fraction of the dataset: {r['revisit_fraction']:.3f} (frames back within "
              f"{params.get('dist')} units{heading} of a frame more than {params.get('min_gap')} "
              "steps earlier)")
    return 0
