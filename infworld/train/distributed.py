"""Multi-process training, applied from outside the model code (as in torchtitan).

The model files are written for one device. ``torchrun --nproc_per_node N -m infworld train ...``
sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``; :func:`init_distributed`
reads them and joins the process group (NCCL on CUDA, Gloo on CPU), and :func:`parallelize` wraps
the finished single-device module: ``parallel: ddp`` replicates it (DistributedDataParallel),
``parallel: fsdp`` shards it with FSDP2 (fsdp.py: ``fully_shard`` per block, then on the root).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from infworld.errors import ConfigError


@dataclass
class DistInfo:
    """Where this process sits. ``world_size == 1`` means plain single-process training."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # this process called init_process_group (so it also tears it down)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r}: expected an int") from None


def pick_device(device: str, local_rank: int) -> torch.device:
    """``auto``: this rank's GPU when CUDA is available, else CPU."""
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("train.device: 'cuda' requested but torch.cuda.is_available() is False")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device: str = "auto", parallel: str = "ddp") -> DistInfo:
    """Join the process group described by torchrun's environment variables (if any).

    ``parallel="fsdp"`` requires torchrun (even with one process: ``--nproc_per_node 1``), since a
    sharded run must not silently train unsharded; a plain ``python -m infworld train`` raises.
    """
    launched = all(os.environ.get(k) for k in ("WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))
    if parallel == "fsdp" and not launched:
        from infworld.train.fsdp import TORCHRUN_HINT

        raise ConfigError("train.parallel: 'fsdp' shards the model over the processes of a torchrun job, "
                          "but this is a plain process (WORLD_SIZE/MASTER_ADDR/MASTER_PORT unset): "
                          f"{TORCHRUN_HINT}")
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    dev = pick_device(device, local_rank)
    owns = False
    if (world_size > 1 or parallel == "fsdp") and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        owns = True
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev, owns_group=owns)


def shutdown(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        # Every rank must be done with gloo before any rank tears its connections down: a rank that
        # destroys the group while a peer is still in a collective makes that peer abort
        # ("terminate called without an active exception", seen ~1 run in 4 without this barrier).
        dist.barrier()
        dist.destroy_process_group()


def parallelize(model: nn.Module, info: DistInfo, parallel: str = "ddp", find_unused_parameters: bool = False,
                fsdp_blocks: tuple[str, ...] = ("blocks",), bf16: bool = False,
                activation_checkpointing: bool = False, notes: list[str] | None = None) -> nn.Module:
    """Wrap the single-device ``model`` for data parallelism; a no-op for one process under DDP.

    Only parameters with ``requires_grad`` are synchronised (a frozen tokenizer inside the world
    model costs nothing). The task's ``loss`` must call the wrapper (``model(...)``) so the gradient
    hooks run; use :func:`unwrap` for anything else (EMA, evaluation, export).
    ``find_unused_parameters`` is needed when some trainable parameters get no gradient in a step.
    ``fsdp`` shards ``model`` in place (see fsdp.py for ``fsdp_blocks``, ``bf16`` and
    ``activation_checkpointing``) and returns it: build the optimizer and EMA after this call.
    """
    if parallel == "fsdp":
        from infworld.train.fsdp import apply_fsdp

        model, fsdp_notes = apply_fsdp(model, fsdp_blocks, bf16=bf16,
                                       activation_checkpointing=activation_checkpointing)
        if notes is not None:
            notes.extend(fsdp_notes)
        return model
    if parallel != "ddp":
        raise ConfigError(f"train.parallel: expected 'ddp' or 'fsdp', got {parallel!r}")
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused_parameters)


def unwrap(model: nn.Module) -> nn.Module:
    """The single-device module inside a DDP wrapper (an FSDP2 model is its own module)."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def mean_across(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average float metrics over ranks (for logging the global-batch loss).

    Ranks may report different keys (a metric of a data-dependent case, e.g. ``loss_prefix`` only
    when a clip drew a prefix): each key is averaged over the ranks that have it.
    """
    if not info.enabled:
        return values
    names: list[list[str]] = [[] for _ in range(info.world_size)]
    dist.all_gather_object(names, sorted(values))
    keys = sorted({k for rank_keys in names for k in rank_keys})
    if not keys:
        return values
    # (K, 2): sum of the values, number of ranks that have the key
    t = torch.tensor([[float(values.get(k, 0.0)), float(k in values)] for k in keys], dtype=torch.float64,
                     device=info.device)
    dist.all_reduce(t)
    return {k: s / n for k, (s, n) in zip(keys, t.tolist(), strict=True)}


def any_rank(flags: list[bool], info: DistInfo) -> list[bool]:
    """For each flag, True on every rank if it is True on any rank (so all ranks stop together)."""
    if not info.enabled:
        return list(flags)
    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v > 0) for v in t.tolist()]


def gather_to_main(obj: Any, info: DistInfo) -> list[Any] | None:
    """Every rank's ``obj`` as a list on rank 0 (``None`` elsewhere); ``[obj]`` without DDP."""
    if not info.enabled:
        return [obj]
    out: list[Any] | None = [None] * info.world_size if info.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def check_replicas_in_sync(model: nn.Module, info: DistInfo, tol: float = 1e-5) -> None:
    """Raise if ranks hold different trainable parameters (gradients were not synchronised).

    Compares a cheap fingerprint (sum and sum of squares of each tensor) across ranks. Sharded
    (FSDP) parameters differ across ranks by design and are not checked.
    """
    from torch.distributed.tensor import DTensor

    if not info.enabled:
        return
    params = [p.detach() for p in unwrap(model).parameters() if p.requires_grad]
    if any(isinstance(p, DTensor) for p in params):
        return
    params = [p.float() for p in params]
    fp = torch.stack([torch.stack([p.sum(), p.pow(2).sum()]) for p in params]).flatten().double()
    lo, hi = fp.clone(), fp.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    gap = float(((hi - lo).abs() / (hi.abs() + 1.0)).max())
    if gap > tol:
        raise ConfigError(
            f"model replicas diverged across ranks (relative gap {gap:.2e}): the task's loss() must run "
            "the module through model(...) so DDP averages gradients"
        )
