"""One play session: its own streaming engine and memory, the starting contexts, a bounded frame log.

The play server (server.py) and the headless walk (cli/play.py) drive the world model through a
:class:`Session` (the gymnasium env drives the engine itself, with the same helpers from
infworld/driving.py): ``reset(start)`` seeds the engine with a
shipped starting context (starts.py), ``step(move, view, interact)`` generates the next frame(s)
from one unified action (docs/actions.md), and the last ``max_log_frames`` frames are kept for the
MP4 download. Everything a session holds is bounded: the engine's KV cache and the memory have
fixed budgets (infworld/memory/), the log is a ring buffer.

:class:`EngineFactory` loads the network once; every session gets its own
:class:`~infworld.world.WorldModel` (cache, memory, noise generator) around the *shared* weights,
so ten tabs cost one copy of the model plus ten small rollout states.

Pose-based memories (VRAG retrieval, WorldScape's geometric KV memory) need a camera pose per
frame, which nobody has while playing inside the model. They are built with
``poses="dead_reckon"`` when they accept it; if the memory still asks for poses, the session
dead-reckons them itself from the actions with the same
:class:`~infworld.memory.deadreckon.DeadReckoner` (and step sizes) the memories use.

With a real-game reference (serve/reference.py, ``infworld play --real-reference``) every action
also steps the real game, and the MP4 shows both side by side.
"""

from __future__ import annotations

import copy
import secrets
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infworld.driving import (
    NUM_TRISTATE,  # noqa: F401 - re-exported for older imports
    PoseTrack,
    accepted_actions,
    check_id,
    check_playable,
    load_world,
    memory_fill,
    memory_sources,
)
from infworld.errors import ConfigError, DataError
from infworld.serve.starts import Starts
from infworld.world import WorldModel


@dataclass
class SessionConfig:
    """Per-session limits and output settings."""

    max_log_frames: int = 2000  # frames kept for the MP4 download (the last N; 0 = no log)
    frames_per_action: int = 1  # frames generated per action (1..the model's chunk)
    seed: int = 0  # noise seed of the engine (reset(seed=) overrides it)
    video_fps: float = 0.0  # MP4 frame rate; 0 = the starts' environment rate (else 15)
    video_scale: int = 4  # MP4 pixel scale factor (64x64 frames are tiny)

    def check(self, chunk: int) -> None:
        if self.max_log_frames < 0:
            raise ConfigError(f"session.max_log_frames: expected >= 0, got {self.max_log_frames}")
        if not 1 <= self.frames_per_action <= chunk:
            raise ConfigError(f"session.frames_per_action: expected 1..{chunk} (the model's chunk), "
                              f"got {self.frames_per_action}")
        if self.video_scale < 1:
            raise ConfigError(f"session.video_scale: expected >= 1, got {self.video_scale}")


