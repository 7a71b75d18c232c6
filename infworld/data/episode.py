"""The on-disk episode format (documented in docs/episode_format.md).

A dataset is a folder::

    DIR/meta.json                  dataset metadata (DatasetMeta), written first, atomically
    DIR/episodes/ep_000000.npz     one episode per file: numpy .npz, written atomically

An episode file is written to a hidden temp file in the same folder and then renamed, so an
interrupted collection leaves every finished episode intact and never shows a half episode.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import tokenize
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infworld.data.action_schema import UNCERTAIN, check_action_ids
from infworld.errors import DataError

FORMAT_VERSION = 1
META_FILE = "meta.json"
EPISODE_DIR = "episodes"
EXTRA_PREFIX = "extra_"
POSE_FIELDS = ("x", "y", "z", "yaw", "pitch")
# What decoding a damaged .npz raises: the zip layer (bad header, CRC), zlib (bad deflate stream),
# numpy's header parser (tokenize / ast), a reshape or a short read.
DAMAGED_NPZ_ERRORS = (zipfile.BadZipFile, zlib.error, tokenize.TokenError, SyntaxError, ValueError, EOFError,
                      OSError)


@dataclass
class DatasetMeta:
    """Dataset-level metadata, stored as ``meta.json``.

    ``size`` is (H, W) of every frame. ``interact_vocab[i]`` names interact id ``i`` (0 = "none").
    ``button_names`` names the columns of an episode's raw ``buttons`` array, when it has one.
    """

    env: str
    size: tuple[int, int] = (64, 64)
    interact_vocab: list[str] = field(default_factory=lambda: ["none"])
    scenario: str | None = None
    policy: str | None = None
    frame_skip: int = 1
    fps: float = 35.0  # environment clock (ticks/s); frames advance at fps / frame_skip per second
    button_names: list[str] = field(default_factory=list)
    has_pose: bool = True
    has_depth: bool = False
    pose_units: str = "world units; yaw/pitch in degrees, yaw CCW from +x, pitch + = up"
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["size"] = list(self.size)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], path: str = META_FILE) -> DatasetMeta:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DataError(f"unknown field(s) {unknown}", path=path)
        if "env" not in d:
            raise DataError("missing required field", path=path, field="env")
        try:
            meta = cls(**d)
        except TypeError as exc:  # pragma: no cover - defensive
            raise DataError(str(exc), path=path) from exc
        size = meta.size
        if not (isinstance(size, (list, tuple)) and len(size) == 2
                and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
            raise DataError(f"expected [H, W] with positive ints, got {size!r}", path=path, field="size")
        meta.size = (int(size[0]), int(size[1]))
        for name, typ in (("env", str), ("frame_skip", int), ("fps", (int, float)), ("interact_vocab", list),
                          ("button_names", list), ("has_pose", bool), ("has_depth", bool), ("extra", dict)):
            if not isinstance(getattr(meta, name), typ):
                raise DataError(f"wrong type {type(getattr(meta, name)).__name__}", path=path, field=name)
        if meta.format_version != FORMAT_VERSION:
            raise DataError(
                f"format_version {meta.format_version} is not supported (expected {FORMAT_VERSION})",
                path=path,
                field="format_version",
            )
        if not meta.interact_vocab or meta.interact_vocab[0] != "none":
            raise DataError("interact_vocab[0] must be 'none'", path=path, field="interact_vocab")
        return meta


@dataclass
class Episode:
    """One trajectory. ``T`` frames and ``T - 1`` actions (action t: frame t -> t + 1).

    frames:   (T, H, W, 3) uint8 RGB
    move:     (T-1,) int, 0..9 (9 = uncertain), see action_schema
    view:     (T-1,) int, 0..9
    interact: (T-1,) int, 0..len(interact_vocab)-1
    pose:     (T, 5) float32 [x, y, z, yaw_deg, pitch_deg] or None
    depth:    (T, H, W) uint8 (environment depth buffer) or None
    buttons:  (T-1, B) float32 raw environment inputs or None
    extras:   name -> array with leading dim T (e.g. Crafter inventory, semantic map)
    info:     JSON-able dict (seed, policy, source...)
    """

    frames: np.ndarray
    move: np.ndarray
    view: np.ndarray
    interact: np.ndarray
    pose: np.ndarray | None = None
    depth: np.ndarray | None = None
    buttons: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.frames.shape[0])


# ---------------------------------------------------------------------------------------------
# atomic writes


def make_shareable(path: str | os.PathLike) -> None:
    """Give a temp file the usual permissions (0666 less the umask): mkstemp and safetensors
    create 0600 files, which would make datasets and exports private to their writer."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_write_bytes(path: str | os.PathLike, writer) -> None:
    """Call ``writer(fileobj)`` on a hidden temp file beside ``path``, fsync, then rename over it.

    A folder that cannot be created or written raises DataError naming ``path``; ``path`` itself is
    only replaced once the new content is complete.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise DataError(f"cannot write here ({exc.strerror or exc})", path=str(path)) from None
    make_shareable(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def write_meta(root: str | os.PathLike, meta: DatasetMeta) -> Path:
    path = Path(root) / META_FILE
    atomic_write_json(path, meta.to_json())
    return path


def read_meta(root: str | os.PathLike) -> DatasetMeta:
    path = Path(root) / META_FILE
    if not Path(root).is_dir():
        raise DataError("not a dataset folder (does not exist or is not a directory)", path=str(root))
    if not path.is_file():
        raise DataError("missing meta.json (is this a dataset folder?)", path=str(path))
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot parse JSON: {exc}", path=str(path)) from exc
    if not isinstance(d, dict):
        raise DataError("expected a JSON object", path=str(path))
    return DatasetMeta.from_json(d, path=str(path))


def episode_path(root: str | os.PathLike, index: int) -> Path:
    return Path(root) / EPISODE_DIR / f"ep_{index:06d}.npz"


def list_episodes(root: str | os.PathLike) -> list[Path]:
    """Finished episodes of a dataset, sorted by name (temp files are hidden and never listed)."""
    return sorted((Path(root) / EPISODE_DIR).glob("ep_*.npz"))


def write_episode(path: str | os.PathLike, ep: Episode, meta: DatasetMeta | None = None) -> Path:
    """Check ``ep`` and write it atomically as a compressed .npz."""
    check_episode(ep, meta=meta, path=str(path))
    arrays: dict[str, np.ndarray] = {
        "frames": ep.frames,
        "move": ep.move.astype(np.int8),
        "view": ep.view.astype(np.int8),
        "interact": ep.interact.astype(np.int16),
        "info_json": np.array(json.dumps(ep.info)),
    }
    if ep.pose is not None:
        arrays["pose"] = ep.pose.astype(np.float32)
    if ep.depth is not None:
        arrays["depth"] = ep.depth
    if ep.buttons is not None:
        arrays["buttons"] = ep.buttons.astype(np.float32)
    for name, arr in ep.extras.items():
        arrays[EXTRA_PREFIX + name] = arr
    atomic_write_bytes(path, lambda f: np.savez_compressed(f, **arrays))
    return Path(path)


def read_npz(path: str | os.PathLike, names: tuple[str, ...] | None = None,
             what: str = "episode file") -> dict[str, np.ndarray]:
    """The arrays of an .npz (all of them, or those of ``names`` it has), decompressed.

    A missing, truncated or damaged file (bytes overwritten anywhere) raises DataError naming it.
    """
    path = str(path)
    out: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                key = member.removesuffix(".npy")
                if names is not None and key not in names:
                    continue
                with zf.open(member) as fp:
                    out[key] = np.lib.format.read_array(fp, allow_pickle=False)
                    # numpy stops at the array's last byte; reading on to the end makes zipfile
                    # compare the CRC-32, which catches damage that still decompresses.
                    if fp.read():
                        raise ValueError(f"{member}: data after the array")
    except FileNotFoundError:
        raise DataError(f"{what} not found", path=path) from None
    except DAMAGED_NPZ_ERRORS as exc:
        raise damaged_npz(path, exc, what) from exc
    return out


def damaged_npz(path: str | os.PathLike, exc: BaseException, what: str = "episode file") -> DataError:
    """The one-line DataError for an .npz that failed to decode with ``exc`` (DAMAGED_NPZ_ERRORS)."""
    if isinstance(exc, (tokenize.TokenError, SyntaxError)):
        why = "an array header is damaged"
    else:
        text = " ".join(str(exc).split())[:200]
        kind = "zlib" if isinstance(exc, zlib.error) else type(exc).__name__
        why = f"{kind}: {text}" if text else kind
    return DataError(f"corrupt or truncated {what} ({why})", path=str(path))


def read_episode(path: str | os.PathLike, meta: DatasetMeta | None = None) -> Episode:
    """Load and check one episode; a corrupt or truncated file raises DataError naming it."""
    path = str(path)
    data = read_npz(path)
    for required in ("frames", "move", "view", "interact"):
        if required not in data:
            raise DataError("missing array", path=path, field=required)
    info: dict[str, Any] = {}
    if "info_json" in data:
        try:
            info = json.loads(str(data["info_json"]))
        except json.JSONDecodeError as exc:
            raise DataError(f"bad JSON: {exc}", path=path, field="info_json") from exc
    ep = Episode(
        frames=data["frames"],
        move=data["move"].astype(np.int64),
        view=data["view"].astype(np.int64),
        interact=data["interact"].astype(np.int64),
        pose=data.get("pose"),
        depth=data.get("depth"),
        buttons=data.get("buttons"),
        extras={k[len(EXTRA_PREFIX):]: v for k, v in data.items() if k.startswith(EXTRA_PREFIX)},
        info=info,
    )
    check_episode(ep, meta=meta, path=path)
    return ep


def check_episode(ep: Episode, meta: DatasetMeta | None = None, path: str | None = None) -> None:
    """Raise DataError (naming ``path`` and the field) if ``ep`` breaks the format."""

    def fail(msg: str, fld: str) -> None:
        raise DataError(msg, path=path, field=fld)

    f = ep.frames
    if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3:
        fail(f"expected (T, H, W, 3) uint8, got {getattr(f, 'shape', None)} {getattr(f, 'dtype', None)}",
             "frames")
    t = f.shape[0]
    if t < 2:
        fail(f"an episode needs at least 2 frames, got {t}", "frames")
    if meta is not None and tuple(f.shape[1:3]) != tuple(meta.size):
        fail(f"frame size {tuple(f.shape[1:3])} differs from dataset size {tuple(meta.size)}", "frames")
    # without a vocabulary (no meta) interact ids only have to be >= 0
    n_interact = len(meta.interact_vocab) if meta is not None else int(ep.interact.max(initial=0)) + 1
    for name, size in (("move", UNCERTAIN + 1), ("view", UNCERTAIN + 1), ("interact", n_interact)):
        a = getattr(ep, name)
        if a.shape != (t - 1,):
            fail(f"expected shape ({t - 1},) for {t} frames, got {a.shape}", name)
        check_action_ids(a, size, name, path=path)
    if ep.pose is not None:
        if ep.pose.shape != (t, 5):
            fail(f"expected shape ({t}, 5) [x, y, z, yaw, pitch], got {ep.pose.shape}", "pose")
        if not np.all(np.isfinite(ep.pose)):
            fail("contains NaN or inf", "pose")
    elif meta is not None and meta.has_pose:
        fail("dataset meta says has_pose but the episode has no pose array", "pose")
    if ep.depth is not None and ep.depth.shape != f.shape[:3]:
        fail(f"expected shape {f.shape[:3]}, got {ep.depth.shape}", "depth")
    if ep.buttons is not None and (ep.buttons.ndim != 2 or ep.buttons.shape[0] != t - 1):
        fail(f"expected shape ({t - 1}, B), got {ep.buttons.shape}", "buttons")
    for name, arr in ep.extras.items():
        if arr.shape[:1] != (t,):
            fail(f"expected leading dimension {t}, got {arr.shape}", EXTRA_PREFIX + name)
