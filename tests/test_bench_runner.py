"""``infworld bench``: deterministic suites, revisit events, a tiny end-to-end run that resumes, and
clear errors. The world model is the tiny-test-world recipe trained for a few steps in-test."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from synthetic import make_dataset
from test_rollout_cli import train_and_export

from infworld.bench import protocols as P
from infworld.bench.idm import IDMConfig, train_idm
from infworld.bench.runner import run_bench
from infworld.bench.schema import validate_results
from infworld.bench.suites import build_suite, latent_revisits, load_data_suite
from infworld.bench.trajectories import dead_reckon, random_actions
from infworld.cli import main
from infworld.data.action_schema import encode_move, encode_view
from infworld.data.episode import DatasetMeta, Episode, episode_path, write_episode, write_meta
from infworld.data.pose_motion import wrap_deg
from infworld.world import WorldModel

pytest.importorskip("vizdoom")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """doom-mini in a cache folder, a tiny world model (32x32) and a tiny IDM."""
    base = tmp_path_factory.mktemp("bench")
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = make_dataset(base / "data", vocab=("none", "use", "attack"))
        train_and_export("tiny-test-world", data, base / "run", base / "model", "train.steps=4")
        train_idm(data, base / "idm", steps=2, config=IDMConfig(size=(32, 32), channels=(8, 8), hidden=8),
                  progress=False)
        suite = build_suite("doom-mini", cache_dir=base / "cache")
    finally:
        torch.set_num_threads(prev)
    return {"base": base, "data": data, "model": base / "model", "idm": base / "idm", "cache": base / "cache",
            "suite": suite}


def test_doom_mini_is_deterministic_and_cached(setup, tmp_path):
    a = setup["suite"]
    b = build_suite("doom-mini", cache_dir=tmp_path)
    assert [t.name for t in a.trajectories] == ["turn-0", "out-and-back-0", "replay-0"]
    assert [t.kind for t in a.trajectories] == ["turn", "out_and_back", "replay"]
    assert sum(t.frames for t in a.trajectories) < 300
    for ta, tb in zip(a.trajectories, b.trajectories, strict=True):
        assert np.array_equal(ta.episode.frames, tb.episode.frames)
        assert np.array_equal(ta.episode.move, tb.episode.move)
        assert np.array_equal(ta.episode.pose, tb.episode.pose)
        assert np.array_equal(ta.events, tb.events) and ta.seed == tb.seed
    index = json.loads((tmp_path / "doom-mini-v1" / "suite.json").read_text())
    assert index["version"] == 1 and len(index["trajectories"]) == 3
    # loading again reads the cache (same episodes, nothing re-recorded)
    mtime = (tmp_path / "doom-mini-v1" / "episodes" / "ep_000000.npz").stat().st_mtime_ns
    c = build_suite("doom-mini", cache_dir=tmp_path)
    assert (tmp_path / "doom-mini-v1" / "episodes" / "ep_000000.npz").stat().st_mtime_ns == mtime
    assert np.array_equal(c.trajectories[2].episode.frames, a.trajectories[2].episode.frames)


def test_revisit_events_return_to_the_pose_farther_back_than_the_window(setup):
    world = WorldModel.from_pretrained(str(setup["model"]))
    run = P.VariantRun("window", world, setup["suite"], 4, setup["base"] / "unused")
    for traj in setup["suite"].trajectories[:2]:  # the scripted turn and out-and-back
        ev = traj.events
        assert len(ev) >= 5, traj.name
        pose = traj.episode.pose
        assert np.all(ev[:, 0] - ev[:, 1] > 16)  # beyond the doom models' 16-frame window
        assert np.all(np.linalg.norm(pose[ev[:, 0], :2] - pose[ev[:, 1], :2], axis=1) <= 48.0)
        assert np.all(np.abs(wrap_deg(pose[ev[:, 0], 3] - pose[ev[:, 1], 3])) <= 20.0)
        kept = run.events(traj)
        assert len(kept) and np.all(kept[:, 0] - kept[:, 1] >= world.window) and np.all(kept[:, 0] >= 4)


def bench_args(setup, out, *extra: str) -> list[str]:
    return ["bench", "--model", str(setup["model"]), "--suite", "doom-mini", "--memory", "window,full",
            "--out", str(out), "--cache", str(setup["cache"]), "--idm", str(setup["idm"]), "--no-progress",
            *extra]


def test_end_to_end_writes_valid_results_and_resumes(setup, tmp_path, monkeypatch, capsys):
    out = tmp_path / "b"
    res = run_bench(str(setup["model"]), "doom-mini", ["window", "full"], out, progress=False,
                    idm=str(setup["idm"]), cache_dir=setup["cache"])
    validate_results(json.loads((out / "results.json").read_text()))
    assert set(res["variants"]) == {"window", "full"} and res["settings"]["context"] == 4
    win, full = res["variants"]["window"], res["variants"]["full"]
    assert all(p in win and p in full for p in ("replay", "revisit", "action", "distribution", "speed"))
    assert win["replay"]["horizon"][-1] == 92 and len(win["replay"]["psnr"]) == len(win["replay"]["horizon"])
    assert win["revisit"]["events"] > 5 and 0 < win["revisit"]["psnr_gt"] < 100
    assert set(win["revisit"]["per_trajectory"]) == {"turn-0", "out-and-back-0"}
    acc = win["action"]["idm_accuracy"]
    assert 0 <= acc["move"] <= 1 and win["action"]["psnr_gap"] is not None
    assert win["distribution"]["horizons"] == [8, 32, 96] and win["distribution"]["fd_ours"][0] is not None
    sb = win["speed"]["state_bytes"]
    assert win["speed"]["fps"] > 0 and sb["100"] == sb["1000"] == sb["10000"] > 0  # flat
    # the oracle refuses the 96-frame replay past its budget: skipped, said so, never half-measured
    assert "replay-0" in full["skipped"]["replay"] and full["speed"]["state_bytes"]["10000"] is None
    assert set(full["revisit"]["per_trajectory"]) == {"turn-0", "out-and-back-0"}
    # figures over the trajectories both measured, so the two compare on the same footing
    assert win["replay"]["common_trajectories"] == full["replay"]["common_trajectories"] == ["out-and-back-0",
                                                                                              "turn-0"]
    per = win["replay"]["per_trajectory"]
    assert win["replay"]["psnr_mean_common"] == pytest.approx((per["turn-0"] + per["out-and-back-0"]) / 2)
    assert win["revisit"]["psnr_gt_common"] == pytest.approx(win["revisit"]["psnr_gt"])  # replay-0: no events
    memory = res["elo"]["criteria"]["memory"]
    assert memory["games"] == win["revisit"]["events"] and set(memory["ratings"]) == {"window", "full"}
    assert res["elo"]["judge"].startswith("metric")
    parts = sorted(p.name for p in (out / "parts").iterdir())
    assert len(parts) == 10 and "full.speed.json" in parts
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    assert (out / "clips" / "window.turn-0.mp4").is_file()
    assert not (out / "clips" / "full.replay-0.mp4").exists()

    # a second run only reads: no rollout, no part rewritten; same figures
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "parts").iterdir()}
    monkeypatch.setattr(WorldModel, "step", lambda *a, **k: pytest.fail("resumed run generated frames"))
    assert main(bench_args(setup, out)) == 0
    assert "window" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (out / "parts").iterdir()} == stamps
    again = json.loads((out / "results.json").read_text())
    assert again["variants"] == json.loads(json.dumps(res["variants"]))
    # other settings into the same folder are refused
    assert main(bench_args(setup, out, "--steps", "1")) == 2
    assert "other settings" in capsys.readouterr().err


def test_bad_inputs_give_clear_errors(setup, tmp_path, capsys):
    cases = [(["--suite", "doom-huge"], "unknown suite 'doom-huge'"),
             (["--memory", "window,nope"], "unknown memory ['nope']"),
             (["--data", str(tmp_path / "missing")], "not a dataset folder"),
             (["--protocols", "replay,vibes"], "unknown ['vibes']"),
             (["--memory-opt", "nosuch=3"], "no benchmarked memory has a setting 'nosuch'"),
             (["--model", str(tmp_path / "nomodel")], "not found")]
    for extra, expected in cases:
        args = bench_args(setup, tmp_path / "bad")
        for i in range(0, len(extra), 2):  # later flags override earlier ones in argparse
            args += extra[i: i + 2]
        assert main(args) == 2, extra
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, err
    assert main(["bench", "--out", str(tmp_path / "x"), "--model", str(setup["model"]),
                 "--protocols", "action", "--memory", "window", "--suite", "doom-mini",
                 "--cache", str(setup["cache"]), "--idm", str(tmp_path / "noidm")]) == 2
    assert "train-idm" in capsys.readouterr().err


def test_data_without_poses_finds_revisits_in_latent_space(setup, tmp_path):
    """Pose-free data: frames 30..39 repeat frames 0..9, the model's latents find those revisits."""
    root = tmp_path / "nopose"
    write_meta(root, DatasetMeta(env="synthetic", size=(32, 32), interact_vocab=["none", "use", "attack"],
                                 has_pose=False))
    tex = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    frames = np.stack([np.roll(tex, t, axis=1) for t in range(40)])  # a slow pan: 1 px per frame
    frames[30:] = frames[:10]
    n = len(frames) - 1
    write_episode(episode_path(root, 0), Episode(frames, np.full(n, 4), np.full(n, 4), np.zeros(n, np.int64)))
    suite = load_data_suite(root, context=4)
    assert suite.trajectories[0].events is None and suite.name == "data:nopose"
    world = WorldModel.from_pretrained(str(setup["model"]))
    run = P.VariantRun("window", world, suite, 4, tmp_path / "r")
    ev = run.events(suite.trajectories[0])
    assert {tuple(e) for e in ev.tolist()} == {(30 + i, i) for i in range(10)}
    res = run_bench(str(setup["model"]), None, ["window"], tmp_path / "out", data=root,
                    protocols=["replay", "revisit"], progress=False)
    assert res["suite"]["trajectories"][0]["kind"] == "data"
    assert res["variants"]["window"]["revisit"]["events"] == 10


