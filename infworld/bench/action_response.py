"""Action-response benchmark: does the world model *do* what each constant action asks?

From N held-out starts (real ViZDoom context frames, see action_response_real.py) the model rolls out
``F`` frames under each constant action of :data:`ACTIONS`, beside the real game replayed from the
same state with the same action. Figures per action (GitHub issue "World model v2", item 5):

1. horizontal shift per step (pixels, + = the picture content moves right): sub-pixel argmin of the
   mean absolute grayscale difference over integer shifts (:func:`horizontal_shift`). In the real
   game turning left moves the content about +8.6 px per step at 64 px, turning right about -8.7.
2. pairwise mean absolute pixel difference between the rollouts of two actions (left vs right,
   forward vs no-op...), generated and real, and their ratio: a model that ignores the actions gets 0.
3. IDM read-back: the inverse dynamics model (idm.py) reads the move / view ids off consecutive
   frames; accuracy against the commanded ids on generated frames, on real frames (its ceiling), ratio.
4. PSNR of the generated frames against the real ones, and of copy-last (the last context frame
   repeated), which is what a model that never moves scores.

The model is anything with ``reset(frames, actions)``, ``step(actions) -> uint8 (B, n, H, W, 3)`` and
``config.chunk`` (:class:`infworld.world.WorldModel`, or a scripted fake in the tests), built by an
``engine_factory`` called once per action, so every action's rollout starts from the same noise seed
and the differences between actions come from the actions alone.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infworld.data.action_schema import MOVE_NONE, VIEW_NONE
from infworld.data.episode import atomic_write_bytes
from infworld.errors import ConfigError, DataError

# name -> (move id, view id) of the unified schema (action_schema.py); interact is always 0 (none).
ACTIONS: dict[str, tuple[int, int]] = {
    "turn-left": (MOVE_NONE, 1), "turn-right": (MOVE_NONE, 7),
    "forward": (7, VIEW_NONE), "backward": (1, VIEW_NONE),
    "strafe-left": (3, VIEW_NONE), "strafe-right": (5, VIEW_NONE),
    "no-op": (MOVE_NONE, VIEW_NONE),
}
PAIRS: tuple[tuple[str, str], ...] = (("turn-left", "turn-right"), ("forward", "no-op"),
                                      ("backward", "no-op"), ("strafe-left", "strafe-right"))
SHEET_STEPS = (1, 2, 4, 8, 12, 16, 24)
_GRAY = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass
class ResponseData:
    """Context and real rollouts of S starts.

    context:         (S, K, H, W, 3) uint8, the last K real frames before the actions start
    context_actions: {"move", "view", "interact"} -> (S, K-1) int64, the transitions between them
    real:            action name -> (S, F, H, W, 3) uint8, the real frames after 1..F constant steps
    info:            how the starts were made (seeds, warmups, replay check), copied into the results
    """

    context: np.ndarray
    context_actions: dict[str, np.ndarray]
    real: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def starts(self) -> int:
        return int(self.context.shape[0])

    @property
    def frames(self) -> int:
        return int(next(iter(self.real.values())).shape[1])

    def check(self) -> None:
        c = self.context
        if c.dtype != np.uint8 or c.ndim != 5 or c.shape[-1] != 3 or c.shape[0] < 1 or c.shape[1] < 1:
            raise DataError(f"expected uint8 context (S, K, H, W, 3), got {c.shape} {c.dtype}",
                            field="context")
        for key in ("move", "view", "interact"):
            a = np.asarray(self.context_actions.get(key, np.zeros(0)))
            if a.shape != (c.shape[0], c.shape[1] - 1):
                raise DataError(f"expected shape {(c.shape[0], c.shape[1] - 1)}, got {a.shape}", field=key)
        unknown = sorted(set(self.real) - set(ACTIONS))
        if unknown or not self.real:
            raise DataError(f"real rollouts: unknown or no actions {unknown}; known: {list(ACTIONS)}")
        f = next(iter(self.real.values())).shape[1]
        for name, r in self.real.items():
            if r.dtype != np.uint8 or r.shape != (c.shape[0], f, *c.shape[2:]):
                raise DataError(f"expected uint8 {(c.shape[0], f, *c.shape[2:])}, got {r.shape} {r.dtype}",
                                field=f"real[{name}]")


# ---------------------------------------------------------------------------------------------
# shift estimation


def shift_costs(a: np.ndarray, b: np.ndarray, max_shift: int = 16, border: int = 4,
                rows: tuple[float, float] = (0.0, 0.5)) -> np.ndarray:
    """Mean |gray(b)[x] - gray(a)[x - s]| for s = -max_shift..max_shift: (N, 2 * max_shift + 1).

    ``a``, ``b``: uint8 frames (N, H, W, 3) (or one (H, W, 3)). Only rows ``rows`` (fractions of H;
    the upper half by default: the weapon sprite at the bottom does not turn with the view) and
    columns at least ``border`` from the edges of both frames are compared.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim == 3:
        a, b = a[None], b[None]
    if a.shape != b.shape or a.ndim != 4 or a.shape[-1] != 3:
        raise DataError(f"shift: expected two (N, H, W, 3) frame stacks, got {a.shape} and {b.shape}")
    h, w = a.shape[1:3]
    if w - 2 * border - 2 * max_shift < 4 or max_shift < 1 or border < 0:
        raise ConfigError(f"shift: max_shift {max_shift} and border {border} leave no overlap at width {w}")
    r0, r1 = int(round(rows[0] * h)), max(int(round(rows[1] * h)), int(round(rows[0] * h)) + 1)
    ga = a[:, r0:r1].astype(np.float32) @ _GRAY  # (N, h', W)
    gb = b[:, r0:r1].astype(np.float32) @ _GRAY
    out = np.empty((a.shape[0], 2 * max_shift + 1), dtype=np.float64)
    for j, s in enumerate(range(-max_shift, max_shift + 1)):
        lo, hi = border + max(s, 0), w - border + min(s, 0)  # b columns whose source a[x - s] is inside
        out[:, j] = np.abs(gb[:, :, lo:hi] - ga[:, :, lo - s: hi - s]).mean(axis=(1, 2))
    return out


