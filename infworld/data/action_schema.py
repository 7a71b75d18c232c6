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

from typing import Any

import numpy as np

from infworld.errors import DataError

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


def check_action_ids(ids: Any, size: int, field: str, path: str | None = None, whose: str = "") -> np.ndarray:
    """``ids`` (one id or an array) as int64 once every id is an integer in ``0..size - 1``.

    The one action-id range check (episodes, dataset statistics, the rollout CLI, play sessions):
    DataError naming ``field`` (and ``path``) otherwise. ``whose`` says whose range it is, e.g.
    "the model's". Booleans, floats and text are not ids (a JSON ``true`` or ``"7"`` is refused).
    """
    a = np.asarray(ids)
    hi = size - 1
    where = f" ({whose} range)" if whose else ""
    if a.dtype.kind not in "iu":
        shown = repr(ids) if a.ndim == 0 else f"{a.dtype} values"
        raise DataError(f"ids must be integers in 0..{hi}{where}, got {shown}", path=path, field=field)
    if a.size and (a.min() < 0 or a.max() > hi):
        got = f"{int(a)}" if a.ndim == 0 else f"range {int(a.min())}..{int(a.max())}"
        raise DataError(f"ids must be in 0..{hi}{where}, got {got}", path=path, field=field)
    return a.astype(np.int64)


def _generic(vocab: list[str]) -> bool:
    """An imported dataset's placeholder names ("none", "interact_1", ...), which name no game."""
    return all(v == "none" or v.startswith("interact_") or v.isdigit() for v in vocab)


def describe_action_space(vocab: list[str], env: str | None = None) -> str:
    """``"crafter's action space (13 interact ids: none, do, ...)"`` for messages: the game, when
    known (given, or recognised by its vocabulary), and the ids."""
    from infworld.envs.registry import game_of_vocab

    env = env or game_of_vocab(vocab)
    whose = f"{env}'s" if env else "an"
    names = ", ".join(vocab[:8]) + (", ..." if len(vocab) > 8 else "")
    return f"{whose} action space ({len(vocab)} interact ids: {names})"


def check_action_space(model_vocab: Any, data_vocab: Any, data_env: str | None = None,
                       path: str | None = None, model: str = "the model") -> None:
    """DataError when actions recorded with one interaction vocabulary meet a model trained on
    another (Crafter actions given to a Doom model and the reverse): the ids would be read as other
    actions. Placeholder vocabularies of imported data (``interact_1``...) only need equal length;
    a side that does not say (None) is not checked."""
    if not model_vocab or not data_vocab:
        return
    m, d = [str(v) for v in model_vocab], [str(v) for v in data_vocab]
    same = len(m) == len(d) and (m == d or _generic(m) or _generic(d))
    if not same:
        raise DataError(f"the actions are in {describe_action_space(d, data_env)} but {model} was trained "
                        f"on {describe_action_space(m)}", path=path, field="interact_vocab")
