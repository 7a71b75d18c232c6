"""Camera-pose geometry for the pose-based memories (WorldScape's KV memory, VRAG retrieval).

Poses are ``(x, y, z, yaw_deg, pitch_deg)`` in environment units (ViZDoom map units, ~256 units ~ a
room): ``x, y`` on the ground plane, ``z`` up, yaw the heading counter-clockwise from +x, pitch
positive looking up (docs/actions.md, "Pose conventions"). Everything here is batched, pure torch
and deterministic; NaN marks an unknown pose.

* :func:`frustum_overlap`: WorldScape's **geometric similarity** between the current camera and past
  cameras (the fraction of the current view frustum that a past camera also saw).
* :func:`pose_distance`: a translation + rotation distance (VRAG's "global state" distance, and the
  metric of WorldScape's farthest point sampling).
* :func:`farthest_point_sampling`: greedy FPS over poses (WorldScape's pool pruning).
"""

from __future__ import annotations

import math

import torch

DOOM_ASPECT = 4.0 / 3.0  # ViZDoom renders 4:3 (160x120); the vertical field of view follows from it


def wrap_degrees(a: torch.Tensor) -> torch.Tensor:
    """Angles wrapped to [-180, 180)."""
    return torch.remainder(a + 180.0, 360.0) - 180.0


