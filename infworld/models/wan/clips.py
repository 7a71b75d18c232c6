"""Training clips at the latent frame rate (the world task in video mode, docs/scale.md).

In video mode the Wan VAE turns a video of 1 + r k frames into 1 + k latent frames (r = 4), each
latent depending on all frames before it. Training clips are therefore cut from whole-episode
latents (:class:`~infworld.models.wan.latents.WanLatentStore`, each episode encoded once and kept on
disk), not encoded clip by clip: a clip is ``length`` consecutive latent frames of an episode with
their grouped actions (B, L, r) and the poses of their last video frames.

:class:`LatentClipDataset` samples them exactly as :class:`~infworld.data.dataset.ClipDataset`
samples frame clips: sample ``i`` of rank ``r`` comes from ``np.random.default_rng([seed, r, i])``
alone (exact resume, distinct ranks), DataLoader workers take disjoint blocks of ``worker_block``
samples, episodes sorted by name with the last ``val_episodes`` held out. It yields the episode and
start latent frame; the latents themselves are read (and, the first time, encoded) by the training
process with the model's own VAE copy on its device (``WanLatentStore.latents``), so DataLoader
workers never run the VAE. ``with_frames`` also yields the clip's 1 + r (L - 1) video frames, from
the last video frame of the latent before the clip, for evaluation through the rollout engine (which
encodes them afresh, the first frame alone).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from infworld.data.dataset import SPLITS
from infworld.data.episode import list_episodes, read_episode, read_meta
from infworld.data.stats import episode_length, load_arrays
from infworld.errors import ConfigError, DataError
from infworld.models.wan.latents import group_actions, latent_count, latent_poses

ACTION_KEYS = ("move", "view", "interact")


class LatentClipDataset(IterableDataset):
    """Endless random clips of ``length`` latent frames (``r`` video frames each) from one split."""

    def __init__(self, root: str | os.PathLike, length: int, r: int, split: str = "train",
                 val_episodes: int = 1, seed: int = 0, rank: int = 0, world_size: int = 1,
                 start_sample: int = 0, worker_block: int = 1, with_frames: bool = False):
        super().__init__()
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
        if length < 1 or r < 1 or worker_block < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"LatentClipDataset: expected length, r, worker_block >= 1 and 0 <= rank < "
                              f"world_size, got {length}, {r}, {worker_block}, {rank}/{world_size}")
        self.root = Path(root)
        self.meta = read_meta(root)
        self.length, self.r, self.split = length, r, split
        self.seed, self.rank, self.start_sample, self.worker_block = seed, rank, start_sample, worker_block
        self.with_frames = with_frames
        self._paths = list_episodes(root)
        n = len(self._paths)
        n_train = max(n - val_episodes, 0)
        chosen = {"train": range(0, n_train), "val": range(n_train, n), "all": range(n)}[split]
        if len(chosen) == 0:
            raise DataError(f"split {split!r} is empty: {n} episodes with val_episodes={val_episodes}",
                            path=str(self.root))
        latents = {i: latent_count(episode_length(self._paths[i]), r) for i in chosen}
        self.episodes = [i for i in chosen if latents[i] >= length]
        if not self.episodes:
            longest = max(latents, key=latents.get)
            raise DataError(f"no episode of split {split!r} is long enough for {length} latent frames "
                            f"(1 + {r} x {length - 1} video frames); the longest, "
                            f"{self._paths[longest].name}, has {latents[longest]}", path=str(self.root))
        self._cum = np.cumsum([latents[i] - length + 1 for i in self.episodes])  # clips per episode
        self.num_clips = int(self._cum[-1])
        self._arrays: dict[int, dict[str, Any]] = {}  # grouped actions and latent poses per episode
        self._frames: tuple[int, np.ndarray] | None = None  # the last episode's frames (with_frames)

    def locate(self, i: int) -> tuple[int, int]:
        """(episode index, start latent frame) of sample ``i``; depends only on (seed, rank, i)."""
        rng = np.random.default_rng([self.seed, self.rank, int(i)])
        u = int(rng.integers(self.num_clips))
        pos = int(np.searchsorted(self._cum, u, side="right"))
        return self.episodes[pos], u - (int(self._cum[pos - 1]) if pos else 0)

    def _episode_arrays(self, e: int) -> dict[str, Any]:
        if e not in self._arrays:
            raw = load_arrays(self._paths[e], (*ACTION_KEYS, "pose"))
            missing = [k for k in ACTION_KEYS if k not in raw]
            if missing:
                raise DataError(f"missing arrays {missing}", path=str(self._paths[e]))
            out: dict[str, Any] = group_actions({k: raw[k].astype(np.int64) for k in ACTION_KEYS}, self.r)
            if "pose" in raw:
                out["pose"] = latent_poses(raw["pose"].astype(np.float32), self.r)  # (F, 5)
            self._arrays[e] = out
        return self._arrays[e]

    def sample(self, i: int) -> dict[str, Any]:
        """``episode``, ``start`` (latent frame), ``move``/``view``/``interact`` (L, r) int64, ``pose``
        (L, 5) (zeros without poses), ``has_pose``; with ``with_frames`` also ``frames``
        (1 + r (L - 1), 3, H, W) uint8."""
        if i < 0:
            raise ConfigError(f"sample index must be >= 0, got {i}")
        e, s = self.locate(i)
        arrays, sl = self._episode_arrays(e), slice(s, s + self.length)
        out: dict[str, Any] = {k: arrays[k][sl] for k in ACTION_KEYS}
        out["has_pose"] = torch.tensor("pose" in arrays)
        out["pose"] = arrays["pose"][sl] if "pose" in arrays else torch.zeros(self.length, 5)
        out["episode"], out["start"] = e, s
        if self.with_frames:
            a = self.r * s  # the last video frame of latent s - 1 (frame 0 for s = 0)
            if self._frames is None or self._frames[0] != e:
                self._frames = (e, read_episode(self._paths[e], meta=self.meta).frames)
            frames = self._frames[1][a : a + self.r * (self.length - 1) + 1]  # (1 + r (L - 1), H, W, 3)
            out["frames"] = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))
        return out

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        block = wid
        while True:
            first = self.start_sample + block * self.worker_block
            for i in range(first, first + self.worker_block):
                yield self.sample(i)
            block += nw
