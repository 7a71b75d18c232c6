"""The ``diverse`` policy: action-diverse data in which the action cannot be read off the frame.

A world model learns to follow an action only if the training data shows every action from many
states and the action is not already predictable from the picture. Exploration data fails both:
in ViZDoom ``explore`` emits only "still" and "forward" moves, and its turns are sticky reactions
to walls, so a network can guess the action from frame ``t`` alone and never has to read it
(GameNGen, Valevski et al. 2024, Sec. 3.1 trains on an agent's play for the same reason: coverage
of states *and* of actions). This policy mixes two kinds of segments:

* **random segments** (share ``1 - explore_share``): short sticky commands with every axis drawn
  uniformly from {-1, 0, +1} (all nine move ids, both turn directions), held 1..``diverse_hold``
  steps, with short pitch excursions and occasional interactions; the choice is independent of
  the frame;
* **explore segments**: a few steps of the ``explore`` policy so the agent still reaches new rooms
  instead of jittering in its start room.

Grid envs (Crafter) draw from their four walking directions and noop instead of the 3 x 3 grid.
"""

from __future__ import annotations

import numpy as np

from infworld.envs.base import NOOP, Command, EnvSpec, Observation
from infworld.envs.policy_base import HEADING_CMDS, ExplorePolicy, PolicyConfig

_TRI = np.array([-1, 0, 1])


class DiversePolicy(ExplorePolicy):
    """Uniform sticky random commands mixed with exploration legs (module docstring)."""

    name = "diverse"

    def __init__(self, spec: EnvSpec, seed: int, config: PolicyConfig | None = None):
        super().__init__(spec, seed, config)
        self._segment = "random"
        self._left = 0  # steps left in the current segment
        self._cmd, self._hold = NOOP, 0

    def _act(self, obs: Observation) -> Command:
        if self._left <= 0:
            explore = self.rng.random() < self.cfg.explore_share
            self._segment = "explore" if explore else "random"
            lo, hi = (8, 30) if explore else (6, 24)
            self._left = int(self.rng.integers(lo, hi + 1))
            self._hold = 0
        self._left -= 1
        if self._segment == "explore":
            return self._explore_step(obs)
        if self._hold <= 0:
            self._hold = int(self.rng.integers(1, self.cfg.diverse_hold + 1))
            self._cmd = self._draw()
        self._hold -= 1
        return self._cmd

    def _draw(self) -> Command:
        """One command, independent of the observation."""
        if self.spec.grid:
            return [NOOP, *HEADING_CMDS.values()][int(self.rng.integers(0, 5))]
        cmd = Command(forward=int(self.rng.choice(_TRI)), right=int(self.rng.choice(_TRI)),
                      yaw=int(self.rng.choice(_TRI)) if self.spec.turn_deg > 0 else 0)
        if self.spec.has_pitch and self.rng.random() < 0.1:
            cmd = cmd.replace(pitch=int(self.rng.choice([-1, 1])))  # Policy.act levels it afterwards
        return cmd
