"""``infworld rollout``: replay an episode's actions through a world model, for as long as asked.

    infworld rollout --model M --episode DATA_DIR[:N] --context K --frames F --memory window --out OUT
                     [--chunk k] [--steps S] [--sampler euler|heun|stochastic] [--seed 0]

The model is seeded with the first K frames of episode N (default 0, name order) and their actions,
then follows the episode's actions for F generated frames. Past the end of the episode the actions
continue by ``--continuation``: ``cycle`` (default) replays the episode's action sequence from its
start, ``random`` is a seeded random walk with momentum over the action ids the episode uses (each
drawn action is held for 2..8 frames). Outputs, each written atomically, ``rollout.json`` last:

* OUT/generated.npz  ``frames``: (F, H, W, 3) uint8, the generated frames only;
* OUT/video.mp4      generated | ground truth side by side (black once the episode has ended);
* OUT/rollout.json   frames, seconds, fps, peak_rss_bytes, memory_state_bytes [[g, bytes]...]
                     (KV cache + memory after the chunk ending at generated frame g),
                     frame_seconds [[g, s/frame]...] (chunk starting at generated frame g),
                     per-frame psnr vs ground truth where there is one, and the settings.

The generation loop is :func:`infworld.streaming.free_rollout` (shared with the bench and
benchmarks/world_core.py); this module parses the request, loads, and writes the outputs.
"""

from __future__ import annotations

import argparse
import io
import resource
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from infworld.cli.common import TypedFlag, check_at_least
from infworld.data.action_schema import check_action_ids, check_action_space
from infworld.data.outputs import check_output_dir
from infworld.device import check_device
from infworld.errors import DataError
from infworld.memory.registry import parse_settings

if TYPE_CHECKING:
    from infworld.data.episode import DatasetMeta, Episode
    from infworld.world import WorldModel

CONTINUATIONS = ("cycle", "random")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "rollout", help="generate frames from an episode's first frames and actions",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="exported world model: folder or name (checkpoints/NAME)")
    p.add_argument("--episode", required=True, metavar="DATA_DIR[:N]",
                   help="dataset folder and episode index in name order (default 0)")
    p.add_argument("--context", type=int, default=1, help="real frames that seed the model (K >= 1)")
    p.add_argument("--frames", type=int, required=True, help="frames to generate (F >= 1)")
    p.add_argument("--memory", default="window", help="memory strategy (default: window)")
    p.add_argument("--budget", "--window", dest="window", type=int, action=TypedFlag,
                   help="memory budget in frames (default: what the model was trained with)")
    p.add_argument("--memory-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="memory setting, repeatable (e.g. poses=dead_reckon, pool=128); see docs/memory.md")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--chunk", type=int, help="frames generated per step (default: the model's)")
    p.add_argument("--steps", type=int, help="sampler steps per chunk (default: the model's)")
    p.add_argument("--sampler", choices=("euler", "heun", "stochastic"), help="default: the model's")
    p.add_argument("--cfg-scale", type=float, help="classifier-free guidance scale on actions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--continuation", choices=CONTINUATIONS, default="cycle",
                   help="actions after the episode ends (see above)")
    p.add_argument("--fps", type=float, help="video frame rate (default: the dataset's fps / frame_skip)")
    p.add_argument("--scale", type=int, default=2, help="video pixel scale factor")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int,
                   help="torch CPU threads (default: torch's; 1 can be faster for tiny models, busy CPUs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def parse_episode(spec: str) -> tuple[str, int]:
    """``DATA_DIR[:N]`` -> (DATA_DIR, N); a suffix that is not an integer is part of the path."""
    root, sep, tail = spec.rpartition(":")
    if sep and root and tail.lstrip("-").isdigit():
        return root, int(tail)
    return spec, 0


