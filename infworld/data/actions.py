"""Uncertainty-aware action labeling from camera poses (Infinite-World, arXiv 2602.02393, Sec. 3.3).

Noisy continuous camera motion becomes a tri-state per axis (negative / none / positive) plus an
explicit *uncertain* label between a "clearly still" and a "clearly moving" threshold, so noisy
labels never teach the model a wrong response. Method, defaults, ViZDoom measurements: docs/actions.md.

The motion of step ``t -> t + 1`` (action ``t``) is taken in the camera frame at ``t`` (forward,
right, turn right, pitch up: :func:`camera_motion`). Each axis with measured motion ``c`` and noise
std ``s`` (from the pose noise, estimated when not given) in a group with typical moving speed
``S`` (move, turn or pitch, estimated robustly from the data) is labelled::

    still      if |c| <= still_frac * S - z * s      (view_still_frac for turn and pitch)
    sign(c)    if |c| >= move_frac  * S + z * s
    uncertain  otherwise

and a move / view id is uncertain (9) when either of its two axes is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from infworld.data.action_schema import (  # noqa: F401  (re-exported: one import for label users)
    MOVE_NONE,
    NUM_MOVE,
    NUM_VIEW,
    UNCERTAIN,
    VIEW_NONE,
    decode_move,
    decode_pair,
    decode_view,
    encode_move,
    encode_pair,
    encode_view,
)
from infworld.data.pose_motion import (  # noqa: F401  (re-exported)
    PoseNoise,
    _as_track,
    camera_motion,
    estimate_noise,
    estimate_noise_pooled,
    wrap_deg,
)
from infworld.errors import ConfigError

AXES = ("forward", "right", "yaw", "pitch")

@dataclass(frozen=True)
class LabelThresholds:
    """Decision thresholds, as fractions of the typical moving speed plus a noise margin.

    still_frac, move_frac: for forward / right, "none" only below still_frac x S (clearly still:
        creep within a few map units), moving above move_frac x S (about half the typical speed);
        the wide band in between (coasting after a key release, sliding along a wall) is uncertain
        even without noise, so a step with clearly real motion below full speed is never labelled
        still. still_frac x S stays below 6 map units for any typical speed up to ViZDoom's top
        walking speed (~31).
    view_still_frac: the same for turn and pitch, whose speed has no momentum tail (a turn key
        turns at full speed or half speed on its first tics, not in between): a narrow band.
    z: noise margin, in standard deviations of the measured motion, added on both sides of the band
        so that a label is given only when it is on its side with probability ~Phi(z) or more.
        Defaults were chosen on ViZDoom data of another seed than the reported one (docs/actions.md).
    detect_sigmas: a step counts as "detected motion" if it exceeds this many noise std.
    ref_quantile, core_frac: typical speed = median of the detected |motion| values of the group
        that are at least ``core_frac`` times their ``ref_quantile`` quantile: the speed of steady
        motion, not dragged down by starts, stops and wall contact, and hardly moved by noise.
    min_motion_share: a group whose detected share of steps is below this has no motion at all
        (pure noise peaks): its steps are still within detect_sigmas std of zero, else uncertain.
    move_speed, turn_speed, pitch_speed: known typical per-step speeds (world units, degrees,
        degrees); None = estimate from the data.
    """

    still_frac: float = 0.18
    view_still_frac: float = 0.47
    move_frac: float = 0.53
    z: float = 1.0
    detect_sigmas: float = 3.0
    ref_quantile: float = 0.95
    core_frac: float = 0.5
    min_motion_share: float = 0.02
    move_speed: float | None = None
    turn_speed: float | None = None
    pitch_speed: float | None = None

    def validate(self) -> LabelThresholds:
        for f in fields(self):
            v, speed = getattr(self, f.name), f.name.endswith("_speed")
            if not ((v is None and speed) or (isinstance(v, (int, float)) and math.isfinite(v)
                                              and (v > 0 if speed else v >= 0))):
                raise ConfigError(f"LabelThresholds.{f.name}: expected a finite number "
                                  f"{'> 0 or None' if speed else '>= 0'}, got {v!r}")
        if not (0 < self.still_frac < self.move_frac and 0 < self.view_still_frac < self.move_frac
                and 0 < self.ref_quantile <= 1 and 0 < self.core_frac <= 1 and self.min_motion_share < 1):
            raise ConfigError(f"LabelThresholds: need 0 < still_frac and view_still_frac < move_frac, "
                              f"ref_quantile and core_frac in (0, 1] and min_motion_share < 1, got {self}")
        return self


@dataclass(frozen=True)
class TypicalSpeeds:
    """Typical per-step speed of each group when moving; None = no motion above the noise."""

    move: float | None
    turn: float | None
    pitch: float | None

    def per_axis(self) -> list[float | None]:
        return [self.move, self.move, self.turn, self.pitch]  # AXES order


@dataclass
class PoseLabels:
    """Labels of a pose track of T frames (all arrays have T - 1 rows, one per action).

    move, view: (T-1,) int64 ids 0..9 (action_schema; 9 = uncertain).
    axes: (T-1, 4) int8 tri-states in AXES order, 0 where uncertain.
    uncertain: (T-1, 4) bool. confidence: (T-1, 4) float in [0, 1], the Gaussian probability that
        the true motion is on the labelled side of its band edge (uncertain steps: the larger of the
        two sides, below Phi(z)). motion: (T-1, 4) camera-frame motion [forward, right, yaw right,
        pitch up].
    noise: the noise used (given or estimated); speeds: the typical speeds used.
    """

    move: np.ndarray
    view: np.ndarray
    axes: np.ndarray
    uncertain: np.ndarray
    confidence: np.ndarray
    motion: np.ndarray
    noise: PoseNoise
    speeds: TypicalSpeeds

    def tristate(self, axis: str) -> tuple[np.ndarray, np.ndarray]:
        """``(values in {-1, 0, 1}, uncertain mask)`` of one axis by name."""
        if axis not in AXES:
            raise ConfigError(f"unknown axis {axis!r}; expected one of {AXES}")
        return self.axes[:, AXES.index(axis)], self.uncertain[:, AXES.index(axis)]



def motion_std(motion: np.ndarray, noise: PoseNoise, has_pitch: bool = True) -> np.ndarray:
    """Std of each measured camera-frame motion component, (T-1, 4), from the per-frame pose noise.

    A displacement is the difference of two noisy positions (variance 2 s_p^2 per axis); heading
    noise at frame t (s_a, radians) leaks the other planar component in (first order: delta * other).
    A turn or pitch step is the difference of two noisy angles (variance 2 s_a^2).
    """
    sp2, sa = 2.0 * float(noise.position) ** 2, math.radians(float(noise.angle))
    ang = np.full(motion.shape[0], math.sqrt(2.0) * float(noise.angle))
    return np.stack([np.sqrt(sp2 + (motion[:, 1] * sa) ** 2), np.sqrt(sp2 + (motion[:, 0] * sa) ** 2),
                     ang, ang if has_pitch else np.zeros_like(ang)], axis=1)  # (T-1, 4)


def estimate_speeds(motions: Sequence[np.ndarray], stds: Sequence[np.ndarray],
                    thresholds: LabelThresholds | None = None) -> TypicalSpeeds:
    """Typical per-step speed of each group (move, turn, pitch) over one or more tracks.

    Only components above ``detect_sigmas`` noise std count (detected motion); the typical speed is
    the median of their steady core (see LabelThresholds). A group with fewer than
    ``min_motion_share`` of its values detected (or fewer than 3) gets None: no motion, only noise.
    Speeds given in ``thresholds`` win.
    """
    thr = (thresholds or LabelThresholds()).validate()
    groups = {"move": (0, 1), "turn": (2,), "pitch": (3,)}
    given = {"move": thr.move_speed, "turn": thr.turn_speed, "pitch": thr.pitch_speed}
    out: dict[str, float | None] = {}
    for name, cols in groups.items():
        if given[name] is not None:
            out[name] = float(given[name])
            continue
        detected, total = [], 0
        for m, s in zip(motions, stds, strict=True):
            a = np.abs(m[:, cols])  # (T-1, len(cols))
            detected.append(a[a > thr.detect_sigmas * s[:, cols]])
            total += a.size
        vals = np.concatenate(detected) if detected else np.zeros(0)
        if vals.size < 3 or vals.size < thr.min_motion_share * total:
            out[name] = None
        else:
            core = vals[vals >= thr.core_frac * np.quantile(vals, thr.ref_quantile)]
            out[name] = float(np.median(core))
    return TypicalSpeeds(**out)


def _phi(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF, elementwise (no scipy dependency)."""
    return 0.5 * (1.0 + np.vectorize(math.erf, otypes=[np.float64])(np.asarray(x) / math.sqrt(2.0)))


