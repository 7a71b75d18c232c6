"""Why a Crafter world model misses action effects (docs/crafter.md, "Event-dense finetuning").

On the crafter-v1 effect events (infworld/bench/crafter_events.py) it asks three things the effects
protocol does not:

* does the tokenizer keep the effect (the probe on the encoded-then-decoded real next frame)?
* does the effect appear later in the chunk (generated frames 1..chunk against the real ones)?
* for inventory effects, what does the first generated frame show instead: the old count (the
  action was ignored), the new one, or another (a garbled digit)?

    python benchmarks/crafter_effects_diag.py --model crafter-tiny [--out results.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from infworld.bench.crafter_bench import _actions, _judge, _stack
from infworld.bench.crafter_probe_io import load_probe
from infworld.bench.crafter_suite import build_crafter_suite
from infworld.streaming import free_rollout
from infworld.world import WorldModel


def round_trip(world: WorldModel, frames: np.ndarray) -> np.ndarray:
    """Frames (B, H, W, 3) uint8 through the model's tokenizer and back."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)[:, None]  # (B, 1, 3, H, W)
    rec = world.net.decode(world.net.encode(x))[:, 0]  # (B, 3, H, W) in [-1, 1]
    return ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="crafter-tiny")
    ap.add_argument("--suite", default="crafter-v1")
    ap.add_argument("--probe", default="crafter-probe")
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(1)
    world = WorldModel.from_pretrained(args.model, memory="window")
    probe, suite = load_probe(args.probe), build_crafter_suite(args.suite)
    keys = list(suite.meta.extra["inventory_keys"])
    c, chunk = suite.spec.context, int(world.config.chunk)
    events = [(i, e) for i, e in suite.effects if e.t + chunk + 1 < len(suite.episodes[i].frames) - 1]
    gen_k = np.zeros((len(events), chunk), bool)  # generated frame k shows the effect
    real_k = np.zeros((len(events), chunk), bool)  # real frame k still shows it
    kept = np.zeros(len(events), bool)  # the tokenizer round trip of the real next frame shows it
    reads = {"new": 0, "old": 0, "other": 0}  # inventory effects: the count read on generated frame 1
    for s in range(0, len(events), 16):
        part = events[s:s + 16]
        evs = [e for _, e in part]
        ctx = np.stack([suite.episodes[i].frames[e.t + 1 - c: e.t + 1] for i, e in part])  # (B, C, H, W, 3)
        acts = _stack([_actions(suite.episodes[i], e.t + 1 - c, e.t + chunk) for i, e in part])
        gen = free_rollout(world, ctx, acts, chunk=chunk)  # (B, chunk, H, W, 3)
        for k in range(chunk):
            gen_k[s:s + len(part), k] = _judge(probe, gen[:, k], evs, suite)
            real = np.stack([suite.episodes[i].frames[e.t + 1 + k] for i, e in part])
            real_k[s:s + len(part), k] = _judge(probe, real, evs, suite)
        real1 = np.stack([suite.episodes[i].frames[e.t + 1] for i, e in part])
        kept[s:s + len(part)] = _judge(probe, round_trip(world, real1), evs, suite)
        inv = probe.predict(gen[:, 0])["inventory"]
        for j, e in enumerate(evs):
            if e.kind != "place":
                got = int(inv[j][keys.index(e.key)])
                reads["new" if got == e.count else "old" if got == e.count - 1 else "other"] += 1
    kinds = sorted({e.kind for _, e in events})
    res = {"model": args.model, "events": len(events), "tokenizer_keeps": float(kept.mean()),
           "generated_shown_by_frame": gen_k.mean(0).tolist(), "real_shown_by_frame": real_k.mean(0).tolist(),
           "inventory_read_on_frame_1": {k: v / max(sum(reads.values()), 1) for k, v in reads.items()},
           "by_kind": {kd: {"n": int(m.sum()), "tokenizer_keeps": float(kept[m].mean()),
                            "generated_shown_by_frame": gen_k[m].mean(0).tolist()}
                       for kd in kinds for m in [np.array([e.kind == kd for _, e in events])]}}
    print(json.dumps(res, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