def action_schedule(ep_actions: dict[str, np.ndarray], start: int, count: int, mode: str,
                    seed: int) -> dict[str, np.ndarray]:
    """Transition actions ``start .. start + count - 1`` (count,) per field, continuing past the episode.

    ``cycle``: index i >= T-1 reuses transition i mod (T-1). ``random``: a seeded random walk with
    momentum over the ids seen in the episode (each draw held for 2..8 frames).
    """
    n = len(next(iter(ep_actions.values())))
    idx = np.arange(start, start + count)
    out = {k: a[np.minimum(idx, n - 1)].copy() for k, a in ep_actions.items()}
    beyond = idx >= n
    if not beyond.any():
        return out
    if mode == "cycle":
        for k, a in ep_actions.items():
            out[k][beyond] = a[idx[beyond] % n]
        return out
    rng = np.random.default_rng(seed)
    pos = np.nonzero(beyond)[0]
    i = 0
    while i < len(pos):
        hold = int(rng.integers(2, 9))
        for k, a in ep_actions.items():
            out[k][pos[i : i + hold]] = rng.choice(np.unique(a))
        i += hold
    return out


def run(args: argparse.Namespace) -> int:
    """The command: check the request, load the episode and the model, roll out, write the outputs."""
    import torch

    # 1. Check the request before anything is loaded or written.
    check_at_least(args, 1, "context", "frames", "chunk", "steps", "window", "scale", "threads")
    check_device(args.device, what="--device")
    out = check_output_dir(args.out, what="--out folder")
    if args.threads:
        torch.set_num_threads(args.threads)
    root, index = parse_episode(args.episode)
    ep, path, meta = _read_episode(root, index, args.context)
    # 2. The model, and whether the episode fits it.
    world = _load_world(args, ep, path, meta, root)
    # 3. Generate chunk by chunk, streaming the video; 4. write the results.
    report = _roll_out(args, world, ep, meta, out)
    report.update({"model": str(args.model), "episode": str(path), "context": args.context,
                   "chunk": world.config.chunk, "memory": world.memory.name, "window": world.window,
                   "sampler": {"name": world.config.sampler.name, "steps": world.config.sampler.steps,
                               "shift": world.config.sampler.shift,
                               "cfg_scale": world.config.sampler.cfg_scale},
                   "seed": args.seed, "continuation": args.continuation})
    from infworld.data.episode import atomic_write_json

    atomic_write_json(out / "rollout.json", report)
    n, psnrs = report["frames"], report["psnr"]
    mean = f"{report['psnr_mean']:.2f} dB" if psnrs else "n/a"
    print(f"rollout: {n} frames in {report['seconds']:.1f} s ({report['fps']:.1f} fps), PSNR vs truth {mean} "
          f"over {len(psnrs)} frames -> {out}")
    return 0


def _read_episode(root: str, index: int, k: int) -> tuple[Episode, Path, DatasetMeta]:
    """Episode ``index`` of dataset ``root`` (name order), its path and the dataset's meta; DataError
    when it does not exist or is shorter than the ``k`` context frames."""
    from infworld.data.episode import list_episodes, read_episode, read_meta

    meta = read_meta(root)
    paths = list_episodes(root)
    if not 0 <= index < len(paths):
        raise DataError(f"episode index {index} out of range: the dataset has {len(paths)} episode(s) "
                        f"(valid 0..{len(paths) - 1})", path=root)
    ep = read_episode(paths[index], meta=meta)
    if len(ep) < k:
        raise DataError(f"episode has {len(ep)} frames, fewer than --context {k}", path=str(paths[index]))
    return ep, paths[index], meta


