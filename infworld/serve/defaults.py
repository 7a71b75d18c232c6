"""The shipped default world model and memory, and the short names they go by.

``doom-tiny`` is the name people and agents use (``infworld.make_env("doom-tiny")``, ``infworld play``);
it points at the exported model under ``checkpoints/`` and the memory strategy the benchmark found
best with it: ``doom-tiny-world`` (v2) with ``vrag`` retrieval (stored frames as plain context;
16.9 dB revisit PSNR against 15.8 for the window and 17.0 for the full-history oracle on doom-v1,
see benchmarks/results/bench/doom-tiny-world/), reading 16 frames (20.74 dB on doom-v2 against 20.27
with 8; ``ALIAS_MEMORY_CFG``). The memory-trained ``doom-tiny-mem`` (memory v6: the
memory pathway trained on the frozen v2 backbone) is the alternative for pose-free memory:
``infworld play --model doom-tiny-mem --memory hpmc`` (docs/memory.md, "Memory v6").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DEFAULT_MODEL = "doom-tiny-world"
DEFAULT_MEMORY = "vrag"

# alias -> (model name or path, memory strategy)
MODEL_ALIASES: dict[str, tuple[str, str]] = {
    "doom-tiny": (DEFAULT_MODEL, DEFAULT_MEMORY),
    # Crafter: the local window. The pose-based memories would have to dead-reckon while playing, and
    # the dead reckoner integrates first-person moves along the heading, not Crafter's screen-frame
    # moves; none of them kept a change on crafter-v1 either (docs/crafter.md).
    "crafter-tiny": ("crafter-tiny", "window"),
    # the few-step student of doom-tiny-world (docs/distill.md), with the same memory
    "doom-tiny-fast": ("doom-tiny-student", DEFAULT_MEMORY),
}


# alias -> settings of its default memory, where the benchmark ranked other settings than the model's
# recorded ones first. doom-tiny: vrag with 16 retrieved frames, 20.74 dB revisit PSNR on doom-v2
# against 20.27 with 8 (benchmarks/results/memory-v6/budget16-plain/, base-vrag16/) for 9% of the
# play speed (benchmarks/results/play_speed_vrag16.json).
ALIAS_MEMORY_CFG: dict[str, dict[str, Any]] = {
    "doom-tiny": {"budget": 16},
}


def resolve_alias(name: str, memory: str | None = None) -> tuple[str, str]:
    """(model, memory) for ``name``: an alias gives its model and default memory; anything else
    (a model name or folder) is returned as is with ``DEFAULT_MEMORY``. An explicit ``memory`` wins."""
    model, default_memory = MODEL_ALIASES.get(name, (name, DEFAULT_MEMORY))
    return model, memory or default_memory


def alias_memory_cfg(name: str, memory: str | None = None,
                     memory_cfg: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """Memory settings for ``name`` with ``memory``: the alias's (ALIAS_MEMORY_CFG) when its default
    memory is used, updated with the caller's ``memory_cfg`` (the caller's values win); None if
    neither gives any. Another memory than the alias's gets only the caller's settings."""
    out: dict[str, Any] = {}
    if name in ALIAS_MEMORY_CFG and memory in (None, MODEL_ALIASES[name][1]):
        out.update(ALIAS_MEMORY_CFG[name])
    out.update(memory_cfg or {})
    return out or None
