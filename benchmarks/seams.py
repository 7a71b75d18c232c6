"""Chunk-seam smoothness (issue #12): strict chunk causality against sliding-window denoising.

    python benchmarks/seams.py --model doom-tiny-student --steps 2 --data data/doom-heldout \
        --starts 16 --frames 48 --out benchmarks/results/seams/doom-tiny-student.json \
        --figure docs/img/seams_student.png

From ``--starts`` spread-out points of held-out episodes, each seam mode (``--seams``, RolloutConfig.seam)
generates ``--frames`` frames after ``--context`` real ones with the recorded actions (all starts in
one batch, the same noise seed). A jump at a seam shows as a larger change between the last frame of
a chunk and the first of the next than between frames inside a chunk. Reported per mode:

* ``step_change``: mean absolute pixel change (0..255) from frame i to i + 1, by the position of the
  transition in the chunk (the last position is the seam), and the same on the real frames (where
  the chunk grid means nothing);
* ``seam_ratio``: mean change across seams / mean change inside chunks (1 = no seam; the real
  frames' ratio is the noise floor of this estimate);
* ``psnr``: generated against real frames (dB), so smoothness is not bought with a frozen picture.

Every figure is measured here (one torch thread); the JSON records the machine and the command.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np


def starts_from(data: str, n: int, span: int) -> list[tuple[Path, int]]:
    """``n`` (episode, offset) pairs spread over the episodes of ``data`` with ``span`` frames each."""
    from infworld.data.episode import list_episodes, read_npz

    eps = [(p, int(read_npz(p, ("move",))["move"].shape[0]) + 1) for p in list_episodes(data)]
    eps = [(p, t) for p, t in eps if t >= span]
    if not eps:
        raise SystemExit(f"seams: no episode of {data} has {span} frames")
    per = -(-n // len(eps))  # starts per episode, evenly spaced over it
    out = []
    for i in range(n):
        p, t = eps[i % len(eps)]
        out.append((p, (t - span) * (i // len(eps)) // (per - 1) if per > 1 else 0))
    return out


def load_batch(starts: list[tuple[Path, int]], span: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Frames (B, span, H, W, 3) and actions (B, span - 1) per field."""
    from infworld.data.episode import read_npz

    frames, acts = [], {"move": [], "view": [], "interact": []}
    for p, o in starts:
        z = read_npz(p, ("frames", "move", "view", "interact"))
        frames.append(z["frames"][o:o + span])
        for k in acts:
            acts[k].append(z[k][o:o + span - 1])
    return np.stack(frames), {k: np.stack(v) for k, v in acts.items()}


def step_change(frames: np.ndarray, chunk: int) -> tuple[list[float], float]:
    """Mean |frame i+1 - frame i| by the transition's position in the chunk (B, F, H, W, 3), and the
    seam ratio (last position against the others)."""
    d = np.abs(np.diff(frames.astype(np.float32), axis=1)).mean(axis=(0, 2, 3, 4))  # (F - 1,)
    pos = (np.arange(d.shape[0]) + 1) % chunk  # 0: the transition into a chunk's first frame
    by_pos = [float(d[pos == (j + 1) % chunk].mean()) for j in range(chunk)]  # j = chunk - 1: the seam
    return by_pos, by_pos[-1] / float(np.mean(by_pos[:-1]))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of all frames together (one MSE over the whole batch)."""
    from infworld.eval.video import psnr_from_mse

    return float(psnr_from_mse(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def figure(report: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    from infworld.bench.plots import _save

    chunk = report["chunk"]
    fig = Figure(figsize=(7.5, 3.4), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    names = ["real"] + list(report["modes"])
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        block = report["real"] if name == "real" else report["modes"][name]
        label = name if name == "real" else f"{name} (seam ratio {block['seam_ratio']:.2f})"
        x = np.arange(chunk) + (i - (len(names) - 1) / 2) * width
        ax.bar(x, block["step_change"], width, label=label)
    ax.set_xticks(range(chunk), [f"{j}->{j + 1}" for j in range(chunk - 1)] + ["seam"])
    ax.set_xlabel("transition within the chunk (frame index in chunk)")
    ax.set_ylabel("mean |frame change| (0..255)")
    ax.set_title(f"{report['model']}, {report['steps']} steps, chunk {chunk}: {report['starts']} starts x "
                 f"{report['frames']} frames", fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    _save(fig, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="doom-tiny-student")
    ap.add_argument("--steps", type=int,
                    help="sampler steps (default: the model's; sliding needs an even count)")
    ap.add_argument("--data", default="data/doom-heldout", help="held-out episodes with actions")
    ap.add_argument("--seams", default="causal,sliding")
    ap.add_argument("--starts", type=int, default=16)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--context", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--context-noise", type=float, help="level of finished frames in the context (default: "
                    "the model's)")
    ap.add_argument("--chunk", type=int, help="frames per chunk (default: the model's)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--figure")
    args = ap.parse_args(argv)

    import torch

    from infworld.data.episode import atomic_write_json
    from infworld.errors import InfWorldError
    from infworld.streaming import free_rollout
    from infworld.world import WorldModel

    torch.set_num_threads(1)
    span = args.context + args.frames
    starts = starts_from(args.data, args.starts, span)
    frames, acts = load_batch(starts, span)
    real = frames[:, args.context:]
    report: dict = {"model": args.model, "data": args.data, "starts": len(starts), "frames": args.frames,
                    "context": args.context, "seed": args.seed, "command": " ".join(sys.argv),
                    "context_noise": args.context_noise,
                    "machine": {"python": platform.python_version(), "torch": torch.__version__}, "modes": {}}
    for seam in args.seams.split(","):
        try:
            world = WorldModel.from_pretrained(args.model, steps=args.steps, seed=args.seed, seam=seam,
                                               context_noise=args.context_noise, chunk=args.chunk)
        except InfWorldError as exc:
            print(f"seams: {exc}", file=sys.stderr)
            return 2
        gen = free_rollout(world, frames[:, :args.context], acts)
        chunk = int(world.config.chunk) * world.frames_per_latent
        by_pos, ratio = step_change(gen, chunk)
        report.update(chunk=chunk, steps=int(world.config.sampler.steps))
        report["modes"][seam] = {"step_change": by_pos, "seam_ratio": ratio, "psnr": psnr(gen, real)}
        print(f"{seam}: seam ratio {ratio:.3f}, change by position {np.round(by_pos, 2).tolist()}, "
              f"PSNR {report['modes'][seam]['psnr']:.2f} dB", flush=True)
    by_pos, ratio = step_change(real, report["chunk"])
    report["real"] = {"step_change": by_pos, "seam_ratio": ratio}
    print(f"real: seam ratio {ratio:.3f}, change by position {np.round(by_pos, 2).tolist()}")
    atomic_write_json(Path(args.out), report)
    if args.figure:
        figure(report, Path(args.figure))
    print(f"-> {args.out}" + (f", {args.figure}" if args.figure else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
