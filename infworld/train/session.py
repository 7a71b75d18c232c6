"""Per-session helpers of the trainer (trainer.py): stop signals and the window of logged metrics."""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any

from infworld.train.distributed import DistInfo, mean_across
from infworld.train.logging import RunLogger


class GracefulStop:
    """SIGTERM (cluster preemption, ``kill``) or a first Ctrl-C end the session after the current
    step, with evaluation and a checkpoint, like the time budget; a second Ctrl-C aborts at once."""

    def __init__(self) -> None:
        self.reason = ""
        self._old: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.reason and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.reason = f"stopped by {signal.Signals(signum).name}"
        if signum == signal.SIGINT:
            print("\ninterrupt: finishing this step and saving (Ctrl-C again to abort)", file=sys.stderr)

    @property
    def requested(self) -> bool:
        return bool(self.reason)

    def restore(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}


class LogWindow:
    """Step metrics summed since the last log line; ``flush`` logs their means across ranks."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.n, self.t0 = 0, time.monotonic()

    def add(self, values: dict[str, Any]) -> None:
        """Add one step's values (floats or 0-d tensors)."""
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.n += 1

    def flush(self, step: int, lr: float, logger: RunLogger, info: DistInfo) -> None:
        """Log the means (a collective: every rank calls it) with ``lr`` and the step rate, then
        start a new window."""
        elapsed = time.monotonic() - self.t0
        means = mean_across({k: v / self.n for k, v in self.sums.items()}, info)
        means["lr"] = lr
        means["steps_per_s"] = self.n / max(elapsed, 1e-9)
        logger.log(step, means)
        logger.progress(step, {k: means[k] for k in ("loss", "lr", "steps_per_s")})
        self._reset()
