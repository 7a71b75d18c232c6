"""``infworld bench``: the offline benchmark of world models and memory strategies.

    infworld bench --model M --suite doom-v1 [--memory window,full,...] [--data DIR] --out OUT
                   [--protocols replay,revisit,action,distribution,speed] [--steps N] [--chunk N]
                   [--context K] [--seed 0] [--memory-opt [NAME.]KEY=VALUE ...] [--idm doom-idm]
                   [--cache DIR] [--threads N] [--no-progress]
    infworld bench --model crafter-tiny --suite crafter-v1 [--memory window,vrag,...] --out OUT
                   [--protocols effects,moves,recall,look] [--probe crafter-probe]
    infworld bench train-idm --data DIR --out OUT [--train-steps 2000] [--seed 0] [--max-minutes M]

The first form runs every memory variant through every protocol on a versioned suite of fixed
ViZDoom trajectories (generated once into ``--cache``, default ``~/.cache/infworld/bench``), or on
your own episodes (``--data DIR``, any dataset in the episode format). It writes OUT/results.json
(schema "infworld-bench/1"), OUT/report.md, OUT/report.html, OUT/clips/*.mp4 (generated | ground
truth) and OUT/parts/<variant>.<protocol>.json; running it again resumes (finished parts are
kept). Crafter suites (crafter-mini, crafter-v1) run the world-state protocols instead (action
effects, move following, recall of changed cells, long-rollout look; judged by the probe of
``infworld probe``; infworld/bench/crafter_runner.py). The last form trains the inverse dynamics
model the action protocol uses.
"""

from __future__ import annotations

import argparse

from infworld.cli.common import check_at_least
from infworld.errors import ConfigError

PROTOCOLS = ("replay", "revisit", "action", "distribution", "speed")
CRAFTER_PROTOCOLS = ("effects", "moves", "recall", "look")  # crafter suites (bench/crafter_bench.py)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench", help="benchmark memory, fidelity, control and speed of a world model (or train its IDM)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", nargs="?", choices=("run", "train-idm"), default="run",
                   help="run the benchmark (default) or train the inverse dynamics model")
    p.add_argument("--model", default="doom-tiny-world", help="exported world model: folder or name")
    p.add_argument("--suite", help="suite name (doom-mini, doom-v1, doom-v2: long revisits; crafter-mini, "
                                    "crafter-v1: world state); default doom-v1 unless --data is given")
    p.add_argument("--memory", help="comma-separated memory strategies (default: every registered one)")
    p.add_argument("--data", help="dataset: benchmark on its episodes (run), train on them (train-idm)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--protocols", help=f"comma-separated subset of {','.join(PROTOCOLS)} (default: all)")
    p.add_argument("--steps", type=int, help="sampler steps per chunk (default: the model's)")
    p.add_argument("--chunk", type=int, help="frames per step (default: the model's)")
    p.add_argument("--memory-every", type=int,
                   help="frames between memory reads (default: the chunk; play reads every 4th frame)")
    p.add_argument("--fold-commit", action="store_true",
                   help="cache finished frames inside the next step's DiT call, as play does")
    p.add_argument("--context", type=int, help="real frames that seed each rollout (default: the suite's)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (run) / training seed (train-idm)")
    p.add_argument("--memory-opt", action="append", default=[], metavar="[NAME.]KEY=VALUE",
                   help="memory setting, for one strategy (full.budget=200) or all that take it (budget=8)")
    p.add_argument("--idm", help="inverse dynamics model for the action protocol (default: doom-idm)")
    p.add_argument("--probe", default="crafter-probe",
                   help="crafter suites: the world-state probe that judges frames (default: crafter-probe)")
    p.add_argument("--cache", help="suite cache folder (default: ~/.cache/infworld/bench)")
    p.add_argument("--max-episodes", type=int, default=8, help="--data: episodes used (default 8)")
    p.add_argument("--max-frames", type=int, default=1025, help="--data: frames per episode (default 1025)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: fastest for small models, and on a busy 2-core CPU "
                        "two threads measured 1 fps against 27 fps for one)")
    p.add_argument("--train-steps", type=int, default=2000, help="train-idm: optimizer steps")
    p.add_argument("--max-minutes", type=float, help="train-idm: stop after this many minutes")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def parse_memory_opts(opts: list[str], memories: list[str]) -> dict[str, dict]:
    """``["full.budget=200", "budget=8"]`` -> per-memory settings (a bare key goes to every memory
    that accepts it). ``KEY=VALUE`` is read by the one ``--memory-opt`` parser,
    :func:`infworld.memory.registry.parse_settings` (values are YAML scalars), as ``rollout`` does."""
    from infworld.memory.registry import memory_class, parse_settings

    out: dict[str, dict] = {m: {} for m in memories}
    for opt in opts:
        ((key, value),) = parse_settings([opt]).items()
        name, dot, field = key.rpartition(".")
        if dot:
            if name not in out:
                raise ConfigError(f"--memory-opt {opt!r}: {name!r} is not one of the benchmarked memories "
                                  f"{memories}")
            out[name][field] = value
            continue
        takers = [m for m in memories if (cls := memory_class(m)) is not None
                  and key in cls.config_class.keys()]
        if not takers:
            raise ConfigError(f"--memory-opt {opt!r}: no benchmarked memory has a setting {key!r}")
        for m in takers:
            out[m][key] = value
    return {m: s for m, s in out.items() if s}


