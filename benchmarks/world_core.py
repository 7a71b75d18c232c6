"""Core world-model figures (issue #3): next-frame PSNR, compounding error over a long free rollout,
generation speed, and whether the rollout stays on the data manifold.

    python benchmarks/world_core.py --model runs/doom-tiny-world/export --data data/doom-heldout \
        --frames 1000 --out benchmarks/results/world_core.json

Held-out data must not overlap the training episodes (collect it with another --seed). Figures:

1. Teacher-forced next-frame PSNR: context = the true past (window memory), one frame generated
   at a time, then the true frame is observed. Printed beside three references: the tokenizer's own
   reconstruction PSNR (the ceiling), "copy the last true frame" (what a model that ignores the
   actions would get) and "shift the last true frame by the commanded turn" (a model that knows only
   that a turn pans the picture: yaw -1 = turn left moves the content right by ``--turn-px`` pixels
   per step at 64 px width, the vacated columns filled by edge replication).
2. Free rollout: seeded with ``--context`` true frames, following the episode's true actions, never
   shown a true frame again; PSNR against ground truth per horizon bucket (the compounding-error
   curve). Where the episode ends, the actions cycle and only the manifold check continues.
3. Manifold check (no ground truth needed): per 100 generated frames, the frames' spatial contrast
   (pixel std) and detail (mean absolute gradient) next to the same figures for real held-out frames.
   A collapse to grey drives both toward 0; a collapse to noise drives the detail far above the data.
   (A nearest-neighbour PSNR to training frames was tried first and rejected: Doom's dark frames sit
   closer to a flat grey frame than to each other, so it cannot tell collapse from content.)
4. Long-rollout holding (the "World model v2" targets: frames 900-1000 of a 1000-frame rollout keep
   >= 80% of the real frames' contrast and detail, and their FD-ours is within 1.5x of frames 1-100's):
   contrast and detail of generated frames 1-100 and of the last 100 frames as ratios to the real
   held-out frames', and FD-ours (Frechet distance in our tokenizer's pooled latents, not FID; see
   infworld/bench/features.py) of each window, pooled over episodes, against all frames of the
   episodes used. FD depends on the sample count, so compare windows of equal size only (the ratio).
5. Speed: generated frames per second with the model's sampler, chunk and step count (after the
   overrides --steps, --cfg-scale, --context-noise), on --threads torch threads.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from infworld import streaming
from infworld.bench.metrics import frechet_distance
from infworld.data.action_schema import decode_view
from infworld.data.episode import atomic_write_json, list_episodes, read_episode, read_meta
from infworld.eval.video import psnr
from infworld.world import WorldModel

ACTION_KEYS = ("move", "view", "interact")
BUCKETS = [(1, 10), (11, 50), (51, 100), (101, 250), (251, 500), (501, 1000), (1001, 10_000)]
HOLD_WINDOW = 100  # frames per long-rollout window ("frames 1-100" vs "the last 100")
REF_WIDTH = 64  # --turn-px is given at this frame width and scaled to the data's width
MIN_FD_ROWS = 8  # fewer feature vectors give no usable covariance
TARGET_HOLD, TARGET_FD_GROWTH = 0.8, 1.5


def frame_stats(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame (contrast, detail) of uint8 frames (N, H, W, 3): pixel std and mean |gradient|."""
    x = frames.astype(np.float32)
    contrast = x.reshape(len(x), -1).std(axis=1)
    dy = np.abs(np.diff(x, axis=1)).mean(axis=(1, 2, 3))
    dx = np.abs(np.diff(x, axis=2)).mean(axis=(1, 2, 3))
    detail = 0.5 * (dx + dy)
    return contrast, detail


# -- the shifted-last-frame reference -------------------------------------------------------------

def turn_shift_px(view_id: int, turn_px: float, width: int) -> float:
    """Horizontal content shift (px, + = right) for one transition's view id: yaw -1 (turn left)
    moves the picture right. ``turn_px`` is per step at REF_WIDTH px; uncertain ids (9) give 0."""
    yaw = int(decode_view(view_id)[0])
    return -yaw * turn_px * width / REF_WIDTH


def shift_horizontal(frame: np.ndarray, px: float) -> np.ndarray:
    """Shift uint8 frames (..., H, W, C) right by ``px`` (fractional: linear interpolation); the
    vacated columns repeat the edge column."""
    w = frame.shape[-2]
    src = np.clip(np.arange(w) - px, 0, w - 1)  # output column x reads input column x - px
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, w - 1)
    a = (src - lo)[:, None].astype(np.float32)  # (W, 1): broadcasts over (..., H, W, C)
    x = frame.astype(np.float32)
    out = x[..., lo, :] * (1 - a) + x[..., hi, :] * a
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def shifted_last_frame(last: np.ndarray, view_id: int, turn_px: float) -> np.ndarray:
    """The last true frame (H, W, 3) panned by the commanded turn: the "shifted last frame" guess."""
    return shift_horizontal(last, turn_shift_px(view_id, turn_px, last.shape[1]))


