"""What happened in a recorded Crafter trajectory: action effects and world-state returns.

The crafter-v1 benchmark (infworld/bench/crafter_bench.py) asks two questions of a world model,
both at moments found here on the *real* game's records (semantic map, inventory, pose), so the
real game answers them 100% by construction:

* **action effects**: at a transition t whose interaction really changed something, does the
  model's next frame show it? ``collect`` (``do`` raised an inventory count: wood from a tree,
  stone with a pickaxe, a sapling from grass), ``make`` (a tool count rose) and ``place`` (the cell
  in front became the placed material);
* **world-state recall**: a cell changed at frame c (a table placed, a stone mined to path, a tree
  cut to grass), the agent walked until the cell was out of view and out of the local window
  (not shown in the ``window`` frames before the return), then came back at frame r; does the
  model still render the change? (WorldScape's "the world persists" claim; VRAG's revisit
  protocol, arXiv 2505.21996, Sec. 5, asked of state rather than of views.)

Cells are (col, row) on the semantic map (row 0 at the top of the screen, see envs/crafter.py); the
9 x 7 local view puts the player at screen cell (row 3, col 4).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from infworld.envs.craft_policy import SEMANTIC, VIEW_HALF, changed_cells, facing, in_view, player_cell
from infworld.errors import DataError

# Inventory counts a "do" may raise (drink/food/energy are refilled by keep_alive: never effects).
COLLECTED = ("sapling", "wood", "stone", "coal", "iron", "diamond")
TOOLS = ("wood_pickaxe", "stone_pickaxe", "iron_pickaxe", "wood_sword", "stone_sword", "iron_sword")


@dataclass(frozen=True)
class Effect:
    """Interaction ``action`` at transition ``t`` (frame t -> t + 1) really did ``kind``:
    ``collect`` / ``make`` raised inventory ``key`` to ``count``; ``place`` turned the cell in front,
    screen ``(row, col)``, into semantic id ``material``."""

    t: int
    action: str
    kind: str
    key: str = ""
    count: int = 0
    screen: tuple[int, int] = (0, 0)
    material: int = 0


@dataclass(frozen=True)
class Recall:
    """Cell (col, row) changed from ``old`` to ``new`` at frame ``change``; left the view at frame
    ``left``; is in view again at frame ``back`` (at screen ``(row, col)``) after at least ``window``
    frames without it, still ``new`` in the real game."""

    change: int
    left: int
    back: int
    cell: tuple[int, int]
    old: int
    new: int
    screen: tuple[int, int]

    @property
    def gap(self) -> int:
        return self.back - self.change

    def to_dict(self) -> dict:
        return asdict(self) | {"gap": self.gap}


def screen_cell(cell: tuple[int, int], player: tuple[int, int]) -> tuple[int, int] | None:
    """(row, col) in the 7 x 9 local view where world ``cell`` (col, row) shows, or None."""
    if not in_view(cell, player):
        return None
    return cell[1] - player[1] + VIEW_HALF[1], cell[0] - player[0] + VIEW_HALF[0]


def _check(semantic: np.ndarray, pose: np.ndarray) -> None:
    if semantic.ndim != 3 or pose.ndim != 2 or pose.shape[1] != 5 or len(pose) != len(semantic):
        raise DataError(f"expected semantic (T, area_h, area_w) and pose (T, 5) of one length, got "
                        f"{semantic.shape} and {pose.shape}", field="extra_semantic")


def find_effects(interact: np.ndarray, vocab: list[str], inventory: np.ndarray, semantic: np.ndarray,
                 pose: np.ndarray, inventory_keys: list[str]) -> list[Effect]:
    """Action effects the real game showed: ``interact`` (T-1,) ids into ``vocab``; ``inventory``
    (T, K); ``semantic`` (T, area_h, area_w); ``pose`` (T, 5)."""
    _check(semantic, pose)
    if inventory.ndim != 2 or len(inventory) != len(semantic) or inventory.shape[1] != len(inventory_keys):
        raise DataError(f"expected inventory (T, {len(inventory_keys)}), got {inventory.shape}",
                        field="extra_inventory")
    area_h = semantic.shape[1]
    out: list[Effect] = []
    for t in np.nonzero(interact)[0]:
        t = int(t)
        action = vocab[int(interact[t])]
        rise = inventory[t + 1].astype(int) - inventory[t].astype(int)  # (K,)
        if action == "do" or action.startswith("make_"):
            keys = COLLECTED if action == "do" else TOOLS
            up = [k for k in keys if rise[inventory_keys.index(k)] > 0]
            if up:
                k = up[0]
                out.append(Effect(t, action, "collect" if action == "do" else "make", key=k,
                                  count=int(inventory[t + 1][inventory_keys.index(k)])))
        elif action.startswith("place_"):
            me = player_cell(pose[t], area_h)
            d = facing(pose[t])
            front = (me[0] + d[0], me[1] + d[1])
            if not (0 <= front[1] < area_h and 0 <= front[0] < semantic.shape[2]):
                continue
            item = SEMANTIC[action[len("place_"):]]
            if semantic[t, front[1], front[0]] != item and semantic[t + 1, front[1], front[0]] == item:
                scr = screen_cell(front, me)
                if scr is not None:
                    out.append(Effect(t, action, "place", screen=scr, material=int(item)))
    return out


def find_recalls(semantic: np.ndarray, pose: np.ndarray, window: int = 16, min_gap: int = 20,
                 max_gap: int = 200) -> list[Recall]:
    """World-state returns (see the module docstring), at most one per changed cell and change.

    ``window``: the return frame must not have shown the cell in the ``window`` frames before it
    (the model's local window, so only a memory can carry the change); gaps ``back - change`` in
    ``[min_gap, max_gap]``."""
    _check(semantic, pose)
    area_h = semantic.shape[1]
    players = [player_cell(p, area_h) for p in pose]
    out: list[Recall] = []
    for c in range(1, len(semantic)):
        for col, row, old, new in changed_cells(semantic[c - 1], semantic[c]):
            cell = (col, row)
            seen = np.array([in_view(cell, p) for p in players])  # (T,)
            left = next((t for t in range(c + 1, len(seen)) if not seen[t]), None)
            if left is None:
                continue
            for back in range(left + 1, min(c + max_gap, len(seen) - 1) + 1):
                if semantic[back, row, col] != new:
                    break  # changed again (or something stands on it): not a clean return
                if seen[back] and back - c >= min_gap and not seen[max(back - window, 0): back].any():
                    out.append(Recall(c, left, back, cell, int(old), int(new),
                                      screen_cell(cell, players[back])))
                    break
                if seen[back]:
                    break  # back in view too early: the window still held it
    return out