def label_motion(motion: np.ndarray, std: np.ndarray, speeds: TypicalSpeeds, noise: PoseNoise,
                 thresholds: LabelThresholds | None = None) -> PoseLabels:
    """Tri-state + uncertain labels from camera-frame motion (T-1, 4) and its std (T-1, 4)."""
    thr = (thresholds or LabelThresholds()).validate()
    mag = np.abs(motion)  # (T-1, 4)
    b_lo = np.empty_like(mag)  # semantic band edges: still below b_lo, moving above b_hi
    b_hi = np.empty_like(mag)
    for i, s in enumerate(speeds.per_axis()):
        if s is None:
            # No motion above the noise anywhere: "still" = within detect_sigmas std of zero.
            b_lo[:, i] = (thr.detect_sigmas + thr.z) * std[:, i]
            b_hi[:, i] = np.inf
        else:
            b_lo[:, i] = (thr.still_frac if i < 2 else thr.view_still_frac) * s
            b_hi[:, i] = thr.move_frac * s
    still = mag <= b_lo - thr.z * std
    moving = mag >= b_hi + thr.z * std
    uncertain = ~(still | moving)
    axes = np.where(moving, np.sign(motion), 0).astype(np.int8)  # (T-1, 4)

    safe = np.maximum(std, 1e-12)  # noise-free tracks: Phi(+-inf) = 1 or 0
    p_still = _phi((b_lo - mag) / safe)
    p_move = _phi((mag - b_hi) / safe)  # no typical speed: b_hi = inf -> 0
    confidence = np.where(still, p_still, np.where(moving, p_move, np.maximum(p_still, p_move)))

    fwd, right, yaw, pitch = (axes[:, i].astype(np.int64) for i in range(4))
    move = np.where(uncertain[:, 0] | uncertain[:, 1], UNCERTAIN, encode_move(fwd, right))
    view = np.where(uncertain[:, 2] | uncertain[:, 3], UNCERTAIN, encode_view(yaw, pitch))
    return PoseLabels(move=move.astype(np.int64), view=view.astype(np.int64), axes=axes,
                      uncertain=uncertain, confidence=confidence, motion=motion, noise=noise,
                      speeds=speeds)


