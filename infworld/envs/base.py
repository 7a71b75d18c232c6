"""The environment interface every data source implements.

An environment is driven by a *unified command* (the same five tri-state / id fields for every
game) and answers with a frame at the dataset size, the ground-truth pose, an optional depth
buffer, the raw inputs it really sent to the game, and per-environment extras. The collector
(:mod:`infworld.envs.collect`) turns a run of these into one :class:`infworld.data.episode.Episode`
without knowing which game produced it.

The command fields follow the unified action schema of Infinite-World (arXiv 2602.02393, Sec. 3.3;
see :mod:`infworld.data.action_schema`): ``forward`` +1 = toward where the camera looks, ``right``
+1 = strafe right, ``yaw`` +1 = turn right (clockwise seen from above), ``pitch`` +1 = look up,
``interact`` = an id into the environment's ``interact_vocab`` (0 = none).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from infworld.data.action_schema import encode_move, encode_view
from infworld.data.episode import DatasetMeta
from infworld.errors import EnvError

_TRI = (-1, 0, 1)


@dataclass(frozen=True)
class Command:
    """One unified command: what the agent asks for during one environment step."""

    forward: int = 0
    right: int = 0
    yaw: int = 0
    pitch: int = 0
    interact: int = 0

    def validate(self, num_interact: int) -> None:
        """Raise EnvError unless every axis is in {-1, 0, 1} and ``interact`` < ``num_interact``."""
        for name in ("forward", "right", "yaw", "pitch"):
            value = getattr(self, name)
            if value not in _TRI:
                raise EnvError(f"command field {name!r} must be -1, 0 or 1, got {value!r}")
        if not 0 <= self.interact < num_interact:
            raise EnvError(f"command field 'interact' must be in 0..{num_interact - 1}, "
                           f"got {self.interact!r}")

    @property
    def move_id(self) -> int:
        """Unified ``move`` id 0..8 (action_schema.encode_move)."""
        return int(encode_move(self.forward, self.right))

    @property
    def view_id(self) -> int:
        """Unified ``view`` id 0..8 (action_schema.encode_view)."""
        return int(encode_view(self.yaw, self.pitch))

    def replace(self, **changes: int) -> Command:
        return dataclasses.replace(self, **changes)


NOOP = Command()


@dataclass
class Observation:
    """What the environment shows after a reset or a step.

    frame:  (H, W, 3) uint8 RGB at the dataset size
    pose:   (5,) float32 [x, y, z, yaw_deg, pitch_deg]; yaw CCW from +x, pitch + = looking up
    depth:  (H, W) uint8 depth buffer at the dataset size, or None if the game has none
    extras: name -> array of a fixed per-frame shape (stacked to (T, ...) episode extras)
    """

    frame: np.ndarray
    pose: np.ndarray
    depth: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class StepResult:
    """The outcome of one :meth:`Env.step`.

    ``command`` is the command that was really applied (an environment may have to drop part of
    the request, e.g. Crafter cannot move and interact in one step) and is what gets recorded.
    ``buttons`` (B,) float32 are the raw game inputs sent, in the order of ``EnvSpec.button_names``.
    ``obs`` is None when the game ended without a last frame (ViZDoom gives no state after the end).
    """

    obs: Observation | None
    command: Command
    buttons: np.ndarray
    done: bool
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EnvSpec:
    """Static facts about an environment instance that policies and the collector need.

    ``grid``: movement is in fixed screen directions on a grid (Crafter) instead of relative to a
    turning camera; ``yaw``/``pitch`` commands are then ignored. ``fps``: the game clock in tics per
    second as in ``DatasetMeta.fps`` (a step lasts ``frame_skip`` tics). ``move_scale``: roughly how far one
    step of ``forward`` moves, in pose units (policies derive stall and waypoint radii from it).
    ``turn_deg``: roughly how many degrees one ``yaw`` step turns at full speed (0 if it cannot).
    ``interact_weights``: how often exploration policies should pick each interact id (index 0
    unused), so that, say, Crafter agents "do" more than they craft. ``depth_scale``: world units
    per depth-buffer value (0 without depth); ``hfov_deg``: horizontal field of view of the frame.
    """

    name: str
    scenario: str
    size: tuple[int, int]
    interact_vocab: tuple[str, ...]
    button_names: tuple[str, ...]
    has_depth: bool
    has_pitch: bool
    grid: bool
    frame_skip: int
    fps: float
    move_scale: float
    turn_deg: float
    interact_weights: tuple[float, ...] = ()
    depth_scale: float = 0.0
    hfov_deg: float = 90.0

    def weights(self) -> np.ndarray:
        """Normalised pick probabilities over interact ids 1..N-1 (uniform if none given)."""
        n = len(self.interact_vocab) - 1
        w = np.asarray(self.interact_weights[1:] if self.interact_weights else np.ones(n), dtype=np.float64)
        if w.shape != (n,) or w.sum() <= 0:
            raise EnvError(f"interact_weights must give {n + 1} non-negative values with a positive sum, "
                           f"got {self.interact_weights!r}")
        return w / w.sum()


class Env(ABC):
    """A seeded, headless game driven by unified commands. Use as a context manager or call close()."""

    spec: EnvSpec

    @abstractmethod
    def reset(self, seed: int) -> Observation:
        """Start a new episode; the same seed and the same commands give the same episode."""

    @abstractmethod
    def step(self, command: Command) -> StepResult:
        """Apply ``command`` for one environment step (``frame_skip`` game tics)."""

    @abstractmethod
    def dataset_meta(self, policy: str | None = None, extra: dict[str, Any] | None = None) -> DatasetMeta:
        """The :class:`DatasetMeta` describing what this environment records."""

    def close(self) -> None:  # noqa: B027 - optional hook: most envs hold nothing to release
        """Release the game (idempotent)."""

    def __enter__(self) -> Env:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