class EngineFactory:
    """One loaded world network; :meth:`new_engine` makes rollout engines that share its weights."""

    def __init__(self, world: WorldModel, model_dir: Path | None = None, model_name: str = ""):
        check_playable(world)
        self.template = world  # never reset: its memory is the pristine copy new engines clone
        self.net = world.net
        self.model_dir = model_dir
        self.model_name = model_name or (model_dir.name if model_dir is not None else "model")

    @classmethod
    def load(cls, model: str, memory: str = "window", memory_cfg: Mapping[str, Any] | None = None,
             device: str = "cpu", **overrides: Any) -> EngineFactory:
        """Load an exported world model (name or folder) with memory ``memory``; ``overrides`` are
        :meth:`WorldModel.from_pretrained` settings (steps, name, chunk, cfg_scale...)."""
        from infworld.models.loading import resolve_model_dir

        world = load_world(model, memory, memory_cfg=memory_cfg, device=device, **overrides)
        model_dir = resolve_model_dir(model)
        return cls(world, model_dir=model_dir, model_name=model_dir.name)

    def new_engine(self, seed: int = 0) -> WorldModel:
        """A fresh engine (own cache, memory and generator) around the shared network."""
        # Deep-copy the pristine memory but keep any learned module it references shared: the memo
        # maps the network's modules and tensors to themselves.
        memo: dict[int, Any] = {id(m): m for m in self.net.modules()}
        memo.update({id(t): t for t in self.net.parameters()})
        memo.update({id(t): t for t in self.net.buffers()})
        memory = copy.deepcopy(self.template.memory, memo)
        config = copy.deepcopy(self.template.config)
        config.seed = int(seed)
        return WorldModel(self.net, memory, config, device=self.template.device)

    @property
    def frame_size(self) -> tuple[int, int]:
        return tuple(self.template.frame_size)

    @property
    def action_sizes(self) -> dict[str, int]:
        return dict(self.template.dit.cfg.actions.sizes())

    @property
    def accepted_actions(self) -> dict[str, int]:
        """How many ids a player may send per field (ids 0..n-1): move and view stop at 8 even when the
        model's tables also hold 9 = "uncertain", a training label no key produces (docs/actions.md)."""
        return accepted_actions(self.template)

    @property
    def chunk(self) -> int:
        return int(self.template.config.chunk)

    def describe(self) -> dict[str, Any]:
        """Model, memory and sampler settings, for the page and for reports."""
        w = self.template
        s = w.config.sampler
        return {"model": self.model_name, "memory": w.memory.name, "budget": int(w.memory.budget),
                "window": int(w.window), "frame_size": list(self.frame_size), "chunk": self.chunk,
                "sampler": {"name": s.name, "steps": s.steps, "shift": s.shift, "cfg_scale": s.cfg_scale},
                # ids a client may send (0..n-1) and the model's label vocabulary, which may add
                # "uncertain" (9) to move / view: a training label, refused from players
                "actions": self.accepted_actions, "model_actions": self.action_sizes}


