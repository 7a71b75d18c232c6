"""Where each Crafter world cell lands in a frame, and how crafter draws it: the geometry half of the
world-state probe.

It follows the issue "world-state probe": to test WorldScape's claim that a world model keeps what
the player *changed* (a tree cut, a table placed), and to evaluate memory VRAG-style with a learned
judge, the bench has to ask "what does this frame show at world cell (x, y)?". This module answers
the "where" part exactly as crafter renders (crafter/env.py ``Env.render``, crafter/engine.py
``LocalView`` and ``ItemView``); crafter_probe.py answers the "what" part with a small CNN.

A frame of size (H, W) with crafter view (vx, vy) (default 9 x 9) is, from the top-left corner
``border`` = ((H - uy * vy) // 2, (W - ux * vx) // 2) with ``unit`` = (uy, ux) = (H // vy, W // vx)
pixels per cell (64 // 9 = 7):

* the *local view*: ``rows`` = vy - item_rows by ``cols`` = vx cells centred on the player, as
  crafter's ``LocalView`` (its ``offset = grid // 2``): screen cell (r, c) shows world column
  px + c - cols // 2 and world row prow + r - rows // 2, so the player is at screen cell ``offset``
  = (rows // 2, cols // 2); cells beyond the world edge are drawn flat grey;
* the *item view* below it: ``item_rows`` = ceil(n_items / vx) rows of ``cols`` item slots; item k
  sits at slot (k // vx, k % vx) and, when its count is >= 1, shows its icon and the count's digit.

Coordinates: pose (x, y) with x = world column and y = area_h - 1 - row (y grows up the screen);
``semantic`` maps are in screen orientation, ``semantic[row, x]`` (see infworld/envs/crafter.py).
Cell labels are the dataset's semantic ids (0 = none, 1.. materials, then creatures) plus one more
class, ``outside`` = max id + 1, for cells beyond the world edge.

:class:`CrafterPainter` draws cells and item bars with crafter's own textures and lighting (day
tint, night noise and vignette), so training can show every material, creature and item count at
every daylight, also those that exploration rarely meets (tables, furnaces, diamonds, zombies).
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infworld.data.episode import DatasetMeta, list_episodes, read_episode, read_meta
from infworld.errors import ConfigError, DataError

Box = tuple[int, int, int, int]  # (top, left, bottom, right) in pixels, bottom/right exclusive
MAX_COUNT = 9  # the item bar draws counts 1..9 (0 = empty slot)


@dataclass(frozen=True)
class CrafterGrid:
    """Frame geometry of a Crafter dataset: ``size`` (H, W) of the frame, crafter's ``view``
    (cols, rows) in cells including the item rows, the world ``area`` (width, height) in cells,
    ``n_items`` inventory slots, and ``outside``, the class id of cells beyond the world edge."""

    size: tuple[int, int] = (64, 64)
    view: tuple[int, int] = (9, 9)
    area: tuple[int, int] = (64, 64)
    n_items: int = 16
    outside: int = 19

    def __post_init__(self) -> None:
        for name in ("size", "view", "area"):
            value = getattr(self, name)
            if len(value) != 2 or min(value) < 1:
                raise DataError(f"expected two positive ints, got {value!r}", field=f"crafter grid {name}")
            object.__setattr__(self, name, (int(value[0]), int(value[1])))
        if min(self.unit) < 1 or self.rows < 1:
            raise DataError(f"frame size {self.size} is too small for crafter view {self.view} with "
                            f"{self.n_items} items", field="size")

    # -- derived sizes --------------------------------------------------------------------------

    @property
    def unit(self) -> tuple[int, int]:
        """Pixels per cell (uy, ux), as crafter's ``size // view``."""
        return self.size[0] // self.view[1], self.size[1] // self.view[0]

    @property
    def border(self) -> tuple[int, int]:
        """Pixels (top, left) before the first cell, as crafter's ``(size - unit * view) // 2``."""
        (uy, ux), (h, w) = self.unit, self.size
        return (h - uy * self.view[1]) // 2, (w - ux * self.view[0]) // 2

    @property
    def item_rows(self) -> int:
        return math.ceil(self.n_items / self.view[0])

    @property
    def rows(self) -> int:
        """Rows of world cells in the local view (7 for the default 9 x 9 view)."""
        return self.view[1] - self.item_rows

    @property
    def cols(self) -> int:
        return self.view[0]

    @property
    def offset(self) -> tuple[int, int]:
        """Screen cell (row, col) of the player: crafter's ``grid // 2``."""
        return self.rows // 2, self.cols // 2

    @property
    def n_classes(self) -> int:
        return self.outside + 1

    # -- pixel boxes ----------------------------------------------------------------------------

    def cell_box(self, row: int, col: int) -> Box:
        """Pixel box of local-view cell (row, col)."""
        (uy, ux), (by, bx) = self.unit, self.border
        return by + row * uy, bx + col * ux, by + (row + 1) * uy, bx + (col + 1) * ux

    @property
    def local_box(self) -> Box:
        """Pixel box of the whole local view (rows * uy, cols * ux pixels)."""
        return self.cell_box(0, 0)[:2] + self.cell_box(self.rows - 1, self.cols - 1)[2:]

    def item_box(self, k: int) -> Box:
        """Pixel box of inventory slot ``k`` (crafter's ``ItemView`` order)."""
        return self.cell_box(self.rows + k // self.view[0], k % self.view[0])

    @property
    def item_band(self) -> Box:
        """Pixel box of the whole item view (item_rows * uy, cols * ux pixels)."""
        return self.cell_box(self.rows, 0)[:2] + self.cell_box(self.view[1] - 1, self.cols - 1)[2:]

    # -- world <-> screen -----------------------------------------------------------------------

    def cell_of(self, world_xy: tuple[int, int], player_pose: Any) -> tuple[int, int] | None:
        """Screen cell (row, col) showing world cell (x, y) when the player stands at ``player_pose``
        (x, y, ...), or None when it is out of view."""
        px, prow = self._player(player_pose)
        row = (self.area[1] - 1 - int(round(world_xy[1]))) - prow + self.offset[0]
        col = int(round(world_xy[0])) - px + self.offset[1]
        return (row, col) if 0 <= row < self.rows and 0 <= col < self.cols else None

    def world_of(self, cell: tuple[int, int], player_pose: Any) -> tuple[int, int] | None:
        """World cell (x, y) shown at screen cell (row, col), the inverse of :meth:`cell_of`; None
        when the cell is not in the local view or lies beyond the world edge (drawn grey)."""
        row, col = int(cell[0]), int(cell[1])
        if not (0 <= row < self.rows and 0 <= col < self.cols):
            return None
        px, prow = self._player(player_pose)
        x, wrow = px + col - self.offset[1], prow + row - self.offset[0]
        if not (0 <= x < self.area[0] and 0 <= wrow < self.area[1]):
            return None
        return x, self.area[1] - 1 - wrow

    def local_cells(self, semantic: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """Class id the frame shows at each local-view cell.

        semantic: (area_h, area_w) or (T, area_h, area_w) whole-world map, screen orientation
        pose:     (>=2,) or (T, >=2) player (x, y, ...)
        returns:  (rows, cols) or (T, rows, cols) int64; ``outside`` beyond the world edge
        """
        semantic, pose = np.asarray(semantic), np.asarray(pose)
        single = semantic.ndim == 2
        expected = (self.area[1], self.area[0])
        if semantic.ndim not in (2, 3) or tuple(semantic.shape[-2:]) != expected:
            raise DataError(f"expected (T, {expected[0]}, {expected[1]}) or {expected} (area_h, area_w) "
                            f"for crafter area {self.area}, got {semantic.shape}", field="semantic")
        sem = semantic[None] if single else semantic  # (T, area_h, area_w)
        pos = pose.reshape(1, -1) if single else pose  # (T, >=2)
        if pos.ndim != 2 or pos.shape[0] != sem.shape[0] or pos.shape[1] < 2:
            raise DataError(f"expected ({sem.shape[0]}, 5) poses for {sem.shape[0]} semantic maps, got "
                            f"{pose.shape}", field="pose")
        px = np.rint(pos[:, 0]).astype(np.int64)  # (T,)
        prow = self.area[1] - 1 - np.rint(pos[:, 1]).astype(np.int64)  # (T,)
        rows = prow[:, None] + np.arange(self.rows) - self.offset[0]  # (T, rows) world rows
        cols = px[:, None] + np.arange(self.cols) - self.offset[1]  # (T, cols) world columns
        inside = (((rows >= 0) & (rows < self.area[1]))[:, :, None]
                  & ((cols >= 0) & (cols < self.area[0]))[:, None])  # (T, rows, cols)
        t = np.arange(sem.shape[0])[:, None, None]
        out = sem[t, np.clip(rows, 0, self.area[1] - 1)[:, :, None],
                  np.clip(cols, 0, self.area[0] - 1)[:, None]]  # (T, rows, cols)
        out = np.where(inside, out.astype(np.int64), self.outside)  # (T, rows, cols)
        return out[0] if single else out

    def _player(self, pose: Any) -> tuple[int, int]:
        """(column, crafter row) of the player from a pose (x, y, ...)."""
        x, y = float(pose[0]), float(pose[1])
        return int(round(x)), self.area[1] - 1 - int(round(y))

    # -- (de)serialisation ----------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CrafterGrid:
        return cls(size=tuple(d["size"]), view=tuple(d["view"]), area=tuple(d["area"]),
                   n_items=int(d["n_items"]), outside=int(d["outside"]))

    @classmethod
    def from_meta(cls, meta: DatasetMeta, path: str | None = None) -> CrafterGrid:
        """The grid of a Crafter dataset's ``meta.json`` (``path`` names it in errors)."""
        if meta.env != "crafter":
            raise DataError(f"the crafter probe needs a Crafter dataset, this one is env {meta.env!r}",
                            path=path, field="env")
        crafter = meta.extra.get("crafter")
        if not isinstance(crafter, dict) or "view" not in crafter or "area" not in crafter:
            raise DataError("missing crafter settings {area, view} (collect with `infworld collect --env "
                            "crafter`)", path=path, field="extra.crafter")
        ids = semantic_ids(meta, path)
        keys = meta.extra.get("inventory_keys")
        if not isinstance(keys, list) or not keys:
            raise DataError("missing the list of inventory keys", path=path, field="extra.inventory_keys")
        return cls(size=tuple(meta.size), view=tuple(crafter["view"]), area=tuple(crafter["area"]),
                   n_items=len(keys), outside=max(ids.values()) + 1)


def semantic_ids(meta: DatasetMeta, path: str | None = None) -> dict[str, int]:
    """``meta.extra["semantic_ids"]`` (name -> id, ids >= 1), checked."""
    ids = meta.extra.get("semantic_ids")
    if not isinstance(ids, dict) or not ids or not all(isinstance(v, int) and v >= 1 for v in ids.values()):
        raise DataError(f"expected a map name -> id >= 1, got {ids!r}", path=path, field="extra.semantic_ids")
    return dict(ids)


def class_names(ids: dict[str, int], outside: int) -> list[str]:
    """Name of every class id 0..outside: "none" for 0 (and unused ids), "outside" last."""
    names = ["none"] * (outside + 1)
    for name, i in ids.items():
        names[i] = name
    names[outside] = "outside"
    return names


# ---------------------------------------------------------------------------------------------
# labelled frames from datasets


@dataclass
class ProbeData:
    """Frames and their targets from Crafter datasets: frames (N, H, W, 3) uint8, cells
    (N, rows, cols) int64, inventory (N, K) int64, daylight (N,) float32, episode (N,) int64."""

    grid: CrafterGrid
    classes: list[str]
    semantic_ids: dict[str, int]
    inventory_keys: list[str]
    frames: np.ndarray
    cells: np.ndarray
    inventory: np.ndarray
    daylight: np.ndarray
    episode: np.ndarray


def load_probe_data(data_dirs: list[str | os.PathLike] | str | os.PathLike) -> list[ProbeData]:
    """One ProbeData per episode of the Crafter datasets ``data_dirs`` (all must share one grid)."""
    dirs = [data_dirs] if isinstance(data_dirs, (str, os.PathLike)) else list(data_dirs)
    if not dirs:
        raise ConfigError("the crafter probe needs at least one dataset folder")
    out: list[ProbeData] = []
    first: tuple[CrafterGrid, str] | None = None
    for d in dirs:
        meta = read_meta(d)
        mpath = str(Path(d) / "meta.json")
        grid = CrafterGrid.from_meta(meta, path=mpath)
        if not list_episodes(d):
            raise DataError("no episodes", path=str(Path(d) / "episodes"))
        ids, keys = semantic_ids(meta, mpath), list(meta.extra["inventory_keys"])
        if first is not None and grid != first[0]:
            raise DataError(f"crafter grid {grid} differs from {first[0]} of {first[1]}", path=mpath)
        first = first or (grid, mpath)
        for p in list_episodes(d):
            ep = read_episode(p, meta=meta)
            t = len(ep)
            if ep.pose is None:
                raise DataError("the probe's labels need the player's pose", path=str(p), field="pose")
            for name, shape, dims in (("semantic", (t, grid.area[1], grid.area[0]), "T, area_h, area_w"),
                                      ("inventory", (t, grid.n_items), "T, K")):
                arr = ep.extras.get(name)
                if arr is None or tuple(arr.shape) != shape:
                    got = "it is missing" if arr is None else f"got {tuple(arr.shape)}"
                    raise DataError(f"expected shape {shape} ({dims}) for crafter area {grid.area}, "
                                    f"{grid.n_items} items and {t} frames; {got}", path=str(p),
                                    field=f"extra_{name}")
            day = ep.extras.get("daylight")
            out.append(ProbeData(
                grid=grid, classes=class_names(ids, grid.outside), semantic_ids=ids, inventory_keys=keys,
                frames=ep.frames, cells=grid.local_cells(ep.extras["semantic"], ep.pose),
                inventory=np.minimum(ep.extras["inventory"], MAX_COUNT).astype(np.int64),
                daylight=np.ones(t, np.float32) if day is None else day.astype(np.float32).reshape(t),
                episode=np.full(t, len(out), np.int64)))
    return out


def concat_probe_data(eps: list[ProbeData]) -> ProbeData:
    """All frames of ``eps`` as one ProbeData (grid and names of the first)."""
    return dataclasses.replace(eps[0], **{k: np.concatenate([getattr(e, k) for e in eps])
                                          for k in ("frames", "cells", "inventory", "daylight", "episode")})


# Creature textures and the materials they may stand on (crafter/objects.py ``texture``, ``walkable``).
CREATURES = {"cow": (("cow",), ("grass", "sand", "path")), "zombie": (("zombie",), ("grass", "sand", "path")),
             "skeleton": (("skeleton",), ("path",)), "plant": (("plant", "plant-ripe"), ("grass",)),
             "arrow": (("arrow-left", "arrow-right", "arrow-up", "arrow-down"),
                       ("grass", "sand", "path", "water", "lava"))}


class CrafterPainter:
    """Draws item bars and local-view cells as crafter does (needs the ``crafter`` package).

    ``classes`` names the class ids (see :func:`class_names`); every material name among them and
    the creatures of :data:`CREATURES` can be painted.
    """

    def __init__(self, grid: CrafterGrid, classes: list[str], seed: int = 0):
        from crafter import constants, engine

        self.grid, self.classes, self._engine = grid, classes, engine
        self.textures = engine.Textures(constants.root / "assets")
        self.materials = [i for i, n in enumerate(classes) if n in constants.materials and n != "none"]
        self.creatures = [i for i, n in enumerate(classes) if n in CREATURES]
        # crafter's LocalView lights the canvas with world.daylight and world.random: a stand-in world
        self._world = types.SimpleNamespace(area=grid.area, daylight=1.0, random=np.random.RandomState(seed))
        self._view = engine.LocalView(self._world, self.textures, [grid.cols, grid.rows])
        self._items = engine.ItemView(self.textures, [grid.cols, grid.item_rows])
        self._unit = np.array([grid.unit[1], grid.unit[0]])  # crafter's (x, y) order

    def item_band(self, keys: list[str], counts: np.ndarray) -> np.ndarray:
        """The item bar for ``counts`` (K,) of ``keys``: (item_rows * uy, cols * ux, 3) uint8."""
        band = self._items(dict(zip(keys, (int(c) for c in counts), strict=True)), self._unit)
        return band.transpose(1, 0, 2)  # crafter draws (x, y); frames are (row, col)

    def paint_cells(self, frame: np.ndarray, cells: list[tuple[int, int, int]], daylight: float,
                    rng: np.random.Generator) -> None:
        """Paint ``cells`` [(row, col, class id)] into ``frame`` (H, W, 3) in place, lit at
        ``daylight`` (night noise drawn fresh); a creature stands on a random walkable material."""
        (uy, ux), engine = self.grid.unit, self._engine
        canvas = np.zeros((self.grid.cols * ux, self.grid.rows * uy, 3), np.uint8) + 127  # (x, y) layout
        for row, col, cls in cells:
            name, pos = self.classes[cls], np.array([col * ux, row * uy])
            if name in CREATURES:
                textures, ground = CREATURES[name]
                engine._draw(canvas, pos, self.textures.get(str(rng.choice(ground)), self._unit))
                engine._draw_alpha(canvas, pos, self.textures.get(str(rng.choice(textures)), self._unit))
            else:
                engine._draw(canvas, pos, self.textures.get(name, self._unit))
        self._world.daylight = float(daylight)
        # crafter casts the lit float canvas to uint8 when it assembles the frame
        lit = self._view._light(canvas, float(daylight)).astype(np.uint8)  # (cols * ux, rows * uy, 3)
        lit = lit.transpose(1, 0, 2)  # (rows * uy, cols * ux, 3)
        by, bx = self.grid.border
        for row, col, _ in cells:
            t, l, b, r = self.grid.cell_box(row, col)
            frame[t:b, l:r] = lit[t - by: b - by, l - bx: r - bx]

    def random_item_bands(self, keys: list[str], n: int, rng: np.random.Generator
                          ) -> tuple[np.ndarray, np.ndarray]:
        """``n`` item bars (n, item_rows * uy, cols * ux, 3) uint8 and their counts (n, K) int64:
        each count is 0 with p 0.4, else uniform in 1..9."""
        counts = rng.integers(1, MAX_COUNT + 1, (n, len(keys))) * (rng.random((n, len(keys))) > 0.4)
        return np.stack([self.item_band(keys, c) for c in counts]), counts.astype(np.int64)

    def paint_random(self, frames: np.ndarray, cells: np.ndarray, daylight: np.ndarray, share: float,
                     most: int, rng: np.random.Generator) -> None:
        """Paint 1..``most`` random cells (any material or creature, never the player's cell) into a
        ``share`` of ``frames`` (B, H, W, 3), in place, lit at each frame's ``daylight`` (B,); the
        labels ``cells`` (B, rows, cols) are updated in place."""
        grid, kinds = self.grid, self.materials + self.creatures
        spots = np.delete(np.arange(grid.rows * grid.cols), grid.offset[0] * grid.cols + grid.offset[1])
        for i in np.flatnonzero(rng.random(len(frames)) < share):
            n = rng.integers(1, min(most, len(spots)) + 1)
            todo = [(int(s // grid.cols), int(s % grid.cols), int(rng.choice(kinds)))
                    for s in rng.choice(spots, n, replace=False)]
            self.paint_cells(frames[i], todo, float(daylight[i]), rng)
            for row, col, cls in todo:
                cells[i, row, col] = cls
