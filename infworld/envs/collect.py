"""Collect datasets of episodes from a real environment with an exploration policy.

``collect(CollectConfig(...))`` writes ``DIR/meta.json`` first, then one episode per file with
:func:`infworld.data.episode.write_episode` (temp file + rename), so an interrupted run keeps every
finished episode and never shows half of one. Episode ``i`` is seeded from ``(seed, i)`` only
(``numpy.random.SeedSequence([seed, i])``), so the data does not depend on ``workers`` or on which
episodes a resumed run skips. A folder that already holds this exact dataset is resumed (episodes
present are skipped); a folder holding a different dataset is refused.

Episodes record ``steps`` actions and ``steps + 1`` frames, unless the game ends first (ViZDoom
goal or death, Crafter death): then the episode stops at the last frame the game showed and its
``info["ended"]`` is ``"game_over"`` instead of ``"steps"``.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import queue
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infworld.data.episode import (
    EPISODE_DIR,
    DatasetMeta,
    Episode,
    episode_path,
    read_meta,
    read_npz,
    write_episode,
    write_meta,
)
from infworld.data.outputs import check_output_dir
from infworld.envs.base import Env
from infworld.envs.policies import POLICIES, make_policy
from infworld.envs.registry import DEFAULT_SCENARIOS, check_env, check_scenario, make_env
from infworld.errors import DataError, EnvError, InfWorldError


@dataclass
class CollectConfig:
    """One ``infworld collect`` run. ``None`` fields take the environment's defaults."""

    env: str = "vizdoom"
    out: str = "data/doom"
    scenario: str | None = None
    policy: str = "random"
    episodes: int = 1
    steps: int = 1000  # actions per episode (frames = steps + 1)
    workers: int = 1
    seed: int = 0
    size: tuple[int, int] = (64, 64)
    frame_skip: int | None = None
    monsters: bool | None = None

    def validate(self) -> None:
        check_env(self.env)
        check_scenario(self.env, self.scenario or DEFAULT_SCENARIOS[self.env])
        if self.policy not in POLICIES:
            raise EnvError(f"unknown policy {self.policy!r}; valid policies: {', '.join(POLICIES)}")
        for name, low in (("episodes", 1), ("steps", 1), ("workers", 1), ("seed", 0)):
            if int(getattr(self, name)) < low:
                raise EnvError(f"collect {name} must be >= {low}, got {getattr(self, name)}")
        if len(self.size) != 2 or min(self.size) < 8:
            raise EnvError(f"collect size must be (H, W) with both >= 8, got {self.size!r}")


@dataclass
class CollectSummary:
    """What a collection did; ``fps`` counts the frames written by this run."""

    out: str
    episodes: int
    new_episodes: int
    skipped_episodes: int
    frames: int
    seconds: float
    ended: dict[str, int] = field(default_factory=dict)
    revisits: dict[str, Any] | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def episode_seeds(seed: int, index: int) -> tuple[int, int]:
    """(env seed, policy seed) of episode ``index``: a function of (seed, index) only."""
    env_seed, policy_seed = np.random.SeedSequence([int(seed), int(index)]).generate_state(2)
    return int(env_seed), int(policy_seed)


