"""``infworld bench --suite crafter-v1``: action effects, move following, world-state recall and the
long-rollout look of a Crafter world model, judged by the world-state probe.

The judge is :class:`~infworld.bench.crafter_probe.CrafterProbe` (a per-cell classifier trained on
real frames against the semantic map, and an inventory reader); the events come from the real game
(:mod:`infworld.bench.crafter_events`), recorded once per suite (:mod:`infworld.bench.crafter_suite`).
Four protocols:

* ``effects``: from the ``context`` real frames up to transition t, one chunk with the real
  actions; the first generated frame (t + 1) must show the effect the real game showed: the new
  inventory count (``collect``, ``make``) or the placed material in front (``place``). The same
  rollout with the interaction replaced by noop gives the false-effect rate (does the *action* do
  it). The probe on the real frame t + 1 gives the judge's own accuracy.
* ``moves``: free rollouts of 16 frames with the real actions from several starts; the scroll
  between two generated frames (none, up, down, left, right: the shift that best aligns the
  probe's cell maps) against the real game's (the pose change): move-following accuracy.
* ``recall`` (per memory strategy): real frames up to two frames after a change, then the model
  alone with the real actions (and poses) until the return; the generated return frame must show
  the changed cell's new material (``new``) at its screen cell. Reported for all changes and for
  the non-grass ones (a placed table, a mined stone: grass is also what a model without memory
  draws by default), with how often the old material came back.
* ``look``: a 1000-frame free rollout; the share of cells the probe reads with confidence >= 0.9
  (a recognisable Crafter material or object) at frames 1-100 and 900-1000, against real frames.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import numpy as np
import torch

from infworld.bench.crafter_suite import CrafterSuite
from infworld.data.action_schema import MOVE_NONE, UNCERTAIN
from infworld.streaming import free_rollout

PROTOCOLS = ("effects", "moves", "recall", "look")
_SHIFTS = {"none": (0, 0), "up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}  # view (dr, dc)


def _actions(ep: Any, lo: int, hi: int) -> dict[str, np.ndarray]:
    """Transitions lo..hi-1 of an episode as (1, n) arrays per field."""
    return {k: np.asarray(getattr(ep, k)[lo:hi])[None] for k in ("move", "view", "interact")}


def _stack(items: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([a[k] for a in items], 0) for k in items[0]}


def run_effects(world: Any, probe: Any, suite: CrafterSuite, batch: int = 16) -> dict[str, Any]:
    """The ``effects`` protocol (module docstring), batched over events."""
    c, chunk = suite.spec.context, int(world.config.chunk)
    events = [(i, e) for i, e in suite.effects if e.t + chunk < len(suite.episodes[i].frames) - 1]
    per: dict[str, list[tuple[bool, bool, bool]]] = defaultdict(list)  # kind -> (shown, noop shown, real)
    for s in range(0, len(events), batch):
        part = events[s: s + batch]
        ctx = np.stack([suite.episodes[i].frames[e.t + 1 - c: e.t + 1] for i, e in part])  # (B, C, H, W, 3)
        acts = _stack([_actions(suite.episodes[i], e.t + 1 - c, e.t + chunk) for i, e in part])
        real_next = np.stack([suite.episodes[i].frames[e.t + 1] for i, e in part])
        shown = []
        for noop in (False, True):
            a = {k: v.copy() for k, v in acts.items()}
            if noop:
                a["interact"][:, c - 1] = 0  # transition t is the (C-1)-th of the slice
            gen = free_rollout(world, ctx, a, chunk=chunk)  # (B, chunk, H, W, 3)
            shown.append(_judge(probe, gen[:, 0], [e for _, e in part], suite))
        real = _judge(probe, real_next, [e for _, e in part], suite)
        for j, (_, e) in enumerate(part):
            per[f"{e.kind}:{e.key or _name(suite, e.material)}"].append((shown[0][j], shown[1][j], real[j]))
    rows = {k: {"n": len(v), "shown": float(np.mean([x[0] for x in v])),
                "noop_shown": float(np.mean([x[1] for x in v])),
                "judge_on_real": float(np.mean([x[2] for x in v]))}
            for k, v in sorted(per.items())}
    allv = [x for v in per.values() for x in v]
    ok_real = [x for x in allv if x[2]]  # where the judge reads the real frame right
    return {"events": len(allv), "by_kind": rows,
            "shown": float(np.mean([x[0] for x in allv])) if allv else float("nan"),
            "noop_shown": float(np.mean([x[1] for x in allv])) if allv else float("nan"),
            "judge_on_real": float(np.mean([x[2] for x in allv])) if allv else float("nan"),
            "shown_where_judge_reads_real":
                float(np.mean([x[0] for x in ok_real])) if ok_real else float("nan")}


def _name(suite: CrafterSuite, material: int) -> str:
    ids = {v: k for k, v in suite.meta.extra["semantic_ids"].items()}
    return ids.get(int(material), str(material))


def _judge(probe: Any, frames: np.ndarray, events: list[Any], suite: CrafterSuite) -> list[bool]:
    """Does each frame (N, H, W, 3) show its event's effect, by the probe?"""
    pred = probe.predict(frames)
    keys = list(suite.meta.extra["inventory_keys"])
    out = []
    for j, e in enumerate(events):
        if e.kind == "place":
            out.append(bool(pred["cells"][j][e.screen] == e.material))
        else:
            out.append(bool(pred["inventory"][j][keys.index(e.key)] == e.count))
    return out