def _refine(cost: np.ndarray, max_shift: int) -> float:
    """Sub-pixel argmin of one cost curve (2 * max_shift + 1,): ties go to the smallest |shift|; an exact
    match (cost 0) is an integer shift; otherwise a parabola through the minimum and its neighbours."""
    shifts = np.arange(-max_shift, max_shift + 1)
    tol = 1e-6 * max(float(cost.max()), 1.0)
    near = np.flatnonzero(cost <= cost.min() + tol)
    i = int(near[np.argmin(np.abs(shifts[near]))])
    if cost[i] <= tol or i == 0 or i == len(cost) - 1:
        return float(shifts[i])
    cm, c0, cp = cost[i - 1], cost[i], cost[i + 1]
    denom = cm - 2.0 * c0 + cp
    delta = 0.5 * (cm - cp) / denom if denom > 0 else 0.0
    return float(shifts[i] + np.clip(delta, -0.5, 0.5))


def horizontal_shift(a: np.ndarray, b: np.ndarray, max_shift: int = 16, border: int = 4,
                     rows: tuple[float, float] = (0.0, 0.5)) -> np.ndarray | float:
    """How far the content of frame ``a`` moved right to give ``b``, in pixels (negative = left).

    Per pair of (N, H, W, 3) stacks -> (N,); a single pair -> float. See :func:`shift_costs`.
    """
    single = np.asarray(a).ndim == 3
    costs = shift_costs(a, b, max_shift, border, rows)
    out = np.array([_refine(c, max_shift) for c in costs])
    return float(out[0]) if single else out


def step_shifts(context_last: np.ndarray, frames: np.ndarray, **kw: Any) -> np.ndarray:
    """Shift per step (S, F) of rollouts (S, F, H, W, 3) that follow frames (S, H, W, 3)."""
    seq = np.concatenate([context_last[:, None], frames], axis=1)  # (S, F+1, H, W, 3)
    s, f = frames.shape[:2]
    a = seq[:, :-1].reshape(s * f, *seq.shape[2:])
    b = seq[:, 1:].reshape(s * f, *seq.shape[2:])
    return np.asarray(horizontal_shift(a, b, **kw)).reshape(s, f)


