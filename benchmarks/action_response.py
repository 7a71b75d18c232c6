"""Action-response benchmark (GitHub issue "World model v2", item 5): world-model rollouts under each
constant action (turns, forward/backward, strafes, no-op) beside the real ViZDoom replayed from the
same state. See infworld/bench/action_response.py for the figures.

    python benchmarks/action_response.py --model doom-tiny-world --starts 12 --frames 24 \
        --out benchmarks/results/action_response.json --sheet docs/img/action_response.png \
        [--cfg-scale 1,2] [--context-noise 0.0] [--steps 1,2,4] [--chunk 1] [--threads 1] \
        [--cache-dir data/bench-cache]

``--cfg-scale``, ``--context-noise`` and ``--steps`` take comma-separated lists: one result block per
combination (passed to ``WorldModel.from_pretrained`` only when given). The real rollouts are cached in
``--cache-dir``, so reruns only pay for the model. Bad input prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import sys
import time
from pathlib import Path

from infworld.errors import ConfigError, InfWorldError


def _combo_path(path: Path, cfg: float | None, noise: float | None, several: bool,
                steps: int | None = None) -> Path:
    if not several:
        return path
    tag = "".join(f"-{k}{v:g}" for k, v in (("cfg", cfg), ("cn", noise), ("steps", steps)) if v is not None)
    return path.with_name(f"{path.stem}{tag}{path.suffix}")


def run(args: argparse.Namespace) -> int:
    import torch

    from infworld.bench import action_response as ar
    from infworld.bench.action_response_real import RealConfig, collect_real
    from infworld.data.episode import atomic_write_json

    cfgs = ar.parse_sweep(args.cfg_scale, "--cfg-scale")
    noises = ar.parse_sweep(args.context_noise, "--context-noise")
    step_counts = [None if s is None else int(s) for s in ar.parse_sweep(args.steps, "--steps", minimum=1)]
    if args.threads < 1 or (args.chunk is not None and args.chunk < 1):
        raise ConfigError(f"--threads and --chunk must be >= 1, got {args.threads} and {args.chunk}")
    real_cfg = RealConfig(starts=args.starts, frames=args.frames, context=args.context, seed=args.seed,
                          warmup=(args.warmup_min, args.warmup_max))
    real_cfg.validate()
    torch.set_num_threads(args.threads)
    combos = list(itertools.product(cfgs, noises, step_counts))
    # load every model variant first, so a bad name or setting fails before the slow parts
    factories = [ar.pretrained_factory(args.model, cfg_scale=c, context_noise=n, steps=s, chunk=args.chunk)
                 for c, n, s in combos]
    idm = None
    if args.idm.lower() != "none":
        from infworld.bench.idm import load_idm

        idm = load_idm(args.idm)
    t0 = time.perf_counter()
    data = collect_real(real_cfg, cache_dir=args.cache_dir, progress=args.verbose)
    real_seconds = time.perf_counter() - t0
    blocks = []
    for (c, n, st), factory in zip(combos, factories, strict=True):
        eng = factory.engine
        t0 = time.perf_counter()
        gen = ar.generate(factory, data)
        seconds = time.perf_counter() - t0
        res = ar.evaluate(data, gen, idm)
        cfg = eng.config
        res["settings"] = {"cfg_scale": cfg.sampler.cfg_scale, "sampler": cfg.sampler.name,
                           "steps": cfg.sampler.steps, "chunk": cfg.chunk, "seed": cfg.seed,
                           "context_noise": getattr(cfg, "context_noise", None),
                           "overrides": {"cfg_scale": c, "context_noise": n, "steps": st}}
        res["generate_seconds"] = round(seconds, 2)
        label = ", ".join(f"{k} {v:g}" for k, v in (("cfg_scale", c), ("context_noise", n), ("steps", st))
                          if v is not None)
        if args.sheet:
            sheet = _combo_path(Path(args.sheet), c, n, len(combos) > 1, st)
            title = f"{args.model}{' (' + label + ')' if label else ''}: generated above real, start 0"
            ar.contact_sheet(sheet, data, gen, starts=range(args.sheet_starts), title=title)
            res["sheet"] = str(sheet)
        blocks.append(res)
        print(f"\n## {args.model}{' (' + label + ')' if label else ''}: {data.starts} starts x "
              f"{data.frames} frames, {seconds:.1f} s\n\n{ar.markdown_table(res)}")
    out = {"benchmark": "action_response", "model": args.model, "idm": getattr(idm, "path", None),
           "starts": data.starts, "frames": data.frames, "context": args.context, "real": data.info,
           "real_seconds": round(real_seconds, 2), "results": blocks,
           "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                       "torch": torch.__version__, "python": platform.python_version()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, out)
    print(f"\nwrote {args.out}" + (f" and {', '.join(b['sheet'] for b in blocks)}" if args.sheet else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="doom-tiny-world", help="world model name or export folder")
    ap.add_argument("--starts", type=int, default=12, help="held-out starts (batched per action)")
    ap.add_argument("--frames", type=int, default=24, help="steps of each constant action")
    ap.add_argument("--context", type=int, default=8, help="real context frames given to the model")
    ap.add_argument("--warmup-min", type=int, default=20, help="policy steps before a start, lowest")
    ap.add_argument("--warmup-max", type=int, default=60, help="policy steps before a start, highest")
    ap.add_argument("--seed", type=int, default=2024, help="start seeds (training data used 0..2)")
    ap.add_argument("--cfg-scale", default=None, help="classifier-free guidance scale(s), e.g. 1,2")
    ap.add_argument("--context-noise", default=None, help="rollout context noise level(s), e.g. 0,0.1")
    ap.add_argument("--steps", default=None, help="sampler step count(s), e.g. 1,2,4 (a distilled student)")
    ap.add_argument("--chunk", type=int, default=None,
                    help="frames per engine step (default: the model's; play steps 1 frame at a time)")
    ap.add_argument("--idm", default="doom-idm", help="inverse dynamics model name or folder, or 'none'")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--cache-dir", default="data/bench-cache", help="cache of the real rollouts")
    ap.add_argument("--out", default="benchmarks/results/action_response.json")
    ap.add_argument("--sheet", default="docs/img/action_response.png", help="contact sheet PNG ('' = none)")
    ap.add_argument("--sheet-starts", type=int, default=1, help="starts shown side by side in the sheet")
    ap.add_argument("-v", "--verbose", action="store_true", help="report each start on stderr")
    args = ap.parse_args(argv)
    try:
        return run(args)
    except InfWorldError as exc:
        print(f"action_response: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