def read_scroll(cells_a: np.ndarray, cells_b: np.ndarray) -> str:
    """The view scroll from cell map a to b (rows, cols): the shift whose overlap agrees most."""
    best, score = "none", -1.0
    for name, (dr, dc) in _SHIFTS.items():
        # the player moving up shows the cells above: b[r, c] = a[r + dr, c + dc]
        h, w = cells_a.shape
        a = cells_a[max(dr, 0): h + min(dr, 0), max(dc, 0): w + min(dc, 0)]
        b = cells_b[max(-dr, 0): h + min(-dr, 0), max(-dc, 0): w + min(-dc, 0)]
        agree = float((a == b).mean())
        if agree > score + 1e-9:
            best, score = name, agree
    return best


def _real_scroll(p0: np.ndarray, p1: np.ndarray) -> str:
    dx, dy = int(round(float(p1[0] - p0[0]))), int(round(float(p1[1] - p0[1])))
    names = {(0, 0): "none", (0, 1): "up", (0, -1): "down", (-1, 0): "left", (1, 0): "right"}
    return names.get((dx, dy), "none")


def run_moves(world: Any, probe: Any, suite: CrafterSuite, starts: int = 4, frames: int = 16
              ) -> dict[str, Any]:
    """The ``moves`` protocol: generated scroll vs the real game's, over free-rollout transitions."""
    c = suite.spec.context
    hits: dict[str, list[bool]] = defaultdict(list)
    ctxs, acts, poses = [], [], []
    for ep in suite.episodes:
        t_max = len(ep.frames) - frames - 1
        for s in np.linspace(c, t_max, starts).astype(int):
            ctxs.append(ep.frames[s - c + 1: s + 1])
            acts.append(_actions(ep, s - c + 1, s + frames))
            poses.append(ep.pose[s: s + frames + 1])
    gen = free_rollout(world, np.stack(ctxs), _stack(acts))  # (B, frames, H, W, 3)
    cells = probe.predict(gen.reshape(-1, *gen.shape[2:]))["cells"]  # (B * frames, rows, cols)
    cells = cells.reshape(*gen.shape[:2], *cells.shape[1:])
    # still transitions split by why: a move key pressed into an obstacle (the game does not
    # scroll) or no move key at all (noop, do, place, make); a model whose scroll follows the key
    # alone, not the scene, fails the first kind only
    still: dict[str, list[bool]] = defaultdict(list)
    for b in range(len(gen)):
        for t in range(1, gen.shape[1]):
            real = _real_scroll(poses[b][t], poses[b][t + 1])
            hit = read_scroll(cells[b, t - 1], cells[b, t]) == real
            hits[real].append(hit)
            if real == "none":  # transition s + t is action c - 1 + t of the slice
                pressed = int(acts[b]["move"][0, c - 1 + t]) not in (MOVE_NONE, UNCERTAIN)
                still["blocked" if pressed else "no_move"].append(hit)
    moving = [x for k, v in hits.items() if k != "none" for x in v]
    return {"accuracy_moving": float(np.mean(moving)) if moving else float("nan"),
            "accuracy_still": float(np.mean(hits["none"])) if hits["none"] else float("nan"),
            "still_by_cause": {k: {"n": len(v), "accuracy": float(np.mean(v))}
                               for k, v in sorted(still.items())},
            "by_direction": {k: {"n": len(v), "accuracy": float(np.mean(v))}
                             for k, v in sorted(hits.items())}}