def _load_world(args: argparse.Namespace, ep: Episode, path: Path, meta: DatasetMeta,
                root: str) -> WorldModel:
    """The exported model with the requested memory and overrides; DataError when the episode's frame
    size or action ids do not fit it."""
    from infworld.world import WorldModel

    memory_cfg = parse_settings(args.memory_opt)
    if args.window:
        memory_cfg["budget"] = args.window
    world = WorldModel.from_pretrained(
        args.model, memory=args.memory, memory_cfg=memory_cfg,
        map_location=args.device, chunk=args.chunk, steps=args.steps, name=args.sampler,
        cfg_scale=args.cfg_scale, seed=args.seed)
    if tuple(world.frame_size) != tuple(meta.size):
        raise DataError(f"frames are {tuple(meta.size)} but the model was trained on "
                        f"{tuple(world.frame_size)}", path=root, field="size")
    check_action_space(world.interact_vocab, meta.interact_vocab, meta.env, path=root)
    sizes = world.dit.cfg.actions.sizes()
    for name, a in _episode_actions(ep).items():
        check_action_ids(a, sizes[name], name, path=str(path), whose="the model's")
    return world


def _episode_actions(ep: Episode) -> dict[str, np.ndarray]:
    return {"move": ep.move, "view": ep.view, "interact": ep.interact}


def _roll_out(args: argparse.Namespace, world: WorldModel, ep: Episode, meta: DatasetMeta,
              out: Path) -> dict[str, Any]:
    """Run the rollout through :func:`infworld.streaming.free_rollout`, write generated.npz and
    video.mp4 (atomically), and return the measured part of rollout.json."""
    import torch

    from infworld.data.episode import atomic_write_bytes
    from infworld.eval.video import VideoWriter, psnr, side_by_side
    from infworld.streaming import Chunk, free_rollout

    k, f_total, t_ep = args.context, args.frames, len(ep)
    ep_actions = _episode_actions(ep)
    sched = action_schedule(ep_actions, k - 1, f_total, args.continuation, args.seed)  # (F,) per field
    # (1, K - 1 + F) per field: the context's transitions, then one per generated frame
    acts = {n: np.concatenate([a[: k - 1], sched[n]])[None] for n, a in ep_actions.items()}
    # Poses go to the memory whenever the episode has them (pose-free strategies ignore them); a chunk
    # that reaches past the episode's end steps without poses.
    poses = ep.pose[None] if ep.pose is not None else None
    mem_bytes, frame_secs, psnrs = [], [], []
    fps = args.fps or max(1.0, min(30.0, meta.fps / max(1, meta.frame_skip)))
    bar = None
    if not args.no_progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=f_total, unit="frame", desc="rollout", file=sys.stderr)
    t0 = time.perf_counter()
    with torch.inference_mode(), VideoWriter(out / "video.mp4", fps=fps, scale=args.scale) as video:

        def on_chunk(c: Chunk) -> None:
            frame_secs.append([c.start, c.seconds / (c.stop - c.start)])
            mem_bytes.append([c.stop - 1, world.state_nbytes()])
            for j, frame in enumerate(c.frames[0]):
                e = k + c.start + j  # episode frame index of this generated frame
                truth = ep.frames[e] if e < t_ep else None
                if truth is not None:
                    psnrs.append(float(psnr(frame, truth)))
                video.write(side_by_side(frame, truth))
            if bar is not None:
                bar.update(c.stop - c.start)

        gen = free_rollout(world, ep.frames[None, :k], acts, poses, on_chunk=on_chunk)[0]  # (F, H, W, 3)
        seconds = time.perf_counter() - t0
        # the video is renamed into place when the block exits
        buf = io.BytesIO()
        np.savez_compressed(buf, frames=gen)
        atomic_write_bytes(out / "generated.npz", lambda f: f.write(buf.getvalue()))
    if bar is not None:
        bar.close()
    return {
        "frames": f_total,
        "seconds": seconds,
        "fps": f_total / max(seconds, 1e-9),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "memory_state_bytes": mem_bytes,
        "frame_seconds": frame_secs,
        "psnr": psnrs,
        "psnr_mean": float(np.mean(psnrs)) if psnrs else None,
        "frames_with_ground_truth": len(psnrs),
    }
