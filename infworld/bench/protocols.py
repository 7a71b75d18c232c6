"""The five measurement protocols of ``infworld bench``, each returning its results.json section.

Every protocol reads rollouts of the public engine (:class:`infworld.world.WorldModel`): seeded with
the first K ground-truth frames of a trajectory (and their actions and poses), then stepping with the
trajectory's true actions and ground-truth poses, chunk by chunk. A rollout is generated once per
(variant, trajectory) and shared by the protocols: :class:`~infworld.bench.variant.VariantRun`
(variant.py) caches them on disk; it, :class:`Rollout` and :func:`run_rollout` are re-exported here.

1. replay: per-frame PSNR / SSIM against ground truth as a curve over the horizon (compounding
   error, VRAG Sec. 5; GameNGen), averaged over trajectories, in log-spaced horizon buckets.
2. revisit: at each revisit event (frame t returns to the view of frame s, with t - s at least the
   local window so the model must *remember* s), the generated frame t against ground truth t and
   against the model's own frame s (self-consistency, needs no ground truth; WorldMem, VRAG);
   split by gap t - s where the suite names ``gap_buckets`` (buckets.py).
3. action: an inverse dynamics model (idm.py) reads the actions back from consecutive generated
   frames (accuracy against the commanded actions, per axis; the same on real frames is its
   ceiling), and the PSNR of rollouts with the true actions minus rollouts with random actions.
4. distribution: Frechet distance and KID in the features of our own tokenizer per horizon bucket
   (named ``fd_ours``, not FID), plus two labelled proxies (optical-flow dynamic degree,
   neighbour-interpolation motion smoothness), not VBench scores.
5. speed: frames per second and per-frame latency of a timed run, peak RSS, and the rollout state
   (KV cache + memory) after 100 / 1000 / 10000 frames, measured by feeding the memory written
   latents without the DiT (a 10,000-frame DiT run would take too long on a CPU).

A memory may refuse a rollout (the full-context oracle past its budget): that trajectory is listed
under ``skipped`` for the variant and left out of its figures.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from infworld.bench.buckets import BUCKET_METRICS, per_bucket
from infworld.bench.variant import MAX_EVENTS, Rollout, VariantRun, run_rollout  # noqa: F401 (re-exported)
from infworld.errors import MemoryConfigError
from infworld.models.action import NULL_ACTION

STATE_MARKS = (100, 1000, 10000)


@dataclass
class ProtocolResult:
    """A protocol's schema section, its per-item scores for the ratings (criterion -> item ->
    score), the trajectories it had to skip (name -> reason) and notes for the reader."""

    result: dict[str, Any]
    items: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def _mean(x: Any) -> float | None:
    x = np.asarray(x, dtype=np.float64)
    return float(x.mean()) if x.size else None


def replay(run: VariantRun) -> ProtocolResult:
    """Protocol 1: PSNR / SSIM against ground truth over the horizon (bucket edges 1, 2, 4, ...)."""
    from infworld.bench import metrics

    pairs, skipped = run.usable()
    by_h: dict[int, list[tuple[float, float]]] = {}
    per_traj, all_p, all_s = {}, [], []
    for traj, ro in pairs:
        truth = run.truth[traj.name][ro.context: ro.context + len(ro.frames)]
        p, s = metrics.psnr(ro.frames, truth), metrics.ssim(ro.frames, truth)
        for h, (pv, sv) in enumerate(zip(p, s, strict=True), start=1):
            by_h.setdefault(h, []).append((pv, sv))
        per_traj[traj.name] = float(p.mean())
        all_p.append(p)
        all_s.append(s)
    h_max = max(by_h, default=0)
    edges = sorted({2**i for i in range(int(np.log2(h_max)) + 1)} | {h_max}) if h_max else []
    horizon, psnr, ssim, lo = [], [], [], 0
    for e in edges:
        vals = [v for h in range(lo + 1, e + 1) for v in by_h[h]]
        horizon.append(int(e))
        psnr.append(_mean([v[0] for v in vals]))
        ssim.append(_mean([v[1] for v in vals]))
        lo = e
    result = {"horizon": horizon, "psnr": psnr, "ssim": ssim,
              "psnr_mean": _mean(np.concatenate(all_p)) if all_p else None,
              "ssim_mean": _mean(np.concatenate(all_s)) if all_s else None,
              "per_trajectory": per_traj}
    return ProtocolResult(result, {"fidelity": per_traj}, skipped)


def revisit(run: VariantRun) -> ProtocolResult:
    """Protocol 2: at each revisit event, generated t vs ground truth t and vs its own frame s."""
    from infworld.bench import metrics

    pairs, skipped = run.usable()
    keys = ("psnr_gt", "ssim_gt", "psnr_self", "ssim_self", "psnr_pair")
    rows: dict[str, list[float]] = {k: [] for k in keys}
    per_traj, items, gaps = {}, {}, []
    for traj, ro in pairs:
        ev = run.events(traj)
        ev = ev[ev[:, 0] < ro.context + len(ro.frames)]
        if not len(ev):
            continue
        hist, truth = run.history(traj, ro), run.truth[traj.name]
        gen_t, gt_t, own_s, gt_s = hist[ev[:, 0]], truth[ev[:, 0]], hist[ev[:, 1]], truth[ev[:, 1]]
        vals = {"psnr_gt": metrics.psnr(gen_t, gt_t), "ssim_gt": metrics.ssim(gen_t, gt_t),
                "psnr_self": metrics.psnr(gen_t, own_s), "ssim_self": metrics.ssim(gen_t, own_s),
                "psnr_pair": metrics.psnr(gt_t, gt_s)}  # how alike the two real views are
        for k, v in vals.items():
            rows[k].extend(v.tolist())
        gaps.extend((ev[:, 0] - ev[:, 1]).tolist())
        per_traj[traj.name] = {"psnr_gt": float(vals["psnr_gt"].mean()),
                               "psnr_self": float(vals["psnr_self"].mean()), "events": int(len(ev)),
                               "gap_mean": float((ev[:, 0] - ev[:, 1]).mean())}
        items.update({f"{traj.name}:{t}": float(p) for (t, _), p in zip(ev, vals["psnr_gt"], strict=True)})
    result = {"events": len(rows["psnr_gt"]), **{k: _mean(v) for k, v in rows.items()},
              "per_trajectory": per_traj}
    edges = getattr(run.suite, "gap_buckets", ())
    if edges:  # the same events split by gap t - s (buckets.py); absent for suites without buckets
        result["per_bucket"] = per_bucket(np.asarray(gaps), {k: rows[k] for k in BUCKET_METRICS}, edges)
    return ProtocolResult(result, {"memory": items}, skipped)


def action(run: VariantRun) -> ProtocolResult:
    """Protocol 3: IDM accuracy on generated and real frame pairs, and the true-vs-random PSNR gap."""
    from infworld.bench import metrics
    from infworld.bench.idm import accuracy

    pairs, skipped = run.usable()
    pred = {"gen": ([], []), "real": ([], [])}
    labels: tuple[list, list] = ([], [])
    items, p_true, p_rand = {}, [], []
    for traj, ro in pairs:
        n, k = len(ro.frames), ro.context
        if n == 0:
            continue
        acts = run.actions(traj)
        lab_m, lab_v = acts["move"][k - 1: k - 1 + n], acts["view"][k - 1: k - 1 + n]  # (n,)
        hist = run.history(traj, ro)[k - 1:]  # (n + 1, H, W, 3): last real frame, then generated
        for key, frames in (("gen", hist), ("real", run.truth[traj.name][k - 1: k + n])):
            m, v = run.idm.predict(frames)
            pred[key][0].append(m)
            pred[key][1].append(v)
        labels[0].append(lab_m)
        labels[1].append(lab_v)
        accs = [a for a in (accuracy(pred["gen"][0][-1], lab_m), accuracy(pred["gen"][1][-1], lab_v))
                if a is not None]
        if accs:
            items[traj.name] = float(np.mean(accs))
        rnd = run.rollout(traj, "random")
        m = len(rnd.frames)
        if rnd.refused or m == 0:
            continue
        truth = run.truth[traj.name][k: k + m]
        p_true.append(metrics.psnr(ro.frames[:m], truth))
        p_rand.append(metrics.psnr(rnd.frames, truth))

    def acc(key):
        if not labels[0]:
            return None
        lm, lv = np.concatenate(labels[0]), np.concatenate(labels[1])
        return {"move": accuracy(np.concatenate(pred[key][0]), lm),
                "view": accuracy(np.concatenate(pred[key][1]), lv)}

    pt = _mean(np.concatenate(p_true)) if p_true else None
    pr = _mean(np.concatenate(p_rand)) if p_rand else None
    result = {"idm_accuracy": acc("gen"), "idm_accuracy_real": acc("real"), "psnr_true_actions": pt,
              "psnr_random_actions": pr, "psnr_gap": None if pt is None or pr is None else pt - pr,
              "horizon": run.suite.action_horizon, "idm": getattr(run.idm, "path", "")}
    return ProtocolResult(result, {"action": items}, skipped)


def distribution(run: VariantRun) -> ProtocolResult:
    """Protocol 4: FD / KID in our tokenizer's features per horizon bucket, and two proxies."""
    from infworld.bench import metrics
    from infworld.data.frames import resize_frames

    pairs, skipped = run.usable()
    feats = run.features

    def embed(extractor, frames):
        size = getattr(extractor, "image_size", None)
        return extractor(resize_frames(frames, size) if size else frames)

    edges = list(run.suite.dist_horizons)
    horizons, fd, kid, fid = [], [], [], []
    dyn, smooth, dyn_real, smooth_real, weights = [], [], [], [], []
    for lo, hi in zip([0, *edges[:-1]], edges, strict=True):
        gen = [ro.frames[lo:hi] for _, ro in pairs if len(ro.frames) > lo]
        real = [run.truth[t.name][ro.context + lo: ro.context + min(hi, len(ro.frames))]
                for t, ro in pairs if len(ro.frames) > lo]
        if not gen:
            break
        g, r = np.concatenate(gen), np.concatenate(real)
        horizons.append(int(hi))
        if len(g) < 8:  # too few samples for a covariance
            for lst in (fd, kid, fid):
                lst.append(None)
            continue
        fg, fr = embed(feats, g), embed(feats, r)
        fd.append(metrics.frechet_distance(fg, fr))
        kid.append(metrics.kid(fg, fr, subsets=20, subset_size=min(len(g), 500)))
        fid.append(metrics.frechet_distance(embed(run.inception, g), embed(run.inception, r))
                   if run.inception is not None else None)
    for traj, ro in pairs:
        if len(ro.frames) >= 3:
            truth = run.truth[traj.name][ro.context: ro.context + len(ro.frames)]
            dyn.append(metrics.dynamic_degree_proxy(ro.frames))
            smooth.append(metrics.motion_smoothness_proxy(ro.frames))
            dyn_real.append(metrics.dynamic_degree_proxy(truth))
            smooth_real.append(metrics.motion_smoothness_proxy(truth))
            weights.append(len(ro.frames))

    def wmean(x):
        return float(np.average(x, weights=weights)) if x else None

    result = {"horizons": horizons, "fd_ours": fd, "kid_ours": kid,
              "fid_inception": fid if run.inception is not None else None,
              "dynamic_degree_proxy": wmean(dyn), "motion_smoothness_proxy": wmean(smooth),
              "dynamic_degree_proxy_real": wmean(dyn_real),
              "motion_smoothness_proxy_real": wmean(smooth_real),
              "features": getattr(feats, "label", "ours")}
    return ProtocolResult(result, {}, skipped)


