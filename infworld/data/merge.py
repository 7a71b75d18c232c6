"""Merge datasets of one environment into a new dataset folder (``infworld data merge``).

Memory training mixes revisit-dense trajectories with action-diverse ones so that the backbone does
not drift toward the revisit policy's habits (Infinite-World, arXiv 2602.02393, Sec. 3.4 finetunes
on revisit-dense data; we keep ordinary data in the mix, docs/memory.md). A merged folder is an
ordinary dataset: the loaders, the latent cache and ``data info`` need no notion of "mixtures".

Episodes are hard-linked when the filesystem allows (no extra disk), else copied; they are
renumbered in the order of the sources, so the last source's last episodes are the validation
split (``data.val_episodes``). ``repeat`` lists a count per source (a source listed twice weighs
twice as much in uniform clip sampling). Everything that changes what a frame or an action means
must agree (env, frame size, interact vocabulary, frame skip, fps, buttons); the scenario and the
policy may differ and are recorded per source in ``meta.extra["merged_from"]``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infworld.data.episode import (
    EPISODE_DIR,
    DatasetMeta,
    episode_path,
    list_episodes,
    read_meta,
    write_meta,
)
from infworld.errors import DataError

MUST_AGREE = ("env", "size", "interact_vocab", "frame_skip", "fps", "button_names", "pose_units")


def _norm(value: Any) -> Any:
    return tuple(value) if isinstance(value, list | tuple) else value


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard link ``src`` at ``dst`` (atomically: a temp name, then rename), or copy across devices."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def merge_datasets(sources: Sequence[str | os.PathLike], out: str | os.PathLike,
                   repeat: Sequence[int] | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Merge ``sources`` into a new dataset ``out``; returns a summary (episodes per source, total).

    Raises :class:`DataError` naming the source and the field that disagrees with the first source,
    or ``out`` when it already holds episodes (unless ``overwrite``)."""
    if not sources:
        raise DataError("give at least one source dataset", field="sources")
    repeat = list(repeat) if repeat is not None else [1] * len(sources)
    if len(repeat) != len(sources) or any(isinstance(r, bool) or not isinstance(r, int) or r < 1
                                           for r in repeat):
        raise DataError(f"repeat: expected one int >= 1 per source ({len(sources)}), got {repeat}",
                        field="repeat")
    metas = [read_meta(s) for s in sources]
    first = metas[0]
    for src, meta in zip(sources[1:], metas[1:], strict=True):
        for name in MUST_AGREE:
            a, b = _norm(getattr(first, name)), _norm(getattr(meta, name))
            if a != b:
                raise DataError(f"{name} is {b!r}, but the first source {sources[0]} has {a!r}; only "
                                "datasets of one environment and format can be merged",
                                path=str(Path(src) / "meta.json"), field=name)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError("--out exists and is not a directory", path=str(out))
    if list_episodes(out) and not overwrite:
        raise DataError("--out already holds episodes; choose a new folder (or overwrite)", path=str(out))
    if any(Path(s).resolve() == out.resolve() for s in sources):
        raise DataError("--out is one of the sources", path=str(out))
    episodes = [list_episodes(s) for s in sources]
    for src, eps in zip(sources, episodes, strict=True):
        if not eps:
            raise DataError("the dataset has no episodes", path=str(src))
    try:
        (out / EPISODE_DIR).mkdir(parents=True, exist_ok=True)
        for old in list_episodes(out):
            old.unlink()
        index, per_source = 0, []
        for src, eps, times in zip(sources, episodes, repeat, strict=True):
            start = index
            for _ in range(times):
                for ep in eps:
                    _link_or_copy(ep, episode_path(out, index))
                    index += 1
            per_source.append({"source": str(src), "episodes": len(eps), "repeat": times,
                               "first": start, "last": index - 1})
        meta = DatasetMeta(**{**first.to_json(), "size": tuple(first.size)})
        meta.has_pose = all(m.has_pose for m in metas)
        meta.has_depth = all(m.has_depth for m in metas)
        scenarios = sorted({str(m.scenario) for m in metas})
        meta.scenario = scenarios[0] if len(scenarios) == 1 else "mixed"
        policies = sorted({str(m.policy) for m in metas})
        meta.policy = policies[0] if len(policies) == 1 else "mixed"
        meta.extra = {**first.extra, "merged_from": [
            {**p, "scenario": m.scenario, "policy": m.policy, "collect": m.extra.get("collect")}
            for p, m in zip(per_source, metas, strict=True)]}
        write_meta(out, meta)  # written last: a folder with meta.json is a complete merge
    except OSError as exc:
        raise DataError(f"cannot write the merged dataset: {exc.strerror or exc}", path=str(out)) from exc
    return {"dataset": str(out), "episodes": index, "sources": per_source}