def run_episode(env: Env, policy: str, steps: int, seed: int, index: int) -> Episode:
    """Play one episode of up to ``steps`` actions and return it (nothing is written)."""
    env_seed, policy_seed = episode_seeds(seed, index)
    obs = env.reset(env_seed)
    agent = make_policy(policy, env.spec, policy_seed)
    frames, poses, depths = [obs.frame], [obs.pose], [obs.depth]
    extras: dict[str, list[np.ndarray]] = {k: [v] for k, v in obs.extras.items()}
    move, view, interact, buttons = [], [], [], []
    ended = "steps"
    for _ in range(steps):
        res = env.step(agent.act(obs))
        if res.obs is None:  # the game ended without showing a last frame: drop this action
            ended = "game_over"
            break
        move.append(res.command.move_id)
        view.append(res.command.view_id)
        interact.append(res.command.interact)
        buttons.append(res.buttons)
        obs = res.obs
        frames.append(obs.frame)
        poses.append(obs.pose)
        depths.append(obs.depth)
        for k, v in obs.extras.items():
            extras[k].append(v)
        if res.done:
            ended = "game_over"
            break
    if len(frames) < 2:
        raise EnvError(f"episode {index} (seed {seed}) ended before its first action; "
                       f"scenario {env.spec.scenario!r} cannot be collected")
    info: dict[str, Any] = {"index": index, "seed": seed, "env_seed": env_seed, "policy_seed": policy_seed,
                            "env": env.spec.name, "scenario": env.spec.scenario, "policy": policy,
                            "steps_requested": steps, "ended": ended}
    if getattr(agent, "segments", None) is not None:
        info["segments"] = {s: agent.segments.count(s) for s in sorted(set(agent.segments))}
    return Episode(
        frames=np.stack(frames),  # (T, H, W, 3) uint8
        move=np.asarray(move, dtype=np.int64),  # (T-1,)
        view=np.asarray(view, dtype=np.int64),
        interact=np.asarray(interact, dtype=np.int64),
        pose=np.stack(poses).astype(np.float32),  # (T, 5)
        depth=np.stack(depths) if env.spec.has_depth else None,  # (T, H, W) uint8
        buttons=np.stack(buttons).astype(np.float32),  # (T-1, B)
        extras={k: np.stack(v) for k, v in extras.items()},  # (T, ...)
        info=info,
    )


def _make_env(cfg: CollectConfig) -> Env:
    return make_env(cfg.env, cfg.scenario, size=cfg.size, frame_skip=cfg.frame_skip, monsters=cfg.monsters,
                    max_steps=cfg.steps)


def _write(cfg: CollectConfig, ep: Episode, index: int, meta: DatasetMeta) -> None:
    path = episode_path(cfg.out, index)
    try:
        write_episode(path, ep, meta=meta)
    except OSError as exc:
        raise DataError(f"cannot write episode ({exc.strerror or exc})", path=str(path)) from exc


def _prepare(cfg: CollectConfig, meta: DatasetMeta) -> None:
    """Create or check ``cfg.out``: new folder -> write meta.json; same dataset -> resume."""
    out = check_output_dir(cfg.out)
    try:
        if (out / "meta.json").exists():
            old = read_meta(out).to_json()
            new = json.loads(json.dumps(meta.to_json()))
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            if diff:
                have = {k: old.get(k) for k in diff}
                want = {k: new.get(k) for k in diff}
                raise DataError(f"folder already holds a different dataset: {have} there, {want} requested; "
                                "use another --out, or the same settings to resume", path=str(out))
        else:
            out.mkdir(parents=True, exist_ok=True)
            write_meta(out, meta)
        (out / EPISODE_DIR).mkdir(exist_ok=True)
        # A killed run (SIGKILL, power loss) can leave a hidden temp file; it never counts as an episode.
        for tmp in (out / EPISODE_DIR).glob(".ep_*.tmp"):
            tmp.unlink()
    except OSError as exc:
        raise DataError(f"cannot write the dataset folder ({exc.strerror or exc})", path=str(out)) from exc


def _worker(cfg: CollectConfig, meta: DatasetMeta, tasks: Any, results: Any, stop: Any) -> None:
    """Worker process: build one env, then play and write episodes until told to stop."""
    env = None
    try:
        env = _make_env(cfg)
        while not stop.is_set():
            index = tasks.get()
            if index is None:
                break
            ep = run_episode(env, cfg.policy, cfg.steps, cfg.seed, index)
            _write(cfg, ep, index, meta)
            results.put(("ok", index, len(ep), ep.info["ended"]))
    except KeyboardInterrupt:
        pass
    except InfWorldError as exc:
        results.put(("error", -1, exc, ""))
    except Exception as exc:  # anything else: report it as text (it may not pickle)
        results.put(("error", -1, EnvError(f"collect worker failed: {type(exc).__name__}: {exc}"), ""))
    finally:
        if env is not None:
            env.close()  # ends the vizdoom process with us


