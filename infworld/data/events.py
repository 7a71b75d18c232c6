"""Event-dense clip sampling: oversample the rare transitions where an interaction changed the world.

A world model that must show what an action did (Crafter: ``do`` on a tree adds wood, ``place_table``
puts a table in front, ``make_*`` adds a tool) sees such transitions rarely in uniform clips: on
data/crafter-craft 5.4% of transitions raise an inventory count. ``data.event_share`` draws that
share of the training clips from those whose last frames hold an *event*, and the rest uniformly,
the way revisit-dense sampling (Infinite-World, arXiv 2602.02393, Sec. 3.4) oversamples returns.

An event is a transition t -> t + 1 whose interact id is not 0 ("none") and after which a recorded
per-frame extra (``data.event_extra``, e.g. Crafter's ``inventory``) differs from before: an
interaction with a recorded effect. Nothing about the environment is hard-coded beyond the extra's
name, so any dataset that records a state vector can use it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from infworld.data.episode import EXTRA_PREFIX
from infworld.data.stats import load_arrays
from infworld.errors import DataError


def event_transitions(interact: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """Transition indices t (frame t -> t + 1) with an interaction whose ``extra`` changed.

    interact: (T - 1,) interact ids; extra: (T, ...) the recorded state per frame. Returns (E,) ints.
    """
    changed = (extra[1:] != extra[:-1]).reshape(len(extra) - 1, -1).any(axis=1)  # (T - 1,)
    return np.nonzero((interact != 0) & changed)[0]


def event_starts(t_events: np.ndarray, length: int, clip_len: int, tail: int) -> np.ndarray:
    """Clip starts j (stride 1) whose last ``tail`` frames hold the frame after an event.

    The frame t + 1 after event t is in the tail of the clip at j iff
    j + clip_len - tail <= t + 1 <= j + clip_len - 1, and a clip must fit: 0 <= j <= length - clip_len.
    """
    if not len(t_events):
        return np.zeros(0, np.int64)
    lo = np.maximum(t_events + 2 - clip_len, 0)  # (E,)
    hi = np.minimum(t_events + 1 - clip_len + tail, length - clip_len)  # (E,)
    return covered(lo, hi, length - clip_len + 1)


def covered(lo: np.ndarray, hi: np.ndarray, n: int) -> np.ndarray:
    """The sorted integers of 0..n-1 inside at least one range [lo[i], hi[i]] (empty where lo > hi):
    the clip starts that hold an event or a revisit, from one range of starts per occurrence."""
    keep = lo <= hi
    diff = np.zeros(n + 1, np.int64)
    np.add.at(diff, lo[keep], 1)
    np.add.at(diff, hi[keep] + 1, -1)
    return np.nonzero(np.cumsum(diff)[:n] > 0)[0]


def find_event_starts(paths: list[Path], episodes: list[int], lengths: dict[int, int], clip_len: int,
                      tail: int, extra: str) -> dict[int, np.ndarray]:
    """Per episode index, the sorted clip starts that hold an event in their last ``tail`` frames."""
    key = EXTRA_PREFIX + extra
    out: dict[int, np.ndarray] = {}
    for e in episodes:
        arrays = load_arrays(paths[e], ("interact", key))  # frames stay compressed
        if key not in arrays:
            raise DataError(f"data.event_extra: the episode records no extra {extra!r} (an array "
                            f"{key!r} in the npz); name a recorded per-frame extra, e.g. 'inventory' "
                            "for Crafter", path=str(paths[e]), field="event_extra")
        state, interact = arrays[key], arrays["interact"]
        if len(state) != lengths[e] or len(interact) != lengths[e] - 1:
            raise DataError(f"extra {extra!r} has {len(state)} rows and interact {len(interact)} for an "
                            f"episode of {lengths[e]} frames", path=str(paths[e]), field=key)
        starts = event_starts(event_transitions(interact, state), lengths[e], clip_len, tail)
        if len(starts):
            out[e] = starts
    return out
