"""Runs the crafter-v1 benchmark (crafter_bench.py) over memory strategies and writes the report.

    infworld bench --model crafter-tiny --suite crafter-v1 --memory window,vrag --out OUT

Writes OUT/parts/<variant>.json per memory strategy (a rerun keeps finished parts: resumable),
OUT/results.json (schema "infworld-crafter-bench/1") and OUT/report.md. The memory-independent
protocols (effects, moves, look) run once, with the first strategy; ``recall`` runs for each.
Crafter poses are grid cells and its camera never turns, so the pose-based strategies get
``pose_scale: 1`` and ``angle_weight: 0`` unless set (``--memory-opt``); the full-history oracle
gets a budget of ``FULL_BUDGET`` frames. Every variant is built (and a memory the model cannot run
refused) before the first one runs.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from infworld.bench.crafter_bench import PROTOCOLS, run_crafter_variant
from infworld.bench.crafter_suite import build_crafter_suite, suite_summary
from infworld.data.action_schema import check_action_space
from infworld.data.episode import atomic_write_json
from infworld.errors import ConfigError, DataError

SCHEMA = "infworld-crafter-bench/1"
GRID_POSE = {"pose_scale": 1.0, "angle_weight": 0.0}
SHARED = ("effects", "moves", "look")  # protocols that do not depend on the memory
FULL_BUDGET = 320  # recall history (96) + the longest gap (200) + a chunk, rounded up


def _world(model: str, memory: str, settings: dict[str, Any], steps: int | None, seed: int) -> Any:
    from infworld.memory.registry import memory_class
    from infworld.world import WorldModel

    cls = memory_class(memory)
    cfg = dict(settings)
    if memory == "full":  # the oracle holds every frame of the longest recall rollout
        cfg.setdefault("budget", FULL_BUDGET)
    if cls is not None:
        for k, v in GRID_POSE.items():
            if k in cls.config_class.keys():
                cfg.setdefault(k, v)
    return WorldModel.from_pretrained(model, memory=memory, memory_cfg=cfg or None, steps=steps, seed=seed)


def check_crafter_model(world: Any, meta: Any, model: str) -> None:
    """DataError unless the world model was trained on Crafter's action space and frame size."""
    check_action_space(world.interact_vocab, meta.interact_vocab, meta.env, model=f"model {model!r}")
    sizes = world.dit.cfg.actions.sizes()
    if sizes["interact"] != len(meta.interact_vocab) or tuple(world.frame_size) != tuple(meta.size):
        raise DataError(f"model {model!r} takes {sizes['interact']} interact ids and "
                        f"{tuple(world.frame_size)} frames; Crafter has {len(meta.interact_vocab)} and "
                        f"{tuple(meta.size)}: it is not a Crafter world model", field="interact_vocab")


def run_crafter_bench(model: str, suite_name: str, memories: list[str], out_dir: str | Path,
                      probe: str = "crafter-probe", protocols: list[str] | None = None,
                      memory_cfg: dict[str, dict] | None = None, steps: int | None = None, seed: int = 0,
                      cache_dir: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Every memory strategy through the crafter protocols; returns the results dict."""
    from infworld.bench.crafter_probe_io import load_probe

    protocols = list(protocols or PROTOCOLS)
    unknown = sorted(set(protocols) - set(PROTOCOLS))
    if unknown:
        raise ConfigError(f"--protocols: unknown {unknown} for a crafter suite; valid: {list(PROTOCOLS)}")
    judge = load_probe(probe)
    suite = build_crafter_suite(suite_name, cache_dir, progress=progress)
    out = Path(out_dir)
    (out / "parts").mkdir(parents=True, exist_ok=True)
    variants: dict[str, Any] = {}
    worlds = {}
    for mem in memories:  # every variant is built (and refused) before the first one runs for minutes
        if not (out / "parts" / f"{mem}.json").exists():
            worlds[mem] = _world(model, mem, (memory_cfg or {}).get(mem, {}), steps, seed)
            check_crafter_model(worlds[mem], suite.meta, model)
    for k, mem in enumerate(memories):
        part = out / "parts" / f"{mem}.json"
        if part.exists():
            variants[mem] = json.loads(part.read_text())
            continue
        world = worlds.pop(mem)
        todo = [p for p in protocols if k == 0 or p not in SHARED]
        t0 = time.perf_counter()
        if progress:
            print(f"crafter bench: {mem}: {', '.join(todo)}", flush=True)
        res = run_crafter_variant(world, judge, suite, todo)
        res["seconds"] = time.perf_counter() - t0
        atomic_write_json(part, res)
        variants[mem] = res
    results = {"schema": SCHEMA, "model": model, "suite": suite_summary(suite), "probe": probe,
               "protocols": protocols, "variants": variants, "steps": steps, "seed": seed,
               "machine": {"cpu": platform.processor() or platform.machine(),
                           "threads": torch.get_num_threads()}}
    atomic_write_json(out / "results.json", results)
    (out / "report.md").write_text(report_markdown(results))
    return results


def _f(x: Any, pct: bool = True) -> str:
    if x is None or x != x:
        return "-"
    return f"{100 * x:.0f}%" if pct else f"{x:.1f}"


def report_markdown(results: dict[str, Any]) -> str:
    """The results as a short markdown report."""
    s = results["suite"]
    lines = [f"# crafter bench: {results['model']}", "",
             f"Suite: {s['episodes']} episodes, {s['frames']} frames; judge: probe `{results['probe']}`.", ""]
    first = next(iter(results["variants"].values()), {})
    if "effects" in first:
        e = first["effects"]
        lines += ["## Action effects (first generated frame, probe-judged)", "",
                  "| effect | n | shown | shown with noop | judge on real |", "|---|---|---|---|---|"]
        lines += [f"| {k} | {v['n']} | {_f(v['shown'])} | {_f(v['noop_shown'])} | {_f(v['judge_on_real'])} |"
                  for k, v in e["by_kind"].items()]
        lines += [f"| **all** | {e['events']} | {_f(e['shown'])} | {_f(e['noop_shown'])} | "
                  f"{_f(e['judge_on_real'])} |", ""]
    if "moves" in first:
        m = first["moves"]
        lines += [f"Move following (probe-read scroll = real): moving {_f(m['accuracy_moving'])}, "
                  f"standing still {_f(m['accuracy_still'])}"
                  + "".join(f"; still because {k.replace('_', ' ')} {_f(v['accuracy'])} (n={v['n']})"
                            for k, v in m.get("still_by_cause", {}).items()) + ".", ""]
    if "look" in first:
        lk = first["look"]
        lines += [f"Look over {lk['frames']} frames (cells read with confidence >= {lk['threshold']}): "
                  f"first {lk['span']} {_f(lk['confident_early'])}, last {lk['span']} "
                  f"{_f(lk['confident_late'])}, real frames {_f(lk['confident_real'])}.", ""]
    rec = {k: v["recall"] for k, v in results["variants"].items() if "recall" in v}
    if rec:
        lines += ["## World-state recall at returns", "",
                  "| memory | events | kept (all) | kept (non-grass) | reverted | judge on real | FPS |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {k} | {v['events']} | {_f(v['kept'])} | {_f(v['kept_non_grass'])} | "
                  f"{_f(v['reverted'])} | {_f(v['judge_on_real'])} | {_f(v['fps'], pct=False)} |"
                  for k, v in rec.items()]
    return "\n".join(lines) + "\n"