def run_recall(world: Any, probe: Any, suite: CrafterSuite, history: int = 96, after: int = 2
               ) -> dict[str, Any]:
    """The ``recall`` protocol for the memory ``world`` was built with (module docstring)."""
    rows = []
    t0, frames = time.perf_counter(), 0
    for i, r in suite.recalls:
        ep = suite.episodes[i]
        end = r.change + after  # the last real frame
        lo = max(0, end + 1 - history)
        ctx = ep.frames[lo: end + 1][None]
        acts = _actions(ep, lo, r.back)
        gen = free_rollout(world, ctx, acts, ep.pose[lo: r.back + 1][None])  # frames end+1 .. back
        frames += gen.shape[1]
        back = gen[:, -1]
        real = ep.frames[r.back][None]
        pred = probe.predict(np.concatenate([back, real]))["cells"]
        rows.append({"episode": i, "gap": r.gap, "new": _name(suite, r.new), "old": _name(suite, r.old),
                     "kept": bool(pred[0][r.screen] == r.new), "reverted": bool(pred[0][r.screen] == r.old),
                     "judge_on_real": bool(pred[1][r.screen] == r.new)})

    def mean(key: str, sel: list[dict]) -> float:
        return float(np.mean([x[key] for x in sel])) if sel else float("nan")

    placed = [x for x in rows if x["new"] != "grass"]
    by_new: dict[str, list[dict]] = defaultdict(list)
    for x in rows:
        by_new[x["new"]].append(x)

    return {"events": len(rows), "kept": mean("kept", rows), "kept_non_grass": mean("kept", placed),
            "reverted": mean("reverted", rows), "judge_on_real": mean("judge_on_real", rows),
            "by_new": {k: {"n": len(v), "kept": mean("kept", v), "reverted": mean("reverted", v)}
                       for k, v in sorted(by_new.items())},
            "fps": frames / max(time.perf_counter() - t0, 1e-9), "rows": rows}


def run_look(world: Any, probe: Any, suite: CrafterSuite, frames: int | None = None,
             confidence: float = 0.9, span: int = 100) -> dict[str, Any]:
    """The ``look`` protocol: probe confidence early and late in one long free rollout."""
    ep = suite.look
    n = min(frames or suite.spec.look_frames, len(ep.frames) - 1)
    c = suite.spec.context
    gen = free_rollout(world, ep.frames[:c][None], _actions(ep, 0, n - 1))[0]  # frames c .. n-1
    span = min(span, max(len(gen) // 2, 1))
    early, late = gen[:span], gen[-span:]

    def rate(x: np.ndarray) -> float:
        return float((cell_confidence(probe, x) >= confidence).mean())

    return {"frames": int(len(gen) + c), "confident_early": rate(early), "confident_late": rate(late),
            "confident_real": rate(ep.frames[c: c + 2 * span]), "span": span, "threshold": confidence}


@torch.no_grad()
def cell_confidence(probe: Any, frames: np.ndarray, batch: int = 256) -> np.ndarray:
    """The probe's top-1 probability per cell, (N, rows, cols): how recognisable each cell is."""
    probe.check_frames(frames)
    probe.eval()
    out = []
    for lo in range(0, len(frames), batch):
        logits, _ = probe(torch.from_numpy(frames[lo: lo + batch]))  # (n, rows, cols, classes)
        out.append(logits.float().softmax(-1).amax(-1).numpy())
    return np.concatenate(out)


def run_crafter_variant(world: Any, probe: Any, suite: CrafterSuite, protocols: list[str]) -> dict[str, Any]:
    """Every requested protocol for one world (model + memory)."""
    out: dict[str, Any] = {}
    runs = (("effects", run_effects), ("moves", run_moves), ("recall", run_recall), ("look", run_look))
    for name, fn in runs:
        if name in protocols:
            t0 = time.perf_counter()
            out[name] = fn(world, probe, suite)
            out[name]["seconds"] = time.perf_counter() - t0
    return out


