"""How the streaming engine (infworld/world.py) generates: chunk, sampler, cache and play-speed settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from infworld.diffusion.samplers import SamplerConfig
from infworld.errors import ConfigError
from infworld.sliding import check_sliding


@dataclass
class RolloutConfig:
    """How the engine generates: frames per chunk, sampler, cache on/off (off = full recompute,
    unbounded, for reference only), cache dtype, the noise seed, and ``context_noise``: the noise
    level at which finished frames enter the context (GameNGen's context noise augmentation at
    inference; the model must be trained with ``forcing.context_noise`` >= it), and
    ``reuse_memory_kv``: keep memory frames' keys/values between chunks while the memory returns them
    (memory/kv_reuse.py, isolated layout; memory/causal_reuse.py, causal; off = re-encode, for A/B),
    ``memory_every``: frames between memory reads (0 = the chunk: one read per chunk of frames however
    they are requested, e.g. one frame per step in play; see MemoryPrefix), and
    ``fold_commit``: run the finished frames' cache pass inside the next chunk's first DiT call
    (pending_commit.py; exact without a memory prefix), and ``seam``: "causal" (strict chunk
    causality) or "sliding" (two chunks in flight, needs the next chunk's actions; sliding.py)."""

    chunk: int = 4
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    use_cache: bool = True
    cache_dtype: str = "float32"
    seed: int = 0
    context_noise: float = 0.0
    reuse_memory_kv: bool = True
    memory_every: int = 0
    fold_commit: bool = False
    seam: str = "causal"

    def check(self) -> None:
        self.sampler.check()
        if not isinstance(self.reuse_memory_kv, bool):
            raise ConfigError(f"rollout reuse_memory_kv: expected a bool, got {self.reuse_memory_kv!r}")
        if not isinstance(self.fold_commit, bool):
            raise ConfigError(f"rollout fold_commit: expected a bool, got {self.fold_commit!r}")
        every = self.memory_every
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ConfigError(f"rollout memory_every: expected frames between memory reads >= 1 (0 = the "
                              f"chunk), got {self.memory_every!r}")
        check_sliding(self.seam, self.sampler.name, self.sampler.steps, self.fold_commit)
        if not 0.0 <= self.context_noise < 1.0:
            raise ConfigError(f"rollout context_noise: expected a noise level in 0..1 (exclusive), got "
                              f"{self.context_noise}")