def label_from_poses(position, yaw_deg, pitch_deg=None,
                     noise_std: PoseNoise | Sequence | str | None = None,
                     thresholds: LabelThresholds | None = None) -> PoseLabels:
    """Label each step of a pose track (T frames -> T-1 actions) with move / view ids.

    position: (T, 2) or (T, 3) world units (x, y ground plane, z up; z is ignored).
    yaw_deg: (T,) heading, 0 along +x, counter-clockwise from above (ViZDoom's ANGLE).
    pitch_deg: (T,) positive = looking up, or None for a level camera (pitch tri-state 0).
    noise_std: per-frame pose noise as PoseNoise / (position, angle) / "position,angle";
        None or a None field = estimated from this track (:func:`estimate_noise`).
    """
    pos, yaw, pitch = _as_track(position, yaw_deg, pitch_deg)
    thr = (thresholds or LabelThresholds()).validate()
    noise = PoseNoise.parse(noise_std)
    if not noise.resolved():
        noise = estimate_noise_pooled([(pos, yaw, pitch)], known=noise)
    motion = camera_motion(pos, yaw, pitch)
    std = motion_std(motion, noise, has_pitch=pitch is not None)
    speeds = estimate_speeds([motion], [std], thr)
    return label_motion(motion, std, speeds, noise, thr)
