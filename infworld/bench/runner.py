"""``run_bench``: every memory variant through every protocol, resumable, into results + report.

Layout of ``out_dir`` (the contract in docs and infworld/bench/schema.py)::

    run.json                      what was asked (model, suite, settings); a rerun must match it
    parts/<variant>.<protocol>.json   one finished measurement each, written atomically
    rollouts/<variant>/<trajectory>.<true|random>.npz   generated frames shared by the protocols
    results.json                  schema "infworld-bench/1", validated before it is written
    clips/<variant>.<trajectory>.mp4  generated | ground truth, side by side
    report.md, report.html, plots/

An interrupted run resumes: finished parts are read back, cached rollouts are reused, only what is
missing is computed. The ratings (elo.py) are metric-judged pairwise games between variants on the
same items: memory = revisit PSNR per event, fidelity = replay PSNR per trajectory, action = IDM
accuracy per trajectory.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from infworld.bench import protocols as P
from infworld.bench.suites import Suite, build_suite, load_data_suite
from infworld.bench.variant import VariantRun
from infworld.data.action_schema import check_action_ids, check_action_space
from infworld.data.episode import atomic_write_json, read_meta
from infworld.errors import CheckpointError, ConfigError, DataError, MemoryConfigError

PROTOCOLS = ("replay", "revisit", "action", "distribution", "speed")
DEFAULT_MODEL = "doom-tiny-world"
DEFAULT_FEATURES = "doom-tiny-tokenizer"
ELO_METRICS = {"memory": "revisit PSNR vs ground truth per event (dB)",
               "fidelity": "replay PSNR vs ground truth per trajectory (dB)",
               "action": "IDM accuracy per trajectory (mean of move and view)"}
CLIP_FRAMES = 320


class _Bar:
    """A tqdm bar on stderr, or a plain one-line counter when tqdm is missing (or nothing if off)."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.enabled, self.total, self.n, self.desc = enabled, total, 0, desc
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc=desc, unit="frame", file=sys.stderr)
            except ImportError:
                pass

    def update(self, n: int) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled:
            print(f"\r{self.desc}: {self.n}/{self.total} frames", end="", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            print(file=sys.stderr)


def memory_settings(mem: Any) -> dict[str, Any]:
    """Every setting of a memory instance: its resolved config as a dict (JSON values)."""
    return mem.config.to_dict()


def _machine() -> dict[str, Any]:
    import torch

    from infworld import __version__

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "infworld": __version__}


def _check_request(memories: list[str], protocols: list[str], memory_cfg: dict[str, Any],
                   context: int | None) -> None:
    """ConfigError (MemoryConfigError for an unknown memory) for a request that cannot run."""
    from infworld.memory.registry import memory_class, memory_names

    if not memories:
        raise ConfigError("bench: no memory variant given (e.g. --memory window,full)")
    if len(set(memories)) != len(memories):
        raise ConfigError(f"bench: memory variants repeat: {memories}")
    unknown = [m for m in memories if memory_class(m) is None]
    if unknown:
        raise MemoryConfigError(f"bench: unknown memory {unknown}; known memories: {memory_names()}")
    bad = sorted(set(protocols) - set(PROTOCOLS))
    if bad or not protocols:
        raise ConfigError(f"bench: unknown or no protocols {bad or protocols}; valid: {list(PROTOCOLS)}")
    stray = sorted(set(memory_cfg) - set(memories))
    if stray:
        raise ConfigError(f"bench: settings given for memories not benchmarked: {stray} "
                          f"(variants: {memories})")
    if context is not None and context < 1:
        raise ConfigError(f"bench: context must be >= 1 frame, got {context}")


def _load_suite(suite: str | None, data: str | os.PathLike | None, context: int | None,
                cache_dir: Any, progress: bool, max_episodes: int, max_frames: int) -> Suite:
    if data is not None:
        if not Path(data).is_dir():
            raise DataError("--data: not a dataset folder (missing, or not a directory)", path=str(data))
        return load_data_suite(data, max_episodes=max_episodes, max_frames=max_frames, context=context or 8)
    if suite is None:
        raise ConfigError("bench: give a suite name (--suite) or a dataset (--data DIR)")
    return build_suite(suite, cache_dir=cache_dir, progress=progress)


