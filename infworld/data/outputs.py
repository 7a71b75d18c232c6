"""Check that an output location can be written before any work is done.

Every command that writes (``data import``, ``data label``, ``collect``, ``rollout``, ``play
--headless``) checks its destination first, so a typo in ``--out`` fails in a second with one line
naming the path, instead of after minutes of generation with an OSError, and never replaces a file
that was there before (e.g. a video written over ``notes.txt``).

Checking does not create anything: the nearest existing ancestor must be a folder we can write in
(tested by creating and removing a hidden temp file there, which also catches read-only mounts and
root-owned folders that ``os.access`` can misreport).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from infworld.errors import DataError


def _folder_problem(folder: Path) -> str | None:
    """Why files cannot be written in ``folder`` (existing or to be created), or None when they can."""
    if folder.exists() and not folder.is_dir():
        return f"{folder} is a file, not a folder"
    base = folder.absolute()
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        return f"{base} is a file, not a folder"
    try:
        fd, probe = tempfile.mkstemp(prefix=".infworld-write-check.", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"cannot write in {base} ({exc.strerror or exc})"
    return None


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """``path`` as a Path, once it is known to be (or to be creatable as) a writable folder.

    Raises DataError naming the path when it is an existing file, when one of its parents is a file,
    or when the folder it would be created in cannot be written.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise DataError(f"{what} is an existing file, not a folder", path=os.fspath(path))
    problem = _folder_problem(p)
    if problem is not None:
        raise DataError(f"unusable {what}: {problem}", path=os.fspath(path))
    return p


def check_output_file(path: str | os.PathLike, suffixes: tuple[str, ...], what: str = "output file") -> Path:
    """``path`` as a Path, once it is known to be a writable file name ending in one of ``suffixes``.

    An existing file with the right suffix may be replaced (writing again is the normal case); a
    folder, a name with another suffix (which would hide, say, an MP4 in ``walk.txt`` or overwrite
    an unrelated file) or an unwritable parent folder raises DataError naming the path.
    """
    p = Path(path)
    text = os.fspath(path)
    if p.is_dir() or text.endswith(("/", os.sep)):
        raise DataError(f"{what} is a folder; give a file name ending in {' or '.join(suffixes)}", path=text)
    if p.suffix.lower() not in suffixes:
        raise DataError(f"{what} must end in {' or '.join(suffixes)} (got {p.suffix or 'no suffix'!r})",
                        path=text)
    problem = _folder_problem(p.parent)
    if problem is not None:
        raise DataError(f"unusable {what}: {problem}", path=text)
    return p