def collect(cfg: CollectConfig, progress: bool = True) -> CollectSummary:
    """Run a collection; see the module docstring. Raises EnvError / DataError on bad input."""
    cfg.validate()
    cfg.size = (int(cfg.size[0]), int(cfg.size[1]))
    t0 = time.perf_counter()
    env = _make_env(cfg)
    try:
        collect_info = {"seed": cfg.seed, "steps": cfg.steps,
                        "seeding": "episode i uses numpy SeedSequence([seed, i]).generate_state(2)"}
        meta = env.dataset_meta(policy=cfg.policy, extra={"collect": collect_info})
        _prepare(cfg, meta)
        todo = [i for i in range(cfg.episodes) if not episode_path(cfg.out, i).exists()]
        workers = min(cfg.workers, len(todo))
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="ep", file=sys.stderr, disable=not progress,
                   desc=f"collect {cfg.env}/{meta.scenario}/{cfg.policy}")
        frames, ended = 0, {"steps": 0, "game_over": 0}
        if workers <= 1:
            for index in todo:
                ep = run_episode(env, cfg.policy, cfg.steps, cfg.seed, index)
                _write(cfg, ep, index, meta)
                frames += len(ep)
                ended[ep.info["ended"]] = ended.get(ep.info["ended"], 0) + 1
                bar.update(1)
        else:
            env.close()  # the workers build their own
            for n, e in _run_workers(cfg, meta, todo, workers, bar):
                frames += n
                ended[e] = ended.get(e, 0) + 1
        bar.close()
    finally:
        env.close()
    seconds = time.perf_counter() - t0
    return CollectSummary(out=str(cfg.out), episodes=cfg.episodes, new_episodes=len(todo),
                          skipped_episodes=cfg.episodes - len(todo), frames=frames, seconds=seconds,
                          ended=ended, revisits=dataset_revisits(cfg.out, meta.env, cfg.episodes))


def _run_workers(cfg: CollectConfig, meta: DatasetMeta, todo: list[int], workers: int, bar: Any):
    """Yield (frames, ended) per finished episode from ``workers`` spawned processes."""
    ctx = mp.get_context("spawn")  # no fork: safe with threads (tqdm) and the vizdoom child processes
    tasks, results, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    for index in todo:
        tasks.put(index)
    for _ in range(workers):
        tasks.put(None)
    procs = [ctx.Process(target=_worker, args=(cfg, meta, tasks, results, stop), daemon=False)
             for _ in range(workers)]
    for p in procs:
        p.start()
    done = 0
    try:
        while done < len(todo):
            try:
                kind, _, payload, ended = results.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead or all(p.exitcode is not None for p in procs):
                    raise EnvError(f"a collect worker died (exit codes {[p.exitcode for p in procs]}); "
                                   "finished episodes are kept, run again to resume") from None
                continue
            if kind == "error":
                raise payload
            done += 1
            bar.update(1)
            yield payload, ended
    finally:
        stop.set()  # workers finish the episode they are on (it is written atomically), then exit
        tasks.cancel_join_thread()  # unread task ids must not block our exit
        for p in procs:
            p.join(timeout=120)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)


def dataset_revisits(out: str | Path, env: str, episodes: int) -> dict[str, Any] | None:
    """Revisit density of episodes 0..episodes-1 (infworld.data.revisits), or None without poses.

    Defaults of ``revisit_stats`` (min_gap 50, heading within 30 degrees), with the revisit radius
    of the env (64 map units for ViZDoom, one cell and no heading test for Crafter)."""
    from infworld.data import revisits

    poses = []
    for i in range(episodes):
        path = episode_path(out, i)
        if path.exists():
            pose = read_npz(path, ("pose",)).get("pose")
            if pose is not None:
                poses.append(pose)
    if not poses:
        return None
    dist = revisits.default_revisit_dist(env)
    # Crafter's camera is top-down and never turns, so what is seen depends on the place only.
    stats = revisits.revisit_stats(poses, dist=dist, angle_deg=None if env == "crafter" else 30.0)
    return {k: v for k, v in stats.items() if k not in ("masks", "sources")}


def summary_dict(summary: CollectSummary) -> dict[str, Any]:
    """JSON-able summary (for logs and --json output)."""
    d = asdict(summary)
    d["fps"] = summary.fps
    return d