def _split(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def run(args: argparse.Namespace) -> int:
    check_at_least(args, 1, "steps", "chunk", "memory_every", "context", "threads", "train_steps",
                   "max_episodes", "max_frames")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.action == "train-idm":
        from infworld.bench.idm import train_idm

        if not args.data:
            raise ConfigError("bench train-idm: --data DIR (a dataset of real episodes) is required")
        meta = train_idm(args.data, args.out, steps=args.train_steps, seed=args.seed,
                         max_minutes=args.max_minutes, progress=not args.no_progress)
        acc = meta["heldout_accuracy"]
        base = meta["heldout_majority_baseline"]
        print(f"idm: held-out accuracy move {acc['move']:.3f} (majority {base['move']:.3f}), view "
              f"{acc['view']:.3f} (majority {base['view']:.3f}) after {meta['train']['steps']} steps in "
              f"{meta['train']['seconds']:.0f} s -> {args.out}")
        return 0

    from infworld.bench.runner import run_bench

    memories = _split(args.memory)
    if memories is None:
        from infworld.memory.registry import memory_names

        memories = memory_names()
    protocols = _split(args.protocols)
    suite = args.suite or (None if args.data else "doom-v1")
    memory_cfg = parse_memory_opts(args.memory_opt, memories)
    from infworld.bench.crafter_suite import is_crafter_suite

    if is_crafter_suite(suite):
        return _run_crafter(args, suite, memories, protocols, memory_cfg)
    unknown = sorted(set(protocols or []) - set(PROTOCOLS))
    if unknown:
        raise ConfigError(f"--protocols: unknown {unknown}; valid: {list(PROTOCOLS)} (crafter suites: "
                          f"{list(CRAFTER_PROTOCOLS)})")
    results = run_bench(args.model, suite, memories, args.out, data=args.data, protocols=protocols,
                        progress=not args.no_progress, memory_cfg=memory_cfg, steps=args.steps,
                        chunk=args.chunk, context=args.context, seed=args.seed, idm=args.idm,
                        memory_every=args.memory_every, fold_commit=args.fold_commit, cache_dir=args.cache,
                        max_episodes=args.max_episodes, max_frames=args.max_frames)
    print(summary_table(results))
    print(f"bench: results.json, report.md, report.html -> {args.out}")
    return 0


def _run_crafter(args: argparse.Namespace, suite: str, memories: list[str], protocols: list[str] | None,
                 memory_cfg: dict[str, dict]) -> int:
    from infworld.bench.crafter_runner import report_markdown, run_crafter_bench

    bad = sorted(set(protocols or []) - set(CRAFTER_PROTOCOLS))
    if bad:
        raise ConfigError(f"--protocols: {bad} are not crafter protocols; valid: {list(CRAFTER_PROTOCOLS)}")
    results = run_crafter_bench(args.model, suite, memories, args.out, probe=args.probe, protocols=protocols,
                                memory_cfg=memory_cfg, steps=args.steps, seed=args.seed, cache_dir=args.cache,
                                progress=not args.no_progress)
    print(report_markdown(results))
    print(f"bench: results.json, report.md -> {args.out}")
    return 0


def summary_table(results: dict) -> str:
    """A short plain-text table of the headline figures per variant."""

    def f(x, spec=".2f"):
        return "-" if x is None else format(x, spec)

    rows = ["variant      revisit_psnr_gt  revisit_psnr_self  replay_psnr  idm_move  idm_view  fps"]
    for name, v in results.get("variants", {}).items():
        rv, rp, ac, sp = (v.get(k) or {} for k in ("revisit", "replay", "action", "speed"))
        acc = ac.get("idm_accuracy") or {}
        rows.append(f"{name:<12} {f(rv.get('psnr_gt')):>15}  {f(rv.get('psnr_self')):>17}  "
                    f"{f(rp.get('psnr_mean')):>11}  {f(acc.get('move'), '.3f'):>8}  "
                    f"{f(acc.get('view'), '.3f'):>8}  {f(sp.get('fps'), '.1f'):>5}")
    return "\n".join(rows)
