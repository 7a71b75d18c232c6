"""Exponential moving average of the trainable parameters (Polyak averaging).

``shadow = d * shadow + (1 - d) * param`` after every optimizer step, with the warmup
``d = min(decay, (1 + n) / (10 + n))`` (n = number of updates so far) so that short runs are not
dominated by the random initialisation. Buffers (e.g. running latent statistics) are not averaged:
they are copied from the live model at each update so the EMA state is a complete state dict.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


class EMA:
    """EMA of ``model``'s trainable parameters plus a copy of its buffers, kept in float32."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.num_updates = 0
        self.params: dict[str, torch.Tensor] = {
            n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad
        }
        self.buffers: dict[str, torch.Tensor] = {n: b.detach().clone() for n, b in model.named_buffers()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        live = dict(model.named_parameters())
        for name, shadow in self.params.items():
            # shadow <- d * shadow + (1 - d) * param
            shadow.lerp_(live[name].detach().float(), 1.0 - d)
        for name, buf in model.named_buffers():
            self.buffers[name].copy_(buf)
        self.num_updates += 1

    @torch.no_grad()
    def store_buffers(self, model: nn.Module) -> None:
        """Keep ``model``'s current buffers as the EMA's (e.g. statistics recomputed on EMA weights)."""
        for name, buf in model.named_buffers():
            self.buffers[name].copy_(buf)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "num_updates": self.num_updates,
                "params": self.params, "buffers": self.buffers}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = set(self.params) ^ set(state["params"])
        if missing:
            raise KeyError(f"EMA parameters differ from the model's: {sorted(missing)[:5]}")
        for name, value in state["params"].items():
            self.params[name].copy_(value)
        for name, value in state.get("buffers", {}).items():
            if name in self.buffers:
                self.buffers[name].copy_(value)
        self.num_updates = int(state["num_updates"])

    def full_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """``model.state_dict()`` with the trainable parameters and buffers replaced by the EMA's."""
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        for name, value in {**self.params, **self.buffers}.items():
            if name in state:
                state[name] = value.to(state[name].dtype).clone()
        return state

    @contextmanager
    def swapped(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the EMA weights into ``model`` (e.g. for evaluation), then restore."""
        backup = {n: p.detach().clone() for n, p in model.named_parameters() if n in self.params}
        buf_backup = {n: b.detach().clone() for n, b in model.named_buffers()}
        live = dict(model.named_parameters())
        live_buf = dict(model.named_buffers())
        with torch.no_grad():
            for name, value in self.params.items():
                live[name].copy_(value)
            for name, value in self.buffers.items():
                live_buf[name].copy_(value)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, value in backup.items():
                    live[name].copy_(value)
                for name, value in buf_backup.items():
                    live_buf[name].copy_(value)
