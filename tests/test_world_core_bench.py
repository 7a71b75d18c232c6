"""benchmarks/world_core.py: the shifted-last-frame reference and the long-rollout holding figures."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from infworld.data.action_schema import encode_view
from infworld.eval.video import psnr

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "world_core.py"
_spec = importlib.util.spec_from_file_location("world_core_bench", _PATH)
wc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(wc)

TURN_LEFT, TURN_RIGHT, NO_TURN = int(encode_view(-1, 0)), int(encode_view(1, 0)), int(encode_view(0, 0))


def _texture(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)


def test_turn_left_moves_content_right():
    frame = np.zeros((8, 64, 3), dtype=np.uint8)
    frame[:, 10] = 255
    left = wc.shifted_last_frame(frame, TURN_LEFT, turn_px=8.0)
    right = wc.shifted_last_frame(frame, TURN_RIGHT, turn_px=8.0)
    assert np.argmax(left[0, :, 0]) == 18  # yaw -1: the bright column moves right
    assert np.argmax(right[0, :, 0]) == 2  # yaw +1: it moves left
    assert np.array_equal(wc.shifted_last_frame(frame, NO_TURN, 8.0), frame)
    assert np.array_equal(wc.shifted_last_frame(frame, 9, 8.0), frame)  # uncertain: no shift
    assert wc.turn_shift_px(TURN_LEFT, 8.6, 128) == pytest.approx(17.2)  # scaled with the width


def test_shift_fills_vacated_columns_by_edge_replication():
    frame = _texture()
    out = wc.shift_horizontal(frame, 8)
    assert np.array_equal(out[:, 8:], frame[:, :-8])
    assert np.array_equal(out[:, :8], np.repeat(frame[:, :1], 8, axis=1))
    half = wc.shift_horizontal(frame, 0.5)  # fractional: the mean of two neighbours
    expect = np.round((frame[:, 1:].astype(np.float32) + frame[:, :-1]) / 2)
    assert np.abs(half[:, 1:].astype(np.float32) - expect).max() <= 1


def test_shifted_last_frame_beats_copy_last_on_a_pure_turn():
    last = _texture(1)
    true_next = np.roll(last, 8, axis=1)  # turning left: the content moved right by 8 px
    copy = float(psnr(last, true_next))
    shifted = float(psnr(wc.shifted_last_frame(last, TURN_LEFT, 8.0), true_next))
    wrong_way = float(psnr(wc.shifted_last_frame(last, TURN_RIGHT, 8.0), true_next))
    assert shifted > copy + 5
    assert wrong_way < shifted


def test_holding_ratios_on_synthetic_stats():
    stats = np.zeros((2, 2, 300), dtype=np.float32)  # (E, (contrast, detail), F)
    stats[:, 0, :100], stats[:, 1, :100] = 20.0, 4.0
    stats[:, 0, 200:], stats[:, 1, 200:] = 10.0, 5.0
    real = np.stack([np.full(50, 25.0), np.full(50, 5.0)])
    out = wc.holding_ratios(stats, real)
    assert out["first"]["frames"] == "1-100" and out["last"]["frames"] == "201-300"
    assert out["first"]["contrast_ratio"] == pytest.approx(0.8)
    assert out["first"]["detail_ratio"] == pytest.approx(0.8)
    assert out["last"]["contrast_ratio"] == pytest.approx(0.4)
    assert out["last"]["detail_ratio"] == pytest.approx(1.0)


def test_hold_windows_overlap_when_short():
    assert wc.hold_windows(1000) == {"first": (0, 100), "last": (900, 1000)}
    assert wc.hold_windows(120) == {"first": (0, 100), "last": (20, 120)}
    assert wc.hold_windows(50) == {"first": (0, 50), "last": (0, 50)}


def test_long_rollout_block_fd_ratio_and_targets():
    rng = np.random.default_rng(0)
    real_feats = rng.normal(size=(600, 4))
    gen_feats = rng.normal(size=(2, 300, 4))  # (E, F, D)
    gen_feats[:, 200:] += 2.0  # the last window drifts off the real distribution
    stats = np.ones((2, 2, 300))
    real = np.ones((2, 10))
    block = wc.long_rollout_block(stats, real, gen_feats, real_feats, features="test")
    assert block["fd_ours_first"] < 0.5  # same distribution: only the sampling error
    assert block["fd_ours_last"] > 10  # a mean shift of 2 in 4 dimensions: ~16
    assert block["fd_ours_ratio_last_first"] == pytest.approx(block["fd_ours_last"] / block["fd_ours_first"])
    assert [b["frames"] for b in block["fd_ours_by_100_frames"]] == ["1-100", "101-200", "201-300"]
    assert block["meets_targets"] == {"contrast": True, "detail": True, "fd_ours": False}
    assert wc.ratio(1.0, 0.0) is None and wc.ratio(None, 1.0) is None


def test_summary_table_renders():
    rng = np.random.default_rng(1)
    block = wc.long_rollout_block(np.ones((1, 2, 120)), np.ones((2, 10)), rng.normal(size=(1, 120, 3)),
                                  rng.normal(size=(50, 3)), features="test")
    results = {"teacher_forced_psnr": 20.0, "copy_last_frame_psnr": 21.0, "shifted_last_frame_psnr": 22.0,
               "turn_px": 8.6, "tokenizer_recon_psnr": 35.0,
               "free_rollout_psnr_by_horizon": [{"frames": "1-10", "psnr": 17.0, "n": 10}],
               "long_rollout": block, "fps": 40.0, "threads": 1,
               "sampler": {"name": "euler", "steps": 8, "chunk": 4, "cfg_scale": 1.0, "context_noise": 0.0}}
    table = wc.summary_table(results)
    assert table.startswith("| figure | value | reference |")
    assert "shifted-last 22.00" in table and "21-120" in table
