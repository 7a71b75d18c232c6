"""Training data at the latent frame rate of the Wan VAE: action grouping and an on-disk latent cache.

With the VAE in video mode (vae.py) a latent frame stands for ``r = frames_per_latent`` video frames
(Wan: 4): latent 0 holds frame 0, latent j >= 1 holds frames r(j-1)+1 .. rj. Its actions are the r
transitions leading into those frames (:func:`group_actions`, (..., F, r), oldest first, null where
there is none), which the backbone's action adapter brings down to one vector with strided
convolutions (adapters.py). Its pose is the pose of its last frame, rj (:func:`latent_poses`).

Encoding a 1.3B-scale video VAE costs as much as a training step, and the VAE is frozen, so every
episode is encoded once, whole (latent j depends on all frames before it, as at inference), and kept
on disk (:class:`WanLatentStore`): float16 ``(F, C, h, w)`` arrays beside the dataset, one per episode,
written atomically (temp file + rename, like episodes), in a folder named by a hash of the VAE
config, its weights, the mode and the frame size, so a different VAE never reads stale latents.
The idea is that of infworld/train/latent_cache.py (encode each frame once), moved to disk because
4x-compressed latents are only valid when encoded with their whole past. The world task trains on
these latents in video mode (clips.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from infworld.data.episode import atomic_write_bytes, list_episodes, read_meta
from infworld.errors import DataError
from infworld.models.action import NULL_ACTION


def latent_count(num_frames: int, r: int) -> int:
    """Latent frames of a video of ``num_frames`` frames: 1 + (T - 1) // r (the tail is dropped)."""
    return 0 if num_frames < 1 else 1 + (num_frames - 1) // r


def group_actions(transitions: Mapping[str, Any], r: int) -> dict[str, torch.Tensor]:
    """Per-transition actions (..., T-1[, d]) -> per-latent groups (..., F, r[, d]), F = latent_count(T).

    Frame i is reached by transition i - 1 (frame 0 by none: null). Group j holds the actions into
    frames r(j-1)+1 .. rj; group 0 holds frame 0 and r - 1 nulls before it. Ids are null as
    ``NULL_ACTION``, continuous values (float arrays) as NaN.
    """
    out = {}
    for name, a in transitions.items():
        a = torch.as_tensor(np.asarray(a)) if not torch.is_tensor(a) else a
        cont = a.dtype.is_floating_point
        axis = a.dim() - (2 if cont else 1)  # the time axis
        f = latent_count(a.shape[axis] + 1, r)
        fill = float("nan") if cont else NULL_ACTION
        pad_shape = list(a.shape)
        pad_shape[axis] = r  # frame 0's null action plus r - 1 nulls before it
        used = a.narrow(axis, 0, r * (f - 1))  # transitions into frames 1 .. r(F-1)
        grouped = torch.cat([torch.full(pad_shape, fill, dtype=a.dtype, device=a.device), used], dim=axis)
        out[name] = grouped.unflatten(axis, (f, r))
    return out


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-1 of a module's state dict (names and bytes): tells two VAEs of one config apart."""
    h = hashlib.sha1()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def latent_poses(poses: Any, r: int) -> torch.Tensor:
    """Per-frame poses (..., T, 5) -> the pose of each latent frame's last video frame (..., F, 5)."""
    p = torch.as_tensor(np.asarray(poses)) if not torch.is_tensor(poses) else poses
    f = latent_count(p.shape[-2], r)
    return p[..., : r * (f - 1) + 1 : r, :]


