"""Uncertainty-aware action labeling from poses (infworld.data.actions) and dataset relabeling."""

from __future__ import annotations

import json

import numpy as np
import pytest

from infworld.data.actions import (
    UNCERTAIN,
    LabelThresholds,
    PoseNoise,
    camera_motion,
    encode_move,
    encode_view,
    estimate_noise,
    label_from_poses,
)
from infworld.data.episode import (
    DatasetMeta,
    Episode,
    episode_path,
    list_episodes,
    read_episode,
    read_meta,
    write_episode,
    write_meta,
)
from infworld.data.relabel import relabel_dataset
from infworld.errors import ConfigError, DataError

STEP, TURN, LOOK = 30.0, 10.0, 6.0  # per-step speeds of the synthetic tracks


def integrate(cmds: np.ndarray, yaw0: float = 0.0, start=(100.0, -50.0)) -> tuple:
    """Pose track (T = len(cmds) + 1) from per-step tri-states [forward, right, yaw, pitch].

    Moves are taken in the camera frame of the step's first frame: forward along the heading
    (0 = +x, counter-clockwise), right along heading - 90 degrees; yaw +1 turns right (heading
    decreases), pitch +1 looks up.
    """
    pos, yaw, pitch = [np.array(start)], [yaw0], [0.0]
    for f, r, y, p in cmds:
        h = np.radians(yaw[-1])
        fwd = np.array([np.cos(h), np.sin(h)])
        right = np.array([np.cos(h - np.pi / 2), np.sin(h - np.pi / 2)])
        pos.append(pos[-1] + STEP * (f * fwd + r * right))
        yaw.append((yaw[-1] - TURN * y) % 360.0)
        pitch.append(pitch[-1] + LOOK * p)
    return np.array(pos), np.array(yaw), np.array(pitch)


def sticky_commands(n: int, seed: int, hold: int = 8) -> np.ndarray:
    """Random tri-state commands; each axis redraws with probability 1 / hold per step."""
    rng = np.random.default_rng(seed)
    cmds = np.zeros((n, 4), dtype=np.int64)
    cur = np.zeros(4, dtype=np.int64)
    for t in range(n):
        for i in range(4):
            if t == 0 or rng.random() < 1 / hold:
                cur[i] = rng.choice([-1, 0, 1], p=[0.25, 0.4, 0.35] if i == 0 else [0.25, 0.5, 0.25])
        cmds[t] = cur
    return cmds


