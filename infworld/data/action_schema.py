"""The unified action schema (Infinite-World, arXiv 2602.02393, Sec. 3.3).

Every frame transition carries three ids:

* ``move``: ``(forward + 1) * 3 + (right + 1)`` with forward, right in {-1, 0, +1}; 9 = uncertain.
  forward +1 is toward where the camera looks, right +1 is a strafe to the right.
* ``view``: ``(yaw + 1) * 3 + (pitch + 1)`` with yaw, pitch in {-1, 0, +1}; 9 = uncertain.
  yaw +1 turns right (clockwise seen from above), pitch +1 looks up.
* ``interact``: an environment-specific id, 0 = none; its vocabulary is stored in the dataset
  metadata (``DatasetMeta.interact_vocab``).

Action ``t`` is what happens between frame ``t`` and frame ``t + 1``, so an episode of ``T`` frames
has ``T - 1`` actions. See docs/actions.md.
"""

from __future__ import annotations

import numpy as np

UNCERTAIN = 9
NUM_MOVE = 10  # 3 x 3 tri-states + uncertain
NUM_VIEW = 10

MOVE_NONE = 4  # forward 0, right 0
VIEW_NONE = 4  # yaw 0, pitch 0


def encode_pair(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Encode tri-state pairs ``(a, b)`` in {-1, 0, 1}^2 into ids 0..8 as ``(a + 1) * 3 + (b + 1)``."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if np.any(np.abs(a) > 1) or np.any(np.abs(b) > 1):
        raise ValueError("tri-state components must be in {-1, 0, 1}")
    return (a + 1) * 3 + (b + 1)


def decode_pair(ids: np.ndarray | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode ids 0..9 into ``(a, b, uncertain)``; uncertain entries decode to ``(0, 0, True)``."""
    ids = np.asarray(ids, dtype=np.int64)
    if np.any((ids < 0) | (ids > UNCERTAIN)):
        raise ValueError(f"action ids must be in 0..{UNCERTAIN}")
    uncertain = ids == UNCERTAIN
    safe = np.where(uncertain, MOVE_NONE, ids)
    return safe // 3 - 1, safe % 3 - 1, uncertain


def encode_move(forward: np.ndarray | int, right: np.ndarray | int) -> np.ndarray:
    """``move_id = (forward + 1) * 3 + (right + 1)``."""
    return encode_pair(forward, right)


def encode_view(yaw: np.ndarray | int, pitch: np.ndarray | int) -> np.ndarray:
    """``view_id = (yaw + 1) * 3 + (pitch + 1)``; yaw +1 = turn right, pitch +1 = look up."""
    return encode_pair(yaw, pitch)


decode_move = decode_pair
decode_view = decode_pair