def _check_run_file(out: Path, request: dict[str, Any]) -> None:
    """Write run.json, or check that an earlier run into ``out`` asked for the same thing."""
    path = out / "run.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read the earlier run's settings ({exc})", path=str(path)) from exc
        diff = sorted(k for k in set(old) | set(request) if old.get(k) != request.get(k))
        if diff:
            there, now = {k: old.get(k) for k in diff}, {k: request.get(k) for k in diff}
            raise ConfigError(f"{out} holds a bench run with other settings ({there} there, {now} now); "
                              "use another --out, or the same settings to resume")
    else:
        atomic_write_json(path, request)


def run_bench(model: str, suite: str | None, memories: list[str], out_dir: str | os.PathLike,
              data: str | os.PathLike | None = None, protocols: list[str] | None = None,
              progress: bool = True, memory_cfg: dict[str, dict[str, Any]] | None = None, *,
              steps: int | None = None, chunk: int | None = None, context: int | None = None, seed: int = 0,
              idm: str | None = None, memory_every: int | None = None, fold_commit: bool = False,
              cache_dir: str | os.PathLike | None = None, max_episodes: int = 8, max_frames: int = 1025,
              features: str = DEFAULT_FEATURES, inception: bool = False) -> dict[str, Any]:
    """Run the benchmark (module docstring) and return the results dict (also in results.json).

    ``memory_cfg`` maps a memory name to extra settings; ``steps`` / ``chunk`` override the model's
    sampler steps and chunk, ``memory_every`` / ``fold_commit`` the engine's play-speed settings
    (world.py RolloutConfig); ``context`` the suite's number of seeding frames; ``idm`` names the
    inverse dynamics model (default checkpoints/doom-idm); ``features`` the tokenizer whose features
    give ``fd_ours``; ``inception`` also computes FID with the packaged Inception network.
    """
    from infworld.models.loading import resolve_model_dir
    from infworld.world import WorldModel

    # 1. Check the request, load the suite and every variant's model before any work.
    protocols = list(protocols or PROTOCOLS)
    memory_cfg = memory_cfg or {}
    _check_request(memories, protocols, memory_cfg, context)
    out = Path(out_dir)
    model_dir = resolve_model_dir(model)  # CheckpointError for an unknown model, before any work
    the_suite = _load_suite(suite, data, context, cache_dir, progress, max_episodes, max_frames)
    k = context or the_suite.context
    if not any(t.frames > k for t in the_suite.trajectories):
        raise DataError(f"no trajectory of suite {the_suite.name} is longer than the context ({k} frames)")
    worlds = {m: WorldModel.from_pretrained(str(model_dir), memory=m, memory_cfg=memory_cfg.get(m),
                                            steps=steps, chunk=chunk, seed=seed, memory_every=memory_every,
                                            fold_commit=fold_commit)
              for m in memories}  # every variant is checked before anything runs
    _check_worlds(worlds, the_suite)
    first = worlds[memories[0]]
    settings = {"sampler": first.config.sampler.name, "steps": int(first.config.sampler.steps),
                "chunk": int(first.config.chunk), "context": int(k), "seed": int(seed)}
    if memory_every or fold_commit:  # recorded only when set: earlier run folders stay resumable
        settings.update(memory_every=int(first.config.memory_every or first.config.chunk),
                        fold_commit=bool(first.config.fold_commit))
    judges = _load_judges(protocols, idm, features, inception)

    # 2. The output folder, and whether an earlier run there asked for the same thing.
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the output folder ({exc.strerror or exc})", path=str(out)) from exc
    suite_desc = the_suite.describe()
    suite_id = f"{suite_desc['name']}-v{suite_desc['version']}"
    _check_run_file(out, {"model": str(model_dir.resolve()), "suite": suite_id,
                          "data": str(Path(data).resolve()) if data else None, "settings": settings})

    # 3. Every variant through every protocol (finished parts are read back).
    variants: dict[str, Any] = {}
    items: dict[str, dict[str, dict[str, float]]] = {c: {} for c in ELO_METRICS}
    clips: dict[str, list[Path]] = {}
    params = int(sum(p.numel() for p in first.net.parameters()))
    del first
    for name in memories:
        run = VariantRun(name, worlds.pop(name), the_suite, k, out / "rollouts" / name, seed=seed, **judges)
        variants[name] = _run_variant(run, protocols, out, items, progress)
        clips[name] = _write_clips(run, out / "clips")
        del run  # free the model before the next variant

    # 4. Ratings, results.json and the report.
    _add_common_means(variants)
    from infworld.bench import elo as elo_mod
    from infworld.bench.schema import SCHEMA_ID, validate_results

    scores = {c: s for c, s in items.items() if len([v for v in s.values() if v]) >= 2}
    rating = elo_mod.rate(scores, metrics={c: ELO_METRICS[c] for c in scores})
    results = {
        "schema": SCHEMA_ID,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "suite": suite_desc,
        "model": {"name": str(model), "path": str(model_dir), "params": params},
        "machine": _machine(),
        "settings": settings,
        "variants": variants,
        "elo": rating,
    }
    validate_results(results, source=str(out / "results.json"))
    atomic_write_json(out / "results.json", results)
    from infworld.bench.report import write_report

    write_report(results, out, {v: c for v, c in clips.items() if c})
    return results


