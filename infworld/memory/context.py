"""Turning a :class:`~infworld.memory.base.MemoryContext` into attention context for the DiT.

Used by both the rollout engine (infworld/world.py, once per chunk) and training
(infworld/train/tasks/world.py, with gradients through the memory frames' keys/values, so a
learned compressor such as HPMC trains end to end through the DiT loss).

The memory frames run through the DiT once at noise level t = 0 (Infinite-World, Sec. 3.2: memory
latents are clean context, marked by their frame kind and modulated as noise level 0); their
keys/values become a "pinned" :class:`~infworld.models.kvcache.PastKV` that every query frame of
the chunk may attend to whatever its sliding window.

Two layouts (:class:`MemoryLayout`, stored in an export's ``model_config``):

* ``causal`` (exports made before memory v2): the memory frames run as one block-causal sequence,
  each attending to the memory frames before it, at consecutive positions right before the local
  window. Cost grows with the square of the frames, and positions grow with their number.
* ``isolated``: every memory frame runs through the DiT on its own (attending only to its own
  tokens), as a batch. Its keys/values then do not depend on its position (keys are cached
  un-rotated and a frame's tokens share one time position, so rotary terms cancel inside it), the
  cost is linear in the frames, and a frame's encoding does not change when other frames join or
  leave: the oracle can hold hundreds of frames. With ``span`` S, more than S memory frames are
  spread evenly over the S slots before the window (fractional positions, oldest first), so the
  positions the queries see never leave the range the model was trained on, at any history length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from infworld.errors import MemoryConfigError
from infworld.memory.base import MEMORY_KIND, MemoryContext
from infworld.models.kvcache import PastKV

if TYPE_CHECKING:
    from infworld.memory.causal_reuse import CausalKVCache
    from infworld.memory.kv_reuse import FrameKVCache

POSE_FEATURES = 6  # width of pose_features()


def pose_features(poses: torch.Tensor, ref: torch.Tensor | None, scale: float) -> torch.Tensor:
    """Camera poses relative to the current camera, as the DiT's pose conditioning.

    poses: (B, M, 5) x, y, z, yaw, pitch (degrees), NaN = unknown; ref: (B, 5) the current camera
    (None = unknown: every feature NaN). Returns (B, M, 6): the offset rotated into the reference
    camera's frame (forward, left, up) divided by ``scale`` (environment units per feature unit),
    then sin/cos of the yaw difference and sin of the pitch difference. NaN rows mean "no pose".
    Relative features make the model invariant to where in the map the revisit happens.
    """
    b, m = poses.shape[:2]
    if ref is None:
        return torch.full((b, m, POSE_FEATURES), float("nan"), device=poses.device)
    ref = ref.to(poses.device, poses.dtype)
    d = poses[..., :3] - ref[:, None, :3]  # (B, M, 3)
    yaw = torch.deg2rad(ref[:, 3])[:, None]  # (B, 1)
    fwd = d[..., 0] * torch.cos(yaw) + d[..., 1] * torch.sin(yaw)
    left = -d[..., 0] * torch.sin(yaw) + d[..., 1] * torch.cos(yaw)
    dyaw = torch.deg2rad(poses[..., 3] - ref[:, None, 3])
    dpitch = torch.deg2rad(poses[..., 4] - ref[:, None, 4])
    feats = torch.stack([fwd / scale, left / scale, d[..., 2] / scale, torch.sin(dyaw), torch.cos(dyaw),
                         torch.sin(dpitch)], dim=-1)
    return feats


LAYOUTS = ("causal", "isolated")


@dataclass(frozen=True)
class MemoryLayout:
    """How memory frames become context (module docstring): ``encoding`` causal or isolated;
    ``span``: memory slots positions may occupy (0 = one slot per frame, unbounded)."""

    encoding: str = "causal"
    span: int = 0

    def check(self) -> None:
        if self.encoding not in LAYOUTS:
            raise MemoryConfigError(f"memory encoding: expected one of {list(LAYOUTS)}, "
                                    f"got {self.encoding!r}")
        if isinstance(self.span, bool) or not isinstance(self.span, int) or self.span < 0:
            raise MemoryConfigError(f"memory span: expected an int >= 0 (0 = unbounded), got {self.span!r}")
        if self.span == 1:
            raise MemoryConfigError("memory span: 1 slot cannot order frames; use 0 or >= 2")

    @classmethod
    def of(cls, model_config: dict[str, Any] | None, strategy: str | None = None) -> MemoryLayout:
        """The layout an export's ``model_config`` records for ``strategy`` (its entry in
        ``memory_encodings``, else ``memory_encoding``; older exports: causal, unbounded)."""
        mc = model_config or {}
        per = mc.get("memory_encodings") or {}
        enc = per.get(strategy) if strategy is not None else None
        layout = cls(str(enc or mc.get("memory_encoding") or "causal"), int(mc.get("memory_span") or 0))
        layout.check()
        return layout


def fit_positions(pos: torch.Tensor, span: int) -> torch.Tensor:
    """Positions (M,) of consecutive memory slots (newest last), squeezed into ``span`` slots that end
    at the newest one when M > span: evenly spaced, oldest at ``newest - (span - 1)``."""
    m = pos.shape[0]
    if span < 2 or m <= span:
        return pos
    newest = pos[-1]
    return newest - (span - 1) + torch.arange(m, dtype=pos.dtype, device=pos.device) * ((span - 1) / (m - 1))


def memory_past(dit: torch.nn.Module, ctx: MemoryContext, ref_pose: torch.Tensor | None,
                shift: float = 0.0, layout: MemoryLayout | None = None,
                reuse: FrameKVCache | CausalKVCache | None = None) -> PastKV:
    """Run the memory frames through ``dit`` at t = 0 and return their keys/values, pinned.

    ``shift`` is added to the context's positions (the engine measures positions from the oldest
    cached frame); ``layout`` (default causal, unbounded) is the model's memory layout (module
    docstring). Gradients flow when called with grad enabled (training). ``reuse``: keys/values of
    frames encoded for an earlier chunk, the cache of the layout (isolated: memory/kv_reuse.py,
    per frame; causal: memory/causal_reuse.py, the unchanged prefix); used only with grad disabled
    (kept keys/values carry no graph).
    """
    layout = layout or MemoryLayout()
    lat = ctx.latents
    b, m = lat.shape[:2]
    dev = lat.device
    pos = fit_positions(ctx.positions.to(dev).float() + float(shift), layout.span)  # (M,)
    kinds = ctx.kinds.to(dev) if ctx.kinds is not None else torch.full((b, m), MEMORY_KIND, device=dev)
    t0 = torch.zeros(b, m, device=dev)
    acts = {k: a.to(dev) for k, a in ctx.actions.items()}
    kw = {}
    if getattr(dit.cfg, "pose_dim", 0):
        if ctx.poses is not None:
            kw["poses"] = pose_features(ctx.poses.to(dev).float(), ref_pose, dit.cfg.pose_scale)
        else:
            kw["poses"] = torch.full((b, m, dit.cfg.pose_dim), float("nan"), device=dev)
    valid = ctx.valid.to(dev) if ctx.valid is not None else None
    # kept keys/values carry no graph: training (grad enabled) always encodes; a cache serves one layout
    cache = reuse if reuse is not None and not torch.is_grad_enabled() and reuse.encoding == layout.encoding \
        else None
    if layout.encoding == "isolated":
        keys, values = _isolated_kv(dit, lat, t0, acts, kinds, kw.get("poses"), cache, ctx.sources)
    else:
        def run(first: int, prefix: PastKV | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
            """Frames ``first..M-1`` attending (block-causally) to ``prefix``, frames 0..first-1."""
            sl = slice(first, None)
            extra = {"poses": kw["poses"][:, sl]} if "poses" in kw else {}
            # chain=False: memory frames are not consecutive in time, none is shown its list neighbour
            # as the previous frame of the conv path (models/latent_conv.py)
            _, kv = dit(lat[:, sl], t0[:, sl], {k: a[:, sl] for k, a in acts.items()}, positions=pos[sl],
                        kinds=kinds[:, sl], past=prefix, return_kv=True, chain=False,
                        key_valid=valid[:, sl] if valid is not None else None, **extra)
            return kv

        if cache is not None:
            keys, values = cache.encode(lat, ctx.sources, kinds, acts, kw.get("poses"), pos, valid, run)
        else:
            kv = run(0, None)
            keys, values = [k for k, _ in kv], [v for _, v in kv]
    return PastKV(keys, values, pos, torch.ones(m, dtype=torch.bool, device=dev), valid=valid)


def _isolated_kv(dit: torch.nn.Module, lat: torch.Tensor, t0: torch.Tensor, acts: dict[str, torch.Tensor],
                 kinds: torch.Tensor, poses: torch.Tensor | None, reuse: FrameKVCache | None = None,
                 sources: torch.Tensor | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Each memory frame through ``dit`` alone (a batch of B * M one-frame clips at position 0); the
    un-rotated keys/values regrouped per layer as (B, H, M * N, hd), frame after frame. With
    ``reuse`` only the frames it does not hold run (``sources`` (B, M) name the raw frames)."""
    b, m = lat.shape[:2]

    def flat(x: torch.Tensor) -> torch.Tensor:  # (B, M, ...) -> (B * M, 1, ...)
        return x.reshape(b * m, 1, *x.shape[2:])

    f_lat, f_t0, f_kinds = flat(lat), flat(t0), flat(kinds)
    f_acts = {k: flat(a) for k, a in acts.items()}
    f_poses = flat(poses) if poses is not None else None
    zero = torch.zeros(1, device=lat.device)

    def run(idx: torch.Tensor | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Frames ``idx`` (F,) of the B * M (None = all): per layer (k, v), each (F, H, N, hd)."""
        def pick(x: torch.Tensor) -> torch.Tensor:
            return x if idx is None else x[idx.to(x.device)]

        kw = {"poses": pick(f_poses)} if f_poses is not None else {}
        _, kv = dit(pick(f_lat), pick(f_t0), {k: pick(a) for k, a in f_acts.items()}, positions=zero,
                    kinds=pick(f_kinds), return_kv=True, chain=False, **kw)
        return kv

    kv = run(None) if reuse is None else reuse.frames_kv(lat, sources, kinds, acts, poses, run)

    def regroup(x: torch.Tensor) -> torch.Tensor:  # (B * M, H, N, hd) -> (B, H, M * N, hd)
        h, n, hd = x.shape[1:]
        return x.reshape(b, m, h, n, hd).permute(0, 2, 1, 3, 4).reshape(b, h, m * n, hd)

    return [regroup(k) for k, _ in kv], [regroup(v) for _, v in kv]
