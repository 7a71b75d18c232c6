"""doom-v2, the long-revisit suite: its trajectory kinds, the revisit gap buckets, and their report
tables. Seconds: one short trajectory of each new kind in ViZDoom, synthetic events elsewhere."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from test_bench_report import make_results

from infworld.bench import protocols as P
from infworld.bench.buckets import bucket_labels, check_edges, gap_closed_share, per_bucket
from infworld.bench.report import write_report
from infworld.bench.schema import TRAJECTORY_KINDS, validate_results
from infworld.bench.suites import SUITES, SuiteSpec, _spec_json
from infworld.bench.trajectories import KINDS, RevisitConfig, TrajectorySpec, make_trajectory, stages_for
from infworld.errors import ConfigError, DataError

EDGES = (16, 64, 150, 350)


# --- the suite definition -------------------------------------------------------------------------

def test_doom_v2_fits_the_oracle_and_the_time_budget():
    v2 = SUITES["doom-v2"]
    assert v2.version == 1 and v2.gap_buckets == EDGES and v2.description
    assert all(t.max_frames <= 400 for t in v2.trajectories)  # a 400-frame full oracle runs them all
    assert sum(t.max_frames for t in v2.trajectories) <= 3200
    assert {t.kind for t in v2.trajectories} == {"look_back", "long_loop", "long_out_and_back"}
    assert len({t.name for t in v2.trajectories}) == len(v2.trajectories)


def test_older_suites_keep_their_cache_key():
    """gap_buckets is left out of the cache key when empty: doom-v1 caches stay valid."""
    assert "gap_buckets" not in _spec_json(SUITES["doom-v1"])
    assert _spec_json(SUITES["doom-v2"])["gap_buckets"] == list(EDGES)


def test_every_trajectory_kind_is_allowed_by_the_results_schema():
    assert set(KINDS) | {"data"} == set(TRAJECTORY_KINDS)


@pytest.mark.parametrize("edges", [(16,), (64, 16), (16, 16, 64), (-1, 16)])
def test_bad_gap_buckets_are_refused(edges):
    with pytest.raises(ConfigError, match="gap buckets"):
        SuiteSpec("bad", 1, (), gap_buckets=edges)
    with pytest.raises(ConfigError):
        check_edges(edges)


def test_long_loop_stages_alternate_back_and_out():
    """2 laps = out (explore), back, out (retrace with the old headings), back."""
    stages = stages_for(TrajectorySpec("l", "long_loop", 0, 400, legs=30, turns=2.0))
    gotos = [(s.get("reverse", False), s.get("facing", False)) for s in stages
             if s["kind"] == "goto" and not s.get("start")]
    assert stages[0] == {"kind": "explore", "left": 30, "record": "out"}
    assert gotos == [(True, False), (False, True), (True, False)]
    oab = stages_for(TrajectorySpec("o", "long_out_and_back", 0, 400, legs=30))
    assert [s for s in oab if s["kind"] == "goto" and not s.get("start")][-1]["facing"]


# --- the new kinds in ViZDoom (one short trajectory each, < 1 s) ---------------------------------

@pytest.fixture(scope="module")
def env():
    pytest.importorskip("vizdoom")
    from infworld.envs.registry import make_env

    with make_env("vizdoom", "my_way_home", size=(64, 64), frame_skip=4, max_steps=300) as e:
        yield e


def test_look_back_returns_a_short_gap_later(env):
    spec = TrajectorySpec("lb", "look_back", 7, 200, legs=4, turns=2)
    ep, ev = make_trajectory(env, spec, RevisitConfig())
    # 2 cycles of: 4 steps, 2 still, 180 degrees out, a 0- then 8-frame stare, 180 back (14 deg/step)
    assert 60 <= len(ep) <= 90
    gaps = ev[:, 0] - ev[:, 1]
    assert len(ev) >= 10 and gaps.min() > 16 and gaps.max() <= 64


def test_long_out_and_back_sees_the_start_again_two_legs_later(env):
    legs = 24
    ep, ev = make_trajectory(env, TrajectorySpec("oab", "long_out_and_back", 7, 200, legs=legs),
                             RevisitConfig())
    assert ep.info["kind"] == "long_out_and_back" and len(ep) < 200  # finished its script
    gaps = ev[:, 0] - ev[:, 1]
    assert (gaps > 2 * legs).sum() >= 10  # the second pass over the leg, two legs and turns later
    assert np.any((ev[:, 1] <= 2) & (gaps > 2 * legs))  # the starting view, seen again


def test_long_loop_second_lap_revisits_both_legs_of_the_first(env):
    legs = 12
    ep, ev = make_trajectory(env, TrajectorySpec("loop", "long_loop", 7, 200, legs=legs, turns=2.0),
                             RevisitConfig())
    gaps = ev[:, 0] - ev[:, 1]
    assert np.any((ev[:, 1] < legs) & (gaps > 2 * legs))  # lap 2 out over lap 1 out
    assert np.any((ev[:, 1] > legs + 12) & (gaps > 2 * legs))  # lap 2 back over lap 1 back


# --- per-bucket aggregation -------------------------------------------------------------------------

def psnr_of(offset: float) -> float:
    return 20.0 * math.log10(255.0 / offset)


def test_per_bucket_means_and_counts():
    gaps = np.array([20, 64, 65, 149, 200, 10, 400])  # 64 is in 16-64 (a < gap <= b); 10 and 400 nowhere
    vals = {"psnr_gt": np.array([1.0, 3.0, 10.0, 20.0, 7.0, 99.0, 99.0])}
    out = per_bucket(gaps, vals, EDGES)
    assert list(out) == bucket_labels(EDGES) == ["16-64", "64-150", "150-350"]
    assert out["16-64"] == {"events": 2, "psnr_gt": 2.0}
    assert out["64-150"] == {"events": 2, "psnr_gt": 15.0}
    assert out["150-350"] == {"events": 1, "psnr_gt": 7.0}
    empty = per_bucket(np.array([20]), {"psnr_gt": np.array([5.0])}, (100, 200))
    assert empty == {"100-200": {"events": 0, "psnr_gt": None}}
    with pytest.raises(ConfigError):
        per_bucket(gaps, {"psnr_gt": np.ones(3)}, EDGES)


@dataclass
class _Traj:
    name: str


class _FakeRun:
    """What protocols.revisit reads from a VariantRun: one trajectory whose generated frames are the
    truth plus a known offset per event, so each event's PSNR is 20 log10(255 / offset)."""

    def __init__(self, events: np.ndarray, offsets: list[float], gap_buckets: tuple[int, ...]):
        rng = np.random.default_rng(0)
        self.truth = {"t": rng.integers(50, 200, size=(420, 12, 12, 3)).astype(np.uint8)}
        self.ev = events
        hist = self.truth["t"].astype(np.float64)
        for (t, _), d in zip(events, offsets, strict=True):
            hist[t] += d
        self.hist = hist.astype(np.uint8)
        self.suite = type("S", (), {"gap_buckets": gap_buckets})()
        self.ro = P.Rollout(self.hist[4:], 4, np.zeros(0), np.zeros(0, np.int64))

    def usable(self):
        return [(_Traj("t"), self.ro)], {}

    def events(self, traj):
        return self.ev

    def history(self, traj, ro):
        return self.hist


