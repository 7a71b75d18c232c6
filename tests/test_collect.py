"""``infworld collect``: datasets on disk, determinism across workers, resume, interruption, errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from infworld.cli import main
from infworld.data.action_schema import decode_move, decode_view
from infworld.data.episode import EPISODE_DIR, episode_path, list_episodes, read_episode, read_meta
from infworld.envs.base import Command, Env, EnvSpec, Observation, StepResult
from infworld.errors import DataError, EnvError

pytest.importorskip("vizdoom")
pytest.importorskip("crafter")

import infworld.envs.collect as collect_mod  # noqa: E402
from infworld.envs.collect import CollectConfig, collect, run_episode  # noqa: E402


def _doom(out: Path, **kw) -> CollectConfig:
    base = dict(env="vizdoom", scenario="freedoom2", policy="random", episodes=2, steps=100, out=str(out))
    base.update(kw)
    return CollectConfig(**base)


def _crafter(out: Path, **kw) -> CollectConfig:
    base = dict(env="crafter", scenario="small", policy="explore", episodes=2, steps=40, out=str(out))
    base.update(kw)
    return CollectConfig(**base)


def _episodes(out: Path) -> list:
    meta = read_meta(out)
    return [read_episode(p, meta=meta) for p in list_episodes(out)]


def _same(a, b) -> None:
    for field in ("frames", "move", "view", "interact", "pose", "depth", "buttons"):
        x, y = getattr(a, field), getattr(b, field)
        assert (x is None and y is None) or np.array_equal(x, y), field
    assert a.extras.keys() == b.extras.keys()
    for k in a.extras:
        assert np.array_equal(a.extras[k], b.extras[k]), k
    assert a.info == b.info


def test_doom_collection_records_consistent_actions_and_poses(tmp_path):
    summary = collect(_doom(tmp_path), progress=False)
    assert summary.new_episodes == 2 and summary.frames == 202 and summary.fps > 0
    meta = read_meta(tmp_path)
    assert (meta.env, meta.scenario, meta.policy, meta.frame_skip) == ("vizdoom", "freedoom2", "random", 4)
    assert meta.extra["collect"]["steps"] == 100
    eps = _episodes(tmp_path)
    assert len(eps) == 2
    for ep in eps:
        assert ep.frames.shape == (101, 64, 64, 3) and ep.depth.shape == (101, 64, 64)
        assert ep.buttons.shape == (100, len(meta.button_names)) and ep.pose.shape == (101, 5)
        assert ep.info["ended"] == "steps"
        b = dict(zip(meta.button_names, ep.buttons.T, strict=True))
        fwd, right, _ = decode_move(ep.move)
        yaw, pitch, _ = decode_view(ep.view)
        # The recorded unified action is exactly the command that was sent.
        assert np.array_equal(fwd, b["MOVE_FORWARD"] - b["MOVE_BACKWARD"])
        assert np.array_equal(right, b["MOVE_RIGHT"] - b["MOVE_LEFT"])
        assert np.array_equal(yaw, b["TURN_RIGHT"] - b["TURN_LEFT"])
        assert np.array_equal(pitch, b["LOOK_UP"] - b["LOOK_DOWN"])
        assert np.array_equal(ep.interact, b["USE"] * 1 + b["ATTACK"] * 2)
        # Action t happens between frame t and t + 1: a held right turn lowers the yaw in that step.
        dyaw = (ep.pose[1:, 3] - ep.pose[:-1, 3] + 180) % 360 - 180
        held = (yaw[1:] == 1) & (yaw[:-1] == 1)
        assert held.any() and np.all(dyaw[1:][held] < 0)
    assert not np.array_equal(eps[0].frames, eps[1].frames)
    assert summary.revisits is None or 0.0 <= summary.revisits["revisit_fraction"] <= 1.0


def test_crafter_collection_records_world_state(tmp_path):
    summary = collect(_crafter(tmp_path, scenario="default", episodes=1, steps=150, policy="revisit"),
                      progress=False)
    assert summary.frames == 151
    meta = read_meta(tmp_path)
    (ep,) = _episodes(tmp_path)
    assert ep.frames.shape == (151, 64, 64, 3) and ep.depth is None
    assert ep.extras["inventory"].shape == (151, len(meta.extra["inventory_keys"]))
    assert ep.extras["semantic"].shape == (151, 64, 64) and ep.extras["semantic"].dtype == np.uint8
    assert ep.extras["daylight"].shape == (151,)
    # Moves in the screen frame: where the player moved, the recorded move agrees.
    fwd, right, _ = decode_move(ep.move)
    step = np.diff(ep.pose[:, :2], axis=0)
    moved = np.abs(step).sum(axis=1) > 0
    assert moved.sum() > 20
    assert np.array_equal(step[moved, 0], right[moved]) and np.array_equal(step[moved, 1], fwd[moved])
    # ... and the facing yaw points where the last move went: (cos yaw, sin yaw) == the step.
    a = np.radians(ep.pose[1:, 3][moved])
    assert np.allclose(np.stack([np.cos(a), np.sin(a)], axis=1), step[moved], atol=1e-6)
    assert np.all(decode_view(ep.view)[0] == 0)  # the camera never turns
    assert ep.info["segments"]  # the revisit policy reports what it did


@pytest.mark.parametrize("make", [_doom, _crafter])
def test_results_do_not_depend_on_workers(tmp_path, make):
    one, two = tmp_path / "one", tmp_path / "two"
    collect(make(one, episodes=3, steps=60, policy="revisit"), progress=False)
    summary = collect(make(two, episodes=3, steps=60, policy="revisit", workers=2), progress=False)
    assert summary.new_episodes == 3
    for a, b in zip(_episodes(one), _episodes(two), strict=True):
        _same(a, b)


def test_resume_skips_finished_episodes_and_refuses_another_dataset(tmp_path):
    part, full = tmp_path / "part", tmp_path / "full"
    collect(_crafter(part, episodes=1), progress=False)
    summary = collect(_crafter(part, episodes=3), progress=False)
    assert (summary.skipped_episodes, summary.new_episodes) == (1, 2)
    collect(_crafter(full, episodes=3), progress=False)
    for a, b in zip(_episodes(part), _episodes(full), strict=True):
        _same(a, b)
    with pytest.raises(DataError, match="different dataset.*'policy'"):
        collect(_crafter(part, policy="random"), progress=False)
    with pytest.raises(DataError, match=str(part)):
        collect(_crafter(part, seed=1), progress=False)


def test_an_exception_mid_episode_leaves_no_partial_file(tmp_path, monkeypatch):
    real = collect_mod.make_policy
    calls = []

    def flaky(name, spec, seed, config=None):
        policy = real(name, spec, seed, config)
        calls.append(seed)
        if len(calls) == 2:  # the second episode crashes half way
            act, n = policy.act, [0]

            def act_then_fail(obs):
                n[0] += 1
                if n[0] > 20:
                    raise RuntimeError("simulated crash")
                return act(obs)

            policy.act = act_then_fail
        return policy

    monkeypatch.setattr(collect_mod, "make_policy", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        collect(_crafter(tmp_path, episodes=3), progress=False)
    assert sorted(os.listdir(tmp_path / EPISODE_DIR)) == ["ep_000000.npz"]  # no temp file, no half episode
    read_episode(episode_path(tmp_path, 0))
    monkeypatch.setattr(collect_mod, "make_policy", real)
    summary = collect(_crafter(tmp_path, episodes=3), progress=False)
    assert (summary.skipped_episodes, summary.new_episodes) == (1, 2)
    assert len(_episodes(tmp_path)) == 3


def test_a_killed_collection_keeps_only_whole_episodes(tmp_path):
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "infworld", "collect", "--env", "crafter", "--scenario", "small",
           "--episodes", "6", "--steps", "300", "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not episode_path(out, 0).exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    finished = list_episodes(out)
    assert 1 <= len(finished) < 6
    for path in finished:  # every visible episode is whole
        assert len(read_episode(path, meta=read_meta(out))) == 301
    summary = collect(CollectConfig(env="crafter", scenario="small", episodes=len(finished) + 1, steps=300,
                                    out=str(out)), progress=False)
    assert summary.skipped_episodes == len(finished)
    assert not [n for n in os.listdir(out / EPISODE_DIR) if n.startswith(".")]  # stale temp files removed


class _ShortGame(Env):
    """A fake game that ends after ``life`` steps, with (``last_frame``) or without a final frame."""

    def __init__(self, life: int, last_frame: bool):
        self.life, self.last_frame, self.t = life, last_frame, 0
        self.spec = EnvSpec(name="fake", scenario="x", size=(8, 8), interact_vocab=("none",),
                            button_names=("B",), has_depth=False, has_pitch=False, grid=True, frame_skip=1,
                            fps=10.0, move_scale=1.0, turn_deg=0.0)

    def _obs(self) -> Observation:
        return Observation(frame=np.full((8, 8, 3), self.t, np.uint8), pose=np.full(5, self.t, np.float32))

    def reset(self, seed: int) -> Observation:
        self.t = 0
        return self._obs()

    def step(self, command: Command) -> StepResult:
        self.t += 1
        over = self.t >= self.life
        obs = self._obs() if (not over or self.last_frame) else None
        return StepResult(obs=obs, command=command, buttons=np.zeros(1, np.float32), done=over)

    def dataset_meta(self, policy=None, extra=None):  # pragma: no cover - not used here
        raise NotImplementedError


@pytest.mark.parametrize("last_frame, frames", [(True, 6), (False, 5)])
def test_an_episode_stops_where_the_game_ends(last_frame, frames):
    ep = run_episode(_ShortGame(life=5, last_frame=last_frame), "random", steps=50, seed=0, index=0)
    assert len(ep) == frames and len(ep.move) == frames - 1 and ep.info["ended"] == "game_over"
    with pytest.raises(EnvError, match="ended before its first action"):
        run_episode(_ShortGame(life=1, last_frame=False), "random", steps=50, seed=0, index=0)


def test_bad_input_is_rejected(tmp_path):
    with pytest.raises(EnvError, match="valid envs: vizdoom, crafter"):
        collect(CollectConfig(env="atari", out=str(tmp_path)))
    with pytest.raises(EnvError, match="known: my_way_home"):
        collect(CollectConfig(env="vizdoom", scenario="e1m1", out=str(tmp_path)))
    with pytest.raises(EnvError, match="valid policies: random, explore, revisit"):
        collect(CollectConfig(env="crafter", policy="smart", out=str(tmp_path)))
    with pytest.raises(EnvError, match="steps must be >= 1"):
        collect(CollectConfig(env="crafter", steps=0, out=str(tmp_path)))
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match=str(blocker)):
        collect(_crafter(blocker / "ds"), progress=False)


def test_cli_collect_prints_a_summary_and_fails_cleanly(tmp_path, capsys):
    out = tmp_path / "ds"
    rc = main(["collect", "--env", "crafter", "--scenario", "small", "--policy", "revisit", "--steps", "60",
               "--episodes", "2", "--out", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0 and "122 frames" in text and "FPS" in text and len(list_episodes(out)) == 2
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    rc = main(["collect", "--env", "crafter", "--out", str(blocker / "ds"), "--steps", "5", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and str(blocker) in err and "error" in err
    rc = main(["collect", "--env", "vizdoom", "--policy", "lazy", "--out", str(out)])
    assert rc == 2 and "valid policies" in capsys.readouterr().err