# -- long-rollout holding -------------------------------------------------------------------------

def hold_windows(frames: int, window: int = HOLD_WINDOW) -> dict[str, tuple[int, int]]:
    """0-based [lo, hi) of the first and the last ``window`` generated frames (they overlap when
    the rollout is shorter than two windows)."""
    return {"first": (0, min(window, frames)), "last": (max(0, frames - window), frames)}


def label(lo: int, hi: int) -> str:
    return f"{lo + 1}-{hi}"


def ratio(a: float | None, b: float | None) -> float | None:
    return float(a / b) if a is not None and b else None


def holding_ratios(gen_stats: np.ndarray, real_stats: np.ndarray, window: int = HOLD_WINDOW
                   ) -> dict[str, Any]:
    """Contrast/detail of the first and last windows as ratios to real frames'.

    gen_stats (E, 2, F): per episode, (contrast, detail) per generated frame; real_stats (2, N).
    """
    real = real_stats.mean(axis=1)  # (2,)
    out: dict[str, Any] = {}
    for name, (lo, hi) in hold_windows(gen_stats.shape[2], window).items():
        gen = gen_stats[:, :, lo:hi].mean(axis=(0, 2))  # (2,)
        out[name] = {"frames": label(lo, hi), "contrast": float(gen[0]), "detail": float(gen[1]),
                     "contrast_ratio": ratio(gen[0], real[0]), "detail_ratio": ratio(gen[1], real[1])}
    return out


def window_fd(gen_feats: np.ndarray, real_feats: np.ndarray, lo: int, hi: int) -> float | None:
    """FD between generated frames [lo, hi) pooled over episodes (gen_feats (E, F, D)) and real_feats
    (N, D); None when the window holds fewer than MIN_FD_ROWS frames."""
    g = gen_feats[:, lo:hi].reshape(-1, gen_feats.shape[-1])  # (E * n, D)
    return frechet_distance(g, real_feats) if len(g) >= MIN_FD_ROWS else None


def fd_holding(gen_feats: np.ndarray, real_feats: np.ndarray, window: int = HOLD_WINDOW) -> dict[str, Any]:
    """FD-ours of the first and last windows and per ``window``-frame bucket, and last / first."""
    frames = gen_feats.shape[1]
    w = hold_windows(frames, window)
    first, last = window_fd(gen_feats, real_feats, *w["first"]), window_fd(gen_feats, real_feats, *w["last"])
    buckets = [{"frames": label(lo, min(lo + window, frames)),
                "fd_ours": window_fd(gen_feats, real_feats, lo, min(lo + window, frames))}
               for lo in range(0, frames, window)]
    return {"fd_ours_first": first, "fd_ours_last": last, "fd_ours_ratio_last_first": ratio(last, first),
            "fd_ours_by_100_frames": buckets}


def long_rollout_block(gen_stats: np.ndarray, real_stats: np.ndarray, gen_feats: np.ndarray,
                       real_feats: np.ndarray, features: str, window: int = HOLD_WINDOW) -> dict[str, Any]:
    """The JSON ``long_rollout`` block: holding ratios, FD-ours windows and the targets they meet."""
    hold = holding_ratios(gen_stats, real_stats, window)
    fd = fd_holding(gen_feats, real_feats, window)
    last, growth = hold["last"], fd["fd_ours_ratio_last_first"]

    def at_least(x: float | None, t: float) -> bool | None:
        return None if x is None else bool(x >= t)

    return {
        "window": window, "frames": int(gen_stats.shape[2]), "episodes": int(gen_stats.shape[0]),
        "real_heldout": {"contrast": float(real_stats[0].mean()), "detail": float(real_stats[1].mean()),
                         "frames": int(real_stats.shape[1])},
        "first": hold["first"], "last": hold["last"], **fd,
        "features": features,
        "targets": {"min_ratio_to_real": TARGET_HOLD, "max_fd_ratio_last_first": TARGET_FD_GROWTH},
        "meets_targets": {"contrast": at_least(last["contrast_ratio"], TARGET_HOLD),
                          "detail": at_least(last["detail_ratio"], TARGET_HOLD),
                          "fd_ours": None if growth is None else bool(growth <= TARGET_FD_GROWTH)},
    }