def test_revisit_protocol_reports_per_bucket():
    # gaps 20, 70, 80, 200, 320 and 5 (in no bucket)
    ev = np.array([[40, 20], [100, 30], [120, 40], [300, 100], [330, 10], [340, 335]])
    offsets = [4.0, 8.0, 16.0, 2.0, 32.0, 1.0]
    res = P.revisit(_FakeRun(ev, offsets, EDGES)).result
    pb = res["per_bucket"]
    assert res["events"] == 6 and [pb[k]["events"] for k in pb] == [1, 2, 2]  # gap 5 in no bucket
    assert pb["16-64"]["psnr_gt"] == pytest.approx(psnr_of(4.0))
    assert pb["64-150"]["psnr_gt"] == pytest.approx((psnr_of(8.0) + psnr_of(16.0)) / 2)
    assert pb["150-350"]["psnr_gt"] == pytest.approx((psnr_of(2.0) + psnr_of(32.0)) / 2)
    assert set(pb["16-64"]) == {"events", "psnr_gt", "ssim_gt", "psnr_self", "ssim_self"}
    assert "per_bucket" not in P.revisit(_FakeRun(ev, offsets, ())).result  # doom-v1: unchanged
    refused = _FakeRun(ev, offsets, EDGES)
    refused.usable = lambda: ([], {"t": "past the budget"})  # full past its budget: no events at all
    assert P.revisit(refused).result["per_bucket"]["64-150"] == {
        "events": 0, "psnr_gt": None, "ssim_gt": None, "psnr_self": None, "ssim_self": None}


