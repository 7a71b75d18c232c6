"""Metric-judged pairwise ratings of memory variants: Elo, Bradley-Terry, bootstrap intervals.

Infinite-World (Wu et al. 2025) ranks models by Elo from human pairwise votes. We play the same kind
of games, but the judge is a metric, not people: for one criterion (memory, fidelity, action) and
one item (a trajectory), the variant with the better measured score wins, a difference within
``tie_eps`` is a draw. From the games we fit

- Elo (Elo 1978): sequential updates R_a += k (S_a - E_a), E_a = 1 / (1 + 10^((R_b - R_a) / 400)),
  replayed in several shuffled orders and averaged, since the result of one pass depends on order;
- Bradley-Terry (Bradley & Terry 1952): P(i beats j) = p_i / (p_i + p_j), fitted by maximum
  likelihood (the MM algorithm of Hunter 2004, eq. 3, or Newton's method to the same optimum), and
  put on the Elo scale R = base + (400 / ln 10) ln p.

A game is a tuple (a, b, s) with s = 1.0 if a won, 0.5 for a draw, 0.0 if b won.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from infworld.errors import ConfigError, DataError

Game = tuple[str, str, float]
JUDGE = "metric (not people)"
ELO_SCALE = 400.0 / math.log(10.0)  # Elo points per unit of natural-log strength


def games_from_scores(scores: dict[str, dict[str, float]], higher_is_better: bool = True,
                      tie_eps: float = 0.0) -> list[Game]:
    """One game per pair of variants and per item both have a finite score for.

    ``scores[variant][item]`` is e.g. the revisit PSNR of a variant on one trajectory. Pairs follow
    the dict order of ``scores``; items are sorted, so the list is deterministic.
    """
    names = list(scores)
    games: list[Game] = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            for item in sorted(set(scores[a]) & set(scores[b])):
                sa, sb = scores[a][item], scores[b][item]
                if sa is None or sb is None or not (math.isfinite(sa) and math.isfinite(sb)):
                    continue  # not measured for one of them: no game
                diff = (sa - sb) if higher_is_better else (sb - sa)
                games.append((a, b, 0.5 if abs(diff) <= tie_eps else (1.0 if diff > 0 else 0.0)))
    return games


def _check(games: Sequence[Game]) -> list[str]:
    players: dict[str, None] = {}
    for g in games:
        if len(g) != 3 or g[2] not in (0.0, 0.5, 1.0) or g[0] == g[1]:
            raise DataError(f"bad game {g!r}: expected (a, b, 1.0 | 0.5 | 0.0) with a != b", field="games")
        players.setdefault(g[0])
        players.setdefault(g[1])
    return list(players)


def elo_ratings(games: Sequence[Game], k: float = 16.0, base: float = 1500.0, rounds: int = 20,
                seed: int = 0) -> dict[str, float]:
    """Elo ratings: the mean over ``rounds`` passes of the games in shuffled orders, each from ``base``.

    Updates are zero-sum, so the ratings always average to ``base``.
    """
    players = _check(games)
    if not games:
        return {}
    rng = np.random.default_rng(seed)
    total = dict.fromkeys(players, 0.0)
    for _ in range(max(1, rounds)):
        r = dict.fromkeys(players, base)
        for idx in rng.permutation(len(games)):
            a, b, s = games[idx]
            e = 1.0 / (1.0 + 10.0 ** ((r[b] - r[a]) / 400.0))  # expected score of a
            r[a] += k * (s - e)
            r[b] -= k * (s - e)
        for p in players:
            total[p] += r[p]
    return {p: total[p] / max(1, rounds) for p in players}


def _bt_tables(games: Sequence[Game], players: list[str], prior: float) -> tuple[np.ndarray, np.ndarray]:
    """Wins W_i (a draw is half a win each, plus the prior's half of its virtual games) and n_ij."""
    idx = {p: i for i, p in enumerate(players)}
    n = len(players)
    wins = np.full(n, prior / 2.0)
    pair = np.zeros((n, n))  # n_ij, symmetric
    for a, b, s in games:
        i, j = idx[a], idx[b]
        wins[i] += s
        wins[j] += 1.0 - s
        pair[i, j] += 1.0
        pair[j, i] += 1.0
    return wins, pair


def _bt_mm(wins: np.ndarray, pair: np.ndarray, prior: float, iters: int, tol: float) -> np.ndarray:
    """Hunter (2004) eq. 3: p_i <- W_i / (sum_j n_ij / (p_i + p_j) + prior / (p_i + 1)); returns ln p."""
    p = np.ones(len(wins))
    for _ in range(iters):
        new = wins / ((pair / (p[:, None] + p[None, :])).sum(axis=1) + prior / (p + 1.0))
        done = np.max(np.abs(np.log(new) - np.log(p))) < tol
        p = new
        if done:
            break
    return np.log(p)


def _bt_newton(wins: np.ndarray, pair: np.ndarray, prior: float, iters: int, tol: float) -> np.ndarray:
    """The same maximum of the (prior-regularised, strictly concave) log-likelihood in theta = ln p by
    Newton's method: quadratic instead of MM's linear convergence, which matters inside a bootstrap."""
    theta = np.zeros(len(wins))
    for _ in range(iters):
        q = 1.0 / (1.0 + np.exp(theta[None, :] - theta[:, None]))  # q_ij = P(i beats j)
        q0 = 1.0 / (1.0 + np.exp(-theta))  # P(i beats the reference)
        grad = wins - (pair * q).sum(axis=1) - prior * q0
        w = pair * q * q.T  # n_ij q_ij (1 - q_ij)
        hess = w - np.diag(w.sum(axis=1) + prior * q0 * (1.0 - q0))  # negative definite for prior > 0
        step = np.linalg.solve(hess, grad)
        step *= min(1.0, 2.0 / max(np.max(np.abs(step)), 1e-300))  # damp far from the optimum
        theta = theta - step
        if np.max(np.abs(step)) < tol:
            break
    return theta


def bradley_terry(games: Sequence[Game], iters: int = 200, base: float = 1500.0, prior: float = 1.0,
                  tol: float = 1e-10, method: str = "newton") -> dict[str, float]:
    """Bradley-Terry maximum-likelihood strengths on the Elo scale, averaging ``base``.

    P(i beats j) = p_i / (p_i + p_j); a draw counts as half a win for each. A player who never wins
    (or never loses) has no finite maximum-likelihood strength, so each player also plays ``prior``
    virtual games, half won, against a reference of strength 1: a weak prior that keeps every rating
    finite and pulls little when games are many. ``method="mm"`` runs Hunter's (2004) MM iteration
    (eq. 3); the default ``"newton"`` reaches the same optimum in a few steps instead of thousands
    (MM converges linearly, slowly when one variant dominates).
    """
    if prior <= 0:
        raise ConfigError(f"bradley_terry: prior must be > 0 (keeps ratings finite), got {prior}")
    if method not in ("newton", "mm"):
        raise ConfigError(f"bradley_terry: method must be 'newton' or 'mm', got {method!r}")
    players = _check(games)
    if not games:
        return {}
    wins, pair = _bt_tables(games, players, prior)
    fit = _bt_newton if method == "newton" else _bt_mm
    theta = fit(wins, pair, prior, iters, tol)
    r = ELO_SCALE * theta
    r = r - r.mean() + base
    return {pl: float(r[i]) for i, pl in enumerate(players)}


def bootstrap_ci(games: Sequence[Game], fn: Callable[[Sequence[Game]], dict[str, float]], n: int = 500,
                 alpha: float = 0.05, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval (1 - alpha) of each player's rating: ``fn`` on games resampled
    with replacement ``n`` times (Efron 1979). A player absent from a resample is skipped there."""
    players = _check(games)
    if not games:
        return {}
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {p: [] for p in players}
    for _ in range(n):
        pick = rng.integers(0, len(games), len(games))
        ratings = fn([games[i] for i in pick])
        for p, v in ratings.items():
            samples[p].append(v)
    out = {}
    for p, vals in samples.items():
        if vals:
            lo, hi = np.quantile(vals, [alpha / 2.0, 1.0 - alpha / 2.0])
            out[p] = (float(lo), float(hi))
    return out


def rate(scores_by_criterion: dict[str, dict[str, dict[str, float]]],
         higher_is_better: dict[str, bool] | None = None, tie_eps: dict[str, float] | None = None,
         metrics: dict[str, str] | None = None, k: float = 16.0, base: float = 1500.0, rounds: int = 20,
         n_boot: int = 200, alpha: float = 0.05, seed: int = 0) -> dict:
    """The "elo" object of results.json from per-criterion scores.

    ``scores_by_criterion[criterion][variant][item]`` (e.g. "memory" -> "kv" -> trajectory -> revisit
    PSNR). ``higher_is_better`` and ``tie_eps`` default to True and 0.0 per criterion; ``metrics``
    optionally names the judging metric of each criterion (stored as "metric"). Returns
    {"judge": "metric (not people)", "criteria": {c: {"games": int, ["metric": str,]
    "ratings": {v: {"elo", "elo_ci", "bt", "bt_ci"}}}}}; a criterion with no games has no ratings.
    """
    higher_is_better = higher_is_better or {}
    tie_eps = tie_eps or {}
    metrics = metrics or {}
    def elo_fn(g: Sequence[Game]) -> dict[str, float]:
        return elo_ratings(g, k=k, base=base, rounds=rounds, seed=seed)

    def bt_fn(g: Sequence[Game]) -> dict[str, float]:
        return bradley_terry(g, base=base)

    criteria = {}
    for crit, scores in scores_by_criterion.items():
        games = games_from_scores(scores, higher_is_better.get(crit, True), tie_eps.get(crit, 0.0))
        entry: dict = {"games": len(games)}
        if crit in metrics:
            entry["metric"] = metrics[crit]

        elo, bt = elo_fn(games), bt_fn(games)
        elo_ci = bootstrap_ci(games, elo_fn, n=n_boot, alpha=alpha, seed=seed)
        bt_ci = bootstrap_ci(games, bt_fn, n=n_boot, alpha=alpha, seed=seed)
        entry["ratings"] = {
            v: {"elo": elo[v], "elo_ci": list(elo_ci.get(v, (elo[v], elo[v]))),
                "bt": bt[v], "bt_ci": list(bt_ci.get(v, (bt[v], bt[v])))}
            for v in sorted(elo, key=lambda v: -elo[v])
        }
        criteria[crit] = entry
    return {"judge": JUDGE, "criteria": criteria}
