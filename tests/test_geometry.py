"""Pose geometry of the pose-based memories: frustum overlap, pose distance, FPS, dead reckoning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from infworld.bench.trajectories import dead_reckon
from infworld.data.action_schema import UNCERTAIN, encode_move, encode_view
from infworld.memory.deadreckon import DeadReckonConfig, DeadReckoner, PoseTracker, measure_step_sizes
from infworld.memory.geometry import farthest_point_sampling, frustum_overlap, pose_distance


def P(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def test_frustum_overlap_same_opposite_and_unknown():
    ref = P([100.0, 50.0, 0.0, 30.0, 0.0])
    others = P([100.0, 50.0, 0.0, 30.0, 0.0],  # same pose
               [100.0, 50.0, 0.0, 210.0, 0.0],  # same place, looking back
               [100.0, 50.0, 0.0, 30.0 + 360.0, 0.0],  # same heading written another way
               [math.nan] * 5)
    ov = frustum_overlap(ref, others[None])[0]
    assert ov.shape == (4,)
    assert ov[0] == pytest.approx(1.0) and ov[2] == pytest.approx(1.0)
    assert ov[1] < 0.02 and ov[3] == 0.0
    assert frustum_overlap(P([math.nan] * 5), others[None])[0].eq(0).all()


def test_frustum_overlap_decreases_with_turn_and_distance_and_is_nearly_symmetric():
    ref = P([0.0, 0.0, 0.0, 0.0, 0.0])
    turns = P(*[[0.0, 0.0, 0.0, float(a), 0.0] for a in (0, 20, 45, 70, 90, 135)])
    ov = frustum_overlap(ref, turns[None])[0]
    assert (ov[1:] <= ov[:-1]).all() and ov[0] > ov[2] > ov[4] >= ov[5]
    assert 0.3 < ov[2] < 0.7  # a 45-degree turn with a 90-degree field of view keeps about half
    behind = P([-50.0, 0.0, 0.0, 0.0, 0.0], [-2000.0, 0.0, 0.0, 0.0, 0.0])  # same heading, further back
    ob = frustum_overlap(ref, behind[None])[0]
    assert ob[0] > 0.5 and ob[1] == 0.0  # too far: the near part of our view is beyond its far plane
    a, b = P([0.0, 0.0, 0.0, 10.0, 0.0]), P([60.0, 30.0, 0.0, 40.0, 5.0])
    ab = frustum_overlap(a, b[None])[0, 0]
    ba = frustum_overlap(b, a[None])[0, 0]
    assert ab > 0.2 and ba > 0.2  # b stands ahead of a: the measure is not exactly symmetric
    # mirror-image cameras (reflection y -> -y swaps them): the overlap must agree both ways
    c, d = P([0.0, -30.0, 0.0, 15.0, 0.0]), P([0.0, 30.0, 0.0, -15.0, 0.0])
    cd, dc = frustum_overlap(c, d[None])[0, 0], frustum_overlap(d, c[None])[0, 0]
    assert 0.2 < cd < 1.0 and float(cd) == pytest.approx(float(dc), abs=1e-6)
    looking_up = frustum_overlap(ref, P([0.0, 0.0, 0.0, 0.0, 60.0])[None])[0, 0]
    assert 0.0 < looking_up < 0.9  # pitch counts


def test_frustum_overlap_is_batched():
    ref = P([0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 180.0, 0.0])
    poses = P([0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0])[:, None]
    ov = frustum_overlap(ref, poses)
    assert ov.shape == (2, 1) and ov[0, 0] == pytest.approx(1.0) and ov[1, 0] < 0.02


def test_pose_distance_wraps_yaw_and_weights_terms():
    a = P([0.0, 0.0, 0.0, 359.0, 0.0])
    b = P([256.0, 0.0, 0.0, 1.0, 0.0])
    assert float(pose_distance(a, b)) == pytest.approx(1.0 + 2.0 / 180.0)
    assert float(pose_distance(a, b, scale=128.0, angle_weight=0.0)) == pytest.approx(2.0)
    turned = pose_distance(P([0.0, 0, 0, 0, 10.0]), P([0.0, 0, 0, 180.0, -8.0]))
    assert float(turned) == pytest.approx(198 / 180)
    assert torch.isnan(pose_distance(a, P([math.nan] * 5)))


def test_farthest_point_sampling_keeps_one_per_cluster():
    g = torch.Generator().manual_seed(0)
    centres = P([0.0, 0.0, 0.0, 0.0, 0.0], [2000.0, 0.0, 0.0, 0.0, 0.0], [0.0, 2000.0, 0.0, 90.0, 0.0])
    pts = torch.cat([c + torch.randn(5, 5, generator=g) * torch.tensor([5.0, 5.0, 0.0, 2.0, 0.0])
                     for c in centres])  # (15, 5): three tight clusters
    perm = torch.randperm(15, generator=g)
    pts = pts[perm]
    cluster = (torch.arange(15) // 5)[perm]
    idx = farthest_point_sampling(pts, 3)
    assert sorted(cluster[idx].tolist()) == [0, 1, 2]
    assert torch.equal(idx, farthest_point_sampling(pts, 3))  # deterministic
    assert idx[0] == 0 and farthest_point_sampling(pts, 3, first=4)[0] == 4
    batched = farthest_point_sampling(torch.stack([pts, pts.flip(0)]), 3)
    assert batched.shape == (2, 3) and sorted(cluster.flip(0)[batched[1]].tolist()) == [0, 1, 2]
    with pytest.raises(ValueError):
        farthest_point_sampling(pts, 16)


def test_dead_reckoning_forward_turn_and_no_motion():
    cfg = DeadReckonConfig()
    dr = DeadReckoner(cfg)
    n = 10
    fwd = torch.full((1, n), int(encode_move(1, 0)))
    still = torch.full((1, n), int(encode_view(0, 0)))
    start = P([100.0, -20.0, 0.0, 90.0, 0.0])
    out = dr.integrate({"move": fwd, "view": still}, start)
    assert out.shape == (1, n, 5)
    # heading 90 = +y: N forward steps move N * step along +y
    assert out[0, -1, :2].tolist() == pytest.approx([100.0, -20.0 + n * cfg.forward], abs=1e-3)
    assert out[0, 0, 1] == pytest.approx(-20.0 + cfg.forward)
    right = dr.integrate({"move": torch.full((1, 3), int(encode_move(0, 0))),
                          "view": torch.full((1, 3), int(encode_view(1, 0)))}, start)
    assert right[0, -1, 3] == pytest.approx(90.0 - 3 * cfg.yaw)  # turn right = heading decreases
    look_up = torch.full((1, 20), int(encode_view(0, 1)))
    up = dr.integrate({"move": torch.full((1, 20), 4), "view": look_up}, start)
    assert up[0, 0, 4] == pytest.approx(cfg.pitch) and up[0, -1, 4] == pytest.approx(cfg.pitch_max)
    unknown = torch.tensor([[UNCERTAIN, -1, UNCERTAIN]])
    none = dr.integrate({"move": unknown, "view": unknown}, start)
    assert torch.allclose(none[0], start.expand(3, 5))
    strafe = dr.integrate({"move": torch.tensor([[int(encode_move(0, 1))]]), "view": still[:, :1]},
                          P([0.0, 0.0, 0.0, 0.0, 0.0]))
    assert strafe[0, 0, :2].tolist() == pytest.approx([0.0, -cfg.strafe], abs=1e-4)  # right of +x is -y


def test_dead_reckoning_moves_along_the_heading_before_the_turn():
    """One step that walks and turns: the move follows the start heading, then the heading turns
    (ViZDoom's order, see DeadReckoner); yaw wraps into [0, 360)."""
    cfg = DeadReckonConfig(forward=10.0, yaw=90.0)
    out = DeadReckoner(cfg).track(np.array([0.0, 0.0, 0.0, 0.0, 0.0]), [int(encode_move(1, 0))] * 2,
                                  [int(encode_view(1, 0))] * 2)
    # step 1 walks +x, then faces -y (270); step 2 walks -y, then faces 180
    np.testing.assert_allclose(out, [[10, 0, 0, 270, 0], [10, -10, 0, 180, 0]], atol=1e-4)


def test_step_sizes_are_measured_with_the_glide_and_signed_turns():
    # 3 forward presses at heading 90 moving 6 units each, then 3 released steps gliding 4 units
    # each: 30 units for 3 presses = 10 per forward step; then 2 right turns of 12 degrees.
    poses = [[0.0, 0.0, 0.0, 90.0, 0.0]]
    for dy in (6, 6, 6, 4, 4, 4):
        poses.append([0.0, poses[-1][1] + dy, 0.0, 90.0, 0.0])
    poses += [[0.0, 30.0, 0.0, 78.0, 0.0], [0.0, 30.0, 0.0, 66.0, 0.0]]
    move = encode_move([1, 1, 1, 0, 0, 0, 0, 0], [0] * 8)
    view = encode_view([0] * 6 + [1, 1], [0] * 8)
    cfg = measure_step_sizes([(np.array(poses), move, view)])
    default = DeadReckonConfig()
    assert cfg.forward == pytest.approx(10.0) and cfg.yaw == pytest.approx(12.0)
    assert cfg.strafe == pytest.approx(10.0 * default.strafe / default.forward)  # no strafe steps seen
    assert (cfg.pitch, cfg.pitch_min, cfg.pitch_max) == (default.pitch, default.pitch_min, default.pitch_max)
    # the fitted sizes bring the integrated track back onto the recorded end point
    end = DeadReckoner(cfg).track(np.array(poses[0]), move, view)[-1]
    np.testing.assert_allclose(end[:2], [0.0, 30.0], atol=1e-4)


def test_every_dead_reckoning_caller_is_the_one_reckoner():
    """The memories (PoseTracker) and the benchmark's random-action poses give the poses of
    DeadReckoner for the same actions (the play session: tests/test_play_server.py)."""
    rng = np.random.default_rng(0)
    move, view = rng.integers(0, 10, 12), rng.integers(0, 10, 12)  # 9 = uncertain: no motion
    start = np.array([5.0, -3.0, 1.0, 350.0, 4.0])
    want = DeadReckoner().integrate({"move": torch.tensor(move)[None], "view": torch.tensor(view)[None]},
                                    torch.tensor(start)[None])[0].numpy()
    np.testing.assert_allclose(DeadReckoner().track(start, move, view), want, atol=1e-4)
    tracker = PoseTracker("dead_reckon", "kv")
    latents = torch.zeros(1, 12, 4)
    got = tracker.poses(latents, {"move": torch.tensor(move)[None], "view": torch.tensor(view)[None]}, None)
    origin = DeadReckoner().track(np.zeros(5), move, view)
    np.testing.assert_allclose(got[0].numpy(), origin, atol=1e-4)
    # the benchmark: step sizes measured on the trajectory, then the same integration
    truth_poses = np.cumsum(rng.normal(size=(13, 5)), axis=0)
    truth = {"move": rng.integers(0, 9, 12), "view": rng.integers(0, 9, 12)}
    new = {"move": move, "view": view}
    bench = dead_reckon(truth_poses, truth, 3, new)
    cfg = measure_step_sizes([(truth_poses, truth["move"], truth["view"])])
    assert bench.shape == (13, 5) and np.allclose(bench[0], truth_poses[3])
    np.testing.assert_allclose(bench[1:], DeadReckoner(cfg).track(truth_poses[3], move, view), atol=1e-4)
