"""The real side of the action-response benchmark: ViZDoom replayed from the model's context state.

Start ``i`` (a function of ``(seed, i)`` only, like the collector's episodes, collect.py):

1. ``numpy.random.SeedSequence([seed, i])`` gives the env seed, the policy seed and the warmup
   length (``warmup[0]..warmup[1]`` steps);
2. reset the game with the env seed and let the seeded policy (``explore`` by default) play the
   warmup, recording frames and the commands really applied; the last ``context`` frames and their
   transitions are the model's context;
3. for each constant action: reset with the same seed, replay the same commands (the replayed frames
   must equal the first pass bit for bit, else :class:`EnvError`: VizDoomEnv.reset settles the
   engine's carried-over state, so the same seed and commands give the same frames), then hold the
   action for ``frames`` steps and record what the game shows.

A start whose game ends before all that is done (my_way_home's goal reached) is dropped and the next
index tried. The default seed (2024) differs from the training collections' (0, 1, 2), so the starts
are held out. The result is cached as an npz named by a hash of the settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infworld.bench.action_response import ACTIONS, ResponseData, check_settings
from infworld.data.action_schema import decode_pair
from infworld.data.episode import atomic_write_bytes
from infworld.envs.base import Command, Env
from infworld.errors import ConfigError, DataError, EnvError

CACHE_VERSION = 1


@dataclass
class RealConfig:
    """Where the starts come from. ``size`` and frame skip follow the collector's defaults."""

    starts: int = 12
    frames: int = 24
    context: int = 8
    warmup: tuple[int, int] = (20, 60)  # policy steps before the actions start, drawn per start
    seed: int = 2024
    scenario: str = "my_way_home"
    size: tuple[int, int] = (64, 64)
    policy: str = "explore"
    max_candidates: int = 0  # start indices to try before giving up; 0 = 4 * starts + 8

    def validate(self) -> None:
        check_settings(self.starts, self.frames, self.context)
        lo, hi = (int(x) for x in self.warmup)
        if not self.context <= lo <= hi:
            raise ConfigError(f"action response: warmup {tuple(self.warmup)} must satisfy context "
                              f"({self.context}) <= low <= high")
        if self.seed < 0 or self.max_candidates < 0:
            raise ConfigError(f"action response: seed and max_candidates must be >= 0, got "
                              f"{self.seed} / {self.max_candidates}")


def command_of(name: str) -> Command:
    """The env :class:`Command` of constant action ``name`` (ids decoded with the action schema)."""
    move, view = ACTIONS[name]
    (fwd, right, _), (yaw, pitch, _) = decode_pair(move), decode_pair(view)
    return Command(forward=int(fwd), right=int(right), yaw=int(yaw), pitch=int(pitch))


def start_plan(cfg: RealConfig, index: int) -> tuple[int, int, int]:
    """(env seed, policy seed, warmup steps) of start ``index``: a function of (seed, index) only."""
    env_seed, policy_seed, w = np.random.SeedSequence([int(cfg.seed), int(index)]).generate_state(3)
    lo, hi = int(cfg.warmup[0]), int(cfg.warmup[1])
    return int(env_seed), int(policy_seed), lo + int(w) % (hi - lo + 1)


def _play(env: Env, seed: int, commands: list[Command]) -> np.ndarray | None:
    """Frames (len(commands) + 1, H, W, 3) of replaying ``commands`` from reset(seed); None if it ends."""
    frames = [env.reset(seed).frame]
    for cmd in commands:
        res = env.step(cmd)
        if res.obs is None or res.done:
            return None
        frames.append(res.obs.frame)
    return np.stack(frames)