def summary_table(r: dict[str, Any]) -> str:
    """A compact Markdown table of the results JSON."""
    def f(x: float | None, fmt: str = ".2f") -> str:
        return "n/a" if x is None else format(x, fmt)

    lr, s = r["long_rollout"], r["sampler"]
    first, last = lr["first"], lr["last"]
    horizon = " / ".join(f"{h['frames']}: {h['psnr']:.1f}" for h in r["free_rollout_psnr_by_horizon"])
    rows = [
        ("teacher-forced next-frame PSNR", f"{r['teacher_forced_psnr']:.2f} dB",
         f"copy-last {r['copy_last_frame_psnr']:.2f}, shifted-last {r['shifted_last_frame_psnr']:.2f} "
         f"({r['turn_px']} px/step), tokenizer {r['tokenizer_recon_psnr']:.2f} dB"),
        ("free rollout PSNR by horizon (dB)", horizon, ""),
        (f"contrast ratio to real, frames {first['frames']} / {last['frames']}",
         f"{f(first['contrast_ratio'])} / {f(last['contrast_ratio'])}", f"target last >= {TARGET_HOLD}"),
        (f"detail ratio to real, frames {first['frames']} / {last['frames']}",
         f"{f(first['detail_ratio'])} / {f(last['detail_ratio'])}", f"target last >= {TARGET_HOLD}"),
        (f"FD-ours, frames {first['frames']} / {last['frames']}",
         f"{f(lr['fd_ours_first'], '.3g')} / {f(lr['fd_ours_last'], '.3g')}",
         f"last/first {f(lr['fd_ours_ratio_last_first'])}, target <= {TARGET_FD_GROWTH}"),
        ("generation speed", f"{r['fps']:.1f} frames/s",
         f"{s['name']}, {s['steps']} steps, cfg {s['cfg_scale']}, chunk {s['chunk']}, "
         f"context noise {s['context_noise']}, {r['threads']} thread(s)"),
    ]
    lines = ["| figure | value | reference |", "|---|---|---|"]
    return "\n".join(lines + [f"| {a} | {b} | {c} |" for a, b, c in rows])


# -- the runs -------------------------------------------------------------------------------------

def teacher_forced(world: WorldModel, ep, k: int, n: int, turn_px: float = 8.6) -> dict[str, list[float]]:
    """Per-frame PSNR of the model, copy-last, shifted-last and the tokenizer over n frames after k.

    The model's frames come from :func:`infworld.streaming.teacher_forcing`: each predicted from the
    true frames before it (window memory), then the true frame is observed."""
    acts = {key: getattr(ep, key) for key in ACTION_KEYS}
    end = min(len(ep), k + n)
    pred = streaming.teacher_forcing(world, ep.frames[None, :end], {key: a[None, : end - 1]
                                                                   for key, a in acts.items()}, k)[0]
    model, copy, shifted = [], [], []
    for f in range(k, end):
        model.append(float(psnr(pred[f - k], ep.frames[f])))
        copy.append(float(psnr(ep.frames[f - 1], ep.frames[f])))
        guess = shifted_last_frame(ep.frames[f - 1], int(acts["view"][f - 1]), turn_px)
        shifted.append(float(psnr(guess, ep.frames[f])))
    with torch.no_grad():
        tok = world.net.tokenizer
        sel = ep.frames[k:end]
        rec = tok.decode(tok.encode(torch.from_numpy(sel).permute(0, 3, 1, 2)))
        rec = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        recon = [float(p) for p in psnr(rec, sel)]
    return {"model": model, "copy": copy, "shifted": shifted, "recon": recon}


def free_rollout(world: WorldModel, ep, k: int, frames: int) -> tuple[np.ndarray, list[float], float]:
    """``frames`` generated frames (F, H, W, 3) after k true ones, following the episode's actions
    (cycled past its end) through :func:`infworld.streaming.free_rollout`; the PSNR curve against the
    frames the episode has, and frames per second of the engine's step calls."""
    n_act = len(ep.move)
    idx = np.arange(k - 1 + frames) % n_act  # the true actions, cycled past the end
    acts = {key: getattr(ep, key)[None, idx] for key in ACTION_KEYS}  # (1, K - 1 + F) per field
    secs: list[float] = []
    out = streaming.free_rollout(world, ep.frames[None, :k], acts,
                                 on_chunk=lambda c: secs.append(c.seconds))[0]  # (F, H, W, 3)
    gt_n = min(frames, len(ep) - k)
    curve = [float(p) for p in psnr(out[:gt_n], ep.frames[k : k + gt_n])]
    return out, curve, frames / sum(secs)


