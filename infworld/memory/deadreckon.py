"""Where the pose-based memories get their camera poses: given, or dead-reckoned from the actions.

WorldScape's KV memory and VRAG retrieve by camera pose. Datasets and the benchmark record true
poses; a person playing the model (the play page) has none. :class:`DeadReckoner` integrates the
unified actions (Infinite-World, arXiv 2602.02393, Sec. 3.3; infworld/data/action_schema.py) into
poses, so those strategies still run, on a pose estimate that drifts (it cannot see walls).
:class:`PoseTracker` is the small switch both memories share (``poses="given"`` or
``"dead_reckon"``).

This is the project's one dead reckoner: the memories, the play session (``serve/session.py``,
when a memory insists on poses) and the benchmark's random-action poses
(``bench/trajectories.py``) all integrate with it; ``tests/test_geometry.py`` ties each to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np
import torch

from infworld.data.action_schema import UNCERTAIN, decode_move, decode_view
from infworld.data.pose_motion import camera_motion
from infworld.errors import MemoryConfigError
from infworld.memory.geometry import wrap_degrees

POSE_MODES = ("given", "dead_reckon")


@dataclass
class DeadReckonConfig:
    """Motion per action step (environment units / degrees); defaults measured on ViZDoom.

    The defaults are :func:`measure_step_sizes` over ``data/doom-train`` (60 explore episodes,
    23,209 steps, frame_skip 4): forward 25.31 units, yaw 13.10 and pitch 9.86 degrees per step.

    ``forward`` is the *effective* distance per forward step: the whole distance walked divided by
    the number of forward steps. A forward step itself moves 16.4 units on average, but ViZDoom's
    momentum keeps the player gliding ~8.9 more units over the following steps; charging the glide
    to the step that caused it gives the smallest drift over long horizons (median position error
    after 100 steps 91 units, vs 103 with 16.4; a fitted momentum model was better over 10 steps
    but worse over 100, because walls stop the glide). The exploration policy never strafes, so
    ``strafe`` takes Doom's side-move speed ratio (24/25 of forward). Pitch is clamped to the range
    seen in the data.
    """

    forward: float = 25.3  # units per forward/backward step
    strafe: float = 24.3  # units per strafe step (not in the data: 24/25 of forward, as in Doom)
    yaw: float = 13.1  # degrees per turn step
    pitch: float = 9.86  # degrees per look-up/down step
    pitch_min: float = -40.0
    pitch_max: float = 32.0


def measure_step_sizes(tracks: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
                       default: DeadReckonConfig | None = None) -> DeadReckonConfig:
    """Step sizes of recorded ``tracks`` [(poses (T, 5), move (T-1,), view (T-1,)), ...].

    Every step's displacement is expressed in the camera frame of its start heading
    (:func:`infworld.data.pose_motion.camera_motion`, as the action labeler does). ``forward``
    (``strafe``) is the distance walked along (across) the heading over *all* steps, each signed
    by the last forward/backward (left/right) key pressed, divided by the number of steps that
    press one: the glide after a key release counts for the key. ``yaw`` / ``pitch`` are the signed
    turn per turning / looking step; the pitch range is the one seen. A quantity without such steps
    keeps ``default``'s value (strafe: ``default``'s strafe/forward ratio of the measured forward).
    """
    default = default or DeadReckonConfig()
    sums = dict.fromkeys(("forward", "strafe", "yaw", "pitch"), 0.0)
    counts = dict.fromkeys(sums, 0)
    lo, hi = np.inf, -np.inf
    for poses, move, view in tracks:
        poses = np.asarray(poses, np.float64)
        if len(poses) < 2 or not np.isfinite(poses).all():
            continue
        motion = camera_motion(poses[:, :3], poses[:, 3], poses[:, 4])  # (T-1, 4) fwd, right, turn, pitch
        f, r, _ = decode_move(move)
        y, p, _ = decode_view(view)
        for name, keys, col in (("forward", f, 0), ("strafe", r, 1)):
            held = _last_pressed(keys)  # (T-1,) sign of the last key of this axis, 0 before any
            sums[name] += float((motion[:, col] * held).sum())
            counts[name] += int((keys != 0).sum())
        sums["yaw"] += float((motion[:, 2] * y).sum())
        counts["yaw"] += int((y != 0).sum())
        sums["pitch"] += float((motion[:, 3] * p).sum())
        counts["pitch"] += int((p != 0).sum())
        if counts["pitch"]:
            lo, hi = min(lo, float(poses[:, 4].min())), max(hi, float(poses[:, 4].max()))
    out = {k: sums[k] / counts[k] for k in sums if counts[k]}
    if "strafe" not in out and "forward" in out:
        out["strafe"] = out["forward"] * default.strafe / default.forward
    if "pitch" in out:
        out.update(pitch_min=lo, pitch_max=hi)
    return replace(default, **out)


def _last_pressed(keys: np.ndarray) -> np.ndarray:
    """Sign (T,) of the most recent non-zero entry of ``keys`` up to each step (0 before the first)."""
    idx = np.where(keys != 0, np.arange(len(keys)), -1)
    last = np.maximum.accumulate(idx) if len(idx) else idx
    return np.where(last >= 0, np.sign(keys[np.maximum(last, 0)]), 0).astype(np.float64)


class DeadReckoner:
    """Integrate unified ``move``/``view`` action ids into poses (x, y, z, yaw_deg, pitch_deg).

    One step = one action: translate along the heading *before* the step, then turn. ViZDoom
    applies both in the same step (one ``make_action`` of ``frame_skip`` tics, envs/vizdoom.py), and
    over those tics the position changes mostly by the momentum built up before the step, so the
    start heading is the one the motion follows. Measured on data/doom-train: on the 4,628 steps
    that walk and turn at once the displacement lies a median 7 degrees from the start heading and
    13 from the end heading; over all 8,241 moving steps the one-step position error is a median
    9.6 units this way and 10.8 turning first. (Over 10 to 100 steps the two orders are within 4%
    of each other.) It is also the frame the step sizes are measured in (:func:`measure_step_sizes`)
    and the action labeler's. Yaw is wrapped to [0, 360); pitch is clamped to the config's range.
    """

    def __init__(self, config: DeadReckonConfig | None = None):
        self.config = config or DeadReckonConfig()

    def integrate(self, actions: dict[str, torch.Tensor], start: torch.Tensor) -> torch.Tensor:
        """Poses (B, n, 5) reached by ``actions`` {move, view: (B, n)} from ``start`` (B, 5).

        ``actions[:, j]`` is the transition into pose ``j`` (the engine's per-frame alignment: a
        frame's action is the one that led into it), so ``out[:, 0]`` is ``start`` moved by action 0.
        Null (-1) and uncertain (9) ids, and a missing field, mean no motion.
        """
        cfg = self.config
        start = start.float()
        b = start.shape[0]
        move = actions.get("move")
        view = actions.get("view")
        ref = move if move is not None else view
        if ref is None:
            raise MemoryConfigError("dead reckoning needs 'move' or 'view' actions (B, n)")
        n = int(ref.shape[1])
        dev = start.device

        def tri(ids: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            if ids is None:
                z = torch.zeros(b, n, device=dev)
                return z, z
            ids = ids.to(dev).long()
            known = (ids >= 0) & (ids < UNCERTAIN)
            safe = torch.where(known, ids, torch.full_like(ids, 4))  # 4 = (0, 0): no motion
            return (safe // 3 - 1).float(), (safe % 3 - 1).float()

        fwd, right = tri(move)  # (B, n) in {-1, 0, 1}
        turn, look = tri(view)  # turn +1 = right = heading decreases
        # Heading before each step: start yaw minus the turns of the previous steps.
        dyaw = -turn * cfg.yaw  # (B, n)
        yaw_after = start[:, 3:4] + torch.cumsum(dyaw, 1)  # (B, n)
        yaw_before = torch.cat([start[:, 3:4], yaw_after[:, :-1]], 1)
        psi = torch.deg2rad(yaw_before)
        # forward along (cos, sin) of the heading; right = heading - 90 degrees
        dx = fwd * cfg.forward * torch.cos(psi) + right * cfg.strafe * torch.sin(psi)
        dy = fwd * cfg.forward * torch.sin(psi) - right * cfg.strafe * torch.cos(psi)
        x = start[:, 0:1] + torch.cumsum(dx, 1)
        y = start[:, 1:2] + torch.cumsum(dy, 1)
        z = start[:, 2:3].expand(b, n)
        # pitch is clamped step by step (a clamp is not a sum), n is one chunk: a short loop
        pitch = []
        cur = start[:, 4]
        for j in range(n):
            cur = (cur + look[:, j] * cfg.pitch).clamp(cfg.pitch_min, cfg.pitch_max)
            pitch.append(cur)
        yaw = torch.remainder(wrap_degrees(yaw_after), 360.0)
        return torch.stack([x, y, z, yaw, torch.stack(pitch, 1)], -1)

    def track(self, start: np.ndarray, move: Iterable[int], view: Iterable[int]) -> np.ndarray:
        """Poses (n, 5) float32 reached from one pose ``start`` (5,) by ``n`` actions: :meth:`integrate`
        for numpy callers (the play session, the benchmark)."""
        m = torch.as_tensor(np.asarray(list(move), np.int64))[None]  # (1, n)
        v = torch.as_tensor(np.asarray(list(view), np.int64))[None]
        if m.shape[1] == 0:
            return np.zeros((0, 5), np.float32)
        s = torch.as_tensor(np.asarray(start, np.float64), dtype=torch.float64)[None]  # (1, 5)
        return self.integrate({"move": m, "view": v}, s)[0].numpy().astype(np.float32)


def check_pose_mode(mode: object, strategy: str) -> None:
    """MemoryConfigError unless ``mode`` is one of :data:`POSE_MODES`."""
    if mode not in POSE_MODES:
        raise MemoryConfigError(f"memory {strategy!r}: poses must be one of {list(POSE_MODES)}, got {mode!r}")


class PoseTracker:
    """The poses of frames written to a pose-based memory (``mode`` "given" or "dead_reckon").

    "given": poses come with every write (the engine insists, :attr:`needs_poses`); reads use the
    engine's current pose. "dead_reckon": poses are integrated from the written actions, starting at
    the origin at :meth:`reset`; reads use the integrated pose of the last written frame.
    """

    def __init__(self, mode: str, strategy: str, reckoner: DeadReckoner | None = None):
        check_pose_mode(mode, strategy)
        self.mode = mode
        self.strategy = strategy
        self.reckoner = reckoner or DeadReckoner()
        self.current: torch.Tensor | None = None  # (B, 5) pose of the last written frame

    @property
    def needs_poses(self) -> bool:
        return self.mode == "given"

    def reset(self) -> None:
        self.current = None

    def _missing(self) -> MemoryConfigError:
        return MemoryConfigError(f"memory {self.strategy!r} needs poses (poses='given'): pass camera poses "
                                 "(B, n, 5) with the frames, or set poses='dead_reckon' to integrate "
                                 "them from the actions")

    def poses(self, latents: torch.Tensor, actions: dict[str, torch.Tensor],
              poses: torch.Tensor | None) -> torch.Tensor:
        """Poses (B, n, 5) of written frames ``latents`` (B, n, ...); updates :attr:`current`."""
        b, n = latents.shape[:2]
        if self.mode == "given":
            if poses is None:
                raise self._missing()
            if tuple(poses.shape) != (b, n, 5):
                raise MemoryConfigError(f"memory {self.strategy!r}: expected poses ({b}, {n}, 5), got "
                                        f"{tuple(poses.shape)}")
            out = poses.detach().float().to(latents.device)
        else:
            start = self.current if self.current is not None and self.current.shape[0] == b else \
                torch.zeros(b, 5, device=latents.device)
            out = self.reckoner.integrate(actions, start)
        self.current = out[:, -1].clone()
        return out

    def reference(self, pose: torch.Tensor | None) -> torch.Tensor:
        """The current camera (B, 5) for a read, from the engine's ``pose`` or the integrated one."""
        if self.mode == "given":
            if pose is None:
                raise self._missing()
            return pose.detach().float()
        if self.current is None:
            raise MemoryConfigError(f"memory {self.strategy!r}: read before any write")
        return self.current
