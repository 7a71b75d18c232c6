"""The one check that a torch device exists here, before a model is loaded onto it.

Loading a model onto a missing accelerator fails deep inside torch with messages such as
"pin_memory=True requires a CUDA or other accelerator backend"; :func:`check_device` says what is
wrong instead. Used by :func:`infworld.models.loading.load_model` (so ``WorldModel.from_pretrained``
and every other loader) and by the CLI's ``--device`` flags.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from infworld.errors import DeviceError

if TYPE_CHECKING:
    import torch

KNOWN = "expected cpu, cuda, cuda:N or mps"


def check_device(device: str | torch.device, what: str = "device") -> torch.device:
    """``device`` as a torch.device when torch can use it here; DeviceError otherwise.

    ``what`` names the setting in the message (``"--device"`` in the CLI, ``"map_location"``...).
    """
    import torch  # lazily: the CLI checks its flags before the heavy imports

    cpu = f"{what} cpu" if what.startswith("--") else "'cpu'"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(f"{what} {device!r}: not a torch device ({KNOWN})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch is a CPU-only build" if torch.version.cuda is None
                   else f"torch {torch.__version__} sees no CUDA GPU")
            raise DeviceError(f"{what} {device}: CUDA is not available ({why}); use {cpu}")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise DeviceError(f"{what} {device}: this machine has {count} CUDA device(s), "
                              f"cuda:0..cuda:{count - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"{what} {device}: Apple MPS is not available here; use {cpu}")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"{what} {device}: unsupported device type {dev.type!r} ({KNOWN})")
    return dev