def test_random_actions_and_dead_reckoning():
    acts = {"move": np.array([7, 7, 4, 9]), "view": np.array([4, 7, 1, 4]), "interact": np.zeros(4, np.int64)}
    rnd = random_actions(acts, 50, seed=3)
    assert set(rnd["move"].tolist()) <= {4, 7} and set(rnd["view"].tolist()) <= {1, 4, 7}
    assert not rnd["interact"].any() and np.array_equal(rnd["move"], random_actions(acts, 50, 3)["move"])
    # a trajectory walking +x at 30 units per step, then turning 10 degrees per step
    pose = np.array([[0, 0, 0, 0, 0], [30, 0, 0, 0, 0], [60, 0, 0, 0, 0], [60, 0, 0, 350, 0],
                     [60, 0, 0, 340, 0]], np.float32)
    truth = {"move": encode_move([1, 1, 0, 0], [0, 0, 0, 0]), "view": encode_view([0, 0, 1, 1], [0, 0, 0, 0])}
    new = {"move": encode_move([1, 0, -1], [0, 0, 0]), "view": encode_view([0, -1, 0], [0, 0, 0])}
    out = dead_reckon(pose, truth, 0, new)
    assert out.shape == (4, 5)
    assert np.allclose(out[1, :2], [30, 0]) and np.isclose(out[2, 3], 10.0)  # yaw -1 = turn left = heading +
    back = [30 - 30 * np.cos(np.radians(10)), -30 * np.sin(np.radians(10))]  # one step back, heading 10
    assert np.allclose(out[3, :2], back, atol=1e-3)


def test_latent_revisits_threshold_is_scale_free():
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.normal(size=(60, 8)), axis=0)  # a random walk in feature space
    walk[50] = walk[5] + 0.01 * rng.normal(size=8)  # one near-exact return
    for scale in (1.0, 1000.0):
        ev = latent_revisits(walk * scale, min_gap=10)
        assert (50, 5) in {tuple(e) for e in ev.tolist()}
        assert all(t - s > 10 for t, s in ev.tolist())
