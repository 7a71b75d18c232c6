"""Metric-judged ratings: rigged games rank as rigged, symmetric games tie, intervals hold the estimate."""

from __future__ import annotations

import pytest

from infworld.bench.elo import JUDGE, bootstrap_ci, bradley_terry, elo_ratings, games_from_scores, rate
from infworld.errors import ConfigError, DataError

RIGGED = [("A", "B", 1.0)] * 8 + [("B", "C", 1.0)] * 8 + [("C", "A", 0.0)] * 8  # A > B > C


def test_games_from_scores():
    scores = {"a": {"t1": 20.0, "t2": 10.0, "t3": 5.0}, "b": {"t1": 15.0, "t2": 10.05, "t4": 1.0}}
    assert games_from_scores(scores) == [("a", "b", 1.0), ("a", "b", 0.0)]  # only shared items
    assert games_from_scores(scores, tie_eps=0.1) == [("a", "b", 1.0), ("a", "b", 0.5)]
    assert games_from_scores(scores, higher_is_better=False) == [("a", "b", 0.0), ("a", "b", 1.0)]
    assert games_from_scores({"a": {"t": None}, "b": {"t": 1.0}}) == []  # not measured: no game
    assert games_from_scores({"a": {"t": 1.0}}) == []


@pytest.mark.parametrize("fit", [elo_ratings, bradley_terry, lambda g: bradley_terry(g, method="mm")])
def test_rigged_games_rank_in_order(fit):
    r = fit(RIGGED)
    assert r["A"] > r["B"] > r["C"]
    assert sum(r.values()) / 3 == pytest.approx(1500.0)


@pytest.mark.parametrize("fit", [elo_ratings, bradley_terry])
def test_symmetric_results_give_equal_ratings(fit):
    games = [("A", "B", 1.0), ("B", "A", 1.0), ("A", "C", 0.5), ("B", "C", 0.5)] * 5
    r = fit(games)
    tol = 1e-6 if fit is bradley_terry else 10.0  # Elo depends a little on the (averaged) order
    assert r["A"] == pytest.approx(r["B"], abs=tol) and r["B"] == pytest.approx(r["C"], abs=tol)


def test_bradley_terry_newton_equals_mm_and_the_closed_form():
    games = [("A", "B", 1.0)] * 6 + [("B", "A", 1.0)] * 2 + [("A", "B", 0.5)] * 2
    newton, mm = bradley_terry(games), bradley_terry(games, method="mm", iters=20000, tol=1e-13)
    assert newton["A"] == pytest.approx(mm["A"], abs=1e-6)
    # two players, no prior: p_A / p_B = wins_A / wins_B = 7 / 3 -> a gap of 400 log10(7/3) Elo points
    import math

    weak = bradley_terry(games, prior=1e-9)
    assert weak["A"] - weak["B"] == pytest.approx(400 * math.log10(7 / 3), abs=1e-3)


def test_bootstrap_ci_contains_the_estimate():
    for fit in (elo_ratings, bradley_terry):
        point = fit(RIGGED)
        ci = bootstrap_ci(RIGGED, fit, n=100, seed=1)
        for p, (lo, hi) in ci.items():
            assert lo <= point[p] <= hi and lo < hi
    again = bootstrap_ci(RIGGED, bradley_terry, n=50, seed=3)
    assert bootstrap_ci(RIGGED, bradley_terry, n=50, seed=3) == again  # seeded


def test_rate_builds_the_elo_object():
    per_traj = {"none": {"t1": 10.0, "t2": 11.0, "t3": 9.0}, "kv": {"t1": 14.0, "t2": 15.0, "t3": 8.0},
                "full": {"t1": 18.0, "t2": 19.0, "t3": 17.0}}
    lpips_like = {v: {t: -s for t, s in d.items()} for v, d in per_traj.items()}
    out = rate({"memory": per_traj, "fidelity": lpips_like, "action": {"none": {"t1": 1.0}}},
               higher_is_better={"fidelity": False}, metrics={"memory": "revisit PSNR"}, n_boot=30)
    assert out["judge"] == JUDGE == "metric (not people)"
    mem, fid = out["criteria"]["memory"], out["criteria"]["fidelity"]
    assert mem["games"] == 9 and mem["metric"] == "revisit PSNR"
    assert mem["ratings"]["full"]["elo"] > mem["ratings"]["kv"]["elo"] > mem["ratings"]["none"]["elo"]
    assert fid["ratings"]["full"]["bt"] == pytest.approx(mem["ratings"]["full"]["bt"])  # lower is better
    for r in mem["ratings"].values():
        assert r["elo_ci"][0] <= r["elo"] <= r["elo_ci"][1] and r["bt_ci"][0] <= r["bt"] <= r["bt_ci"][1]
    assert out["criteria"]["action"] == {"games": 0, "ratings": {}}  # one variant: nothing to rate


def test_bad_inputs():
    with pytest.raises(DataError, match="bad game"):
        elo_ratings([("A", "A", 1.0)])
    with pytest.raises(DataError, match="bad game"):
        bradley_terry([("A", "B", 0.7)])
    with pytest.raises(ConfigError, match="prior"):
        bradley_terry(RIGGED, prior=0.0)
