"""Revisit gap buckets: the revisit protocol's results split by how long ago the place was seen.

A memory that keeps 30 frames closes short returns and nothing else; one that keeps a summary may
close long ones badly but at all. One mean over all events hides that, so a suite may name bucket
edges (``SuiteSpec.gap_buckets``, e.g. ``(16, 64, 150, 350)``) and the revisit protocol then reports
each bucket on its own: bucket ``"a-b"`` holds the events whose gap ``t - s`` (frames between the
first visit ``s`` and the return ``t``) satisfies ``a < gap <= b``, the same "more than" convention
as the revisit rule's ``min_gap``. Events outside every bucket count toward the overall figures only.

:func:`gap_closed_share` turns a bucket's PSNR into the share of the distance from the ``window``
baseline (no memory beyond the local window) to the ``full`` oracle (all history) that a variant
covers: 0% = no better than forgetting, 100% = as good as remembering everything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from infworld.errors import ConfigError

BUCKET_METRICS = ("psnr_gt", "ssim_gt", "psnr_self", "ssim_self")
MIN_SPREAD_DB = 0.1  # window and full closer than this (dB): a share of noise, left undefined


def check_edges(edges: Sequence[int]) -> tuple[int, ...]:
    """``edges`` as a tuple of ints; ConfigError unless empty or >= 2 strictly increasing values >= 0."""
    out = tuple(int(e) for e in edges)
    if out and (len(out) < 2 or out[0] < 0 or any(b <= a for a, b in zip(out, out[1:], strict=False))):
        raise ConfigError(f"gap buckets: expected at least two strictly increasing frame gaps >= 0 "
                          f"(e.g. (16, 64, 150, 350)), got {list(edges)}")
    return out


def bucket_labels(edges: Sequence[int]) -> list[str]:
    """``"a-b"`` for each pair of neighbouring edges: (16, 64, 150) -> ["16-64", "64-150"]."""
    e = check_edges(edges)
    return [f"{a}-{b}" for a, b in zip(e, e[1:], strict=False)]


def per_bucket(gaps: np.ndarray, values: Mapping[str, np.ndarray], edges: Sequence[int]
               ) -> dict[str, dict[str, float | int | None]]:
    """Mean of each metric per gap bucket, with the event count.

    ``gaps`` (E,) frames ``t - s`` per event; ``values`` maps a metric name to its (E,) per-event
    values (the same events, same order). Returns ``{"a-b": {"events": n, <metric>: mean or None}}``
    with every bucket present (``events`` 0 and None means where no event fell), in edge order.
    """
    e = check_edges(edges)
    gaps = np.asarray(gaps, dtype=np.int64).reshape(-1)
    vals = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in values.items()}
    for k, v in vals.items():
        if len(v) != len(gaps):
            raise ConfigError(f"gap buckets: {len(gaps)} gaps but {len(v)} values of {k}")
    out: dict[str, dict[str, float | int | None]] = {}
    for label, lo, hi in zip(bucket_labels(e), e, e[1:], strict=False):
        sel = (gaps > lo) & (gaps <= hi)  # (E,)
        n = int(sel.sum())
        out[label] = {"events": n, **{k: float(v[sel].mean()) if n else None for k, v in vals.items()}}
    return out


def gap_closed_share(x: float | None, window: float | None, full: float | None) -> float | None:
    """``(x - window) / (full - window)``: the share of the window-to-full gap that ``x`` closes
    (0 = window, 1 = full; below 0 or above 1 when worse than window or better than full). None when
    a value is missing or window and full are within ``MIN_SPREAD_DB``, where the ratio is noise."""
    if x is None or window is None or full is None or abs(full - window) < MIN_SPREAD_DB:
        return None
    return float((x - window) / (full - window))
