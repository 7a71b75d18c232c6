"""The shipped default world model and memory, and the short names they go by.

``doom-tiny`` is the name people and agents use (``infworld.make_env("doom-tiny")``, ``infworld play``);
it points at the exported model under ``checkpoints/`` and the memory strategy the benchmark found
best with it: ``doom-tiny-world`` (v2) with ``vrag`` retrieval (stored frames as plain context;
16.9 dB revisit PSNR against 15.8 for the window and 17.0 for the full-history oracle on doom-v1,
see benchmarks/results/bench/doom-tiny-world/). The memory-trained ``doom-tiny-mem`` (memory v6: the
memory pathway trained on the frozen v2 backbone) is the alternative for pose-free memory:
``infworld play --model doom-tiny-mem --memory hpmc`` (docs/memory.md, "Memory v6").
"""

from __future__ import annotations

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


def resolve_alias(name: str, memory: str | None = None) -> tuple[str, str]:
    """(model, memory) for ``name``: an alias gives its model and default memory; anything else
    (a model name or folder) is returned as is with ``DEFAULT_MEMORY``. An explicit ``memory`` wins."""
    model, default_memory = MODEL_ALIASES.get(name, (name, DEFAULT_MEMORY))
    return model, memory or default_memory