def play_start(env: Env, cfg: RealConfig, index: int, actions: list[str]) -> dict[str, Any] | None:
    """Context, context actions and real rollouts of one start; None if the game ends too early."""
    from infworld.envs.policies import make_policy

    env_seed, policy_seed, warmup = start_plan(cfg, index)
    obs = env.reset(env_seed)
    agent = make_policy(cfg.policy, env.spec, policy_seed)
    frames, commands = [obs.frame], []
    for _ in range(warmup):
        res = env.step(agent.act(obs))
        if res.obs is None or res.done:
            return None
        commands.append(res.command)  # what the game really applied
        obs = res.obs
        frames.append(obs.frame)
    first = np.stack(frames)  # (warmup + 1, H, W, 3)
    k = cfg.context
    real = {}
    for name in actions:
        seq = _play(env, env_seed, commands + [command_of(name)] * cfg.frames)
        if seq is None:
            return None
        if not np.array_equal(seq[: warmup + 1], first):
            diff = int(np.abs(seq[: warmup + 1].astype(np.int16) - first).max())
            raise EnvError(f"vizdoom replay of start {index} (env seed {env_seed}) differs from the first "
                           f"pass (max abs diff {diff}): the game is not deterministic under reset + replay")
        real[name] = seq[warmup + 1:]  # (F, H, W, 3)
    tail = commands[warmup - (k - 1):] if k > 1 else []
    return {"context": first[warmup + 1 - k:], "real": real, "move": [c.move_id for c in tail],
            "view": [c.view_id for c in tail], "interact": [c.interact for c in tail],
            "index": index, "env_seed": env_seed, "policy_seed": policy_seed, "warmup": warmup}


def cache_file(cfg: RealConfig, cache_dir: str | Path, actions: list[str]) -> Path:
    """The cache npz of these settings: ``DIR/action_response-<hash of settings>.npz``."""
    key = json.dumps({"v": CACHE_VERSION, "cfg": dataclasses.asdict(cfg), "actions": actions}, sort_keys=True)
    return Path(cache_dir) / f"action_response-{hashlib.sha256(key.encode()).hexdigest()[:12]}.npz"


def _save(path: Path, data: ResponseData) -> None:
    arrays = {"context": data.context, **{f"ctx_{k}": v for k, v in data.context_actions.items()},
              **{f"real_{i}": data.real[n] for i, n in enumerate(data.real)},
              "names": np.array(list(data.real)), "info": np.array(json.dumps(data.info))}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, lambda f: f.write(buf.getvalue()))


def _load(path: Path) -> ResponseData | None:
    """The cached data, or None when the file is missing or unreadable (it is then rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            names = [str(n) for n in z["names"]]
            data = ResponseData(context=z["context"],
                                context_actions={k: z[f"ctx_{k}"] for k in ("move", "view", "interact")},
                                real={n: z[f"real_{i}"] for i, n in enumerate(names)},
                                info=json.loads(str(z["info"])))
        data.check()
        return data
    except (OSError, KeyError, ValueError, DataError):
        return None


def collect_real(cfg: RealConfig, cache_dir: str | Path | None = None, actions: list[str] | None = None,
                 progress: bool = False) -> ResponseData:
    """Context and real rollouts of ``cfg.starts`` starts (module docstring), cached in ``cache_dir``."""
    from infworld.envs.registry import make_env

    cfg.validate()
    actions = list(actions or ACTIONS)
    path = cache_file(cfg, cache_dir, actions) if cache_dir is not None else None
    if path is not None and (data := _load(path)) is not None:
        data.info["cache"] = str(path)
        return data
    tries = cfg.max_candidates or 4 * cfg.starts + 8
    longest = int(cfg.warmup[1]) + cfg.frames + 2
    got, dropped = [], []
    with make_env("vizdoom", cfg.scenario, size=cfg.size, max_steps=longest) as env:
        for index in range(tries):
            if len(got) == cfg.starts:
                break
            start = play_start(env, cfg, index, actions)
            (got if start is not None else dropped).append(start if start is not None else index)
            if progress:
                print(f"action response: start {index} {'ok' if start else 'dropped (game ended)'}",
                      file=sys.stderr)
    if len(got) < cfg.starts:
        raise EnvError(f"action response: only {len(got)} of {cfg.starts} starts in {tries} tries "
                       f"(the game ended early in {len(dropped)}); raise max_candidates or lower frames")
    info = {"env": "vizdoom", "config": dataclasses.asdict(cfg), "actions": actions,
            "start_index": [g["index"] for g in got], "env_seed": [g["env_seed"] for g in got],
            "policy_seed": [g["policy_seed"] for g in got], "warmup": [g["warmup"] for g in got],
            "dropped": dropped, "replay_exact": True}
    data = ResponseData(
        context=np.stack([g["context"] for g in got]),  # (S, K, H, W, 3)
        context_actions={k: np.asarray([g[k] for g in got], dtype=np.int64).reshape(len(got), cfg.context - 1)
                         for k in ("move", "view", "interact")},
        real={n: np.stack([g["real"][n] for g in got]) for n in actions},  # (S, F, H, W, 3) each
        info=info)
    if path is not None:
        _save(path, data)
        data.info["cache"] = str(path)
    return data
