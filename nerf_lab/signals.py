"""Stopping a run safely: signal handlers that ask the training loop to stop.

SIGINT, SIGTERM, SIGHUP (a closed SSH session), SIGUSR1 and SIGUSR2 (cluster launchers)
set a flag; the loop finishes its current step, saves a checkpoint and raises
:class:`TrainingInterrupted`. Long renders (previews, evaluation, turntables) check
:attr:`StopSignals.stop_requested` between views and stop there. A second Ctrl-C exits at
once. Under a launcher that installed its own SIGTERM handler (e.g. submitit), SIGTERM
only requests a checkpoint and the launcher's handler decides.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("nerf_lab")

HANDLED_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2")
    if hasattr(signal, name)
)


class TrainingInterrupted(RuntimeError):
    """Raised after a signal: the current step finished and a checkpoint was saved."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None) -> None:
        self.signum = signum
        self.step = step
        self.checkpoint = checkpoint
        super().__init__(
            f"Interrupted by {signal.Signals(signum).name} after iteration {step}; "
            f"checkpoint: {checkpoint}"
        )


class StopSignals:
    """Installs the handlers (main thread only) for the duration of ``with``."""

    def __init__(self) -> None:
        self.stop_signal: int | None = None
        self.checkpoint_requested = False
        self._old: dict[int, Any] = {}

    @property
    def stop_requested(self) -> bool:
        return self.stop_signal is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: exit at once
        old = self._old.get(signum)
        if signum == signal.SIGTERM and callable(old) and old is not signal.default_int_handler:
            # Under a cluster launcher SIGTERM announces pre-emption and the launcher's own
            # handler decides (its requeue signal follows). Checkpoint after this step.
            old(signum, frame)
            self.checkpoint_requested = True
            log.warning("Received SIGTERM under a launcher: saving a checkpoint after this step.")
            return
        self.stop_signal = signum
        log.warning(
            "Received %s: finishing the current step, then saving a checkpoint "
            "(press Ctrl-C again to exit at once).",
            signal.Signals(signum).name,
        )

    def chain(self, signum: int) -> None:
        """Hand ``signum`` on to the handler that was installed before (e.g. a launcher's
        requeue handler), if it was a Python callable."""
        old = self._old.get(signum)
        if callable(old) and old is not signal.default_int_handler:
            old(signum, None)

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopSignals]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for sig in HANDLED_SIGNALS:
            if sig == signal.SIGHUP and signal.getsignal(sig) is signal.SIG_IGN:
                continue  # started under nohup: a hangup is meant to be ignored, not a stop
            self._old[sig] = signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, old in self._old.items():
                signal.signal(sig, old)