def _check_worlds(worlds: dict[str, Any], suite: Suite) -> None:
    """MemoryConfigError for a variant needing poses the data lacks; DataError for action ids outside
    the model's range."""
    for name, world in worlds.items():
        if world.memory.needs_poses and any(t.episode.pose is None for t in suite.trajectories):
            raise MemoryConfigError(f"memory {name!r} needs poses, but the dataset has none; leave it out")
    first = next(iter(worlds.values()))
    if (suite.root / "meta.json").exists():
        meta = read_meta(suite.root)
        check_action_space(getattr(first, "interact_vocab", None), meta.interact_vocab, meta.env,
                           path=str(suite.root))
    sizes = first.dit.cfg.actions.sizes()
    for t in suite.trajectories:
        for field, ids in VariantRun.actions(t).items():
            check_action_ids(ids, sizes.get(field, 1), field, path=f"trajectory {t.name}",
                             whose="the model's")


def _load_judges(protocols: list[str], idm: str | None, features: str, inception: bool) -> dict[str, Any]:
    """The models that judge rollouts, for :class:`VariantRun`: the IDM (action protocol), the
    FD-ours features and, with ``inception``, the Inception network (distribution protocol)."""
    judges: dict[str, Any] = {"idm": None, "features": None, "inception": None}
    if "action" in protocols:
        from infworld.bench.idm import DEFAULT_IDM, load_idm

        try:
            judges["idm"] = load_idm(idm or DEFAULT_IDM)
        except CheckpointError as exc:
            raise CheckpointError(f"{exc}. The action protocol needs an inverse dynamics model: train one "
                                  "with `infworld bench train-idm --data data/doom-train --out "
                                  "checkpoints/doom-idm`, give it with --idm, or leave 'action' out of "
                                  "--protocols") from exc
    if "distribution" in protocols:
        from infworld.bench.features import TokenizerFeatures

        judges["features"] = TokenizerFeatures(features)
        if inception:
            from infworld.bench.features import InceptionFeatures

            judges["inception"] = InceptionFeatures()
    return judges


def _run_variant(run: VariantRun, protocols: list[str], out: Path,
                 items: dict[str, dict[str, dict[str, float]]], progress: bool) -> dict[str, Any]:
    """One variant's results entry: each protocol measured (written to parts/ atomically) or read back
    from an earlier run; its per-item scores are added to ``items`` (criterion -> variant -> scores)."""
    name, memory = run.name, run.world.memory
    mem_settings = memory_settings(memory)
    entry: dict[str, Any] = {"memory": {"name": name, "settings": mem_settings}}
    todo = [p for p in protocols if not (out / "parts" / f"{name}.{p}.json").is_file()]
    total = _planned_frames(run.suite, run.context, todo)
    bar = _Bar(total, f"bench {name}", progress and total > 0)
    run.progress = bar.update
    skipped: dict[str, dict[str, str]] = {}
    for proto in protocols:
        part_path = out / "parts" / f"{name}.{proto}.json"
        if part_path.is_file():
            part = _read_part(part_path, memory)
        else:
            bar.note(proto)
            t0 = time.perf_counter()
            res: P.ProtocolResult = getattr(P, proto)(run)
            part = {"variant": name, "protocol": proto, "memory": mem_settings, "result": res.result,
                    "items": res.items, "skipped": res.skipped, "seconds": time.perf_counter() - t0}
            atomic_write_json(part_path, part)
        entry[proto] = part["result"]
        for crit, scores in part.get("items", {}).items():
            items.setdefault(crit, {})[name] = scores
        if part.get("skipped"):
            skipped[proto] = part["skipped"]
    bar.close()
    if skipped:
        entry["skipped"] = skipped
    return entry


