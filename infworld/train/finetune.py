"""Start a training run from the weights of an exported model (finetuning), shape-tolerantly.

Used by the world task's ``model.init_from`` (e.g. the memory-trained model starts from the
plain backbone). Parameters are matched by name; a tensor whose shape grew along its first axis
(more frame kinds, a larger embedding table) gets the old rows copied in and keeps its fresh
initialisation for the new rows; new modules (a pose embedding, a memory compressor) keep theirs.
``model.train_only`` (:func:`train_only`) then freezes everything but the named parameters, e.g.
a memory pathway trained on a frozen backbone (docs/memory.md, memory v5).
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

import torch
from torch import nn

from infworld.errors import CheckpointError, ConfigError


def load_matching(model: nn.Module, source: str) -> dict[str, list[str]]:
    """Copy weights of the export ``source`` (name or folder) into ``model``; returns what was
    ``loaded``, ``partial`` (first-axis growth) and ``new`` (kept at init). Raises when nothing
    matches or a shape conflicts otherwise (a different architecture)."""
    from infworld.models.loading import load_model

    src, _ = load_model(source, map_location="cpu")
    have = src.state_dict()
    report: dict[str, list[str]] = {"loaded": [], "partial": [], "new": []}
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if name not in have:
                report["new"].append(name)
                continue
            q = have[name]
            if q.shape == p.shape:
                p.copy_(q)
                report["loaded"].append(name)
            elif q.dim() == p.dim() and q.shape[1:] == p.shape[1:] and q.shape[0] < p.shape[0]:
                p[: q.shape[0]].copy_(q)
                report["partial"].append(name)
            else:
                raise CheckpointError(f"model.init_from {source!r}: parameter {name} has shape "
                                      f"{tuple(q.shape)}, the model being trained needs {tuple(p.shape)}")
    if not report["loaded"]:
        raise CheckpointError(f"model.init_from {source!r}: no parameter matches the model being trained")
    return report


_ROWS = re.compile(r"^(?P<name>.+)\[(?P<start>\d*):(?P<stop>\d*)\]$")


def _split_rows(pattern: str) -> tuple[str, slice | None]:
    """``name[a:b]`` -> (``name``, rows a..b-1); a plain glob -> (glob, None)."""
    m = _ROWS.match(pattern)
    if m is None:
        return pattern, None
    start = int(m["start"]) if m["start"] else None
    stop = int(m["stop"]) if m["stop"] else None
    return m["name"], slice(start, stop)


def _freeze_rows(name: str, p: nn.Parameter, rows: slice, pattern: str) -> None:
    """Let only ``rows`` (first axis) of ``p`` train: its gradient is zeroed elsewhere. With AdamW
    a row whose gradient is always zero never moves (zero moments), and the tensor is marked so the
    optimiser gives it no weight decay (train/optim.py), so the frozen rows stay bit-identical."""
    keep = torch.zeros(p.shape[0], dtype=torch.bool)
    keep[rows] = True
    if not keep.any() or keep.all():
        raise ConfigError(f"model.train_only: {pattern!r} selects {int(keep.sum())} of the "
                          f"{p.shape[0]} rows of {name}; name some of its rows, or the whole tensor")
    mask = keep.to(p.dtype).view(-1, *([1] * (p.dim() - 1)))
    p.register_hook(lambda g: g * mask.to(g.device, g.dtype))
    p._frozen_rows = True  # read by train/optim.py param_groups: no weight decay


def train_only(model: nn.Module, patterns: list[str]) -> list[str]:
    """Freeze every parameter of ``model`` whose name matches none of the glob ``patterns``
    (``fnmatch``, e.g. ``dit.kind_embed.*``); returns the names left trainable. A pattern ending in
    ``[a:b]`` (e.g. ``dit.kind_embed.weight[1:]``) trains only those rows of the matching tensors:
    the memory frame kinds of the kind table, not its ordinary-frame row. Parameters already
    frozen (the tokenizer) stay frozen. Raises when a pattern matches no trainable parameter (a typo
    would otherwise freeze the whole model quietly)."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    split = [(pat, *_split_rows(pat)) for pat in patterns]
    for pat, glob, _ in split:
        if not any(fnmatchcase(n, glob) for n in names):
            sample = ", ".join(names[:6])
            raise ConfigError(f"model.train_only: pattern {pat!r} matches no trainable parameter "
                              f"(names look like: {sample}, ...)")
    keep = []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        hits = [(pat, rows) for pat, glob, rows in split if fnmatchcase(n, glob)]
        if not hits:
            p.requires_grad_(False)
            continue
        keep.append(n)
        if all(rows is not None for _, rows in hits):  # only row patterns name it: mask the rest
            pat, rows = hits[0]
            if len(hits) > 1:
                raise ConfigError(f"model.train_only: {n} is named by several row patterns "
                                  f"{[h[0] for h in hits]}; give one")
            _freeze_rows(n, p, rows, pat)
    return keep


def prepare(model: nn.Module, init_from: str, patterns: list[str]) -> list[str]:
    """``model.init_from`` then ``model.train_only`` on a freshly built model (either may be empty);
    returns one report line per step taken, for the run log."""
    lines = []
    if init_from:
        report = load_matching(model, init_from)
        lines.append(f"init_from {init_from}: {len(report['loaded'])} tensors loaded, "
                     f"{len(report['partial'])} grown ({report['partial']}), {len(report['new'])} new")
    if patterns:
        kept = train_only(model, patterns)
        values = sum(p.numel() for p in model.parameters() if p.requires_grad)
        lines.append(f"train_only: {len(kept)} parameter tensors trained ({values:,} values), "
                     "the rest frozen")
    return lines
