"""Play speed (issue #6): frames per second end to end, action sent over the WebSocket -> frame received,
and where the time goes.

    python benchmarks/play_speed.py [--model doom-tiny] [--memory window] [--memory-budget N] [--frames 150] \
        [--steps 1,2,4] [--out benchmarks/results/play_speed.json]

For each setting (sampler steps x frames per action) the real play server (uvicorn, localhost) serves
one client that works like the page: it sends the next action as soon as the previous frame has
arrived and been decoded. Reported per setting:

* end-to-end FPS = frames received / wall time, and the round-trip latency p50 / p95 / mean;
* the engine's own FPS (generation time only);
* a profile in ms per frame: DiT denoising passes (the sampler's velocity evaluations), the
  cache-commit pass (the clean frame's keys/values, one DiT pass per chunk), the memory (read + its
  context's DiT pass), the tokenizer decode, the rest of the engine step (noise, sampler arithmetic,
  Python), PNG encode + base64 on the server, the server's own overhead (thread hop, JSON), transport
  and client decode (round trip minus server time).

The product goal is 30 FPS at 64x64 on 2 CPU cores; real-time distillation comes later. The machine
may be shared: the load average at the start and end is recorded with the figures.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import socket
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from infworld.data.episode import atomic_write_json
from infworld.serve.defaults import alias_memory_cfg, resolve_alias
from infworld.serve.server import ServerConfig, create_app
from infworld.serve.session import EngineFactory, SessionConfig
from infworld.serve.starts import load_or_make_starts

# (sampler steps or None = the model's, frames per action, torch threads)
SETTINGS = [(None, 1, 1), (None, 1, 2), (None, 4, 1), (4, 1, 1), (2, 1, 1)]
# The walk the client plays: forward, turn, strafe (keys held for a while each).
WALK = [(7, 4)] * 12 + [(4, 7)] * 6 + [(5, 4)] * 6 + [(7, 1)] * 6


class Profiler:
    """Wall time per part of the engine step, from hooks on the shared network (one step at a time:
    the server runs engine calls under one lock)."""

    def __init__(self, factory: EngineFactory):
        self.ms: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        net = factory.net
        self._t: list[tuple[str, float]] = []

        def pre(module, args, kwargs):
            kind = "memory_dit" if kwargs.get("kinds") is not None else (
                "commit_dit" if kwargs.get("return_kv") else "denoise_dit")
            if kind == "commit_dit" and float(args[1].max()) >= 0.999:  # fold_commit: a denoising call
                kind = "denoise_commit_dit"  # that also caches the previous frame (pending_commit.py)
            if kind == "memory_dit":  # memory frames run through the DiT (the rest were reused)
                self.calls["memory_frames_encoded"] += int(args[0].shape[1])
            self._t.append((kind, time.perf_counter()))

        def post(module, args, kwargs, out):
            kind, t0 = self._t.pop()
            self.add(kind, time.perf_counter() - t0)

        net.dit.register_forward_pre_hook(pre, with_kwargs=True)
        net.dit.register_forward_hook(post, with_kwargs=True)
        decode = net.decode

        def timed_decode(*a, **k):
            t0 = time.perf_counter()
            out = decode(*a, **k)
            self.add("decode", time.perf_counter() - t0)
            return out

        net.decode = timed_decode  # instance attribute: every session's engine calls this one
        mem_cls = type(factory.template.memory)
        read = mem_cls.read

        def timed_read(mem, *a, **k):
            t0 = time.perf_counter()
            out = read(mem, *a, **k)
            self.add("memory_read", time.perf_counter() - t0)
            return out

        mem_cls.read = timed_read

    def add(self, kind: str, seconds: float) -> None:
        self.ms[kind] += seconds * 1e3
        self.calls[kind] += 1

    def reset(self) -> None:
        self.ms.clear()
        self.calls.clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(factory: EngineFactory, profiler: Profiler, starts, steps: int | None, fpa: int, threads: int,
            frames: int, warmup: int, max_seconds: float) -> dict:
    import cv2
    import uvicorn
    from websockets.sync.client import connect

    torch.set_num_threads(threads)
    sampler = factory.template.config.sampler
    old_steps = sampler.steps
    if steps is not None:
        sampler.steps = steps  # new engines copy the template's config
    app = create_app(factory, starts=starts, config=ServerConfig(
        max_sessions=1, session=SessionConfig(max_log_frames=10, frames_per_action=fpa)))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    rtts, server_ms, gen_ms, enc_ms, client_ms = [], [], [], [], []
    try:
        with connect(f"ws://127.0.0.1:{port}/ws", max_size=2**22) as ws:
            json.loads(ws.recv())  # hello
            json.loads(ws.recv())  # the starting frame
            n_msgs = warmup + -(-frames // fpa)
            for i in range(n_msgs):
                if i == warmup:
                    profiler.reset()
                    t_start = time.perf_counter()
                move, view = WALK[i % len(WALK)]
                t0 = time.perf_counter()
                if i > warmup and t0 - t_start > max_seconds:
                    break  # a very slow setting (e.g. threads fighting over a busy CPU) stops early
                ws.send(json.dumps({"type": "action", "move": move, "view": view, "interact": 0}))
                msg = json.loads(ws.recv())
                t1 = time.perf_counter()
                for b64 in msg["images"]:  # what the page does before drawing
                    cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_COLOR)
                t2 = time.perf_counter()
                if i >= warmup:
                    rtts.append((t2 - t0) * 1e3)
                    client_ms.append((t2 - t1) * 1e3)
                    server_ms.append(msg["latency_ms"])
                    gen_ms.append(msg["timing"]["generate_ms"])
                    enc_ms.append(msg["timing"]["encode_ms"])
            wall = t2 - t_start
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sampler.steps = old_steps
    n_frames = len(rtts) * fpa
    per_frame = {k: v / n_frames for k, v in profiler.ms.items()}
    engine = sum(gen_ms) / n_frames
    dit_mem = per_frame.get("memory_dit", 0.0) + per_frame.get("memory_read", 0.0)
    profile = {
        "denoise_dit": per_frame.get("denoise_dit", 0.0),
        "commit_dit": per_frame.get("commit_dit", 0.0),
        "denoise_commit_dit": per_frame.get("denoise_commit_dit", 0.0),  # fold_commit: one call does both
        "memory": dit_mem,
        "decode": per_frame.get("decode", 0.0),
        "engine_other": engine - sum(per_frame.values()),
        "encode_png_base64": sum(enc_ms) / n_frames,
        "server_overhead": (sum(server_ms) - sum(gen_ms) - sum(enc_ms)) / n_frames,
        "transport_and_client_decode": (sum(rtts) - sum(server_ms)) / n_frames,
    }
    total = sum(profile.values())
    return {
        "sampler": factory.template.config.sampler.name,
        "steps": steps or old_steps,
        "frames_per_action": fpa,
        "torch_threads": threads,
        "frames": n_frames,
        "fps_end_to_end": n_frames / wall,
        "latency_ms": {"p50": float(np.percentile(rtts, 50)), "p95": float(np.percentile(rtts, 95)),
                       "mean": float(np.mean(rtts))},
        "engine_fps": 1e3 / engine,
        "memory_frames_encoded_per_frame": profiler.calls.get("memory_frames_encoded", 0) / n_frames,
        "denoise_calls_per_frame": (profiler.calls.get("denoise_dit", 0)
                                    + profiler.calls.get("denoise_commit_dit", 0)) / n_frames,
        "profile_ms_per_frame": {k: round(v, 3) for k, v in profile.items()},
        "profile_share": {k: round(v / total, 4) for k, v in profile.items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="doom-tiny")
    ap.add_argument("--memory")
    ap.add_argument("--memory-budget", type=int, help="memory budget in frames (default: the model's), as "
                    "`infworld play --memory-budget`")
    ap.add_argument("--frames", type=int, default=150, help="frames measured per setting")
    ap.add_argument("--warmup", type=int, default=5, help="actions before measuring")
    ap.add_argument("--max-seconds", type=float, default=30.0, help="stop measuring a setting after this")
    ap.add_argument("--threads", type=int, help="only the settings with this many torch threads")
    ap.add_argument("--steps", help="comma-separated sampler step counts to measure (e.g. 1,2,4 for a "
                    "distilled student), each at 1 frame per action and 1 thread, instead of the grid")
    ap.add_argument("--no-reuse-memory-kv", action="store_true",
                    help="re-encode the memory's frames every chunk (RolloutConfig.reuse_memory_kv "
                    "off), for A/B")
    ap.add_argument("--no-fold-commit", action="store_true",
                    help="cache each finished frame in its own DiT pass (RolloutConfig.fold_commit off), "
                    "for A/B")
    ap.add_argument("--memory-every", type=int, default=0,
                    help="frames between memory reads (RolloutConfig.memory_every; 0 = the model's chunk)")
    ap.add_argument("--out", default="benchmarks/results/play_speed.json")
    args = ap.parse_args(argv)
    settings = SETTINGS
    if args.steps:
        settings = [(int(s), 1, 1) for s in args.steps.split(",")]
    model, memory = resolve_alias(args.model, args.memory)
    overrides = {"reuse_memory_kv": not args.no_reuse_memory_kv, "fold_commit": not args.no_fold_commit,
                 "memory_every": args.memory_every}
    memory_cfg = alias_memory_cfg(args.model, args.memory,
                                  {"budget": args.memory_budget} if args.memory_budget else None)
    factory = EngineFactory.load(model, memory, memory_cfg=memory_cfg, **overrides)
    starts = load_or_make_starts(factory.model_dir, factory.frame_size)
    load_before = os.getloadavg()
    profiler = Profiler(factory)
    results = []
    for steps, fpa, threads in settings:
        if args.threads and threads != args.threads:
            continue
        r = measure(factory, profiler, starts, steps, fpa, threads, args.frames, args.warmup,
                    args.max_seconds)
        results.append(r)
        p = r["profile_ms_per_frame"]
        print(f"{r['sampler']} {r['steps']} steps, {fpa} frame(s)/action, {threads} thread(s): "
              f"{r['fps_end_to_end']:.1f} fps "
              f"end to end (engine {r['engine_fps']:.1f}), latency p50 {r['latency_ms']['p50']:.0f} ms "
              f"p95 {r['latency_ms']['p95']:.0f} ms, memory frames encoded/frame "
              f"{r['memory_frames_encoded_per_frame']:.1f} | ms/frame: "
              + ", ".join(f"{k} {v:.1f}" for k, v in p.items()), flush=True)
    report = {
        "model": factory.model_name, "memory": factory.template.memory.name,
        "memory_budget": int(factory.template.memory.budget),
        "reuse_memory_kv": factory.template.config.reuse_memory_kv,
        "fold_commit": factory.template.config.fold_commit,
        "memory_every": factory.template.config.memory_every or factory.chunk,
        "frame_size": list(factory.frame_size), "chunk": factory.chunk,
        "goal": "30 fps end to end at 64x64 on 2 CPU cores",
        "machine": {"cpus": os.cpu_count(),
                    "torch": torch.__version__, "python": platform.python_version(),
                    "load_avg_before": [round(x, 2) for x in load_before],
                    "load_avg_after": [round(x, 2) for x in os.getloadavg()]},
        "settings": results,
    }
    atomic_write_json(Path(args.out), report)
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
