"""Measure uncertainty-aware action labeling (infworld.data.actions) on ViZDoom, where truth is known.

Drives ViZDoom directly (``--scenario``: my_way_home by default, or another bundled map such as
``freedoom2:MAP01``; 160x120, frame skip 4) with sticky random commands over
forward/back, strafe, turn and look, records the exact engine poses, adds Gaussian pose noise from
none to heavy, relabels the noisy tracks and scores the labels against two truths:

* physical: the sign of the noise-free engine motion in the camera frame, "none" when it is below
  ``--phys-frac`` (default 1/3) of the axis' reference speed (the 99th percentile of the clean
  per-step motion while that axis is commanded, ~ the top walking speed);
* commanded: the keys that were held (also on "settled" steps only, where the axis command has not
  changed for ``--settle`` steps, so Doom's momentum has died out).

It also counts the "slow but real" move steps labelled still: a forward or strafe component whose
noise-free displacement is ``--real-units`` (6) map units or more but below 0.9 of the axis'
reference speed (momentum after a key release, sliding along a wall). The labeler must call those
moving or uncertain, never still.

Usage:  python benchmarks/labeling.py [--scenario NAME --episodes N --steps S --out results.json]
See docs/actions.md for the method, the truth definitions and the measured table.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from typing import Any

import numpy as np

from infworld.data.action_schema import UNCERTAIN, encode_move, encode_view
from infworld.data.actions import AXES, LabelThresholds, PoseNoise, label_from_poses
from infworld.data.episode import atomic_write_json

# Tri-state command -> (button for +1, button for -1), in AXES order.
BUTTONS = [("MOVE_FORWARD", "MOVE_BACKWARD"), ("MOVE_RIGHT", "MOVE_LEFT"),
           ("TURN_RIGHT", "TURN_LEFT"), ("LOOK_UP", "LOOK_DOWN")]
# Sticky random policy: per axis, probabilities of (-1, 0, +1) and the mean hold in steps (each step
# the axis redraws its command with probability 1 / hold). Looks are short because ViZDoom clamps
# pitch at +-32 degrees (about 3 steps of looking).
POLICY = {"forward": ((0.2, 0.3, 0.5), 8.0), "right": ((0.25, 0.5, 0.25), 8.0),
          "yaw": ((0.25, 0.5, 0.25), 6.0), "pitch": ((0.15, 0.7, 0.15), 3.0)}
NOISE_LEVELS = [(0.0, 0.0), (0.5, 0.25), (1.0, 0.5), (2.0, 1.0), (4.0, 2.0)]
REALISTIC = (1.0, 0.5)


def make_game(seed: int, timeout_tics: int, scenario: str = "my_way_home"):
    """``scenario``: a bundled scenario wad by name (my_way_home, deadly_corridor...), or
    ``IWAD:MAP`` for a map of a bundled game (freedoom2:MAP01), played without monsters."""
    import vizdoom as vzd

    from infworld.envs.vizdoom import parse_scenario

    name, level = parse_scenario(scenario)  # EnvError naming the scenario or map on a typo
    game = vzd.DoomGame()
    if level is not None:
        game.set_doom_game_path(os.path.join(os.path.dirname(vzd.__file__), f"{name}.wad"))
        game.set_doom_map(level.lower())
        game.add_game_args("-nomonsters")  # a random walk is scored, not a fight
    else:
        game.set_doom_scenario_path(os.path.join(vzd.scenarios_path, f"{name}.wad"))
    game.set_screen_resolution(vzd.ScreenResolution.RES_160X120)
    game.set_window_visible(False)
    game.set_render_hud(False)
    game.set_episode_start_time(10)
    game.set_episode_timeout(timeout_tics)
    game.set_available_buttons([getattr(vzd.Button, b) for pair in BUTTONS for b in pair])
    game.set_available_game_variables([getattr(vzd.GameVariable, v) for v in
                                       ("POSITION_X", "POSITION_Y", "POSITION_Z", "ANGLE", "PITCH")])
    game.set_mode(vzd.Mode.PLAYER)
    game.set_seed(seed)
    game.init()
    return game


def collect(episodes: int, steps: int, frame_skip: int, seed: int,
            scenario: str = "my_way_home") -> list[dict[str, np.ndarray]]:
    """Clean pose tracks (T, 5) [x, y, z, yaw, pitch-up] and held commands (T-1, 4) per episode."""
    rng = np.random.default_rng(seed)
    game = make_game(seed, timeout_tics=(steps + 2) * frame_skip + 20, scenario=scenario)
    out = []
    try:
        for _ in range(episodes):
            game.new_episode()
            cmd = np.zeros(4, dtype=np.int64)
            poses, cmds = [], []
            for t in range(steps + 1):
                if game.is_episode_finished():
                    break
                x, y, z, angle, pitch = game.get_state().game_variables
                poses.append((x, y, z, angle, -pitch))  # ViZDoom PITCH is positive looking DOWN
                if t == steps:
                    break
                for i, axis in enumerate(AXES):
                    probs, hold = POLICY[axis]
                    if t == 0 or rng.random() < 1.0 / hold:
                        cmd[i] = rng.choice([-1, 0, 1], p=probs)
                cmds.append(cmd.copy())
                buttons = []
                for c in cmd:
                    buttons += [float(c > 0), float(c < 0)]
                game.make_action(buttons, frame_skip)
            n = len(poses)
            if n >= 10:
                out.append({"pose": np.asarray(poses, np.float64), "cmd": np.asarray(cmds[:n - 1])})
    finally:
        game.close()
    return out


def clean_motion(pose: np.ndarray) -> np.ndarray:
    from infworld.data.actions import camera_motion

    return camera_motion(pose[:, :2], pose[:, 3], pose[:, 4])  # (T-1, 4)


def settled(cmd: np.ndarray, k: int) -> np.ndarray:
    """(T-1, 4) True where the axis command equals the previous k commands."""
    ok = np.ones_like(cmd, dtype=bool)
    for j in range(1, k + 1):
        same = np.zeros_like(ok)
        same[j:] = cmd[j:] == cmd[:-j]
        ok &= same
    return ok


def score(labels: list, truths: list[np.ndarray], masks: list[np.ndarray] | None) -> dict[str, Any]:
    """Precision of non-uncertain labels per group and axis, and uncertain shares (over all steps)."""
    res: dict[str, Any] = {}
    axes = np.concatenate([lab.axes for lab in labels])  # (N, 4)
    unc = np.concatenate([lab.uncertain for lab in labels])
    truth = np.concatenate(truths)
    mask = np.concatenate(masks) if masks else np.ones_like(unc)
    for i, name in enumerate(AXES):
        sel = ~unc[:, i] & mask[:, i]
        res[f"prec_{name}"] = float(np.mean(axes[sel, i] == truth[sel, i])) if sel.any() else None
        res[f"unc_{name}"] = float(np.mean(unc[:, i]))
        res[f"n_{name}"] = int(sel.sum())
    for g, (a, b), enc, ids in (("move", (0, 1), encode_move, "move"), ("view", (2, 3), encode_view, "view")):
        lab_id = np.concatenate([getattr(lab, ids) for lab in labels])
        true_id = enc(truth[:, a], truth[:, b])
        sel = (lab_id != UNCERTAIN) & mask[:, a] & mask[:, b]
        res[f"prec_{g}"] = float(np.mean(lab_id[sel] == true_id[sel])) if sel.any() else None
        res[f"unc_{g}"] = float(np.mean(lab_id == UNCERTAIN))
        res[f"n_{g}"] = int(sel.sum())
        res[f"coverage_{g}"] = float(np.mean(mask[:, a] & mask[:, b]))
    return res


def score_tolerant(labels: list, clean: list[np.ndarray], ref: np.ndarray, lo: float = 0.25,
                   hi: float = 0.5) -> dict[str, Any]:
    """Precision against a physical truth with a don't-care zone between lo and hi x reference speed.

    A "moving" label is right if the camera moved that way by at least lo x ref; a "still" label is
    right if it moved less than hi x ref. So only labels that contradict a definite truth count.
    """
    axes = np.concatenate([lab.axes for lab in labels])
    unc = np.concatenate([lab.uncertain for lab in labels])
    m = np.concatenate(clean)
    ok = np.where(axes == 0, np.abs(m) < hi * ref, axes * m >= lo * ref)  # (N, 4)
    res: dict[str, Any] = {}
    for i, name in enumerate(AXES):
        sel = ~unc[:, i]
        res[f"prec_{name}"] = float(np.mean(ok[sel, i])) if sel.any() else None
    for g, (a, b) in (("move", (0, 1)), ("view", (2, 3))):
        sel = ~unc[:, a] & ~unc[:, b]
        res[f"prec_{g}"] = float(np.mean(ok[sel, a] & ok[sel, b])) if sel.any() else None
    return res


def causes(labels: list, cmds: list[np.ndarray], clean: list[np.ndarray], ref: np.ndarray,
           masks: list[np.ndarray], phys_frac: float) -> dict[str, dict[str, int]]:
    """Why labelled axes disagree with the held keys: per axis, counts of

    transition: the axis command changed within the settle window (moves: momentum still ramping
        or coasting; looks: the pitch clamp reached while the key is held);
    blocked: settled non-zero command, but the camera moved < phys_frac of the reference speed
        (walls, ViZDoom's +-32 degree pitch clamp);
    drift: settled zero command but the camera moved (wall sliding, sideways slip while turning);
    other: anything else (noise, wrong sign).
    """
    axes = np.concatenate([lab.axes for lab in labels])
    unc = np.concatenate([lab.uncertain for lab in labels])
    cmd, m, ok = np.concatenate(cmds), np.concatenate(clean), np.concatenate(masks)
    slow = np.abs(m) < phys_frac * ref
    out = {}
    for i, name in enumerate(AXES):
        wrong = ~unc[:, i] & (axes[:, i] != cmd[:, i])
        mom = wrong & ~ok[:, i]
        blocked = wrong & ok[:, i] & (cmd[:, i] != 0) & slow[:, i]
        drift = wrong & ok[:, i] & (cmd[:, i] == 0) & ~slow[:, i]
        out[name] = {"disagree": int(wrong.sum()), "transition": int(mom.sum()),
                     "blocked": int(blocked.sum()), "drift": int(drift.sum()),
                     "other": int((wrong & ~mom & ~blocked & ~drift).sum())}
    return out


def add_noise(data: list[dict[str, np.ndarray]], sp: float, sa: float, rng) -> list[np.ndarray]:
    out = []
    for d in data:
        p = d["pose"].copy()
        p[:, :3] += rng.normal(0.0, sp, size=(len(p), 3))
        p[:, 3] = (p[:, 3] + rng.normal(0.0, sa, size=len(p))) % 360.0  # poses come wrapped to [0, 360)
        p[:, 4] += rng.normal(0.0, sa, size=len(p))
        out.append(p)
    return out


def slow_real_still(labels: list, slow: list[np.ndarray]) -> dict[str, Any]:
    """How many clearly real, below-full-speed forward / right components were labelled still."""
    n = int(sum(m.sum() for m in slow))
    still = int(sum((~lab.uncertain[:, :2] & (lab.axes[:, :2] == 0) & m).sum()
                    for lab, m in zip(labels, slow, strict=True)))
    return {"steps": n, "still": still, "still_share": still / n if n else None}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def run(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    data = collect(args.episodes, args.steps, args.frame_skip, args.seed, args.scenario)
    t_collect = time.perf_counter() - t0
    clean = [clean_motion(d["pose"]) for d in data]
    cmds = [d["cmd"] for d in data]
    allm, allc = np.concatenate(clean), np.concatenate(cmds)
    # Reference speed per axis: 99th percentile of the clean motion while that axis is commanded,
    # i.e. ViZDoom's top walking / turning / looking speed per step.
    ref = np.array([np.quantile(np.abs(allm[allc[:, i] != 0, i]), 0.99) for i in range(4)])

    def physical(frac: float) -> list[np.ndarray]:
        return [np.where(np.abs(m) >= frac * ref, np.sign(m), 0).astype(np.int64) for m in clean]

    phys = {f: physical(f) for f in sorted({args.phys_frac, 0.25, 0.5})}  # truth-boundary sensitivity
    settle_masks = [settled(c, args.settle) for c in cmds]
    # clearly real but below full speed: (T-1, 2) forward / right masks per episode
    slow = [(np.abs(m[:, :2]) >= args.real_units) & (np.abs(m[:, :2]) < 0.9 * ref[:2]) for m in clean]
    thr = LabelThresholds(still_frac=args.still_frac, move_frac=args.move_frac, z=args.z).validate()
    rng = np.random.default_rng(args.seed + 1)
    rows, t_label, n_label = [], 0.0, 0
    for sp, sa in NOISE_LEVELS:
        noisy = add_noise(data, sp, sa, rng)
        for mode in ("estimated", "given"):
            noise = None if mode == "estimated" else PoseNoise(sp, sa)
            t1 = time.perf_counter()
            labels = [label_from_poses(p[:, :3], p[:, 3], p[:, 4], noise_std=noise, thresholds=thr)
                      for p in noisy]
            t_label += time.perf_counter() - t1
            n_label += sum(len(p) - 1 for p in noisy)
            row = {"pos_noise": sp, "ang_noise": sa, "noise": mode,
                   "est_pos_noise": float(np.median([lab.noise.position for lab in labels])),
                   "est_ang_noise": float(np.median([lab.noise.angle for lab in labels])),
                   "typical_move_speed": float(np.median([lab.speeds.move or 0.0 for lab in labels])),
                   "physical": score(labels, phys[args.phys_frac], None),
                   "physical_by_frac": {f"{f:.3g}": score(labels, v, None) for f, v in phys.items()},
                   "physical_tolerant": score_tolerant(labels, clean, ref),
                   "commanded": score(labels, cmds, None),
                   "commanded_settled": score(labels, cmds, settle_masks),
                   "commanded_disagreement": causes(labels, cmds, clean, ref, settle_masks, args.phys_frac),
                   "slow_real": slow_real_still(labels, slow)}
            rows.append(row)
    sweep = []
    if args.sweep_z:
        noisy = add_noise(data, *REALISTIC, rng)
        for z in (float(v) for v in args.sweep_z.split(",")):
            zt = LabelThresholds(still_frac=args.still_frac, move_frac=args.move_frac, z=z)
            labels = [label_from_poses(p[:, :3], p[:, 3], p[:, 4], thresholds=zt) for p in noisy]
            sweep.append({"z": z, **score(labels, phys[args.phys_frac], None)})
    return {
        "command": "python " + " ".join(sys.argv),
        "machine": {"platform": platform.platform(), "processor": cpu_model(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "thresholds": dataclasses.asdict(thr),
        "policy": {k: {"probs(-1,0,+1)": list(v[0]), "mean_hold_steps": v[1]} for k, v in POLICY.items()},
        "episodes": len(data), "steps": int(len(allm)),
        "reference_speed": dict(zip(AXES, ref.tolist(), strict=True)),
        "command_share_nonzero": {a: float(np.mean(allc[:, i] != 0)) for i, a in enumerate(AXES)},
        "seconds": {"collect": t_collect, "label_per_1k_steps": 1000 * t_label / max(n_label, 1),
                    "total": time.perf_counter() - t0},
        "rows": rows,
        "z_sweep_at_realistic_noise": sweep,
    }


def pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def table(result: dict[str, Any], mode: str = "estimated") -> str:
    head = ("| pos / ang noise | est. noise | uncertain move / view | physical: prec move / view "
            "| physical 0.25-0.5 tolerant | commanded: prec move / view | cmd settled: prec move / view |")
    lines = [head, "|" + "---|" * 7]
    for r in result["rows"]:
        if r["noise"] != mode:
            continue
        p = r["physical"]
        cells = [f"{r['pos_noise']:g} / {r['ang_noise']:g}",
                 f"{r['est_pos_noise']:.2f} / {r['est_ang_noise']:.2f}",
                 f"{pct(p['unc_move'])} / {pct(p['unc_view'])}"]
        for truth in ("physical", "physical_tolerant", "commanded", "commanded_settled"):
            cells.append(f"{pct(r[truth]['prec_move'])} / {pct(r[truth]['prec_view'])}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def axis_table(result: dict[str, Any], truth: str, mode: str = "estimated") -> str:
    lines = ["| pos / ang noise | " + " | ".join(f"{a}: prec / unc" for a in AXES) + " |",
             "|" + "---|" * 5]
    for r in result["rows"]:
        if r["noise"] != mode:
            continue
        s = r[truth]
        cells = [f"{pct(s[f'prec_{a}'])} / {pct(s[f'unc_{a}'])}" for a in AXES]
        lines.append(f"| {r['pos_noise']:g} / {r['ang_noise']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", default="my_way_home",
                    help="bundled scenario name, or IWAD:MAP (e.g. freedoom2:MAP01, played without monsters)")
    ap.add_argument("--episodes", type=int, default=16)
    ap.add_argument("--steps", type=int, default=500, help="actions per episode (frame skip 4 each)")
    ap.add_argument("--frame-skip", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--phys-frac", type=float, default=1.0 / 3.0,
                    help="physical truth: 'moving' from this fraction of the axis reference speed")
    ap.add_argument("--settle", type=int, default=6, help="steps an axis command must be unchanged")
    ap.add_argument("--real-units", type=float, default=6.0,
                    help="'slow but real' move steps: noise-free displacement from this many map units")
    defaults = LabelThresholds()
    ap.add_argument("--still-frac", type=float, default=defaults.still_frac)
    ap.add_argument("--move-frac", type=float, default=defaults.move_frac)
    ap.add_argument("--z", type=float, default=defaults.z)
    ap.add_argument("--sweep-z", default="0.5,0.75,1,1.5,2",
                    help="comma list of z to sweep at the realistic noise (empty: no sweep)")
    ap.add_argument("--out", default=None, help="write the full results as JSON here")
    args = ap.parse_args(argv)
    result = run(args)
    print(f"{result['episodes']} episodes, {result['steps']} steps, reference speeds "
          + ", ".join(f"{k} {v:.2f}" for k, v in result["reference_speed"].items())
          + f"; {result['seconds']['total']:.1f} s on {result['machine']['cpu_count']} CPUs")
    for mode in ("estimated", "given"):
        print(f"\nnoise {mode}:\n" + table(result, mode))
    for truth in ("physical", "commanded"):
        print(f"\nper axis vs {truth} truth (noise estimated):\n" + axis_table(result, truth))
    print("\nphysical truth at other 'moving' fractions of the reference speed (noise estimated), "
          "precision move / view:")
    for r in result["rows"]:
        if r["noise"] == "estimated":
            byf = r["physical_by_frac"]
            cells = [f"{k}: {pct(v['prec_move'])} / {pct(v['prec_view'])}" for k, v in byf.items()]
            print(f"  {r['pos_noise']:g} / {r['ang_noise']:g}: " + ", ".join(cells))
    print("\ndisagreement with the held keys, by cause (noise estimated):")
    for r in result["rows"]:
        if r["noise"] == "estimated":
            d = r["commanded_disagreement"]
            print(f"  {r['pos_noise']:g} / {r['ang_noise']:g}: "
                  + "; ".join(f"{a} " + " ".join(f"{k}={v}" for k, v in d[a].items()) for a in AXES))
    print(f"\nslow but real move components (>= {args.real_units:g} units, < 0.9 x reference speed) "
          "labelled still:")
    for mode in ("estimated", "given"):
        cells = [f"{r['pos_noise']:g} / {r['ang_noise']:g}: {r['slow_real']['still']} of "
                 f"{r['slow_real']['steps']} ({pct(r['slow_real']['still_share'])}%)"
                 for r in result["rows"] if r["noise"] == mode]
        print(f"  noise {mode}: " + "; ".join(cells))
    if result["z_sweep_at_realistic_noise"]:
        print(f"\nz sweep at noise {REALISTIC} vs physical truth:")
        for r in result["z_sweep_at_realistic_noise"]:
            print(f"  z={r['z']:g}: precision move / view {pct(r['prec_move'])} / {pct(r['prec_view'])}, "
                  f"uncertain {pct(r['unc_move'])} / {pct(r['unc_view'])}")
    if args.out:
        atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
