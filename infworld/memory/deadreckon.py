"""Where the pose-based memories get their camera poses: given, or dead-reckoned from the actions.

WorldScape's KV memory and VRAG retrieve by camera pose. Datasets and the benchmark record true
poses; a person playing the model (the play page) has none. :class:`DeadReckoner` integrates the
unified actions (Infinite-World, arXiv 2602.02393, Sec. 3.3; infworld/data/action_schema.py) into
poses, so those strategies still run, on a pose estimate that drifts (it cannot see walls).
:class:`PoseTracker` is the small switch both memories share (``poses="given"`` or
``"dead_reckon"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from infworld.data.action_schema import UNCERTAIN
from infworld.errors import MemoryConfigError
from infworld.memory.geometry import wrap_degrees

POSE_MODES = ("given", "dead_reckon")


@dataclass
class DeadReckonConfig:
    """Motion per action step (environment units / degrees), measured on ViZDoom ``data/doom-train``.

    Measured (60 episodes, 23,209 steps, frame_skip 4; every step's displacement expressed in the
    camera frame of its start heading, as the action labeler does)::

        python - <<'EOF'
        import numpy as np
        from infworld.data.episode import list_episodes, read_episode
        from infworld.data.action_schema import decode_move, decode_view
        F = Y = P = nf = ny = npi = 0
        for path in list_episodes("data/doom-train"):
            ep = read_episode(path); q = ep.pose.astype(np.float64)
            d = q[1:, :2] - q[:-1, :2]; psi = np.deg2rad(q[:-1, 3])
            f, _, _ = decode_move(ep.move); y, p, _ = decode_view(ep.view)
            F += (d[:, 0] * np.cos(psi) + d[:, 1] * np.sin(psi)).sum(); nf += (f != 0).sum()
            Y += (-((q[1:, 3] - q[:-1, 3] + 180) % 360 - 180) * y).sum(); ny += (y != 0).sum()
            P += ((q[1:, 4] - q[:-1, 4]) * p).sum(); npi += (p != 0).sum()
        print(F / nf, Y / ny, P / npi)   # -> 25.31 13.10 9.86
        EOF

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


class DeadReckoner:
    """Integrate unified ``move``/``view`` action ids into poses (x, y, z, yaw_deg, pitch_deg)."""

    def __init__(self, config: DeadReckonConfig | None = None):
        self.config = config or DeadReckonConfig()

    def integrate(self, actions: dict[str, torch.Tensor], start: torch.Tensor) -> torch.Tensor:
        """Poses (B, n, 5) reached by ``actions`` {move, view: (B, n)} from ``start`` (B, 5).

        ``actions[:, j]`` is the transition into pose ``j`` (the engine's per-frame alignment: a
        frame's action is the one that led into it), so ``out[:, 0]`` is ``start`` moved by action 0.
        Each step translates along the heading *before* the step, then turns (the labeler's
        convention). Null (-1) and uncertain (9) ids, and a missing field, mean no motion.
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


class PoseTracker:
    """The poses of frames written to a pose-based memory (``mode`` "given" or "dead_reckon").

    "given": poses come with every write (the engine insists, :attr:`needs_poses`); reads use the
    engine's current pose. "dead_reckon": poses are integrated from the written actions, starting at
    the origin at :meth:`reset`; reads use the integrated pose of the last written frame.
    """

    def __init__(self, mode: str, strategy: str, reckoner: DeadReckoner | None = None):
        if mode not in POSE_MODES:
            raise MemoryConfigError(f"memory {strategy!r}: poses must be one of {list(POSE_MODES)}, "
                                    f"got {mode!r}")
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
