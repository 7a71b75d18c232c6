"""The action-response benchmark on scripted models and synthetic real frames (no ViZDoom needed),
plus one small check that ViZDoom replays a start bit for bit."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest

from infworld.bench import action_response as ar
from infworld.errors import ConfigError, DataError

S, K, F, H, W = 3, 4, 6, 64, 64
TURN = {1: 8, 7: -8}  # view id -> content shift per step (turn-left moves the picture right)
REAL = {"turn-left": (1, 8), "turn-right": (1, -8), "forward": (0, 2), "backward": (0, -2),
        "strafe-left": (1, 3), "strafe-right": (1, -3), "no-op": (1, 0)}  # action -> (axis, px per step)


def _texture(rng: np.random.Generator) -> np.ndarray:
    """A (H, W, 3) uint8 picture with detail at every scale (so every shift is unambiguous)."""
    coarse = rng.integers(0, 256, (H // 8, W // 8, 3)).repeat(8, 0).repeat(8, 1)
    return ((coarse.astype(np.int32) + rng.integers(0, 64, (H, W, 3))) // 2 + 32).astype(np.uint8)


def _data() -> ar.ResponseData:
    rng = np.random.default_rng(0)
    base = np.stack([_texture(rng) for _ in range(S)])  # (S, H, W, 3)
    context = np.stack([np.roll(base, k - K + 1, axis=2) for k in range(K)], axis=1)  # (S, K, H, W, 3)
    real = {}
    for name, (axis, px) in REAL.items():
        real[name] = np.stack([np.roll(base, px * t, axis=1 + axis) for t in range(1, F + 1)], axis=1)
    acts = {"move": np.full((S, K - 1), 7), "view": np.full((S, K - 1), 4), "interact": np.zeros((S, K - 1))}
    return ar.ResponseData(context, {k: v.astype(np.int64) for k, v in acts.items()}, real)


class ScriptedEngine:
    """Shifts its last frame by the commanded turn (``respond``) or repeats it (ignores the actions)."""

    def __init__(self, respond: bool, chunk: int = 4):
        self.respond = respond
        self.config = SimpleNamespace(chunk=chunk)
        self.calls: list[int] = []

    def reset(self, frames, actions):
        assert frames.shape[:2] == (S, K) and all(a.shape == (S, K - 1) for a in actions.values())
        self.last = frames[:, -1].copy()

    def step(self, actions):
        n = actions["view"].shape[1]
        assert 1 <= n <= self.config.chunk and set(actions) == {"move", "view", "interact"}
        self.calls.append(n)
        out = []
        for t in range(n):
            shift = [TURN.get(int(v), 0) if self.respond else 0 for v in actions["view"][:, t]]
            self.last = np.stack([np.roll(f, s, axis=1) for f, s in zip(self.last, shift, strict=True)])
            out.append(self.last)
        return np.stack(out, axis=1)


class ShiftIDM:
    """A stand-in IDM: reads the view id off the frame shift (move is always read as none)."""

    def predict(self, frames):
        s = np.asarray(ar.horizontal_shift(frames[:-1], frames[1:]))
        view = np.where(s > 4, 1, np.where(s < -4, 7, 4))
        return np.full(len(s), 4, dtype=np.int64), view.astype(np.int64)


def _run(respond: bool):
    data = _data()
    engines = []

    def factory():
        engines.append(ScriptedEngine(respond))
        return engines[-1]

    gen = ar.generate(factory, data)
    assert len(engines) == len(ar.ACTIONS) and engines[0].calls == [4, 2]  # one engine per action, chunked
    return data, gen, ar.evaluate(data, gen, idm=ShiftIDM())


@pytest.mark.parametrize("shift", [-16, -9, -8, -3, 0, 1, 5, 8, 12, 16])
def test_horizontal_shift_recovers_a_roll_exactly(shift):
    a = _texture(np.random.default_rng(1))
    assert ar.horizontal_shift(a, np.roll(a, shift, axis=1)) == shift
    assert ar.horizontal_shift(a, np.roll(a, shift, axis=1), rows=(0.0, 1.0), border=0) == shift


def test_horizontal_shift_sub_pixel():
    x = np.arange(W, dtype=np.float64)
    row = 128 + 60 * np.sin(2 * np.pi * x / 23.0) + 40 * np.sin(2 * np.pi * x / 9.0)
    frame = lambda off: np.repeat(  # noqa: E731
        np.interp(x - off, x, row, period=W)[None, :, None], H, 0).repeat(3, 2).round().astype(np.uint8)
    for true in (2.5, -4.3, 7.7):
        assert abs(ar.horizontal_shift(frame(0.0), frame(true)) - true) < 0.25


def test_scripted_model_turns_like_the_real_game():
    _, gen, res = _run(respond=True)
    acts, s = res["actions"], res["summary"]
    assert acts["turn-left"]["shift_gen"] == pytest.approx(8.0) and acts["turn-left"]["shift_real"] == 8.0
    assert acts["turn-right"]["shift_gen"] == pytest.approx(-8.0)
    assert acts["no-op"]["shift_gen"] == 0.0 and acts["forward"]["shift_gen"] == 0.0
    assert acts["strafe-left"]["shift_real"] == pytest.approx(3.0)
    assert s["turn_shift"]["turn-left"]["ratio"] == pytest.approx(1.0)
    assert res["pairs"]["turn-left vs turn-right"]["gen"] > 10
    assert s["diff_ratio"]["turn-left vs turn-right"] == pytest.approx(1.0)  # the same frames as real
    assert s["diff_ratio"]["forward vs no-op"] == 0.0  # the scripted model ignores moves
    assert acts["turn-left"]["psnr_gen"] > 60 > acts["turn-left"]["psnr_copy_last"]  # the same frames
    assert acts["turn-left"]["idm_gen"]["view"] == 1.0 and acts["turn-left"]["idm_real"]["view"] == 1.0
    assert acts["forward"]["idm_gen"]["move"] == 0.0  # read as "no move", commanded 7
    text = ar.markdown_table(res)
    assert "| turn-left | +8.00 | +8.00 |" in text and "turn-left vs turn-right" in text


def test_model_that_ignores_actions_fails_the_benchmark():
    _, gen, res = _run(respond=False)
    acts, s = res["actions"], res["summary"]
    assert res["pairs"]["turn-left vs turn-right"]["gen"] == 0.0
    assert all(v == 0.0 for v in s["diff_ratio"].values())
    assert all(a["shift_gen"] == 0.0 for a in acts.values())
    assert s["turn_shift"]["turn-left"]["ratio"] == 0.0
    assert acts["turn-left"]["idm_ratio"]["view"] == 0.0 and acts["turn-right"]["idm_ratio"]["view"] == 0.0
    assert s["idm"]["ratio"]["view"] < 0.8  # only the turns are misread: 5 of 7 actions hold the view
    assert s["psnr"]["gen"] == pytest.approx(s["psnr"]["copy_last"])  # it is copy-last


def test_contact_sheet(tmp_path):
    data, gen, _ = _run(respond=True)
    path = ar.contact_sheet(tmp_path / "sheet.png", data, gen, starts=(0, 1), steps=(1, 2, 4, 8))
    img = iio.imread(path)
    assert img.ndim == 3 and img.shape[0] > 2 * len(ar.ACTIONS) * H and img.shape[1] > 2 * 4 * W
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically, no temp file left


def test_bad_input_is_a_typed_error():
    assert ar.parse_sweep(None, "--cfg-scale") == [None]
    assert ar.parse_sweep("1, 2.5", "--cfg-scale") == [1.0, 2.5]
    for bad in ("-1", "x", ",", "nan"):
        with pytest.raises(ConfigError, match="--cfg-scale"):
            ar.parse_sweep(bad, "--cfg-scale")
    with pytest.raises(ConfigError, match="starts"):
        ar.check_settings(0, 24, 8)
    data = _data()
    data.real["no-op"] = data.real["no-op"][:, :2]
    with pytest.raises(DataError, match=r"real\[no-op\]"):
        data.check()


def _cli():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "action_response.py"
    spec = importlib.util.spec_from_file_location("bench_action_response", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("argv, match", [
    (["--starts", "0"], "starts must be >= 1"),
    (["--cfg-scale", "1,-2"], "--cfg-scale: values must be >= 0"),
    (["--model", "no-such-model"], "no-such-model"),
])
def test_cli_bad_input_exits_2_with_one_line(argv, match, capsys, tmp_path):
    out = ["--out", str(tmp_path / "r.json"), "--sheet", "", "--cache-dir", str(tmp_path)]
    code = _cli().main(argv + out)
    err = capsys.readouterr().err.strip()
    assert code == 2 and match in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_vizdoom_replay_is_exact(tmp_path):
    pytest.importorskip("vizdoom")
    from infworld.bench.action_response_real import RealConfig, collect_real

    cfg = RealConfig(starts=1, frames=3, context=3, warmup=(5, 8))
    a = collect_real(cfg, cache_dir=tmp_path, actions=["turn-left", "no-op"])  # raises if a replay differs
    assert a.info["replay_exact"] and a.context.shape == (1, 3, 64, 64, 3)
    assert a.real["turn-left"].shape == (1, 3, 64, 64, 3) and a.context_actions["move"].shape == (1, 2)
    # turning left moves the content right (median: a step facing a bare wall has no clear shift)
    assert np.median(ar.step_shifts(a.context[:, -1], a.real["turn-left"])) > 4
    b = collect_real(cfg, cache_dir=tmp_path, actions=["turn-left", "no-op"])  # from the cache
    assert "cache" in b.info and np.array_equal(a.real["turn-left"], b.real["turn-left"])
    c = collect_real(cfg, actions=["turn-left", "no-op"])  # a fresh run gives the same frames
    assert np.array_equal(a.context, c.context) and np.array_equal(a.real["no-op"], c.real["no-op"])
