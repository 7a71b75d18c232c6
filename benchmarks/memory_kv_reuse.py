"""Per-chunk cost of the memory context with and without keeping memory frames' keys/values
(RolloutConfig.reuse_memory_kv, infworld/memory/kv_reuse.py).

    python benchmarks/memory_kv_reuse.py [--frames 200] [--chunks 8] [--threads 1]

The ``full`` oracle (plain presentation) on a DiT of the doom-tiny size (dim 192, depth 6, 6 heads,
patch 4, latents 8 x 16 x 16, random weights: cost does not depend on the weights) with the isolated
memory layout. The memory is filled until a read returns ``--frames`` frames; then every chunk writes
4 new frames and builds the next chunk's memory context (read + DiT encoding at t = 0), timed. Without
reuse every chunk encodes all ~``frames`` memory frames; with it only the 4 that just left the local
window. Prints ms per chunk both ways (median and mean over the chunks), the frames encoded per chunk,
and the largest difference between the two ways' keys. The machine may be shared: the load average is
printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from infworld.memory.context import MemoryLayout
from infworld.memory.kv_reuse import MemoryPrefix
from infworld.memory.registry import make_memory
from infworld.models.action import ActionConfig
from infworld.models.dit import DiT, DiTConfig
from infworld.models.kvcache import PastKV

CHUNK, WINDOW, SPAN = 4, 16, 32


def doom_tiny_dit() -> DiT:
    torch.manual_seed(0)
    cfg = DiTConfig(in_channels=8, latent_size=(16, 16), patch_size=4, dim=192, depth=6, num_heads=6,
                    max_frames=WINDOW, num_frame_kinds=3, action_adaln=True,
                    actions=ActionConfig(num_interact=2))
    return DiT(cfg).eval()


def run(dit: DiT, reuse: bool, frames: int, chunks: int) -> tuple[list[float], list[int], PastKV]:
    """Times (s) and frames encoded per timed chunk, and the last chunk's context."""
    memory = make_memory("full", budget=frames + CHUNK * chunks, local_window=WINDOW, plain=True)
    prefix = MemoryPrefix(memory, MemoryLayout("isolated", SPAN), reuse=reuse)
    g = torch.Generator().manual_seed(1)
    index = 0

    def write(n: int) -> None:
        nonlocal index
        acts = {"move": torch.randint(0, 9, (1, n), generator=g),
                "view": torch.randint(0, 9, (1, n), generator=g),
                "interact": torch.zeros(1, n, dtype=torch.long)}
        memory.write(torch.randn(1, n, 8, 16, 16, generator=g), acts, None, index)
        index += n

    write(frames + WINDOW - 1)  # a read now returns ``frames`` frames
    secs, encoded, past = [], [], None
    with torch.inference_mode():
        prefix.past(dit, index, 0.0, None)  # warm-up (and, with reuse, the first full encoding)
        for _ in range(chunks):
            write(CHUNK)
            prefix.invalidate()
            before = prefix.cache.computed if prefix.cache is not None else 0
            t0 = time.perf_counter()
            past = prefix.past(dit, index, 0.0, None)
            secs.append(time.perf_counter() - t0)
            after = prefix.cache.computed if prefix.cache is not None else before + past.num_frames
            encoded.append(after - before)
    return secs, encoded, past


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=200, help="memory frames a read returns at the start")
    ap.add_argument("--chunks", type=int, default=8, help="timed chunks")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dit = doom_tiny_dit()
    last = args.frames + CHUNK * args.chunks
    print(f"full (plain), isolated layout, doom-tiny-size DiT, {args.frames}..{last} memory frames, "
          f"chunk {CHUNK}, {args.threads} thread(s); load average {os.getloadavg()}")
    pasts = {}
    for reuse in (False, True):
        secs, encoded, pasts[reuse] = run(dit, reuse, args.frames, args.chunks)
        ms = [1000 * s for s in secs]
        print(f"reuse {'on ' if reuse else 'off'}: {statistics.median(ms):8.1f} ms/chunk median, "
              f"{statistics.mean(ms):8.1f} mean; frames encoded per chunk {encoded}")
    diff = max(float((a - b).abs().max()) for a, b in zip(pasts[False].keys, pasts[True].keys, strict=True))
    print(f"largest key difference on/off (last chunk): {diff:.2e}; load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
