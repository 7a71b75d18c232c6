"""Validator for the episode format (docs/episode_format.md), behind ``infworld data validate DIR``.

It checks everything a loader relies on and collects every problem instead of stopping at the
first, so one run lists all the broken files of a dataset:

* ``meta.json`` exists, parses, has known fields of the right shape (fatal: nothing else is checked
  without it);
* the dataset has at least one episode;
* every episode loads and passes :func:`infworld.data.episode.check_episode` against the meta
  (shapes, lengths, id ranges, frame size, poses present when ``has_pose``), with on-disk dtypes
  the format specifies (integer actions, float poses, uint8 frames and depth);
* ``has_depth`` agrees with the episodes; extras are the same across episodes (warning otherwise).

Hidden ``.*.tmp`` files left by an interrupted atomic write are reported as warnings: they are
harmless (never listed as episodes) and safe to delete.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infworld.data.episode import EPISODE_DIR, EXTRA_PREFIX, META_FILE, DatasetMeta, read_episode, read_meta
from infworld.data.stats import npz_headers
from infworld.errors import DataError

EPISODE_NAME = re.compile(r"^ep_\d{6}\.npz$")

# On-disk dtype kinds the format allows per array (numpy dtype.kind codes: i/u int, f float).
_DTYPE_KINDS = {"move": "iu", "view": "iu", "interact": "iu", "pose": "f", "buttons": "f"}


@dataclass
class Problem:
    """One finding: the file, the field (array or meta key) if any, and what is wrong."""

    path: str
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.path + (f" [{self.field}]" if self.field else "")
        return f"{where}: {self.message}"

    @classmethod
    def from_error(cls, exc: DataError, default_path: str) -> Problem:
        text = str(exc)
        path = exc.path or default_path
        prefix = (exc.path or "") + (f" [{exc.field}]" if exc.field else "")
        if prefix and text.startswith(prefix.strip() + ": "):
            text = text[len(prefix.strip()) + 2:]
        return cls(path=path, field=exc.field, message=text)


@dataclass
class ValidationReport:
    """What :func:`validate_dataset` found. ``ok`` is True when there is no error (warnings allowed)."""

    root: str
    meta: DatasetMeta | None = None
    episodes: int = 0  # episode files found
    valid_episodes: int = 0
    frames: int = 0  # frames in valid episodes
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_for_errors(self) -> None:
        """Raise DataError naming the first bad file and field (and how many more problems there are)."""
        if self.ok:
            return
        first = self.errors[0]
        more = len(self.errors) - 1
        exc = DataError(str(first) + (f" (and {more} more problem{'s' * (more > 1)})" if more else ""))
        exc.path, exc.field = first.path, first.field
        raise exc

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "ok": self.ok,
            "episodes": self.episodes,
            "valid_episodes": self.valid_episodes,
            "frames": self.frames,
            "errors": [vars(p) for p in self.errors],
            "warnings": [vars(p) for p in self.warnings],
        }


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# meta.json field -> (test, what is expected). read_meta trusts JSON types; the validator does not.
_META_TYPES: dict[str, tuple[Any, str]] = {
    "env": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "size": (lambda v: isinstance(v, list) and len(v) == 2
             and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v),
             "[H, W] with positive ints"),
    "interact_vocab": (lambda v: _is_str_list(v) and len(v) > 0, "a non-empty list of strings"),
    "scenario": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "policy": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "frame_skip": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an int >= 1"),
    "fps": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "button_names": (_is_str_list, "a list of strings"),
    "has_pose": (lambda v: isinstance(v, bool), "true or false"),
    "has_depth": (lambda v: isinstance(v, bool), "true or false"),
    "pose_units": (lambda v: isinstance(v, str), "a string"),
    "extra": (lambda v: isinstance(v, dict), "an object"),
    "format_version": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an int"),
}


def _check_meta_types(path: Path) -> Problem | None:
    """The first meta.json field of the wrong JSON type, if any (parse errors are left to read_meta)."""
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(d, dict):
        return None
    for name, (test, expected) in _META_TYPES.items():
        if name in d and not test(d[name]):
            return Problem(str(path), name, f"expected {expected}, got {d[name]!r}")
    return None


def _is_temp(name: str) -> bool:
    # atomic_write_bytes names its temp files ".<target>.<random>.tmp"
    return name.startswith(".") and name.endswith(".tmp")


def _check_headers(path: Path, report: ValidationReport) -> dict[str, tuple] | None:
    """Dtype checks from the .npy headers; None (and an error recorded) if the file is unreadable."""
    try:
        headers = npz_headers(path)
    except DataError as exc:
        report.errors.append(Problem.from_error(exc, str(path)))
        return None
    for name, (_, dtype) in headers.items():
        kinds = _DTYPE_KINDS.get(name)
        if kinds and dtype.kind not in kinds:
            want = "an integer" if kinds == "iu" else "a float"
            report.errors.append(Problem(str(path), name, f"expected {want} dtype on disk, got {dtype}"))
        if name in ("frames", "depth") and dtype != np.uint8:
            report.errors.append(Problem(str(path), name, f"expected uint8 on disk, got {dtype}"))
    return headers


def validate_dataset(root: str | os.PathLike) -> ValidationReport:
    """Check a dataset folder against the episode format and return every problem found.

    Never raises for a bad dataset (call ``report.raise_for_errors()`` for that); reads every episode
    in full, so it costs one decompression of the dataset.
    """
    root = Path(root)
    report = ValidationReport(root=str(root))
    bad_type = _check_meta_types(root / META_FILE) if root.is_dir() else None
    if bad_type is not None:
        report.errors.append(bad_type)
        return report
    try:
        meta = read_meta(root)
    except DataError as exc:
        report.errors.append(Problem.from_error(exc, str(root / META_FILE)))
        return report
    report.meta = meta

    for folder in (root, root / EPISODE_DIR):
        if folder.is_dir():
            for p in sorted(folder.iterdir()):
                if _is_temp(p.name):
                    report.warnings.append(Problem(str(p), None, "leftover temp file from an interrupted "
                                                   "write (harmless, never loaded; safe to delete)"))
    ep_dir = root / EPISODE_DIR
    if not ep_dir.is_dir():
        report.errors.append(Problem(str(ep_dir), None, "missing episodes folder: the dataset is empty"))
        return report
    paths = []
    for p in sorted(ep_dir.iterdir()):
        if _is_temp(p.name):
            continue
        if p.name.startswith("ep_") and p.name.endswith(".npz"):
            paths.append(p)  # list_episodes loads every ep_*.npz, so check them all
            if not EPISODE_NAME.match(p.name):
                report.warnings.append(Problem(str(p), None, "unusual name (expected ep_NNNNNN.npz)"))
        else:
            report.warnings.append(Problem(str(p), None, "not an episode file (ep_NNNNNN.npz): ignored"))
    report.episodes = len(paths)
    if not paths:
        report.errors.append(Problem(str(ep_dir), None, "the dataset has no episodes (no ep_*.npz files)"))
        return report

    first_extras: set[str] | None = None
    for path in paths:
        headers = _check_headers(path, report)
        if headers is None:
            continue
        n_errors = len(report.errors)
        try:
            ep = read_episode(path, meta=meta)
        except DataError as exc:
            report.errors.append(Problem.from_error(exc, str(path)))
            continue
        if ep.depth is None and meta.has_depth:
            report.errors.append(Problem(str(path), "depth", "dataset meta says has_depth but the episode "
                                         "has no depth array"))
        if ep.depth is not None and not meta.has_depth:
            report.warnings.append(Problem(str(path), "depth", "episode has depth but meta.has_depth is "
                                           "false (loaders will ignore it)"))
        if ep.pose is not None and np.any(np.abs(ep.pose[:, 4]) > 90.0 + 1e-3):
            report.warnings.append(Problem(str(path), "pose", "pitch outside [-90, 90] degrees"))
        extras = set(ep.extras)
        if first_extras is None:
            first_extras = extras
        elif extras != first_extras:
            report.warnings.append(Problem(str(path), EXTRA_PREFIX + "*", f"extras {sorted(extras)} differ "
                                           f"from the first episode's {sorted(first_extras)}"))
        if len(report.errors) == n_errors:
            report.valid_episodes += 1
            report.frames += len(ep)
    return report


def format_report(report: ValidationReport, max_lines: int = 20) -> str:
    """Human-readable summary: counts, then up to ``max_lines`` errors and warnings."""
    lines = [f"{report.root}: {report.episodes} episode files, {report.valid_episodes} valid, "
             f"{report.frames} frames; {len(report.errors)} error(s), {len(report.warnings)} warning(s)"]
    for label, items in (("error", report.errors), ("warning", report.warnings)):
        for p in items[:max_lines]:
            lines.append(f"  {label}: {p}")
        if len(items) > max_lines:
            lines.append(f"  ... {len(items) - max_lines} more {label}s")
    return "\n".join(lines)