class WanLatentStore:
    """Per-episode Wan latents of a dataset, encoded once and kept on disk (module docstring).

    ``tokenizer`` is a :class:`~infworld.models.wan.vae.WanVAE`; ``cache_dir`` defaults to
    ``ROOT/latents``; ``chunk_frames`` bounds the frames encoded per call (memory), rounded to the
    VAE's groups. ``device`` is where encoding runs. :meth:`episode` and :meth:`latents` may be given
    another copy of the same VAE to encode with (e.g. the training model's, on its GPU).
    """

    def __init__(self, root: str | os.PathLike, tokenizer: Any, cache_dir: str | os.PathLike | None = None,
                 chunk_frames: int = 32, device: torch.device | str = "cpu"):
        self.root = Path(root)
        self.meta = read_meta(root)
        self.paths = list_episodes(root)
        self.tok = tokenizer
        self.r = int(tokenizer.frames_per_latent)
        self.chunk = max(self.r, chunk_frames - chunk_frames % self.r)
        self.device = torch.device(device)
        key = json.dumps({"vae": tokenizer.embed(), "weights": weights_digest(tokenizer),
                          "size": list(self.meta.size)}, sort_keys=True)
        tag = hashlib.sha1(key.encode()).hexdigest()[:12]
        self.dir = Path(cache_dir) if cache_dir is not None else self.root / "latents"
        self.dir = self.dir / f"wan-{tag}"
        self._actions: dict[int, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def file(self, episode: int) -> Path:
        return self.dir / f"{self.paths[episode].stem}.npy"

    def _check(self, episode: int) -> None:
        if not 0 <= episode < len(self.paths):
            raise DataError(f"episode {episode} out of range 0..{len(self.paths) - 1}", path=str(self.root))

    def _arrays(self, episode: int, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
        path = self.paths[episode]
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in keys if k in z.files}
        except (OSError, ValueError, EOFError) as exc:
            raise DataError(f"corrupt or truncated episode file ({exc})", path=str(path)) from exc

    @torch.no_grad()
    def encode_frames(self, frames: np.ndarray, tokenizer: Any = None) -> np.ndarray:
        """uint8 frames (T, H, W, 3) -> float16 latents (F, C, h, w), streamed ``chunk_frames`` at a time
        (with ``tokenizer``, a copy of the store's VAE, on its device, when given)."""
        tok, device = self.tok, self.device
        if tokenizer is not None:
            tok, device = tokenizer, next(tokenizer.parameters()).device
        x = torch.as_tensor(frames).permute(0, 3, 1, 2)  # (T, 3, H, W)
        t = (latent_count(x.shape[0], self.r) - 1) * self.r + 1 if self.r > 1 else x.shape[0]
        parts = []
        if self.r == 1:
            for lo in range(0, t, self.chunk):
                parts.append(tok.encode(x[lo : lo + self.chunk].to(device)).cpu())
            z = torch.cat(parts)
        else:
            stream = tok.stream_encoder()
            for lo in range(0, t, self.chunk):
                parts.append(stream.push(x[None, lo : min(lo + self.chunk, t)].to(device)).cpu()[0])
            z = torch.cat(parts)
        return z.half().numpy()

    def episode(self, episode: int, tokenizer: Any = None) -> np.ndarray:
        """Latents (F, C, h, w) float16 of one episode, encoded (by ``tokenizer`` when given) and saved
        on first use."""
        self._check(episode)
        path = self.file(episode)
        if path.is_file():
            try:
                return np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise DataError(f"corrupt latent cache file ({exc}); delete it to re-encode",
                                path=str(path)) from exc
        frames = self._arrays(episode, ("frames",)).get("frames")
        if frames is None:
            raise DataError("missing array", path=str(self.paths[episode]), field="frames")
        z = self.encode_frames(frames, tokenizer)
        atomic_write_bytes(path, lambda f: np.save(f, z))
        return z

    def latents(self, episodes: Any, starts: Any, length: int, tokenizer: Any = None) -> torch.Tensor:
        """Latent clips (B, L, C, h, w) float32 on the CPU: frames ``starts[i] ..`` of ``episodes[i]``;
        episodes not cached yet are encoded first (by ``tokenizer`` when given)."""
        out = []
        for e, s in zip(torch.as_tensor(episodes).tolist(), torch.as_tensor(starts).tolist(), strict=True):
            self._check(e)
            z = self.episode(e, tokenizer)
            if s < 0 or s + length > z.shape[0]:
                raise DataError(f"latent clip {s}..{s + length - 1} outside the episode's {z.shape[0]} "
                                "latent frames", path=str(self.paths[e]))
            out.append(torch.from_numpy(np.asarray(z[s : s + length], dtype=np.float32)))
        return torch.stack(out)

    def build(self, episodes: list[int] | None = None) -> int:
        """Encode every episode not cached yet; returns how many were encoded."""
        wanted = episodes if episodes is not None else range(len(self))
        todo = [i for i in wanted if not self.file(i).is_file()]
        for i in todo:
            self.episode(i)
        return len(todo)

    def clip(self, episode: int, start: int, length: int) -> dict[str, torch.Tensor]:
        """Latent frames ``start .. start + length - 1`` of an episode with their grouped actions:
        ``latents`` (L, C, h, w) float32, ``move``/``view``/``interact`` (L, r) ids, ``pose`` (L, 5)
        when the dataset has poses."""
        z = self.episode(episode)
        if start < 0 or start + length > z.shape[0]:
            raise DataError(f"latent clip {start}..{start + length - 1} outside the episode's {z.shape[0]} "
                            "latent frames", path=str(self.paths[episode]))
        if episode not in self._actions:
            self._actions[episode] = self._arrays(episode, ("move", "view", "interact", "pose"))
        arrays = self._actions[episode]
        grouped = group_actions({k: arrays[k].astype(np.int64) for k in ("move", "view", "interact")}, self.r)
        out = {k: v[start : start + length] for k, v in grouped.items()}
        out["latents"] = torch.from_numpy(np.asarray(z[start : start + length], dtype=np.float32))
        if "pose" in arrays:
            out["pose"] = latent_poses(arrays["pose"].astype(np.float32), self.r)[start : start + length]
        return out
