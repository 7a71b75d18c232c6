"""Versioned Crafter benchmark suites: held-out ``craft``-policy episodes and the events in them.

A suite is recorded once with the ordinary collector (``infworld collect --policy craft`` on
held-out seeds, deterministic) into ``CACHE/<suite>-v<version>/`` as a dataset in our format, then
``suite.json`` (the spec and every event found by :mod:`infworld.bench.crafter_events`) is written
last, so a cache is complete exactly when it is there; an interrupted recording resumes with the
episodes already written. A change to a suite's contents needs a new version number.

* ``crafter-mini``: 2 episodes of 160 steps and a 64-frame look rollout: tests and CI.
* ``crafter-v1``: 12 episodes of 400 steps (seeds never used for training data), events capped per
  kind, and a 1000-frame look rollout (episode 0 of a 1000-step recording) for "does a long rollout
  keep the Crafter look".
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infworld.bench.crafter_events import Effect, Recall, find_effects, find_recalls
from infworld.bench.suites import SUITE_FILE, default_cache_root
from infworld.data.episode import Episode, atomic_write_json, list_episodes, read_episode, read_meta
from infworld.errors import ConfigError, DataError


@dataclass(frozen=True)
class CrafterSuiteSpec:
    """``episodes`` x ``steps`` craft-policy episodes from ``seed``; ``look_frames``: length of the
    long look rollout (its actions come from a separate ``look_frames``-step episode); ``context``:
    real frames that seed every rollout; ``window``: frames a return must be away from the change
    (the model's local window); gaps in [``min_gap``, ``max_gap``]; at most ``max_effects`` effect
    events per kind and ``max_recalls`` returns (non-grass changes first)."""

    name: str
    version: int
    episodes: int
    steps: int
    seed: int
    look_frames: int
    context: int = 8
    window: int = 16
    min_gap: int = 20
    max_gap: int = 200
    max_effects: int = 16
    max_recalls: int = 40
    description: str = ""


CRAFTER_SUITES: dict[str, CrafterSuiteSpec] = {
    "crafter-mini": CrafterSuiteSpec("crafter-mini", 1, 2, 160, 7000, 64, context=4, max_effects=3,
                                     max_recalls=3, description="2 short Crafter episodes: tests and CI"),
    "crafter-v1": CrafterSuiteSpec("crafter-v1", 1, 12, 400, 7001, 1000,
                                   description="12 held-out craft-policy Crafter episodes (400 steps): "
                                               "action effects, world-state returns 20-200 frames after "
                                               "the change; a 1000-frame look rollout"),
}


@dataclass
class CrafterSuite:
    spec: CrafterSuiteSpec
    root: Path
    meta: Any
    episodes: list[Episode]
    look: Episode
    effects: list[tuple[int, Effect]]  # (episode, event)
    recalls: list[tuple[int, Recall]]


def is_crafter_suite(name: str | None) -> bool:
    return bool(name) and name in CRAFTER_SUITES


def _collect(root: Path, episodes: int, steps: int, seed: int, progress: bool) -> None:
    from infworld.envs.collect import CollectConfig, collect

    collect(CollectConfig(env="crafter", out=str(root), policy="craft", episodes=episodes, steps=steps,
                          seed=seed), progress=progress)


def _events(spec: CrafterSuiteSpec, meta: Any, episodes: list[Episode]
            ) -> tuple[list[tuple[int, Effect]], list[tuple[int, Recall]]]:
    keys, vocab = list(meta.extra["inventory_keys"]), list(meta.interact_vocab)
    effects: list[tuple[int, Effect]] = []
    recalls: list[tuple[int, Recall]] = []
    for i, ep in enumerate(episodes):
        ex = ep.extras
        effects += [(i, e) for e in find_effects(ep.interact, vocab, ex["inventory"], ex["semantic"],
                                                  ep.pose, keys) if e.t >= spec.context - 1]
        recalls += [(i, r) for r in find_recalls(ex["semantic"], ep.pose, spec.window, spec.min_gap,
                                                  spec.max_gap) if r.change >= spec.context]
    # Cap per kind (collect:wood is far more common than place:table), keeping episode order.
    seen: Counter = Counter()
    capped = []
    for i, e in effects:
        kind = f"{e.kind}:{e.key or e.material}"
        if seen[kind] < spec.max_effects:
            seen[kind] += 1
            capped.append((i, e))
    grass = meta.extra["semantic_ids"]["grass"]
    recalls.sort(key=lambda ir: (ir[1].new == grass, ir[0], ir[1].change))
    return capped, recalls[: spec.max_recalls]


def build_crafter_suite(name: str, cache_dir: str | Path | None = None, progress: bool = False
                        ) -> CrafterSuite:
    """Record (once) and load Crafter suite ``name``."""
    if name not in CRAFTER_SUITES:
        raise ConfigError(f"unknown crafter suite {name!r}; known: {sorted(CRAFTER_SUITES)}")
    spec = CRAFTER_SUITES[name]
    root = Path(cache_dir or default_cache_root()) / f"{spec.name}-v{spec.version}"
    done = root / SUITE_FILE
    if not done.exists():
        _collect(root / "episodes-set", spec.episodes, spec.steps, spec.seed, progress)
        _collect(root / "look-set", 1, spec.look_frames, spec.seed + 500, progress)
    meta = read_meta(root / "episodes-set")
    if meta.env != "crafter":
        raise DataError(f"suite cache {root}: holds {meta.env!r} episodes, expected crafter")
    episodes = [read_episode(p, meta) for p in list_episodes(root / "episodes-set")]
    look = read_episode(list_episodes(root / "look-set")[0], read_meta(root / "look-set"))
    if len(episodes) != spec.episodes:
        raise DataError(f"suite cache {root}: {len(episodes)} episodes, expected {spec.episodes}; delete "
                        "the folder to record it again")
    effects, recalls = _events(spec, meta, episodes)
    if not done.exists():
        atomic_write_json(done, {"spec": asdict(spec),
                                 "effects": [{"episode": i, **asdict(e)} for i, e in effects],
                                 "recalls": [{"episode": i, **r.to_dict()} for i, r in recalls]})
    return CrafterSuite(spec, root, meta, episodes, look, effects, recalls)


def suite_summary(suite: CrafterSuite) -> dict[str, Any]:
    """Counts of the suite's events, for reports."""
    ids = {v: k for k, v in suite.meta.extra["semantic_ids"].items()}
    eff = Counter(f"{e.kind}:{e.key or ids.get(e.material, e.material)}" for _, e in suite.effects)
    rec = Counter(f"{ids.get(r.old, r.old)}->{ids.get(r.new, r.new)}" for _, r in suite.recalls)
    gaps = [r.gap for _, r in suite.recalls]
    return {"episodes": len(suite.episodes), "frames": int(sum(len(e.frames) for e in suite.episodes)),
            "effects": dict(eff), "recalls": dict(rec),
            "recall_gaps": [int(np.min(gaps)), int(np.max(gaps))] if gaps else [],
            "root": str(suite.root)}

