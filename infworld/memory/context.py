"""Turning a :class:`~infworld.memory.base.MemoryContext` into attention context for the DiT.

Used by both the rollout engine (infworld/world.py, once per chunk) and training
(infworld/train/tasks/world.py, with gradients through the memory frames' keys/values, so a
learned compressor such as HPMC trains end to end through the DiT loss).

The memory frames run through the DiT once at noise level t = 0 (Infinite-World, Sec. 3.2: memory
latents are clean context, marked by their frame kind and modulated as noise level 0); their
keys/values become a "pinned" :class:`~infworld.models.kvcache.PastKV` that every query frame of
the chunk may attend to whatever its sliding window.
"""

from __future__ import annotations

import torch

from infworld.memory.base import MEMORY_KIND, MemoryContext
from infworld.models.kvcache import PastKV

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


def memory_past(dit: torch.nn.Module, ctx: MemoryContext, ref_pose: torch.Tensor | None,
                shift: float = 0.0) -> PastKV:
    """Run the memory frames through ``dit`` at t = 0 and return their keys/values, pinned.

    ``shift`` is added to the context's positions (the engine measures positions from the oldest
    cached frame). Gradients flow when called with grad enabled (training).
    """
    lat = ctx.latents
    b, m = lat.shape[:2]
    dev = lat.device
    pos = ctx.positions.to(dev).float() + float(shift)  # (M,)
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
    # chain=False: memory frames are not consecutive in time, none is shown its list neighbour as the
    # previous frame of the conv path (models/latent_conv.py)
    _, kv = dit(lat, t0, acts, positions=pos, kinds=kinds, return_kv=True, key_valid=valid, chain=False, **kw)
    return PastKV([k for k, _ in kv], [v for _, v in kv], pos, torch.ones(m, dtype=torch.bool, device=dev),
                  valid=valid)