def make_embedder(name: str):
    """FD-ours features (N, H, W, 3) uint8 -> (N, D), resizing to the tokenizer's size when needed."""
    from infworld.bench.features import TokenizerFeatures
    from infworld.data.frames import resize_frames

    feats = TokenizerFeatures(name)

    def embed(frames: np.ndarray) -> np.ndarray:
        size = feats.image_size
        return feats(resize_frames(frames, size) if size and tuple(frames.shape[1:3]) != size else frames)

    return embed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="held-out dataset (episode format)")
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--context", type=int, default=8)
    ap.add_argument("--tf-frames", type=int, default=200, help="teacher-forced frames per episode")
    ap.add_argument("--frames", type=int, default=1000, help="free-rollout length")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 = the standard for speed)")
    ap.add_argument("--steps", type=int, default=None, help="sampler steps (default: the export's)")
    ap.add_argument("--cfg-scale", type=float, default=None, help="action CFG scale (default: the export's)")
    ap.add_argument("--context-noise", type=float, default=None,
                    help="noise level of frames entering the context (default: the export's)")
    ap.add_argument("--turn-px", type=float, default=8.6,
                    help="picture shift per turn step at 64 px width, for the shifted-last-frame reference")
    ap.add_argument("--fd-tokenizer", default="doom-tiny-tokenizer",
                    help="tokenizer whose features give FD-ours (keep fixed to compare runs)")
    ap.add_argument("--out", default="benchmarks/results/world_core.json")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = {key: value for key, value in (("steps", args.steps), ("cfg_scale", args.cfg_scale),
                                                ("context_noise", args.context_noise)) if value is not None}
    world = WorldModel.from_pretrained(args.model, **overrides)
    embed = make_embedder(args.fd_tokenizer)
    meta = read_meta(args.data)
    paths = list_episodes(args.data)[: args.episodes]
    tf: dict[str, list[float]] = {"model": [], "copy": [], "shifted": [], "recon": []}
    curves, fps, gen_stats, real_stats, gen_feats, real_feats = [], [], [], [], [], []
    with torch.inference_mode():
        for i, p in enumerate(paths):
            ep = read_episode(p, meta=meta)
            ep_tf = teacher_forced(world, ep, args.context, args.tf_frames, args.turn_px)
            for key, vals in ep_tf.items():
                tf[key] += vals
            gen, curve, f = free_rollout(world, ep, args.context, args.frames)
            curves.append(curve)
            fps.append(f)
            gen_stats.append(np.stack(frame_stats(gen)))  # (2, F)
            real_stats.append(np.stack(frame_stats(ep.frames)))
            gen_feats.append(embed(gen))  # (F, D)
            real_feats.append(embed(ep.frames))
            print(f"episode {i}: teacher-forced {np.mean(ep_tf['model']):.2f} dB (copy-last "
                  f"{np.mean(ep_tf['copy']):.2f}, shifted-last {np.mean(ep_tf['shifted']):.2f}, tokenizer "
                  f"{np.mean(ep_tf['recon']):.2f}); free rollout {np.mean(curve):.2f} dB over "
                  f"{len(curve)} frames with ground truth, {f:.1f} FPS", file=sys.stderr)

    horizon = []
    for lo, hi in BUCKETS:
        vals = [v for c in curves for v in c[lo - 1 : hi]]
        if vals:
            horizon.append({"frames": f"{lo}-{hi}", "psnr": float(np.mean(vals)), "n": len(vals)})
    gen_all = np.stack(gen_stats)  # (E, 2, F): every episode's rollout has the same length
    real_all = np.concatenate(real_stats, axis=1)  # (2, sum T)
    manifold = {
        "real_heldout": {"contrast": float(real_all[0].mean()), "detail": float(real_all[1].mean())},
        "generated_by_100_frames": [
            {"frames": f"{j + 1}-{min(j + 100, args.frames)}",
             "contrast": float(gen_all[:, 0, j : j + 100].mean()),
             "detail": float(gen_all[:, 1, j : j + 100].mean())}
            for j in range(0, args.frames, 100)],
    }
    cfg = world.config
    results = {
        "model": args.model,
        "data": args.data,
        "episodes": len(paths),
        "sampler": {"name": cfg.sampler.name, "steps": cfg.sampler.steps, "chunk": cfg.chunk,
                    "cfg_scale": cfg.sampler.cfg_scale, "context_noise": cfg.context_noise},
        "overrides": overrides,
        "teacher_forced_psnr": float(np.mean(tf["model"])),
        "copy_last_frame_psnr": float(np.mean(tf["copy"])),
        "shifted_last_frame_psnr": float(np.mean(tf["shifted"])),
        "turn_px": args.turn_px,
        "tokenizer_recon_psnr": float(np.mean(tf["recon"])),
        "free_rollout_psnr_by_horizon": horizon,
        "manifold": manifold,
        "long_rollout": long_rollout_block(gen_all, real_all, np.stack(gen_feats), np.concatenate(real_feats),
                                           features=f"ours ({args.fd_tokenizer})"),
        "fps": float(np.mean(fps)),
        "threads": args.threads,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": torch.get_num_threads(),
                    "torch": torch.__version__, "python": platform.python_version()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, results)
    print(json.dumps(results, indent=2))
    print(summary_table(results), file=sys.stderr)  # stdout stays one JSON document
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
