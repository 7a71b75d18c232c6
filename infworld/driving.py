"""Driving the rollout engine with unified actions: shared by the play session and the gymnasium env.

A player (a browser tab, an agent behind ``gymnasium``) sends one (move, view, interact) id triple
per frame and has no dataset at hand: no camera poses, no recorded actions. Everything needed to
turn that into :class:`~infworld.world.WorldModel` calls lives here, so the play session
(serve/session.py) and the gymnasium adapter (gym_env.py) drive the one engine the same way
without either depending on the other:

* :func:`load_world` loads an export with pose-based memories switched to dead-reckoned poses;
* :func:`accepted_actions` / :func:`check_id`: the ids a player may send (move and view 0..8: the
  model's tables also hold 9 = "uncertain", a training label no key produces);
* :class:`PoseTrack`: the dead-reckoned camera pose when the memory still asks for poses;
* :func:`memory_fill` / :func:`memory_sources`: what the memory holds and read, for reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from infworld.data.action_schema import check_action_ids
from infworld.errors import ConfigError, DataError
from infworld.memory.deadreckon import DeadReckoner
from infworld.world import WorldModel

NUM_TRISTATE = 9  # move / view ids a player may send: 0..8 (9 = "uncertain" is a training label only)


def load_world(model: str, memory: str = "window", memory_cfg: Mapping[str, Any] | None = None,
               device: str = "cpu", **overrides: Any) -> WorldModel:
    """An exported world model (name or folder) with memory ``memory``, ready to be played.

    Memories that accept ``poses="dead_reckon"`` get it (nobody has ground-truth poses while playing),
    and the finished frames' cache pass is folded into the next step (``fold_commit``, unless
    overridden: it saves one DiT call a step; pending_commit.py); ``overrides`` are
    :meth:`WorldModel.from_pretrained` settings (steps, name, chunk, seed...).
    """
    from infworld.memory.registry import memory_class

    overrides.setdefault("fold_commit", True)  # one frame per step: the commit pass rides along
    settings = dict(memory_cfg or {})
    mcls = memory_class(memory)
    if mcls is not None and "poses" in mcls.config_class.keys():
        settings.setdefault("poses", "dead_reckon")
    world = WorldModel.from_pretrained(model, memory=memory, memory_cfg=settings or None,
                                       map_location=device, **overrides)
    check_playable(world)
    return world


def check_playable(world: WorldModel) -> None:
    """ConfigError unless ``world`` is driven by discrete move/view/interact ids only."""
    continuous = world.dit.cfg.actions.continuous
    if continuous:
        raise ConfigError(f"play drives the discrete move/view/interact actions only; this model also "
                          f"has continuous action fields {sorted(continuous)}")


def accepted_actions(world: WorldModel) -> dict[str, int]:
    """How many ids a player may send per field (ids 0..n-1); see the module docstring."""
    sizes = world.dit.cfg.actions.sizes()
    return {"move": min(NUM_TRISTATE, sizes["move"]), "view": min(NUM_TRISTATE, sizes["view"]),
            "interact": int(sizes["interact"])}


def check_id(name: str, value: Any, hi: int) -> int:
    """One id from a client (JSON, an agent): an integer 0..hi, else DataError naming the field."""
    if np.ndim(value) != 0:
        raise DataError(f"expected one integer 0..{hi}, got {value!r}", field=name)
    return int(check_action_ids(value, hi + 1, name))


class PoseTrack:
    """The dead-reckoned camera pose of a rollout, for memories that ask for poses while playing.

    Uses the memories' own :class:`~infworld.memory.deadreckon.DeadReckoner` (and step sizes), so
    both pose sources agree. ``pose`` is the newest frame's pose (5,), None before :meth:`context`.
    """

    def __init__(self) -> None:
        self.reckoner = DeadReckoner()
        self.pose: np.ndarray | None = None

    def context(self, poses: np.ndarray, actions: Mapping[str, np.ndarray]) -> np.ndarray:
        """Poses (ctx, 5) of a starting context: the recorded ones when all are known, else
        dead-reckoned from the origin along the context's actions (ctx - 1 per field)."""
        if np.isfinite(poses).all():
            out = poses.astype(np.float32)
        else:
            origin = np.zeros(5, np.float32)
            n = poses.shape[0] - 1  # transitions between the context frames
            out = np.concatenate([origin[None], self.reckoner.track(origin, actions["move"][:n],
                                                                    actions["view"][:n])])
        self.pose = out[-1].copy()
        return out

    def step(self, moves: list[int], views: list[int]) -> np.ndarray:
        """Poses (n, 5) of the frames ``moves`` / ``views`` lead to (one per action)."""
        track = self.reckoner.track(self.pose, moves, views)  # (n, 5)
        self.pose = track[-1].copy()
        return track


def memory_fill(world: WorldModel) -> tuple[int, int]:
    """(frames the memory holds, how many it can hold). A strategy may expose ``held()``; otherwise a
    frame store's filled slots and capacity, the window's span, or the size of the last context it
    returned against its budget (the most frames a read returns)."""
    mem = world.memory
    capacity = int(mem.budget)
    store = getattr(mem, "store", None)
    if store is not None and hasattr(store, "capacity"):
        capacity = int(store.capacity)
    held = getattr(mem, "held", None)
    if callable(held):
        held = held()
    if held is None:
        if store is not None and hasattr(store, "count"):
            c = store.count()
            held = int(c[0]) if c.numel() else 0
        elif mem.name == "window":
            held = min(world.index, capacity)
        else:
            ctx = world.last_context
            held = ctx.num_frames if ctx is not None else 0
    return int(held), capacity


def memory_sources(world: WorldModel) -> list[int]:
    """Rollout frame indices the memory returned for the last chunk (-1 = a compressed summary)."""
    ctx = world.last_context
    if ctx is None or ctx.sources is None or not ctx.num_frames:
        return []
    src = ctx.sources[0]
    if ctx.valid is not None:
        src = src[ctx.valid[0].to(src.device)]
    return [int(s) for s in src.tolist()]


def memory_status(world: WorldModel) -> dict[str, Any]:
    """Deterministic memory report of one rollout: name, held, capacity, budget, sources."""
    held, capacity = memory_fill(world)
    return {"memory": world.memory.name, "held": held, "capacity": capacity,
            "budget": int(world.memory.budget), "sources": memory_sources(world)}
