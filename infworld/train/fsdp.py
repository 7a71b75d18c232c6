"""FSDP2: shard a finished single-device model over the ranks of a torchrun job (as in torchtitan).

``train.parallel: fsdp`` calls :func:`apply_fsdp` on the module the task built, from outside the
model code:

1. every child of an ``nn.ModuleList``/``nn.ModuleDict`` whose attribute name is listed in
   ``train.fsdp_blocks`` (default ``blocks``: the DiT's and Wan's transformer blocks) becomes one
   FSDP unit (``torch.distributed.fsdp.fully_shard``): its parameters are all-gathered just before
   its forward and freed after, and its gradients are reduce-scattered after its backward;
2. then the root, which takes every remaining trainable parameter (embeddings, heads...).

Parameters with ``requires_grad=False`` (the frozen tokenizer inside ``WorldNet``) are passed as
``ignored_params``: they stay plain, replicated tensors, so methods that bypass ``forward`` (like
``WorldNet.encode``) keep working. Trainable parameters become ``DTensor`` shards (dim 0 split over
the ranks); the optimizer and the EMA are built on those shards, so each rank holds 1/N of the
weights, gradients, AdamW moments and EMA.

``bf16`` precision adds ``MixedPrecisionPolicy(param_dtype=bfloat16, reduce_dtype=float32)``:
the all-gathered weights and the compute are bf16, gradients are reduced and stored in fp32, and
the sharded master weights stay fp32. Gloo (CPU) all-gathers bf16 fine and never has to reduce bf16
here, since reduction runs in fp32. Activation checkpointing per unit is applied here only for
models that do not do it themselves (a model config with a ``grad_checkpointing`` field does).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.checkpoint import checkpoint

from infworld.errors import ConfigError

TORCHRUN_HINT = ("launch it with torchrun, e.g. `torchrun --nproc_per_node N -m infworld train --recipe ...` "
                 "(N = GPUs per node; N = 1 is allowed), or set train.parallel=ddp to train in one process")


def find_blocks(model: nn.Module, names: tuple[str, ...] | list[str]) -> list[tuple[str, nn.Module]]:
    """``(qualified name, module)`` of the children of every ModuleList/ModuleDict called one of ``names``,
    outermost first. Children without a trainable parameter (frozen parts) are skipped."""
    found: list[tuple[str, nn.Module]] = []
    for qual, module in model.named_modules():
        if qual.rsplit(".", 1)[-1] not in names or not isinstance(module, (nn.ModuleList, nn.ModuleDict)):
            continue
        for child_name, child in module.named_children():
            if any(p.requires_grad for p in child.parameters()):
                found.append((f"{qual}.{child_name}", child))
    # A block inside another block is sharded first (fully_shard goes bottom-up).
    return sorted(found, key=lambda item: -item[0].count("."))


def checkpoint_forward(block: nn.Module) -> None:
    """Recompute ``block``'s activations in backward (activation checkpointing), without renaming
    its parameters (``checkpoint_wrapper`` would prefix them and change the state-dict keys)."""
    inner = block.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        if block.training and torch.is_grad_enabled():
            return checkpoint(inner, *args, use_reentrant=False, **kwargs)
        return inner(*args, **kwargs)

    block.forward = forward  # type: ignore[method-assign]


def apply_fsdp(model: nn.Module, block_names: tuple[str, ...] | list[str] = ("blocks",), bf16: bool = False,
               activation_checkpointing: bool = False) -> tuple[nn.Module, list[str]]:
    """Shard ``model`` in place (units from :func:`find_blocks`, then the root); returns it and notes.

    Needs an initialised process group (torchrun). The model must already be on its device.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if not dist.is_initialized():
        raise ConfigError(f"train.parallel: 'fsdp' needs a process group; {TORCHRUN_HINT}")
    frozen = {p for p in model.parameters() if not p.requires_grad}
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 \
        else MixedPrecisionPolicy()
    blocks = find_blocks(model, tuple(block_names))
    notes = []
    if not blocks:
        notes.append(f"fsdp: no module list named {list(block_names)} with trainable parameters: the whole "
                     "model is one FSDP unit (set train.fsdp_blocks to the attribute holding the blocks)")
    for _, block in blocks:
        if activation_checkpointing:
            checkpoint_forward(block)
        fully_shard(block, mp_policy=mp, ignored_params=frozen or None)
    fully_shard(model, mp_policy=mp, ignored_params=frozen or None)
    ranks = dist.get_world_size()
    notes.append(f"fsdp: {len(blocks)} block units + root over {ranks} rank{'s' if ranks > 1 else ''}"
                 f"{', bf16 compute / fp32 reduce' if bf16 else ''}"
                 f"{', activation checkpointing per block' if activation_checkpointing else ''}")
    return model, notes


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _units(model: nn.Module) -> list[nn.Module]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]



def _param_groups(state) -> list:
    """FSDP2's parameter groups of one unit's state: a list in some torch releases, a single (or no)
    group in others (2.11 has only ``_fsdp_param_group``)."""
    groups = getattr(state, "_fsdp_param_groups", None)
    if groups is not None:
        return list(groups)
    group = getattr(state, "_fsdp_param_group", None)
    return [group] if group is not None else []

@contextmanager
def gathered(model: nn.Module) -> Iterator[nn.Module]:
    """Inside: every unit all-gathered and kept so, so any method (``encode``, a rollout engine) sees
    full weights. Collective: every rank must enter. A no-op for an unsharded model.

    Costs one full copy of the trainable weights (in the compute dtype) per rank while inside.
    """
    units = _units(model)
    if not units:
        yield model
        return
    # set_reshard_after_forward has no getter: keep FSDP's own settings to put them back after.
    saved = []
    for unit in units:
        state = unit._get_fsdp_state()
        saved.append((state, state._auto_reshard_after_forward,
                      [g.post_forward_mesh_info for g in _param_groups(state)]))
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield model
    finally:
        for unit in units:
            unit.reshard()
        for state, auto, infos in saved:
            state._auto_reshard_after_forward = auto
            for group, info in zip(_param_groups(state), infos, strict=True):
                group.post_forward_mesh_info = info


def reshard(model: nn.Module) -> None:
    """Free the gathered weights (e.g. the root's, kept after a forward without backward)."""
    for unit in _units(model):
        unit.reshard()


def full_value(x: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind a DTensor (collective), or ``x`` itself."""
    from torch.distributed.tensor import DTensor

    return x.full_tensor() if isinstance(x, DTensor) else x


@torch.no_grad()
def sync_buffers(modules: list[nn.Module | dict[str, torch.Tensor]]) -> None:
    """Broadcast rank 0's buffers (plain, replicated tensors) to every rank, as DDP does each forward.

    FSDP leaves buffers alone; running statistics updated from each rank's data would drift apart
    and the sharded checkpoint keeps only one rank's copy.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    for item in modules:
        tensors = item.buffers() if isinstance(item, nn.Module) else item.values()
        for t in tensors:
            dist.broadcast(t.data, src=0)
