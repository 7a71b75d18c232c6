"""Seeded exploration policies that turn observations (pose, depth) into unified commands.

Long-horizon memory is only learnable from trajectories that come back to places already seen
(Infinite-World, arXiv 2602.02393, Sec. 3.4 "revisit-dense finetuning"; VRAG, arXiv 2505.21996,
retrieves past frames by pose). Three policies make such data from any :class:`Env` (a fourth,
``diverse``, makes action-diverse data for action following; a fifth, ``craft``, plays Crafter's
tech tree and returns to what it changed, craft_policy.py); :func:`make_policy` builds them by name.
``random`` and ``explore`` live with the shared machinery in policy_base.py, ``revisit`` and
``diverse`` (both extend ``explore``) in revisit_policy.py and diverse_policy.py:

* ``random``: sticky random commands with momentum (each kept for a random duration).
* ``explore``: walks forward, turns away from walls (depth buffer ahead, or a position stall when
  there is no depth), and steers toward the least-visited cells to cover new ground. When blocked
  it interacts with what is in front ("use" opens Doom doors, Crafter's "do" collects a tree).
* ``revisit``: a seeded mix of segments that return to earlier poses by steering on the pose:
  out-and-back (explore, retrace the path to where the leg began, often walk the leg out again),
  loops (a full circle, or a square on a grid, then home), full 360-degree turns, and returns to a
  random pose seen at least ``min_return_gap`` steps earlier. First-person returns mostly *rewind*:
  they walk the old path back (backward/strafing) while keeping the heading it had, so every frame
  repeats an old view rather than the reverse one, and each return ends by turning to the earlier
  heading and pitch. Revisits are counted on views (place and heading), as in
  :mod:`infworld.data.revisits`.

Every policy sometimes interacts (``interact_prob``, ids drawn by ``EnvSpec.interact_weights``) so
the world changes, and on envs with pitch makes short look-up/down excursions and otherwise keeps
the view level. Grid envs (Crafter) reuse the same logic with the four screen directions.
"""

from __future__ import annotations

from infworld.envs.base import EnvSpec
from infworld.envs.craft_policy import CraftPolicy
from infworld.envs.diverse_policy import DiversePolicy
from infworld.envs.policy_base import ExplorePolicy, Policy, PolicyConfig, RandomPolicy
from infworld.envs.revisit_policy import RevisitPolicy
from infworld.errors import EnvError

__all__ = ["POLICIES", "CraftPolicy", "DiversePolicy", "ExplorePolicy", "Policy", "PolicyConfig",
           "RandomPolicy", "RevisitPolicy", "make_policy"]

_CLASSES: dict[str, type[Policy]] = {"random": RandomPolicy, "explore": ExplorePolicy,
                                     "revisit": RevisitPolicy, "diverse": DiversePolicy,
                                     "craft": CraftPolicy}
POLICIES: tuple[str, ...] = tuple(_CLASSES)


def make_policy(name: str, spec: EnvSpec, seed: int, config: PolicyConfig | None = None) -> Policy:
    """Build policy ``name`` for ``spec``; EnvError lists the valid names."""
    if name not in _CLASSES:
        raise EnvError(f"unknown policy {name!r}; valid policies: {', '.join(POLICIES)}")
    return _CLASSES[name](spec, seed, config)
