"""``infworld play``: walk around inside a world model in the browser, or headless.

    infworld play [--model doom-tiny] [--memory NAME] [--steps N] [--port 8000] [--host 127.0.0.1]
                  [--no-browser] [--max-sessions 4] [--frames-per-action 1] [--image png|jpeg]
    infworld play --headless --frames 1000 --out walk.mp4 [--start 0]
    infworld play --real-reference [--headless ...]   the real game beside the model, same keys
    infworld play --make-starts DATA_DIR|collect --model NAME [--out FILE] [--count 8] [--context 8]

The server binds 127.0.0.1 (this machine only) unless ``--host`` says otherwise. Open the printed
address, click the picture, then W/S/A/D to walk, arrow keys to turn, E/Space to interact.

``--headless`` writes a video of a scripted walk instead: out along the view direction, a half
turn, back to the start, a half turn back, again and again, so every loop revisits the start
view. It prints the generation speed and the PSNR of each return to the first view (the memory's
consistency on the revisit).

``--real-reference`` runs the real game (ViZDoom, Crafter: the one the starts were recorded in)
beside the model with the same actions: the page shows both frames side by side, the headless video
puts them side by side (model left, game right) and prints the PSNR of model vs game. Both begin
from the same frame when the start records its game state (a replay, serve/starts.py); otherwise the
game begins at the scenario's start with ``--seed`` (serve/reference.py).

Starting frames come from ``<model dir>/starts.npz``; without one, a short collector run of the
model's game (ViZDoom, or Crafter for a Crafter model) makes them. ``--make-starts`` writes that
file from a dataset folder, or ``collect`` for the collector (default destination: beside the
model).
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
import threading
import time
import webbrowser
from pathlib import Path

import numpy as np

from infworld.cli.common import check_at_least
from infworld.device import check_device
from infworld.errors import ConfigError

MOVE_FORWARD, MOVE_NONE = 7, 4  # (forward + 1) * 3 + (right + 1)
VIEW_RIGHT, VIEW_LEFT, VIEW_NONE = 7, 1, 4  # (yaw + 1) * 3 + (pitch + 1)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("play", help="play inside a world model (browser page, headless walk)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="doom-tiny", help="model alias, name or folder (default: doom-tiny)")
    p.add_argument("--memory", help="memory strategy (default: the alias's, else window)")
    p.add_argument("--memory-budget", type=int, help="memory budget in frames (default: the model's)")
    p.add_argument("--steps", type=int, help="sampler steps per frame (default: the model's)")
    p.add_argument("--sampler", choices=("euler", "heun", "stochastic"), help="default: the model's")
    p.add_argument("--frames-per-action", type=int, default=1,
                   help="frames generated per action, 1..the model's chunk (more = faster, less responsive)")
    p.add_argument("--memory-every", type=int,
                   help="frames between memory reads (default: the model's chunk, as on the benchmark)")
    p.add_argument("--no-fold-commit", action="store_true",
                   help="cache each finished frame in its own DiT pass instead of inside the next step's")
    p.add_argument("--seed", type=int, default=0, help="noise seed of every session")
    p.add_argument("--starts", help="starts.npz to use (default: <model dir>/starts.npz, else the collector)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    p.add_argument("--max-sessions", type=int, default=4, help="browser tabs served at once")
    p.add_argument("--idle-timeout", type=float, default=300.0, help="seconds before an idle tab is dropped")
    p.add_argument("--log-frames", type=int, default=2000, help="last N frames kept per tab for the MP4")
    p.add_argument("--image", choices=("png", "jpeg"), default="png", help="frame encoding on the wire")
    p.add_argument("--headless", action="store_true", help="write a scripted walk to --out instead")
    p.add_argument("--real-reference", action="store_true",
                   help="run the real game beside the model with the same keys (side by side)")
    p.add_argument("--frames", type=int, default=1000, help="--headless: frames to generate")
    p.add_argument("--start", type=int, default=0, help="--headless: starting context")
    p.add_argument("--scale", type=int, default=4, help="--headless: video pixel scale")
    p.add_argument("--make-starts", metavar="DATA_DIR|collect", help="write starting frames and exit")
    p.add_argument("--count", type=int, default=8, help="--make-starts: starting contexts")
    p.add_argument("--context", type=int, default=8, help="--make-starts: frames per context")
    p.add_argument("--out",
                   help="--headless: video path; --make-starts: starts file (default beside the model)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: the tiny model gains little from more, and on a "
                        "busy CPU spinning threads make it many times slower)")
    p.set_defaults(func=run)


def walk_script(frames: int, turn_deg: float, leg: int = 12) -> tuple[list[int], list[int]]:
    """(moves, views) of ``frames`` actions: loops of ``leg`` steps forward, a half turn right, ``leg``
    steps forward (back to the start), a half turn left (facing the start view again).

    With no turning (``turn_deg`` 0) the way back is walked backwards instead.
    """
    half = max(1, round(180.0 / turn_deg)) if turn_deg > 0 else 0
    if half:
        loop = ([(MOVE_FORWARD, VIEW_NONE)] * leg + [(MOVE_NONE, VIEW_RIGHT)] * half
                + [(MOVE_FORWARD, VIEW_NONE)] * leg + [(MOVE_NONE, VIEW_LEFT)] * half)
    else:
        loop = [(MOVE_FORWARD, VIEW_NONE)] * leg + [(1, VIEW_NONE)] * leg  # 1 = forward -1, right 0
    seq = [loop[i % len(loop)] for i in range(frames)]
    return [m for m, _ in seq], [v for _, v in seq]


def loop_length(turn_deg: float, leg: int = 12) -> int:
    half = max(1, round(180.0 / turn_deg)) if turn_deg > 0 else 0
    return 2 * leg + 2 * half if half else 2 * leg


def _check(args: argparse.Namespace) -> None:
    """The flags, before any model is loaded or file written (ConfigError / DataError naming them)."""
    from infworld.data.outputs import check_output_file

    check_at_least(args, 1, "memory_budget", "steps", "memory_every", "frames_per_action", "max_sessions",
                   "frames", "scale", "count", "context", "threads")
    check_at_least(args, 0, "port", "log_frames")
    if args.port > 65535:
        raise ConfigError(f"--port: expected 0..65535, got {args.port}")
    if args.idle_timeout <= 0:
        raise ConfigError(f"--idle-timeout: expected seconds > 0, got {args.idle_timeout}")
    check_device(args.device, what="--device")
    if args.make_starts:
        if args.out:
            check_output_file(args.out, (".npz",), what="--out starts file")
    elif args.headless:
        if not args.out:
            raise ConfigError("--headless needs --out VIDEO.mp4")
        check_output_file(args.out, (".mp4",), what="--out video")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    import torch

    _check(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    from infworld.serve.defaults import alias_memory_cfg, resolve_alias

    model, memory = resolve_alias(args.model, args.memory)
    if args.make_starts:
        return make_starts(args, model)
    sock = None
    if not args.headless:
        from infworld.serve.server import bind_socket

        sock = bind_socket(args.host, args.port)  # a taken port fails now, before the model loads
    try:
        from infworld.serve.session import EngineFactory

        memory_cfg = alias_memory_cfg(args.model, args.memory,
                                      {"budget": args.memory_budget} if args.memory_budget else None)
        factory = EngineFactory.load(model, memory, memory_cfg=memory_cfg, device=args.device,
                                     steps=args.steps, name=args.sampler, seed=args.seed,
                                     memory_every=args.memory_every, fold_commit=not args.no_fold_commit)
        starts = load_starts(args, factory)
        if args.headless:
            return headless(args, factory, starts)
        return serve(args, factory, starts, sock)
    finally:
        if sock is not None:
            sock.close()


def load_starts(args: argparse.Namespace, factory):
    from infworld.serve.starts import Starts, find_starts, game_of, starts_from_collector

    if args.starts:
        return Starts.load(args.starts)
    if find_starts(factory.model_dir) is not None:
        return Starts.load(find_starts(factory.model_dir))
    game = game_of(factory.template.interact_vocab)
    print(f"infworld play: no starts.npz beside {factory.model_dir}; running the {game} collector briefly "
          "(write one with --make-starts)", file=sys.stderr)
    return starts_from_collector(game, size=factory.frame_size)


def make_starts(args: argparse.Namespace, model: str) -> int:
    from infworld.models.loading import read_model_config, resolve_model_dir
    from infworld.serve.starts import STARTS_FILE, game_of, starts_from_collector, starts_from_dataset

    model_dir = resolve_model_dir(model)
    mc = read_model_config(model_dir)["model_config"]
    size = tuple(mc.get("frame_size", (64, 64)))
    if args.make_starts == "collect":
        starts = starts_from_collector(game_of(mc.get("interact_vocab")), size=size, count=args.count,
                                       context=args.context, seed=args.seed)
    else:
        starts = starts_from_dataset(args.make_starts, count=args.count, context=args.context)
    if starts.frame_size != size:
        raise ConfigError(f"starting frames are {starts.frame_size} but model {model!r} generates {size}")
    out = Path(args.out) if args.out else model_dir / STARTS_FILE
    starts.save(out)
    print(f"play: {len(starts)} starts of {starts.context} frames ({starts.meta.get('source')}) -> {out} "
          f"({out.stat().st_size / 1e3:.0f} KB)")
    return 0


def headless(args: argparse.Namespace, factory, starts) -> int:
    """The scripted walk with revisits, written as a video; prints fps and the revisit PSNR (and,
    with ``--real-reference``, the real game beside the model and their PSNR)."""
    from infworld.serve.session import Session, SessionConfig

    cfg = SessionConfig(max_log_frames=0, frames_per_action=args.frames_per_action, seed=args.seed)
    reference = None
    if args.real_reference:
        from infworld.serve.reference import RealReference

        reference = RealReference.open(starts, factory.frame_size, factory.accepted_actions["interact"],
                                       seed=args.seed)
    session = Session(factory, starts, cfg, reference=reference)
    try:
        return walk(args, factory, session)
    finally:
        session.close()


def walk(args: argparse.Namespace, factory, session) -> int:
    """Play the walk script in ``session`` and write the video (see :func:`headless`)."""
    import torch

    from infworld.eval.video import VideoWriter, psnr

    starts = session.starts
    turn = float(starts.meta.get("turn_deg") or 0.0)
    moves, views = walk_script(args.frames, turn)
    period = loop_length(turn)
    n = args.frames_per_action
    first = session.reset(args.start)[0]
    returns = []  # PSNR of each return to the start view vs the first view
    vs_game = []  # PSNR of each model frame vs the real game's (with --real-reference)
    fps = session.video_fps()
    t0 = time.perf_counter()
    with torch.inference_mode(), VideoWriter(args.out, fps=fps, scale=args.scale) as video:
        video.write(session.side_by_side(first[None])[0])  # model | game side by side with a reference
        for lo in range(0, args.frames, n):
            hi = min(lo + n, args.frames)
            frames = session.step_actions(moves[lo:hi], views[lo:hi], [0] * (hi - lo))
            for j, frame in enumerate(session.side_by_side(frames)):
                video.write(frame)
                if session.reference is not None:
                    vs_game.append(float(psnr(frames[j], session.reference_frames[j])))
                if (lo + j + 1) % period == 0:
                    returns.append(float(psnr(frames[j], first)))
        seconds = time.perf_counter() - t0
    fps_gen = args.frames / max(seconds, 1e-9)
    s = factory.template.config.sampler
    print(f"play: {args.frames} frames in {seconds:.1f} s ({fps_gen:.1f} fps; {s.name} sampler, "
          f"{s.steps} steps, {n} frame(s) per step, memory {factory.template.memory.name}, "
          f"budget {factory.template.memory.budget}) -> {args.out}")
    if returns:
        print(f"play: back at the start {len(returns)} times (every {period} frames); PSNR vs the first "
              f"view: first {returns[0]:.2f} dB, mean {np.mean(returns):.2f} dB, last {returns[-1]:.2f} dB")
    if session.reference is not None:
        ref = session.reference.status()
        where = ("from the same start" if ref["from"] == "start" else
                 "from the scenario start: this start has no recorded game state, so the views differ")
        print(f"play: real game beside the model ({where}{'; the game ended' if ref['ended'] else ''}); "
              f"PSNR model vs game: first {vs_game[0]:.2f} dB, mean {np.mean(vs_game):.2f} dB, "
              f"last {vs_game[-1]:.2f} dB")
    return 0


def serve(args: argparse.Namespace, factory, starts, sock: socket.socket) -> int:
    """Serve the play page on ``sock`` (bound by :func:`infworld.serve.server.bind_socket`)."""
    import uvicorn

    from infworld.serve.server import ServerConfig, create_app
    from infworld.serve.session import SessionConfig

    config = ServerConfig(max_sessions=args.max_sessions, idle_timeout_s=args.idle_timeout,
                          image_format=args.image, real_reference=args.real_reference,
                          session=SessionConfig(max_log_frames=args.log_frames,
                                                frames_per_action=args.frames_per_action, seed=args.seed))
    app = create_app(factory, starts=starts, config=config)
    if not is_loopback(args.host):
        print(f"infworld play: warning: binding {args.host} makes the play page reachable from other "
              "machines; it has no authentication", file=sys.stderr)
    port = sock.getsockname()[1]  # the one picked when --port is 0
    shown = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else shown}:{port}/"
    print(f"play: {factory.model_name} with memory {factory.template.memory.name} "
          f"(budget {factory.template.memory.budget}); open {url} "
          "(Ctrl-C to stop)", flush=True)
    if not args.no_browser:
        threading.Timer(1.0, lambda: webbrowser.open(url)).start()
    # ws_max_size: frames far over the protocol's 4 KB limit are refused by the WebSocket layer.
    config = uvicorn.Config(app, log_level="warning", ws_max_size=1 << 20)
    uvicorn.Server(config).run(sockets=[sock])
    return 0