class Session:
    """An isolated rollout over shared weights (module docstring).

    ``reference``: an optional :class:`~infworld.serve.reference.RealReference`, the real game
    stepped with the same actions (``reference_frames`` holds its newest frames); the session owns
    it and closes it in :meth:`close`.
    """

    def __init__(self, factory: EngineFactory, starts: Starts, config: SessionConfig | None = None,
                 session_id: str | None = None, reference: Any = None):
        self.config = cfg = config or SessionConfig()
        cfg.check(factory.chunk)
        starts.check_model(factory.frame_size, factory.action_sizes)
        self.factory = factory
        self.starts = starts
        self.id = session_id or secrets.token_urlsafe(12)
        self.engine = factory.new_engine(cfg.seed)
        self.reference = reference
        self.reference_frames: np.ndarray | None = None  # (n, H, W, 3) the real game's newest frames
        self.start = 0
        self.generated = 0
        self.track = PoseTrack()  # dead-reckoned poses, used when the memory needs poses
        self.log: deque[np.ndarray] = deque(maxlen=max(cfg.max_log_frames, 1))
        self._log_lock = threading.Lock()
        self._rate: deque[tuple[int, float]] = deque(maxlen=20)  # (frames, seconds) of recent steps
        self.last_active = time.monotonic()

    # -- driving -------------------------------------------------------------------------------

    @property
    def needs_poses(self) -> bool:
        return bool(self.engine.memory.needs_poses)

    @property
    def pose(self) -> np.ndarray | None:
        """The dead-reckoned pose (5,) of the newest frame, when the memory needs poses."""
        return self.track.pose if self.needs_poses else None

    def reset(self, start: int | None = None, seed: int | None = None) -> np.ndarray:
        """Restart from starting context ``start`` (default: the current one); returns its last
        frame (1, H, W, 3). ``seed`` reseeds the engine's noise."""
        start = self.start if start is None else check_id("start", start, len(self.starts) - 1)
        frames, actions, poses = self.starts.context_of(start)
        if seed is not None:
            self.engine.generator.manual_seed(int(seed))
        if self.needs_poses:
            poses = self.track.context(poses[0], {k: a[0] for k, a in actions.items()})[None]
        else:
            poses = None
        self.engine.reset(frames, actions, poses=poses)
        if self.reference is not None:
            self.reference_frames = self.reference.reset(start)[None]  # (1, H, W, 3)
        self.start = start
        self.generated = 0
        self._rate.clear()
        last = frames[0, -1:]  # (1, H, W, 3)
        with self._log_lock:
            self.log.clear()
            if self.config.max_log_frames:
                self.log.append(self.side_by_side(last)[0])
        self.last_active = time.monotonic()
        return last

    def step(self, move: Any, view: Any, interact: Any = 0) -> np.ndarray:
        """Generate ``frames_per_action`` frames under one action; returns (n, H, W, 3) uint8.

        Ids are checked (DataError naming the field): move and view 0..8, interact 0..N-1.
        """
        n = self.config.frames_per_action
        return self.step_actions([move] * n, [view] * n, [interact] * n)

    def step_actions(self, moves: list[Any], views: list[Any], interacts: list[Any]) -> np.ndarray:
        """Generate one frame per action (1..chunk of them, one engine step); returns (n, H, W, 3)."""
        n = len(moves)
        if not 1 <= n <= self.factory.chunk or len(views) != n or len(interacts) != n:
            raise DataError(f"expected 1..{self.factory.chunk} actions with as many moves, views and "
                            f"interacts, got {len(moves)}, {len(views)}, {len(interacts)}", field="actions")
        ok = self.factory.accepted_actions
        m = [check_id("move", a, ok["move"] - 1) for a in moves]
        v = [check_id("view", a, ok["view"] - 1) for a in views]
        i = [check_id("interact", a, ok["interact"] - 1) for a in interacts]
        if self.engine.batch == 0:
            self.reset()
        acts = {"move": np.array([m]), "view": np.array([v]), "interact": np.array([i])}  # (1, n) each
        poses = self.track.step(m, v)[None] if self.needs_poses else None  # (1, n, 5)
        t0 = time.perf_counter()
        frames = self.engine.step(acts, poses=poses)[0]  # (n, H, W, 3)
        self._rate.append((n, time.perf_counter() - t0))
        if self.reference is not None:
            self.reference_frames = self.reference.step(m, v, i)  # (n, H, W, 3)
        self.generated += n
        if self.config.max_log_frames:
            with self._log_lock:
                self.log.extend(self.side_by_side(frames))
        self.last_active = time.monotonic()
        return frames

    def side_by_side(self, frames: np.ndarray) -> np.ndarray:
        """What the MP4 shows: the model's frames, beside the real game's when there is a reference
        (n, H, 2W, 3)."""
        if self.reference_frames is None:
            return frames
        return np.concatenate([frames, self.reference_frames], axis=2)

    def close(self) -> None:
        """Release the real-game reference, if any (idempotent)."""
        if self.reference is not None:
            self.reference.close()

    # -- reporting -----------------------------------------------------------------------------

    @property
    def frame_index(self) -> int:
        """Rollout index of the newest frame (the starting context counts)."""
        return self.engine.index - 1

    def fps(self) -> float:
        """Generated frames per second of engine time over the recent steps (0 before any)."""
        frames = sum(n for n, _ in self._rate)
        secs = sum(s for _, s in self._rate)
        return frames / secs if secs > 0 else 0.0

    def sources(self) -> list[int]:
        """Rollout frame indices the memory returned for the last chunk (-1 = a compressed summary)."""
        return memory_sources(self.engine)

    def status(self) -> dict[str, Any]:
        held, capacity = memory_fill(self.engine)
        out = {"frame": self.frame_index, "generated": self.generated, "start": self.start,
               "fps": round(self.fps(), 2), "memory": self.engine.memory.name, "held": held,
               "capacity": capacity, "budget": int(self.engine.memory.budget),
               "fill": round(held / capacity, 4) if capacity else 0.0,
               "sources": self.sources(), "state_bytes": int(self.engine.state_nbytes())}
        if self.pose is not None:
            out["pose"] = [round(float(p), 2) for p in self.pose]
        if self.reference is not None:
            out["reference"] = self.reference.status()
        return out

    def log_frames(self) -> list[np.ndarray]:
        with self._log_lock:
            return list(self.log)

    def video_fps(self) -> float:
        return float(self.config.video_fps or self.starts.meta.get("fps") or 15.0)

    def mp4_bytes(self) -> bytes:
        """The logged frames (since the last reset, at most ``max_log_frames``) as an H.264 MP4."""
        from infworld.eval.video import write_mp4

        frames = self.log_frames()
        if not frames:
            raise DataError("this session has no frames to download (the frame log is off or empty)")
        with tempfile.TemporaryDirectory(prefix="infworld_play_") as tmp:
            path = Path(tmp) / "session.mp4"
            write_mp4(path, frames, fps=self.video_fps(), scale=self.config.video_scale)
            return path.read_bytes()
