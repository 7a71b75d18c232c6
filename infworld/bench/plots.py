"""Matplotlib plots of the bench results (Agg backend, PNG files written atomically).

Used by report.py: PSNR/SSIM vs horizon per memory variant, Frechet distance vs horizon, and the
memory state bytes vs frames generated.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from infworld.data.episode import atomic_write_bytes


def get_path(d: Any, *keys: str) -> Any:
    """``d[k1][k2]...`` or None where a key is missing (results sections may be absent)."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _save(fig: Any, path: Path) -> None:
    """A matplotlib Figure written atomically as PNG (no pyplot: nothing global, no display needed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, lambda f: f.write(buf.getvalue()))


def _curves(ax: Any, variants: dict, protocol: str, xkey: str, ykey: str, ylabel: str) -> bool:
    drawn = False
    for i, (name, v) in enumerate(variants.items()):  # colour C{i} = one variant in every plot
        block = v.get(protocol) or {}
        xs, ys = block.get(xkey) or [], block.get(ykey) or []
        pts = [(x, y) for x, y in zip(xs, ys, strict=False) if y is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="." if len(pts) < 40 else None, label=name, color=f"C{i}")
            drawn = True
    ax.set_xlabel("frames generated (horizon)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    return drawn


def make_plots(results: dict, plots_dir: Path) -> tuple[list[tuple[Path, str]], str | None]:
    """PNG plots of replay PSNR/SSIM vs horizon, FD vs horizon, and state bytes; ([(path, caption)], note).

    Plots without data are skipped; without matplotlib there are none, and the note says why.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return [], "No plots: matplotlib is not installed (pip install matplotlib)."
    variants = results.get("variants") or {}
    made: list[tuple[Path, str]] = []

    fig = Figure(figsize=(10, 3.6), layout="constrained")
    a1, a2 = fig.subplots(1, 2)
    if _curves(a1, variants, "replay", "horizon", "psnr", "PSNR vs ground truth (dB)") | \
            _curves(a2, variants, "replay", "horizon", "ssim", "SSIM vs ground truth"):
        fig.suptitle("Replay fidelity over horizon (true actions, ground-truth context)")
        made.append((plots_dir / "replay_fidelity.png",
                     "Replay PSNR and SSIM against ground truth vs horizon"))
        _save(fig, made[-1][0])

    has_fid = any(get_path(v, "distribution", "fid_inception") for v in variants.values())
    fig = Figure(figsize=(10 if has_fid else 5.5, 3.6), layout="constrained")
    axes = fig.subplots(1, 2) if has_fid else [fig.subplots()]
    drawn = _curves(axes[0], variants, "distribution", "horizons", "fd_ours", "FD ours (tokenizer features)")
    if has_fid:
        drawn |= _curves(axes[1], variants, "distribution", "horizons", "fid_inception", "FID (Inception)")
    if drawn:
        fig.suptitle("Frechet distance to ground-truth frames vs horizon")
        made.append((plots_dir / "fd_horizon.png",
                     "Frechet distance (our tokenizer's features; not FID) vs horizon"))
        _save(fig, made[-1][0])

    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.subplots()
    drawn = False
    for i, (name, v) in enumerate(variants.items()):
        sb = get_path(v, "speed", "state_bytes") or {}
        pts = sorted((int(k), b) for k, b in sb.items() if b)
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=name, color=f"C{i}")
            drawn = True
    if drawn:
        ax.set(xscale="log", yscale="log", xlabel="frames generated", ylabel="memory state (bytes)",
               title="Memory state size")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        made.append((plots_dir / "state_bytes.png", "Memory state bytes vs frames generated (log-log)"))
        _save(fig, made[-1][0])
    return made, None