# --- the report ---------------------------------------------------------------------------------------

def test_gap_closed_share():
    assert gap_closed_share(16.0, 14.0, 18.0) == pytest.approx(0.5)
    assert gap_closed_share(14.0, 14.0, 18.0) == 0.0 and gap_closed_share(18.0, 14.0, 18.0) == 1.0
    assert gap_closed_share(13.0, 14.0, 18.0) == pytest.approx(-0.25)  # worse than the window
    assert gap_closed_share(16.0, 14.0, 14.0) is None  # no gap to close
    assert gap_closed_share(None, 14.0, 18.0) is None and gap_closed_share(16.0, None, 18.0) is None


def _bucketed_results() -> dict:
    res = make_results(("window", "kv", "full"))
    res["suite"]["name"] = "doom-v2"
    res["suite"]["gap_buckets"] = list(EDGES)
    base = {"window": (14.0, 12.0, 11.0), "kv": (15.0, 13.0, 11.0), "full": (18.0, 16.0, 11.0)}
    for name, psnrs in base.items():
        res["variants"][name]["revisit"]["per_bucket"] = {
            lab: {"events": 10 + i, "psnr_gt": p, "ssim_gt": 0.5, "psnr_self": p + 1, "ssim_self": 0.6}
            for i, (lab, p) in enumerate(zip(bucket_labels(EDGES), psnrs, strict=True))}
    return res


def test_report_renders_the_bucket_tables(tmp_path):
    res = _bucketed_results()
    validate_results(res)
    md = write_report(res, tmp_path)[0].read_text()
    assert "Revisit PSNR by gap bucket" in md
    assert "| variant | gap 16-64 | gap 64-150 | gap 150-350 |" in md
    assert "| kv | 15.00 dB (10 events) | 13.00 dB (11 events) | 11.00 dB (12 events) |" in md
    assert "| full - window | +4.00 dB | +4.00 dB | +0.00 dB |" in md
    assert "| kv | 25.0% | 25.0% | n/a |" in md  # 150-350: window = full, nothing to close
    assert "Careful" not in md
    res["variants"]["full"]["skipped"] = {"revisit": {"long-loop-1": "past the budget"}}
    md = write_report(res, tmp_path / "skipped")[0].read_text()
    assert "Careful: full refused long-loop-1" in md


def test_report_without_buckets_or_baselines(tmp_path):
    md = write_report(make_results(("window", "kv", "full")), tmp_path / "a")[0].read_text()
    assert "gap bucket" not in md  # doom-v1 results: no bucket table
    res = _bucketed_results()
    del res["variants"]["full"], res["elo"]
    md = write_report(res, tmp_path / "b")[0].read_text()
    assert "Revisit PSNR by gap bucket" in md and "window -> full" not in md


def test_schema_checks_per_bucket():
    res = _bucketed_results()
    res["variants"]["kv"]["revisit"]["per_bucket"]["16-64"]["events"] = -1
    with pytest.raises(DataError) as err:
        validate_results(res)
    assert err.value.field == "variants.kv.revisit.per_bucket.16-64.events"
