"""Streaming clip dataset over the episode format, with exact resume and revisit-dense sampling.

``ClipDataset`` yields an endless stream of random clips. Sample ``i`` of rank ``r`` is drawn from
``np.random.default_rng([seed, r, i])`` and nothing else, so:

* restarting with ``start_sample=k`` reproduces the stream from sample ``k`` exactly (the trainer
  stores ``k`` in its checkpoints);
* ranks draw from different streams (different ``r``);
* DataLoader workers split the index space into disjoint blocks of ``worker_block`` samples,
  worker ``w`` taking blocks ``w, w + n, w + 2n, ...``. With ``worker_block`` equal to the batch
  size the DataLoader's round-robin over workers returns the samples in index order, so the stream
  (and resume) does not depend on the number of workers.

``revisit_dense=True`` implements the data side of Infinite-World's revisit-dense finetuning
(arXiv 2602.02393, Sec. 3.4): only clips whose last frames come back to a pose seen earlier in the
same clip (more than ``min_revisit_gap`` episode frames before) are sampled, found with
:func:`infworld.data.revisits.find_revisits` on ground-truth poses.

Episodes are decompressed lazily and kept in a small per-process LRU cache (npz decompression is
the cost: a 10k-frame 64x64 episode is ~120 MB in memory, so keep ``cache_episodes`` small).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from infworld.data.action_schema import UNCERTAIN
from infworld.data.episode import DatasetMeta, Episode, list_episodes, read_episode, read_meta
from infworld.data.events import covered, find_event_starts
from infworld.data.revisits import (
    DEFAULT_REVISIT_ANGLE_DEG,
    default_min_revisit_gap,
    default_revisit_dist,
    find_revisits,
)
from infworld.data.stats import episode_length, load_arrays
from infworld.errors import ConfigError, DataError

SPLITS = ("train", "val", "all")


@dataclass
class ClipDataConfig:
    """Recipe-facing settings of :class:`ClipDataset` (the per-run seed/rank/position are separate)."""

    clip_len: int = 16
    val_episodes: int = 1
    stride: int = 1
    revisit_dense: bool = False
    min_revisit_gap: int | None = None  # episode frames; None = half the clip span
    revisit_dist: float | None = None  # pose units; None = environment default
    revisit_angle_deg: float | None = DEFAULT_REVISIT_ANGLE_DEG
    revisit_tail: int | None = None  # clip frames that must hold the revisit; None = clip_len // 4
    cache_episodes: int = 4
    worker_block: int = 1
    load_depth: bool = False
    event_share: float = 0.0  # share of clips drawn from those ending in an event (data/events.py)
    event_extra: str = ""  # the recorded per-frame extra whose change marks an event


def combine_actions(ids: np.ndarray, stride: int, uncertain: int | None = UNCERTAIN) -> np.ndarray:
    """Merge runs of ``stride`` raw action ids (N * stride,) into one id per clip step (N,).

    Move/view (``uncertain`` given): the id when all ``stride`` raw ids agree, else ``uncertain``
    (the clip step mixes different motions, so no tri-state describes it). Interact
    (``uncertain=None``): the first non-zero id of the run, so an interaction is never dropped.
    """
    runs = ids.reshape(-1, stride)  # (N, stride)
    if stride == 1:
        return runs[:, 0].copy()
    if uncertain is not None:
        same = (runs == runs[:, :1]).all(axis=1)
        return np.where(same, runs[:, 0], uncertain)
    nonzero = runs != 0
    first = nonzero.argmax(axis=1)
    return np.where(nonzero.any(axis=1), runs[np.arange(len(runs)), first], 0)


def make_clip(ep: Episode, start: int, clip_len: int, stride: int = 1, episode_index: int = -1,
              load_depth: bool = False) -> dict[str, Any]:
    """Cut one clip out of an episode as the tensors :class:`ClipDataset` yields.

    frames (L, 3, H, W) uint8; move/view/interact (L-1,) int64 (step i: clip frame i -> i + 1);
    pose (L, 5) float32 (zeros without poses) and has_pose bool; depth (L, 1, H, W) uint8 if asked.
    """
    span = (clip_len - 1) * stride + 1
    if start < 0 or start + span > len(ep):
        raise DataError(f"clip start {start} + span {span} (clip_len {clip_len}, stride {stride}) does not "
                        f"fit in an episode of {len(ep)} frames", field=f"episode {episode_index}")
    idx = start + stride * np.arange(clip_len)  # (L,) episode frame indices
    acts = slice(start, start + (clip_len - 1) * stride)
    out: dict[str, Any] = {
        # (L, H, W, 3) -> (L, 3, H, W)
        "frames": torch.from_numpy(np.ascontiguousarray(ep.frames[idx].transpose(0, 3, 1, 2))),
        "move": torch.from_numpy(combine_actions(ep.move[acts], stride).astype(np.int64)),  # (L-1,)
        "view": torch.from_numpy(combine_actions(ep.view[acts], stride).astype(np.int64)),
        "interact": torch.from_numpy(combine_actions(ep.interact[acts], stride, None).astype(np.int64)),
        "has_pose": torch.tensor(ep.pose is not None),
        "episode": int(episode_index),
        "start": int(start),
    }
    pose = ep.pose[idx] if ep.pose is not None else np.zeros((clip_len, 5))
    out["pose"] = torch.from_numpy(pose.astype(np.float32))  # (L, 5)
    if load_depth:
        if ep.depth is None:
            raise DataError("load_depth is set but the episode has no depth",
                            field=f"episode {episode_index}")
        out["depth"] = torch.from_numpy(np.ascontiguousarray(ep.depth[idx][:, None]))  # (L, 1, H, W)
    return out


def load_clip(root: str | os.PathLike, episode_index: int, start: int, length: int,
              stride: int = 1, load_depth: bool = False) -> dict[str, Any]:
    """One clip of episode ``episode_index`` (position in the name-sorted episode list), for eval code."""
    meta = read_meta(root)
    paths = list_episodes(root)
    if not 0 <= episode_index < len(paths):
        raise DataError(f"episode index {episode_index} out of range (dataset has {len(paths)} episodes)",
                        path=str(root))
    if length < 1 or stride < 1:
        raise ConfigError(f"length and stride must be >= 1, got length={length}, stride={stride}")
    ep = read_episode(paths[episode_index], meta=meta)
    return make_clip(ep, start, length, stride, episode_index, load_depth)


def _pick(cum: np.ndarray, episodes: list[int], rng: np.random.Generator) -> tuple[int, int]:
    """A uniform clip of a pool whose episodes hold cumulative clip counts ``cum``: (episode, offset)."""
    u = int(rng.integers(int(cum[-1])))
    pos = int(np.searchsorted(cum, u, side="right"))
    return episodes[pos], u - (int(cum[pos - 1]) if pos else 0)


class ClipDataset(IterableDataset):
    """Endless random clips of ``clip_len`` frames from one split of a dataset (see module doc).

    Splits: episodes sorted by file name; the last ``val_episodes`` are "val", the rest "train";
    "all" is every episode. ``stride`` takes every ``stride``-th frame (actions merged by
    :func:`combine_actions`). Episodes shorter than the clip span are skipped.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        clip_len: int,
        split: str = "train",
        val_episodes: int = 1,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_sample: int = 0,
        revisit_dense: bool = False,
        min_revisit_gap: int | None = None,
        stride: int = 1,
        cache_episodes: int = 4,
        *,
        revisit_dist: float | None = None,
        revisit_angle_deg: float | None = DEFAULT_REVISIT_ANGLE_DEG,
        revisit_tail: int | None = None,
        worker_block: int = 1,
        load_depth: bool = False,
        event_share: float = 0.0,
        event_extra: str = "",
    ):
        super().__init__()
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
        for name, value, lo in (("clip_len", clip_len, 2), ("stride", stride, 1), ("seed", seed, 0),
                                ("start_sample", start_sample, 0), ("cache_episodes", cache_episodes, 1),
                                ("val_episodes", val_episodes, 0), ("worker_block", worker_block, 1),
                                ("world_size", world_size, 1)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lo:
                raise ConfigError(f"{name} must be an integer >= {lo}, got {value!r}")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank must be in 0..{world_size - 1}, got {rank}")
        self.root = Path(root)
        self.meta: DatasetMeta = read_meta(root)
        self.clip_len, self.stride, self.split = clip_len, stride, split
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.start_sample, self.worker_block = start_sample, worker_block
        self.cache_episodes, self.load_depth = cache_episodes, load_depth
        self.revisit_dense = revisit_dense
        if not 0.0 <= event_share <= 1.0:
            raise ConfigError(f"event_share must be in [0, 1], got {event_share!r}")
        if event_share > 0 and (not event_extra or stride != 1 or revisit_dense):
            raise ConfigError("event_share > 0 needs event_extra (the recorded extra that marks an event, "
                              f"e.g. 'inventory'), stride 1 and no revisit_dense; got event_extra="
                              f"{event_extra!r}, stride {stride}, revisit_dense {revisit_dense}")
        self.event_share = float(event_share)
        if load_depth and not self.meta.has_depth:
            raise DataError("load_depth needs a dataset with depth (meta.has_depth is false)",
                            path=str(self.root / "meta.json"), field="has_depth")
        self.span = (clip_len - 1) * stride + 1  # episode frames covered by one clip

        self._paths = list_episodes(root)
        n = len(self._paths)
        if n == 0:
            raise DataError("the dataset has no episodes", path=str(self.root))
        n_train = max(n - val_episodes, 0)
        chosen = {"train": range(0, n_train), "val": range(n_train, n), "all": range(n)}[split]
        if len(chosen) == 0:
            raise DataError(f"split {split!r} is empty: {n} episodes with val_episodes={val_episodes}",
                            path=str(self.root))
        lengths = {i: episode_length(self._paths[i]) for i in chosen}
        usable = [i for i in chosen if lengths[i] >= self.span]
        if not usable:
            longest = max(lengths, key=lengths.get)
            raise DataError(f"no episode of split {split!r} is long enough for clip_len={clip_len} "
                            f"(stride {stride}, {self.span} frames); the longest is "
                            f"{self._paths[longest].name} with {lengths[longest]} frames",
                            path=str(self.root))

        # Valid clip starts per episode: every start, or (revisit-dense) only those holding a revisit.
        self._starts: dict[int, np.ndarray] = {}
        if revisit_dense:
            self.min_revisit_gap = (default_min_revisit_gap(self.span) if min_revisit_gap is None
                                    else int(min_revisit_gap))
            self.revisit_tail = max(1, clip_len // 4) if revisit_tail is None else int(revisit_tail)
            self.revisit_dist = (default_revisit_dist(self.meta.env) if revisit_dist is None
                                 else float(revisit_dist))
            self.revisit_angle_deg = revisit_angle_deg
            self._find_revisit_starts(usable, lengths)
            if not self._starts:
                raise DataError(f"no clip of split {split!r} contains a revisit (clip_len={clip_len}, "
                                f"stride {stride}, min_revisit_gap={self.min_revisit_gap}, "
                                f"dist={self.revisit_dist}, angle={revisit_angle_deg})", path=str(self.root))
            self.episodes = sorted(self._starts)
            counts = [len(self._starts[i]) for i in self.episodes]
        else:
            self.episodes = usable
            counts = [lengths[i] - self.span + 1 for i in usable]
        self._cum = np.cumsum(counts)  # (E,) cumulative clip counts for uniform sampling over clips
        self.num_clips = int(self._cum[-1])
        if self.event_share > 0:
            self._event_starts = find_event_starts(self._paths, self.episodes, lengths, clip_len,
                                                   max(1, clip_len // 4), event_extra)
            if not self._event_starts:
                raise DataError(f"event_share {event_share}: no clip of split {split!r} ends in an event "
                                f"(an interaction after which extra {event_extra!r} changed)",
                                path=str(self.root))
            self._event_episodes = sorted(self._event_starts)
            self._event_cum = np.cumsum([len(self._event_starts[e]) for e in self._event_episodes])
        self._cache: OrderedDict[int, Episode] = OrderedDict()

    @classmethod
    def from_config(cls, root: str | os.PathLike, cfg: ClipDataConfig, split: str = "train", seed: int = 0,
                    rank: int = 0, world_size: int = 1, start_sample: int = 0) -> ClipDataset:
        return cls(root, cfg.clip_len, split, cfg.val_episodes, seed, rank, world_size, start_sample,
                   cfg.revisit_dense, cfg.min_revisit_gap, cfg.stride, cfg.cache_episodes,
                   revisit_dist=cfg.revisit_dist, revisit_angle_deg=cfg.revisit_angle_deg,
                   revisit_tail=cfg.revisit_tail, worker_block=cfg.worker_block, load_depth=cfg.load_depth,
                   event_share=cfg.event_share, event_extra=cfg.event_extra)

    def _find_revisit_starts(self, usable: list[int], lengths: dict[int, int]) -> None:
        """Fill ``self._starts`` with clip starts whose last ``revisit_tail`` clip frames revisit a pose
        seen earlier in the same clip (gap > ``min_revisit_gap`` episode frames)."""
        if not self.meta.has_pose:
            raise DataError("revisit_dense needs poses but the dataset has none (meta.has_pose is false)",
                            path=str(self.root / "meta.json"), field="has_pose")
        L, s = self.clip_len, self.stride
        # in clip steps: (k - src) * s > min_revisit_gap  <=>  k - src > min_revisit_gap // s
        gap = self.min_revisit_gap // s
        if gap >= L - 1:
            raise ConfigError(f"clip_len={L} (stride {s}) is too short for min_revisit_gap="
                              f"{self.min_revisit_gap}: a clip must span more than the gap")
        for e in usable:
            pose = load_arrays(self._paths[e], ("pose",)).get("pose")  # (T, 5); frames stay compressed
            if pose is None:
                continue
            if pose.shape != (lengths[e], 5) or not np.all(np.isfinite(pose)):
                raise DataError(f"expected finite ({lengths[e]}, 5) poses, got {pose.shape}",
                                path=str(self._paths[e]), field="pose")
            starts = []
            for phase in range(s):
                sub = pose[phase::s]  # (n, 5) poses of the frames a clip starting at this phase sees
                n = len(sub)
                if n < L:
                    continue
                _, src = find_revisits(sub, min_gap=gap, dist=self.revisit_dist,
                                       angle_deg=self.revisit_angle_deg, pick="latest")
                k = np.nonzero(src >= 0)[0]  # revisiting frames; src[k] is their latest source
                # A clip at j holds (k, src[k]) iff k in [j + L - tail, j + L - 1] and src[k] >= j.
                lo = np.maximum(k - L + 1, 0)
                hi = np.minimum.reduce([k - L + self.revisit_tail, src[k], np.full_like(k, n - L)])
                j = covered(lo, hi, n - L + 1)
                starts.append(phase + s * j)
            if starts and sum(len(x) for x in starts):
                self._starts[e] = np.sort(np.concatenate(starts))

    def _episode(self, index: int) -> Episode:
        """Load episode ``index`` through the LRU cache."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        ep = read_episode(self._paths[index], meta=self.meta)
        self._cache[index] = ep
        while len(self._cache) > self.cache_episodes:
            self._cache.popitem(last=False)
        return ep

    def locate(self, i: int) -> tuple[int, int]:
        """(episode index, start frame) of sample ``i`` of this rank; depends only on (seed, rank, i)."""
        rng = np.random.default_rng([self.seed, self.rank, int(i)])
        if self.event_share > 0 and rng.random() < self.event_share:  # an event clip (data/events.py)
            episode, offset = _pick(self._event_cum, self._event_episodes, rng)
            return episode, int(self._event_starts[episode][offset])
        episode, offset = _pick(self._cum, self.episodes, rng)
        start = int(self._starts[episode][offset]) if self.revisit_dense else offset
        return episode, start

    def sample(self, i: int) -> dict[str, Any]:
        """Sample ``i`` of this rank (see :func:`make_clip` for the keys)."""
        if i < 0:
            raise ConfigError(f"sample index must be >= 0, got {i}")
        episode, start = self.locate(i)
        return make_clip(self._episode(episode), start, self.clip_len, self.stride, episode, self.load_depth)

    def worker_indices(self, worker_id: int = 0, num_workers: int = 1):
        """Endless sample indices of one DataLoader worker: disjoint blocks of ``worker_block``."""
        block = worker_id
        while True:
            first = self.start_sample + block * self.worker_block
            yield from range(first, first + self.worker_block)
            block += num_workers

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        for i in self.worker_indices(wid, nw):
            yield self.sample(i)
