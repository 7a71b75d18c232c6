"""Cache keys naming memory frames by exactly what determines their keys/values in the DiT (used by
the isolated layout's per-frame cache, memory/kv_reuse.py, and the causal layout's prefix cache,
memory/causal_reuse.py)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch


def frame_keys(latents: torch.Tensor, sources: torch.Tensor | None, kinds: torch.Tensor,
               actions: Mapping[str, torch.Tensor], poses: torch.Tensor | None) -> list[Hashable]:
    """One cache key per memory frame (module docstring), row-major over (B, M).

    latents (B, M, C, h, w); sources (B, M) rollout frame indices, -1 = none (None: none known, all
    keyed by content); kinds (B, M); actions {name: (B, M) or (B, M, d)}; poses (B, M, P) the pose
    features the DiT sees, or None when it sees none.
    """
    b, m = latents.shape[:2]
    parts = [kinds.reshape(b, m, -1)] + [actions[k].reshape(b, m, -1) for k in sorted(actions)]
    if poses is not None:
        parts.append(poses.reshape(b, m, -1))
    # float64 holds every action id and float32 value exactly: equal bytes <=> equal conditioning
    cond = torch.cat([p.detach().double().cpu() for p in parts], dim=-1).numpy()  # (B, M, K)
    src = sources.detach().cpu() if sources is not None else torch.full((b, m), -1, dtype=torch.long)
    rows, cols = (src < 0).nonzero(as_tuple=True)
    content = latents[rows.to(latents.device), cols.to(latents.device)].detach().float().cpu().numpy()
    at = zip(rows.tolist(), cols.tolist(), strict=True)
    by_content = {(r, c): content[j].tobytes() for j, (r, c) in enumerate(at)}
    src_list = src.tolist()
    keys: list[Hashable] = []
    for r in range(b):
        for c in range(m):
            s = src_list[r][c]
            keys.append(("frame", r, s, cond[r, c].tobytes()) if s >= 0 else
                        ("content", by_content[(r, c)], cond[r, c].tobytes()))
    return keys