def _camera_axes(pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward, left and up unit vectors (..., 3) of cameras ``pose`` (..., 5)."""
    yaw = torch.deg2rad(pose[..., 3])
    pitch = torch.deg2rad(pose[..., 4])
    cy, sy, cp, sp = torch.cos(yaw), torch.sin(yaw), torch.cos(pitch), torch.sin(pitch)
    zero = torch.zeros_like(yaw)
    fwd = torch.stack([cp * cy, cp * sy, sp], -1)
    left = torch.stack([-sy, cy, zero], -1)
    up = torch.stack([-sp * cy, -sp * sy, cp], -1)
    return fwd, left, up


def _frustum_samples(samples: int, near: float, far: float, device: torch.device
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed grid of points in a unit camera frustum: (depth, image x, image y), each (P,).

    ``samples`` depths (cell centres, uniform in depth so near and far space weigh the same) times
    ``samples`` image columns times 3 image rows (pitch matters less in ViZDoom than yaw), image
    coordinates in (-1, 1) (cell centres, so the frustum's own boundary is never sampled and an
    identical camera sees every point).
    """
    depth = near + (torch.arange(samples, device=device) + 0.5) / samples * (far - near)
    cols = (torch.arange(samples, device=device) + 0.5) / samples * 2.0 - 1.0
    rows = torch.tensor([-2.0 / 3.0, 0.0, 2.0 / 3.0], device=device)
    d, u, v = torch.meshgrid(depth, cols, rows, indexing="ij")
    return d.flatten(), u.flatten(), v.flatten()


def frustum_overlap(ref: torch.Tensor, poses: torch.Tensor, fov_deg: float = 90.0, near: float = 16.0,
                    far: float = 512.0, samples: int = 8, aspect: float = DOOM_ASPECT) -> torch.Tensor:
    """WorldScape's geometric similarity: view-frustum overlap of past cameras with the current one.

    ref: (B, 5) the current camera; poses: (B, M, 5) past cameras. A fixed deterministic set of
    ``samples * samples * 3`` points fills the reference camera's frustum (horizontal field of view
    ``fov_deg``, vertical from ``aspect``, depths ``near..far`` along the view axis); the result
    (B, M) in [0, 1] is the fraction of them that also lie inside the other camera's frustum (same
    field of view and depth range). Occlusion is ignored (no depth maps at retrieval time). An
    unknown (NaN) pose on either side gives 0. Same pose -> 1; a camera at the same place looking the
    other way -> 0; the measure is close to, not exactly, symmetric.
    """
    if samples < 1 or not 0.0 < fov_deg < 180.0 or not 0.0 < near < far:
        raise ValueError(f"frustum_overlap: need samples >= 1, 0 < fov_deg < 180 and 0 < near < far, got "
                         f"samples={samples}, fov_deg={fov_deg}, near={near}, far={far}")
    if ref.dim() != 2 or poses.dim() != 3 or ref.shape[-1] != 5 or poses.shape[-1] != 5 \
            or poses.shape[0] != ref.shape[0]:
        raise ValueError(f"frustum_overlap: expected ref (B, 5) and poses (B, M, 5), got {tuple(ref.shape)} "
                         f"and {tuple(poses.shape)}")
    ref = ref.float()
    poses = poses.float()
    th = math.tan(math.radians(fov_deg) / 2.0)  # horizontal half-width per unit depth
    tv = th / aspect  # vertical half-height per unit depth
    depth, u, v = _frustum_samples(samples, near, far, ref.device)  # (P,)
    f0, l0, u0 = _camera_axes(ref)  # (B, 3)
    # Points (B, P, 3) at forward depth d, image x = u (+ = right = -left), image y = v (+ = up).
    pts = ref[:, None, :3] + depth[None, :, None] * (
        f0[:, None] - (u * th)[None, :, None] * l0[:, None] + (v * tv)[None, :, None] * u0[:, None])
    f1, l1, u1 = _camera_axes(poses)  # (B, M, 3)
    rel = pts[:, None] - poses[:, :, None, :3]  # (B, M, P, 3)
    df = (rel * f1[:, :, None]).sum(-1)  # (B, M, P) depth along the other camera's axis
    dl = (rel * l1[:, :, None]).sum(-1)
    du = (rel * u1[:, :, None]).sum(-1)
    inside = (df >= near) & (df <= far) & (dl.abs() <= df * th) & (du.abs() <= df * tv)
    overlap = inside.float().mean(-1)  # (B, M)
    known = ~(torch.isnan(ref).any(-1)[:, None] | torch.isnan(poses).any(-1))
    return torch.where(known, overlap, torch.zeros_like(overlap))


def pose_distance(a: torch.Tensor, b: torch.Tensor, scale: float = 256.0,
                  angle_weight: float = 1.0) -> torch.Tensor:
    """Weighted state distance between poses a, b (..., 5) (broadcast) -> (...).

    ``|xyz_a - xyz_b| / scale + angle_weight * (|wrap(yaw_a - yaw_b)| + |pitch_a - pitch_b|) / 180``:
    one unit is ``scale`` environment units of translation (~ a room in ViZDoom at 256) or a half
    turn. The state distance VRAG retrieves by (position and angle) and the metric of WorldScape's
    farthest point sampling. NaN where either pose is unknown.
    """
    trans = (a[..., :3] - b[..., :3]).norm(dim=-1) / scale
    yaw = wrap_degrees(a[..., 3] - b[..., 3]).abs()
    pitch = (a[..., 4] - b[..., 4]).abs()
    return trans + angle_weight * (yaw + pitch) / 180.0


def farthest_point_sampling(poses: torch.Tensor, k: int, scale: float = 256.0, angle_weight: float = 1.0,
                            first: int | torch.Tensor | None = None,
                            valid: torch.Tensor | None = None) -> torch.Tensor:
    """Greedy farthest point sampling over poses (N, 5) or batched (B, N, 5) -> indices (k,) / (B, k).

    Start from index ``first`` (default 0; an int or a (B,) tensor), then repeatedly add the pose
    whose distance (:func:`pose_distance`) to the chosen set is largest; ties go to the lowest
    index, so the result is deterministic. Unknown (NaN) distances count as 0 (never preferred).
    ``valid`` (N,) / (B, N) bool excludes entries (chosen only when nothing valid remains). WorldScape
    keeps its global pool spread out this way when it is full.
    """
    batched = poses.dim() == 3
    p = poses if batched else poses[None]
    bsz, n = p.shape[:2]
    if not 1 <= k <= n:
        raise ValueError(f"farthest_point_sampling: k must be in 1..{n}, got {k}")
    dist = pose_distance(p[:, :, None], p[:, None, :], scale, angle_weight).nan_to_num(0.0)  # (B, N, N)
    rows = torch.arange(bsz, device=p.device)
    if first is None:
        cur = torch.zeros(bsz, dtype=torch.long, device=p.device)
    else:
        cur = torch.as_tensor(first, dtype=torch.long, device=p.device).expand(bsz).clone()
    out = torch.empty(bsz, k, dtype=torch.long, device=p.device)
    # mind (B, N): distance to the chosen set; chosen entries hold -inf (minimum keeps them there),
    # invalid ones start at -1e9 so they rank below every valid entry.
    mind = torch.full((bsz, n), math.inf, device=p.device)
    if valid is not None:
        ok = (valid if batched else valid[None]).to(p.device)
        mind = mind.masked_fill(~ok, -1e9)
    for i in range(k):
        out[:, i] = cur
        mind = torch.minimum(mind, dist[rows, cur])
        mind[rows, cur] = -math.inf
        cur = mind.argmax(-1)  # first maximum = lowest index on ties
    return out if batched else out[0]