def true_ids(cmds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return encode_move(cmds[:, 0], cmds[:, 1]), encode_view(cmds[:, 2], cmds[:, 3])


@pytest.mark.parametrize("heading", [0.0, 37.0, 90.0, 180.0, 251.0, 330.0])
def test_forward_back_and_strafes_along_any_heading(heading):
    cmds = np.array([[1, 0, 0, 0]] * 5 + [[0, 0, 0, 0]] * 5 + [[-1, 0, 0, 0]] * 5
                    + [[0, 1, 0, 0]] * 5 + [[0, -1, 0, 0]] * 5 + [[1, 1, 0, 0]] * 5)
    pos, yaw, pitch = integrate(cmds, yaw0=heading)
    lab = label_from_poses(pos, yaw, pitch)
    move, view = true_ids(cmds)
    np.testing.assert_array_equal(lab.move, move)
    np.testing.assert_array_equal(lab.view, view)


def test_hand_made_directions_match_the_conventions():
    # Facing north (yaw 90): +y is forward, +x is to the right (east).
    yaw = np.full(4, 90.0)
    north = np.array([[0, 0], [0, 30], [0, 60], [0, 90]], dtype=float)
    east = np.array([[0, 0], [30, 0], [60, 0], [90, 0]], dtype=float)
    assert set(label_from_poses(north, yaw, noise_std=(0, 0)).move) == {encode_move(1, 0)}
    assert set(label_from_poses(east, yaw, noise_std=(0, 0)).move) == {encode_move(0, 1)}
    np.testing.assert_allclose(camera_motion(east, yaw)[:, :2], [[0, 30]] * 3, atol=1e-9)


def test_turns_across_the_wrap_and_pitch():
    still = np.zeros((6, 2))
    left = label_from_poses(still, np.array([350.0, 355, 0, 5, 5, 5]), noise_std=(0, 0))  # CCW = left
    right = label_from_poses(still, np.array([10.0, 5, 0, 355, 355, 355]), noise_std=(0, 0))
    np.testing.assert_array_equal(left.view, [encode_view(-1, 0)] * 3 + [encode_view(0, 0)] * 2)
    np.testing.assert_array_equal(right.view, [encode_view(1, 0)] * 3 + [encode_view(0, 0)] * 2)
    assert camera_motion(still[:2], np.array([359.0, 1.0]))[0, 2] == pytest.approx(-2.0)  # 2 deg left
    pitch = np.array([0.0, 6, 12, 12, 6, 0])
    lab = label_from_poses(still, np.zeros(6), pitch, noise_std=(0, 0))
    np.testing.assert_array_equal(lab.view, [5, 5, 4, 3, 3])  # up, up, none, down, down
    assert lab.tristate("pitch")[0].tolist() == [1, 1, 0, -1, -1]


def test_noise_free_random_track_is_labelled_exactly():
    cmds = sticky_commands(400, seed=1)
    lab = label_from_poses(*integrate(cmds, yaw0=123.0))
    move, view = true_ids(cmds)
    np.testing.assert_array_equal(lab.move, move)
    np.testing.assert_array_equal(lab.view, view)
    assert lab.noise.position < 1e-6 and lab.noise.angle < 1e-6
    assert lab.speeds.move == pytest.approx(STEP) and lab.speeds.turn == pytest.approx(TURN)
    assert np.all(lab.confidence == 1.0)


def noisy(track: tuple, pos_std: float, ang_std: float, seed: int) -> tuple:
    rng = np.random.default_rng(seed)
    pos, yaw, pitch = track
    return (pos + rng.normal(0, pos_std, pos.shape), (yaw + rng.normal(0, ang_std, yaw.shape)) % 360,
            pitch + rng.normal(0, ang_std, pitch.shape))


def test_moderate_noise_keeps_precision_high():
    cmds = sticky_commands(1000, seed=2)
    # ~5% of a walking step, 5% of a turn step and 8% of a look step.
    lab = label_from_poses(*noisy(integrate(cmds), pos_std=1.5, ang_std=0.5, seed=3))
    for got, want in zip((lab.move, lab.view), true_ids(cmds), strict=True):
        sure = got != UNCERTAIN
        assert np.mean(got[sure] == want[sure]) >= 0.99
        assert np.mean(~sure) <= 0.15
    ok = lab.confidence[~lab.uncertain]
    assert ok.min() >= 0.5 and ok.mean() > 0.95


def test_uncertain_band_catches_in_between_speeds():
    cmds = sticky_commands(300, seed=4)
    pos, yaw, pitch = integrate(cmds)
    half = np.zeros(len(cmds), dtype=bool)
    half[::10] = True  # every 10th step moves at half the typical speed, along its own direction
    d = np.diff(pos, axis=0)
    d[half] *= 0.5
    pos = np.concatenate([pos[:1], pos[0] + np.cumsum(d, axis=0)])
    lab = label_from_poses(pos, yaw, pitch)
    moved = half & (np.abs(cmds[:, :2]).sum(axis=1) > 0)
    assert moved.sum() > 10
    assert np.all(lab.move[moved] == UNCERTAIN)
    assert np.all(lab.move[~half] == true_ids(cmds)[0][~half])
    assert lab.confidence[moved][:, :2][lab.uncertain[moved][:, :2]].max() < 0.5
    # With pose noise the band widens; a half-speed step is labelled only when the noise pushes it
    # more than z std past a band edge (rare), so nearly all of them stay uncertain.
    lab_n = label_from_poses(*noisy((pos, yaw, pitch), 1.0, 0.5, seed=5))
    assert np.mean(lab_n.move[moved] == UNCERTAIN) >= 0.8
    # An uncertain step is on neither side with probability Phi(z) = 0.84 (z = 1).
    assert lab_n.uncertain.sum() > 10 and lab_n.confidence[lab_n.uncertain].max() < 0.8414


def test_real_motion_below_full_speed_is_never_labelled_still():
    """Momentum after a key release or sliding along a wall: a step that moved clearly (from 6 map
    units, a fifth of the top speed) but below full speed is moving or uncertain, never still."""
    cmds = sticky_commands(600, seed=6)
    pos, yaw, pitch = integrate(cmds)
    scale = np.ones(len(cmds))
    fracs = np.linspace(0.2, 0.95, 16)  # 6 .. 28.5 units at STEP = 30
    scale[::5] = np.resize(fracs, len(scale[::5]))
    d = np.diff(pos, axis=0) * scale[:, None]
    pos = np.concatenate([pos[:1], pos[0] + np.cumsum(d, axis=0)])
    lab = label_from_poses(pos, yaw, pitch)
    assert lab.speeds.move == pytest.approx(STEP)  # the slow steps do not drag the typical speed
    motion = np.abs(camera_motion(pos, yaw, pitch)[:, :2])  # (T-1, 2) noise-free forward / right
    real = (motion >= 6.0 - 1e-6) & (motion < 0.96 * STEP)
    assert real.sum() > 50
    called_still = (lab.axes[:, :2] == 0) & ~lab.uncertain[:, :2]
    assert not np.any(called_still & real)
    assert np.all(lab.move[real.any(axis=1)] != encode_move(0, 0))
    assert np.all(lab.axes[:, :2][motion < 1e-6] == 0)  # truly still components stay still


@pytest.mark.parametrize("pos_std,ang_std", [(0.5, 0.25), (1.5, 0.7), (4.0, 2.0)])
def test_estimated_noise_is_close_to_the_true_noise(pos_std, ang_std):
    track = noisy(integrate(sticky_commands(800, seed=6)), pos_std, ang_std, seed=7)
    est = estimate_noise(*track)
    assert est.position == pytest.approx(pos_std, rel=0.15)
    assert est.angle == pytest.approx(ang_std, rel=0.15)


def test_group_without_motion_is_labelled_still_despite_noise():
    cmds = sticky_commands(400, seed=8)
    cmds[:, 3] = 0  # never looks up or down: the pitch is pure noise
    lab = label_from_poses(*noisy(integrate(cmds), 1.0, 0.5, seed=9))
    assert lab.speeds.pitch is None
    assert np.mean(lab.uncertain[:, 3]) < 0.02
    # A level camera given as a constant pitch (or no pitch at all) labels pitch as none.
    pos, yaw, _ = integrate(cmds)
    assert np.all(label_from_poses(pos, yaw, np.zeros(len(yaw))).tristate("pitch")[0] == 0)
    assert np.all(label_from_poses(pos, yaw).tristate("pitch")[0] == 0)


def test_bad_input_raises_data_error_naming_the_argument():
    pos, yaw, pitch = integrate(sticky_commands(20, seed=10))
    cases = [
        ((pos, yaw[:-1], pitch), "yaw_deg"),
        ((pos, yaw, pitch[:5]), "pitch_deg"),
        ((pos[:, :1], yaw, pitch), "position"),
        ((np.zeros((21, 4)), yaw, pitch), "position"),
        ((pos.ravel(), yaw, pitch), "position"),
        ((pos[:1], yaw[:1], pitch[:1]), "position"),
        ((np.where(np.arange(21)[:, None] == 3, np.nan, pos), yaw, pitch), "position"),
        ((pos, np.where(np.arange(21) == 2, np.inf, yaw), pitch), "yaw_deg"),
        ((pos, yaw.reshape(-1, 1), pitch), "yaw_deg"),
        ((pos, ["a"] * 21, pitch), "yaw_deg"),
    ]
    for args, field in cases:
        with pytest.raises(DataError) as info:
            label_from_poses(*args)
        assert info.value.field == field and field in str(info.value)
    with pytest.raises(DataError, match="noise_std"):
        label_from_poses(pos[:3], yaw[:3])  # too short to estimate the noise ...
    assert label_from_poses(pos[:3], yaw[:3], noise_std=(0.0, 0.0)).move.shape == (2,)  # ... unless given


def test_noise_and_threshold_settings_are_validated():
    assert PoseNoise.parse("1.5, 0.5") == PoseNoise(1.5, 0.5)
    assert PoseNoise.parse("auto,0.5") == PoseNoise(None, 0.5)
    assert PoseNoise.parse((1, 2)) == PoseNoise(1, 2)
    assert PoseNoise.parse(None) == PoseNoise()
    for bad in (1.0, "1.0", "a,b", (1, -1), (float("nan"), 1), [1, 2, 3]):
        with pytest.raises(ConfigError):
            PoseNoise.parse(bad)
    for bad in (dict(still_frac=0.6, move_frac=0.5), dict(z=-1.0), dict(move_speed=0.0),
                dict(ref_quantile=1.5), dict(z=float("nan"))):
        with pytest.raises(ConfigError):
            LabelThresholds(**bad).validate()
    with pytest.raises(ConfigError):
        label_from_poses(np.zeros((5, 2)), np.zeros(5), noise_std=(0, 0)).tristate("roll")


def test_known_speed_and_noise_are_used_as_given():
    cmds = sticky_commands(200, seed=11)
    track = integrate(cmds)
    lab = label_from_poses(*track, noise_std=PoseNoise(0.0, 0.0),
                           thresholds=LabelThresholds(move_speed=100.0))
    assert lab.noise == PoseNoise(0.0, 0.0) and lab.speeds.move == 100.0
    # With a typical speed of 100, a 30-unit step is under the moving threshold and over the still
    # one: no step is labelled moving, and every step that moved is uncertain, not still.
    assert set(lab.move.tolist()) <= {encode_move(0, 0), UNCERTAIN}
    moved = np.abs(cmds[:, :2]).sum(axis=1) > 0
    assert moved.any() and np.all(lab.move[moved] == UNCERTAIN) and np.all(lab.move[~moved] == 4)


# ---------------------------------------------------------------------------------------------
# relabel_dataset


def make_dataset(root, n_eps: int = 3, steps: int = 60, pos_std: float = 0.0, ang_std: float = 0.0):
    meta = DatasetMeta(env="synthetic", size=(8, 8), interact_vocab=["none", "use"], frame_skip=4,
                       extra={"note": "kept"})
    write_meta(root, meta)
    truth = []
    for i in range(n_eps):
        cmds = sticky_commands(steps, seed=100 + i)
        pos, yaw, pitch = noisy(integrate(cmds), pos_std, ang_std, seed=200 + i)
        rng = np.random.default_rng(i)
        ep = Episode(frames=rng.integers(0, 255, (steps + 1, 8, 8, 3), dtype=np.uint8),
                     move=np.full(steps, encode_move(0, 0)), view=np.full(steps, UNCERTAIN),
                     interact=rng.integers(0, 2, steps),
                     pose=np.column_stack([pos, np.zeros(steps + 1), yaw, pitch]).astype(np.float32),
                     info={"seed": i})
        write_episode(episode_path(root, i), ep, meta)
        truth.append((cmds, ep))
    return truth


def test_relabel_round_trip(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    truth = make_dataset(src)
    calls = []
    summary = relabel_dataset(src, out, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert summary["episodes"] == 3 and summary["steps"] == 180
    assert summary["uncertain"]["move"] == 0.0 and summary["uncertain"]["view"] == 0.0
    assert summary["noise_estimated"] == {"position": True, "angle": True}
    meta = read_meta(out)
    assert meta.extra["note"] == "kept" and meta.extra["labels"]["thresholds"]["z"] == LabelThresholds().z
    json.dumps(meta.extra)  # stays JSON-able
    for i, ((cmds, old), path) in enumerate(zip(truth, list_episodes(out), strict=True)):
        ep = read_episode(path, meta)
        move, view = true_ids(cmds)
        np.testing.assert_array_equal(ep.move, move)
        np.testing.assert_array_equal(ep.view, view)
        np.testing.assert_array_equal(ep.interact, old.interact)
        np.testing.assert_array_equal(ep.frames, old.frames)
        np.testing.assert_array_equal(ep.pose, old.pose)
        assert ep.info == {"seed": i}
    # Old move ids were all "none": agreement = share of steps whose true move is none.
    share_none = np.mean(np.concatenate([true_ids(c)[0] for c, _ in truth]) == encode_move(0, 0))
    assert summary["agreement"]["move"] == pytest.approx(share_none)
    assert summary["agreement"]["view"] is None  # old views were all uncertain: nothing to compare
    # The source dataset is untouched.
    assert np.all(read_episode(episode_path(src, 0)).view == UNCERTAIN)


def test_relabel_with_noise_given_or_per_episode(tmp_path):
    src = tmp_path / "src"
    truth = make_dataset(src, n_eps=2, steps=300, pos_std=1.0, ang_std=0.5)
    for kwargs in ({"noise_std": "1.0,0.5"}, {"pooled": False}):
        out = tmp_path / f"out_{len(kwargs)}_{next(iter(kwargs))}"
        summary = relabel_dataset(src, out, **kwargs)
        assert summary["uncertain"]["move"] < 0.2
        for (cmds, _), path in zip(truth, list_episodes(out), strict=True):
            ep = read_episode(path)
            sure = ep.move != UNCERTAIN
            assert np.mean(ep.move[sure] == true_ids(cmds)[0][sure]) >= 0.98
    assert summary["noise"]["position"] == pytest.approx(1.0, rel=0.2)


def test_relabel_rejects_bad_datasets_and_outputs(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    make_dataset(src, n_eps=2, steps=20)
    with pytest.raises(ConfigError, match="differ"):
        relabel_dataset(src, src)
    relabel_dataset(src, out)
    with pytest.raises(ConfigError, match="not empty"):
        relabel_dataset(src, out)
    (out / "episodes" / "ep_000099.npz").write_bytes(b"stale")
    relabel_dataset(src, out, overwrite=True)
    assert [p.name for p in list_episodes(out)] == ["ep_000000.npz", "ep_000001.npz"]
    with pytest.raises(DataError, match="not a dataset"):
        relabel_dataset(tmp_path / "missing", tmp_path / "o2")
    # An episode without a pose array: the error names that episode.
    ep = read_episode(episode_path(src, 1))
    ep.pose = None
    write_episode(episode_path(src, 1), ep)  # no meta given: the format check allows it
    with pytest.raises(DataError, match="ep_000001.npz") as info:
        relabel_dataset(src, tmp_path / "o3")
    assert info.value.field == "pose"
    # A NaN in a pose: also named by episode.
    ep = read_episode(episode_path(src, 0))
    write_episode(episode_path(src, 1), ep)
    with np.load(episode_path(src, 0)) as z:
        arrays = dict(z)
    arrays["pose"][3, 0] = np.nan
    np.savez_compressed(episode_path(src, 0), **arrays)
    with pytest.raises(DataError, match="ep_000000.npz"):
        relabel_dataset(src, tmp_path / "o4")