# ---------------------------------------------------------------------------------------------
# rollouts and figures


def constant_actions(name: str, batch: int, n: int) -> dict[str, np.ndarray]:
    """The unified action fields (B, n) of holding action ``name`` for ``n`` steps."""
    move, view = ACTIONS[name]
    full = np.full((batch, n), 0, dtype=np.int64)
    return {"move": full + move, "view": full + view, "interact": full}


def generate(engine_factory: Callable[[], Any], data: ResponseData,
             actions: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Roll the model out from every start (one batch) under each constant action, ``data.frames``
    frames each; returns action name -> uint8 (S, F, H, W, 3)."""
    import torch

    data.check()
    out = {}
    for name in actions or list(data.real):
        engine = engine_factory()  # fresh per action: same noise seed, same starting state
        parts, done = [], 0
        with torch.inference_mode():
            engine.reset(data.context, {k: np.asarray(v) for k, v in data.context_actions.items()})
            chunk = int(engine.config.chunk)
            while done < data.frames:
                n = min(chunk, data.frames - done)
                parts.append(np.asarray(engine.step(constant_actions(name, data.starts, n))))
                done += n
        gen = np.concatenate(parts, axis=1)
        if gen.shape != data.real[name].shape or gen.dtype != np.uint8:
            raise DataError(f"model returned {gen.shape} {gen.dtype}, expected uint8 {data.real[name].shape}",
                            field=f"generated[{name}]")
        out[name] = gen
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or abs(b) < 1e-9 else float(a / b)


def _idm_acc(idm: Any, context_last: np.ndarray, frames: np.ndarray, move: int, view: int) -> dict:
    """IDM accuracy on every transition of (S, F) rollouts, starting from the last context frame."""
    from infworld.bench.idm import accuracy

    pm, pv = [], []
    for c, f in zip(context_last, frames, strict=True):
        m, v = idm.predict(np.concatenate([c[None], f]))  # (F,) each
        pm.append(m)
        pv.append(v)
    pm, pv = np.concatenate(pm), np.concatenate(pv)
    return {"move": accuracy(pm, np.full_like(pm, move)), "view": accuracy(pv, np.full_like(pv, view)),
            "pred_move": np.bincount(pm, minlength=10).tolist(),  # how often each id was read
            "pred_view": np.bincount(pv, minlength=10).tolist()}


def evaluate(data: ResponseData, gen: dict[str, np.ndarray], idm: Any = None,
             shift: dict[str, Any] | None = None) -> dict[str, Any]:
    """All figures of the module docstring, per action, per pair and summarised (JSON-able)."""
    from infworld.eval.video import psnr

    data.check()
    shift = shift or {}
    last = data.context[:, -1]  # (S, H, W, 3)
    per_action: dict[str, Any] = {}
    idm_all: dict[str, list] = {"gen": [], "real": []}
    for name, real in data.real.items():
        g = gen[name]
        s_gen, s_real = step_shifts(last, g, **shift), step_shifts(last, real, **shift)  # (S, F)
        flat = (-1, *real.shape[2:])
        p_gen = psnr(g.reshape(flat), real.reshape(flat)).reshape(real.shape[:2])  # (S, F)
        copy = np.broadcast_to(last[:, None], real.shape)
        p_copy = psnr(copy.reshape(flat), real.reshape(flat)).reshape(real.shape[:2])
        row: dict[str, Any] = {
            "move": ACTIONS[name][0], "view": ACTIONS[name][1],
            "shift_gen": float(s_gen.mean()), "shift_real": float(s_real.mean()),
            "shift_gen_median": float(np.median(s_gen)), "shift_real_median": float(np.median(s_real)),
            "shift_gen_std": float(s_gen.std()), "shift_real_std": float(s_real.std()),
            "shift_gen_by_step": s_gen.mean(0).round(3).tolist(),
            "shift_real_by_step": s_real.mean(0).round(3).tolist(),
            "psnr_gen": float(p_gen.mean()), "psnr_copy_last": float(p_copy.mean()),
            "psnr_gen_by_step": p_gen.mean(0).round(3).tolist(),
            "psnr_copy_last_by_step": p_copy.mean(0).round(3).tolist(),
        }
        if idm is not None:
            for key, frames in (("gen", g), ("real", real)):
                acc = _idm_acc(idm, last, frames, *ACTIONS[name])
                row[f"idm_{key}"] = acc
                idm_all[key].append((acc["move"], acc["view"]))
            row["idm_ratio"] = {k: _ratio(row["idm_gen"][k], row["idm_real"][k]) for k in ("move", "view")}
        per_action[name] = row
    pairs = {}
    for a, b in PAIRS:
        if a in gen and b in gen:
            d_gen = float(np.abs(gen[a].astype(np.float32) - gen[b].astype(np.float32)).mean())
            d_real = float(np.abs(data.real[a].astype(np.float32) - data.real[b].astype(np.float32)).mean())
            pairs[f"{a} vs {b}"] = {"gen": d_gen, "real": d_real, "ratio": _ratio(d_gen, d_real)}
    summary: dict[str, Any] = {
        "turn_shift": {n: {"gen": per_action[n]["shift_gen"], "real": per_action[n]["shift_real"],
                           "ratio": _ratio(per_action[n]["shift_gen"], per_action[n]["shift_real"])}
                       for n in ("turn-left", "turn-right") if n in per_action},
        "diff_ratio": {k: v["ratio"] for k, v in pairs.items()},
        "psnr": {"gen": float(np.mean([r["psnr_gen"] for r in per_action.values()])),
                 "copy_last": float(np.mean([r["psnr_copy_last"] for r in per_action.values()]))},
    }
    summary["psnr"]["gain_db"] = summary["psnr"]["gen"] - summary["psnr"]["copy_last"]
    if idm is not None:
        # equal-weight mean over actions (each action has S * F transitions)
        acc = {k: {ax: float(np.mean([t[i] for t in v])) for i, ax in enumerate(("move", "view"))}
               for k, v in idm_all.items()}
        summary["idm"] = {"gen": acc["gen"], "real": acc["real"],
                          "ratio": {ax: _ratio(acc["gen"][ax], acc["real"][ax]) for ax in ("move", "view")}}
    return {"starts": data.starts, "frames": data.frames, "actions": per_action, "pairs": pairs,
            "summary": summary}


def _f(x: Any, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def markdown_table(result: dict[str, Any]) -> str:
    """The figures of :func:`evaluate` as Markdown tables (per action, per pair, summary line)."""
    acts, idm = result["actions"], any("idm_gen" in r for r in result["actions"].values())
    lines = ["| action | shift/step gen | shift/step real | PSNR gen | PSNR copy-last |"
             + (" IDM move gen / real | IDM view gen / real |" if idm else ""),
             "| --- | ---: | ---: | ---: | ---: |" + (" ---: | ---: |" if idm else "")]
    for name, r in acts.items():
        row = (f"| {name} | {_f(r['shift_gen'], '{:+.2f}')} | {_f(r['shift_real'], '{:+.2f}')} | "
               f"{_f(r['psnr_gen'])} | {_f(r['psnr_copy_last'])} |")
        if idm:
            row += "".join(f" {_f(r['idm_gen'][ax])} / {_f(r['idm_real'][ax])} |" for ax in ("move", "view"))
        lines.append(row)
    lines += ["", "| pair | mean abs diff gen | real | ratio gen/real |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {k} | {_f(v['gen'])} | {_f(v['real'])} | {_f(v['ratio'], '{:.3f}')} |"
              for k, v in result["pairs"].items()]
    s = result["summary"]
    text = [f"{n} {_f(v['gen'], '{:+.2f}')} px/step (real {_f(v['real'], '{:+.2f}')})"
            for n, v in s["turn_shift"].items()]
    text.append(f"PSNR gen {s['psnr']['gen']:.2f} dB vs copy-last {s['psnr']['copy_last']:.2f} dB")
    if "idm" in s:
        text.append("IDM read-back ratio move " + _f(s["idm"]["ratio"]["move"], "{:.2f}")
                    + ", view " + _f(s["idm"]["ratio"]["view"], "{:.2f}"))
    return "\n".join(lines + ["", "Summary: " + "; ".join(text) + "."])


def contact_sheet(path: str | Path, data: ResponseData, gen: dict[str, np.ndarray],
                  starts: Sequence[int] = (0,), steps: Sequence[int] = SHEET_STEPS,
                  title: str | None = None) -> Path:
    """PNG: per action a generated row above a real row; columns = last context frame + ``steps``;
    one block of columns per start in ``starts``. Written atomically (temp file, then rename)."""
    from matplotlib.figure import Figure

    steps = [s for s in steps if 1 <= s <= data.frames]
    starts = [s for s in starts if 0 <= s < data.starts] or [0]
    h, w = data.context.shape[2:4]
    gap = 4
    names = [n for n in data.real if n in gen]
    blocks = []
    for s in starts:
        rows = []
        for n in names:
            for src in (gen[n], data.real[n]):
                rows.append(np.concatenate([data.context[s, -1]] + [src[s, t - 1] for t in steps], axis=1))
            rows.append(np.full((gap, rows[-1].shape[1], 3), 255, dtype=np.uint8))  # between actions
        blocks.append(np.concatenate(rows[:-1], axis=0))  # (A (2 h + gap) - gap, C w, 3)
    sep = np.full((blocks[0].shape[0], gap, 3), 255, dtype=np.uint8)
    sheet = np.concatenate([x for b in blocks for x in (b, sep)][:-1], axis=1)
    scale = 1.6 / 100.0  # inches per pixel at dpi 100
    fig = Figure(figsize=(sheet.shape[1] * scale + 1.6, sheet.shape[0] * scale + 0.8), dpi=100,
                 layout="constrained")
    ax = fig.subplots()
    ax.imshow(sheet, interpolation="nearest")
    cols = ["ctx"] + [f"+{t}" for t in steps]
    ax.set_xticks([b * (len(cols) * w + gap) + (i + 0.5) * w
                   for b in range(len(starts)) for i in range(len(cols))])
    ax.set_xticklabels(cols * len(starts), fontsize=7)
    ax.set_yticks([a * (2 * h + gap) + (i + 0.5) * h for a in range(len(names)) for i in range(2)])
    ax.set_yticklabels([f"{n} {k}" for n in names for k in ("gen", "real")], fontsize=7)
    ax.tick_params(length=0)
    ax.set_title(title or f"action response: starts {starts}, generated above real", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, lambda f: f.write(buf.getvalue()))
    return path


# ---------------------------------------------------------------------------------------------
# the model side of the CLI


def parse_sweep(text: str | None, name: str, minimum: float = 0.0) -> list[float | None]:
    """``"1,2.5"`` -> [1.0, 2.5]; None -> [None] (use the model's default). Values must be >= minimum."""
    if text is None:
        return [None]
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{name}: expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise ConfigError(f"{name}: expected at least one number, got {text!r}")
    bad = [v for v in values if not v >= minimum]  # also catches nan
    if bad:
        raise ConfigError(f"{name}: values must be >= {minimum:g}, got {bad}")
    return values


def pretrained_factory(model: str, **overrides: Any) -> Callable[[], Any]:
    """An engine factory for :func:`generate` over ``WorldModel.from_pretrained(model, memory="window")``.

    ``overrides`` whose value is None are left out (the export's default). The model is loaded once;
    each call re-seeds its noise generator, so every action's rollout draws the same noise.
    """
    from infworld.world import WorldModel

    engine = WorldModel.from_pretrained(model, memory="window",
                                        **{k: v for k, v in overrides.items() if v is not None})
    seed = int(engine.config.seed)

    def factory() -> Any:
        engine.generator.manual_seed(seed)
        return engine

    factory.engine = engine  # type: ignore[attr-defined]  # for the settings in the results
    return factory


def check_settings(starts: int, frames: int, context: int) -> None:
    """ConfigError unless starts >= 1, frames >= 1 and context >= 1."""
    for name, value in (("starts", starts), ("frames", frames), ("context", context)):
        if int(value) < 1:
            raise ConfigError(f"action response: {name} must be >= 1, got {value}")