def speed(run: VariantRun) -> ProtocolResult:
    """Protocol 5: a timed run (not cached) on the longest trajectory, then the state-size curve."""
    traj = max(run.trajs, key=lambda t: t.frames)
    ro = run_rollout(run.world, run.truth[traj.name], run.actions(traj), traj.episode.pose, run.context,
                     run.suite.speed_frames, run.progress)
    secs, counts = ro.step_seconds[1:], ro.step_frames[1:]  # the first step includes warm-up
    per_frame_ms = 1000.0 * secs / np.maximum(counts, 1)
    state, note = state_bytes(run.world)
    result = {"fps": float(counts.sum() / secs.sum()) if secs.sum() > 0 else None,
              "latency_ms_p50": float(np.percentile(per_frame_ms, 50)) if len(secs) else None,
              "latency_ms_p95": float(np.percentile(per_frame_ms, 95)) if len(secs) else None,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
              "state_bytes": state, "frames_timed": int(counts.sum()), "trajectory": traj.name,
              "state_bytes_method": note, "peak_rss_scope": "the whole bench process up to this variant",
              "threads": torch.get_num_threads()}
    if ro.refused:
        result["refused"] = ro.refused
    return ProtocolResult(result)


@torch.no_grad()
def state_bytes(world: Any, marks: tuple[int, ...] = STATE_MARKS) -> tuple[dict[str, int | None], str]:
    """Rollout state bytes (KV cache + memory) after each of ``marks`` frames, without the DiT: the
    engine's KV cache has a fixed capacity (allocated at reset), and the memory is fed random latents,
    null actions and a slowly circling pose chunk by chunk, with a read before every chunk, as the
    engine does. A memory that refuses (the full oracle past its budget) gives None from there on."""
    mem, chunk = world.memory, world.config.chunk
    cfg = world.dit.cfg
    cache = world.cache.nbytes() if world.cache is not None else 0
    g = torch.Generator().manual_seed(0)
    lat = torch.randn((1, chunk, cfg.in_channels, *cfg.latent_size), generator=g)  # (1, n, C, h, w)
    acts = {n: torch.full((1, chunk), NULL_ACTION, dtype=torch.long) for n in cfg.actions.sizes()}
    acts.update({n: torch.full((1, chunk, w), float("nan")) for n, w in cfg.actions.continuous.items()})
    out: dict[str, int | None] = {str(m): None for m in marks}
    mem.reset()
    note = "KV cache + memory.nbytes() after feeding the memory written latents (no DiT)"
    try:
        for start in range(0, max(marks), chunk):
            i = np.arange(start, start + chunk)
            a = np.radians(i * 3.0)  # 3 degrees per frame around a 200-unit circle
            pose = np.stack([200 * np.cos(a / 4), 200 * np.sin(a / 4), 0 * a, np.degrees(a) % 360, 0 * a], 1)
            p = torch.as_tensor(pose[None], dtype=torch.float32)  # (1, n, 5)
            mem.read(start, p[:, 0])
            mem.write(lat, acts, p, start)
            for m in marks:
                if start < m <= start + chunk:
                    out[str(m)] = int(cache + mem.nbytes())
    except MemoryConfigError as exc:
        note += f"; refused at frame {start}: {exc}"
    mem.reset()
    return out, note
