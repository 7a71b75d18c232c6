"""Measure the Wan2.1 backbone and VAE at their real sizes on a GPU: peak memory and step time.

Random weights (the numbers depend on sizes, not values). Reproduces the measured rows of
docs/scale.md::

    python -m infworld.models.wan.measure --out wan_measure.json            # everything
    python -m infworld.models.wan.measure --only train --size 1.3B
    torchrun --nproc_per_node 1 -m infworld.models.wan.measure --fsdp --out wan_fsdp.json

* ``train``: one optimizer step (AdamW, fp32 master weights, bf16 autocast, as the trainer's
  ``precision: bf16``), diffusion-forcing levels per frame, actions on, block-causal mask, with and
  without per-block activation checkpointing; one GPU, no sharding (FSDP2 divides the parameter,
  gradient and optimizer bytes by the number of GPUs; activations stay per GPU).
* ``stream``: one velocity evaluation of a chunk of latent frames against a full KV cache (bf16
  weights, no grad): the unit of interactive generation (times sampler steps per chunk).
* ``vae``: encode and decode of a video with the Wan VAE (needs diffusers).
* ``--fsdp`` (under torchrun): the training step as ``train.parallel: fsdp`` runs it: the model
  sharded by :func:`infworld.train.fsdp.apply_fsdp` (one unit per block, bf16 compute / fp32
  reduce, fp32 sharded master weights), the block's own activation checkpointing
  (``grad_checkpointing``, as the trainer sets it), global-norm clipping, AdamW (the trainer's
  ``foreach`` default) on the shards. Each rank reports its own peak memory.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from infworld.models.action import ActionConfig
from infworld.models.kvcache import PastKV
from infworld.models.wan.config import WAN_SIZES, WanConfig
from infworld.models.wan.transformer import WanDiT

RESOLUTIONS = {"256x256": (256, 256), "480x832": (480, 832)}
DEVICE = "cuda"


def wan_config(size: str, frame_size: tuple[int, int], frames: int, **kw: Any) -> WanConfig:
    """A Wan2.1 config for frames of ``frame_size`` (VAE: 8x spatial, 16 channels)."""
    return WanConfig(in_channels=16, latent_size=(frame_size[0] // 8, frame_size[1] // 8), max_frames=frames,
                     frames_per_latent=4, actions=ActionConfig(num_interact=4), **WAN_SIZES[size], **kw)


def _actions(b: int, f: int, device: str) -> dict[str, torch.Tensor]:
    return {k: torch.randint(0, 4, (b, f, 4), device=device) for k in ("move", "view", "interact")}


def _peak_gib() -> float:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def _sync_time(fn, reps: int) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps


def measure_train(size: str, res: str, frames: int, batch: int, ckpt: bool, reps: int = 3) -> dict[str, Any]:
    dev = DEVICE
    cfg = wan_config(size, RESOLUTIONS[res], frames, grad_checkpointing=ckpt)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    with torch.device(dev):
        model = WanDiT(cfg).train()
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    x = torch.randn(batch, frames, 16, *cfg.latent_size, device=dev)
    target = torch.randn_like(x)
    t = torch.rand(batch, frames, device=dev)
    acts = _actions(batch, frames, dev)

    def step() -> None:
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            loss = (model(x, t, acts).float() - target).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up: kernels and optimizer state
    sec = _sync_time(step, reps)
    out = {"what": "train", "size": size, "res": res, "latent_frames": frames, "batch": batch,
           "tokens": frames * cfg.tokens_per_frame, "grad_checkpointing": ckpt, "params": params,
           "step_s": round(sec, 3), "peak_gib": _peak_gib(),
           "samples_per_s": round(batch / sec, 3)}
    return out


def measure_fsdp(size: str, res: str, frames: int, batch: int, reps: int = 3) -> dict[str, Any]:
    """One FSDP2 training step per rep (see the module docstring); needs an initialised process group."""
    import torch.distributed as dist

    from infworld.train.fsdp import apply_fsdp, full_value

    dev = f"cuda:{torch.cuda.current_device()}"
    cfg = wan_config(size, RESOLUTIONS[res], frames, grad_checkpointing=True)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)  # every rank starts from the same weights, as the trainer's seeded build
    with torch.device(dev):
        model = WanDiT(cfg).train()
    params = sum(p.numel() for p in model.parameters())
    model, notes = apply_fsdp(model, ("blocks",), bf16=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    g = torch.Generator(device=dev).manual_seed(1 + dist.get_rank())  # each rank its own clips
    x = torch.randn(batch, frames, 16, *cfg.latent_size, device=dev, generator=g)
    target = torch.randn(x.shape, device=dev, generator=g)
    t = torch.rand(batch, frames, device=dev, generator=g)
    acts = _actions(batch, frames, dev)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = (model(x, t, acts).float() - target).square().mean()
        loss.backward()
        full_value(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))  # global norm, as the trainer
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up: kernels and optimizer state
    sec = _sync_time(step, reps)
    ranks = dist.get_world_size()
    out = {"what": "train_fsdp", "size": size, "res": res, "latent_frames": frames, "batch_per_gpu": batch,
           "gpus": ranks, "tokens": frames * cfg.tokens_per_frame, "params": params,
           "step_s": round(sec, 3), "peak_gib": _peak_gib(), "samples_per_s": round(ranks * batch / sec, 3),
           "notes": notes}
    return out


@torch.no_grad()
def measure_stream(size: str, res: str, window: int, chunk: int, reps: int = 10) -> dict[str, Any]:
    dev = DEVICE
    cfg = wan_config(size, RESOLUTIONS[res], window)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    with torch.device(dev):
        model = WanDiT(cfg).eval().to(torch.bfloat16)
    n, p = cfg.tokens_per_frame, window - 1
    keys, values = ([torch.randn(1, cfg.num_heads, p * n, cfg.head_dim, device=dev, dtype=torch.bfloat16)
                     for _ in range(cfg.depth)] for _ in range(2))
    past = PastKV(keys, values, torch.arange(p, dtype=torch.float32), torch.zeros(p, dtype=torch.bool))
    x = torch.randn(1, chunk, 16, *cfg.latent_size, device=dev, dtype=torch.bfloat16)
    t = torch.full((1, chunk), 0.5, device=dev)
    acts = _actions(1, chunk, dev)
    pos = torch.arange(p, p + chunk, dtype=torch.float32)

    def call() -> None:
        model(x, t, acts, positions=pos, past=past, window=window)

    call()
    sec = _sync_time(call, reps)
    out = {"what": "stream", "size": size, "res": res, "window": window, "chunk": chunk,
           "forward_ms": round(sec * 1000, 1), "peak_gib": _peak_gib(),
           "cache_gib_bf16": round(2 * cfg.depth * p * n * cfg.dim * 2 / 2**30, 3)}
    return out


@torch.no_grad()
def measure_vae(res: str, frames: int, reps: int = 2) -> dict[str, Any]:
    from diffusers import AutoencoderKLWan

    from infworld.models.wan.vae import WanVAE

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    with torch.device(DEVICE):
        tok = WanVAE(AutoencoderKLWan().to(torch.bfloat16), temporal=True)
    h, w = RESOLUTIONS[res]
    video = torch.rand(1, frames, 3, h, w, device=DEVICE) * 2 - 1
    z = tok.encode(video)
    enc = _sync_time(lambda: tok.encode(video), reps)
    dec = _sync_time(lambda: tok.decode(z), reps)
    return {"what": "vae", "res": res, "frames": frames, "latent_frames": z.shape[1],
            "encode_s": round(enc, 3), "decode_s": round(dec, 3), "peak_gib": _peak_gib()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["train", "stream", "vae"], default=None)
    ap.add_argument("--size", choices=sorted(WAN_SIZES), default="1.3B")
    ap.add_argument("--out", default="")
    ap.add_argument("--fsdp", action="store_true", help="FSDP2 training steps only (launch with torchrun)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("measure: needs a CUDA GPU")
    torch.backends.cuda.matmul.allow_tf32 = True
    if args.fsdp:
        return _main_fsdp(args)
    jobs = []
    if args.only in (None, "train"):
        jobs += [lambda: measure_train(args.size, "256x256", 16, 1, True),
                 lambda: measure_train(args.size, "256x256", 16, 1, False),
                 lambda: measure_train(args.size, "256x256", 16, 4, True)]
    if args.only in (None, "stream"):
        jobs += [lambda: measure_stream(args.size, "256x256", 16, 1),
                 lambda: measure_stream(args.size, "256x256", 16, 4),
                 lambda: measure_stream(args.size, "480x832", 21, 1)]
    if args.only in (None, "vae"):
        jobs += [lambda: measure_vae("256x256", 17), lambda: measure_vae("480x832", 17)]
    if args.only in (None, "train"):  # the largest last: 32k tokens with a dense block-causal mask
        jobs += [lambda: measure_train(args.size, "480x832", 21, 1, True, reps=2)]
    rows = []
    for job in jobs:
        try:
            row = job()
        except torch.cuda.OutOfMemoryError as exc:
            row = {"error": f"out of memory: {str(exc)[:120]}"}
        except Exception as exc:  # noqa: BLE001 - report and go on with the other measurements
            row = {"error": repr(exc)[:300]}
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.out:
        with open(args.out, "w") as fh:
            meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
            json.dump({**meta, "rows": rows}, fh, indent=1)


def _main_fsdp(args: argparse.Namespace) -> None:
    import gc
    import os

    import torch.distributed as dist

    from infworld.train.distributed import init_distributed, shutdown

    info = init_distributed("auto", "fsdp")  # a clear error without torchrun
    torch.cuda.set_device(info.device)
    jobs = [lambda: measure_fsdp(args.size, "256x256", 16, 1),
            lambda: measure_fsdp(args.size, "256x256", 16, 4),
            lambda: measure_fsdp(args.size, "480x832", 21, 1, reps=2)]
    rows = []
    for job in jobs:
        try:
            row = job()
        except torch.cuda.OutOfMemoryError as exc:
            row = {"error": f"out of memory: {str(exc)[:120]}"}
        row["rank"] = info.rank
        print(json.dumps(row), flush=True)
        rows.append(row)
        gc.collect()  # the last row's model and optimizer (FSDP hooks hold reference cycles)
        torch.cuda.empty_cache()
    if args.out and info.rank == 0:
        with open(args.out, "w") as fh:
            meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                    "world_size": dist.get_world_size(), "torchrun": "TORCHELASTIC_RUN_ID" in os.environ}
            json.dump({**meta, "rows": rows}, fh, indent=1)
    shutdown(info)


if __name__ == "__main__":
    main()