def _add_common_means(variants: dict[str, Any]) -> None:
    """Means over the trajectories every variant measured (a memory may have refused some), so that
    variants compare on the same footing: replay ``psnr_mean_common`` (per-trajectory means averaged)
    and revisit ``psnr_gt_common`` / ``psnr_self_common`` (weighted by events)."""
    for proto, keys in (("replay", None), ("revisit", ("psnr_gt", "psnr_self"))):
        per = [v[proto]["per_trajectory"] for v in variants.values() if "per_trajectory" in v.get(proto, {})]
        if len(per) < 2:
            continue
        common = sorted(set.intersection(*(set(p) for p in per)))
        for v in variants.values():
            sec = v.get(proto)
            if sec is None or "per_trajectory" not in sec:
                continue
            sec["common_trajectories"] = common
            rows = [sec["per_trajectory"][t] for t in common]
            if keys is None:
                sec["psnr_mean_common"] = sum(rows) / len(rows) if rows else None
                continue
            n = sum(r["events"] for r in rows)
            for key in keys:
                sec[f"{key}_common"] = sum(r[key] * r["events"] for r in rows) / n if n else None


def _planned_frames(suite: Suite, k: int, protocols: list[str]) -> int:
    """Frames the protocols will generate (for the progress bar)."""
    gen = [t.frames - k for t in suite.trajectories if t.frames > k]
    total = sum(gen) if set(protocols) - {"speed"} else 0
    if "action" in protocols:
        total += sum(min(g, suite.action_horizon) for g in gen)
    if "speed" in protocols and gen:
        total += min(max(gen), suite.speed_frames)
    return total


def _read_part(path: Path, memory: Any) -> dict[str, Any]:
    """A finished part of an earlier run, if it was measured with the same resolved memory config as
    ``memory`` now (a change of any setting, the pose source included, is refused)."""
    try:
        part = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"unreadable part of an earlier run ({exc}); delete it to measure again",
                        path=str(path)) from exc
    if not isinstance(part, dict) or "result" not in part:
        raise DataError("not a bench part (no 'result'); delete it to measure again", path=str(path))
    now = memory.config
    stored = part.get("memory")
    try:
        if not isinstance(stored, dict):
            raise MemoryConfigError("no memory settings recorded")
        then = type(now).from_dict(stored, memory.name)
    except MemoryConfigError as exc:
        raise ConfigError(f"{path}: its memory settings {stored} do not resolve to a config ({exc}); use "
                          "another --out (or delete the part)") from None
    if then != now:
        a, b = then.to_dict(), now.to_dict()
        diff = "; ".join(f"{k}: {a[k]!r} there, {b[k]!r} now" for k in a if a[k] != b[k])
        raise ConfigError(f"{path}: measured with other memory settings ({diff}); use another --out "
                          "(or delete the part)")
    return part


def _write_clips(run: VariantRun, clip_dir: Path) -> list[Path]:
    """One side-by-side clip (history | ground truth) per trajectory kind, from rollouts already made."""
    from infworld.eval.video import side_by_side, write_mp4

    paths, kinds = [], set()
    for traj in run.trajs:
        if traj.kind in kinds:
            continue
        path = clip_dir / f"{run.name}.{traj.name}.mp4"
        cached = (traj.name, "true") in run._rollouts or (run.cache_dir / f"{traj.name}.true.npz").is_file()
        if not path.is_file():
            if not cached:
                continue
            ro = run.rollout(traj, "true")
            if ro.refused or not len(ro.frames):
                continue
            hist, truth = run.history(traj, ro)[:CLIP_FRAMES], run.truth[traj.name]
            pairs = (side_by_side(h, truth[i]) for i, h in enumerate(hist))
            write_mp4(path, pairs, fps=run.suite.fps, scale=2)
        kinds.add(traj.kind)
        paths.append(path)
    return paths
