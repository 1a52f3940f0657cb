"""Interrupts (Ctrl-C, cluster preemption) as a flag checked between compiled calls."""

import os
import signal
import sys
import threading
from types import FrameType


# Exit codes are 128 + the signal number (the shell's convention): 130 SIGINT, 143 SIGTERM,
# 138 SIGUSR1. Schedulers treat them as "killed by a signal", so a requeue wrapper can tell
# them from a failure (exit code 1-3).
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


def exit_code(signum: int) -> int:
    """The process exit code after stopping for signal `signum`."""
    return 128 + signum


class Interrupted(Exception):
    """The run stopped for a signal after checkpointing; the message is the line to print."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = exit_code(signum)


class StopRequest:
    """While entered (main thread only), SIGINT, SIGTERM and SIGUSR1 set `signum`.

    The first signal asks the run to stop at the next safe point; a second one exits at once
    (`os._exit`) with one line and no traceback, leaving the last complete checkpoint.
    """

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            print(
                f"\n{signal.Signals(signum).name} again: quitting now; the last complete "
                "checkpoint is kept",
                file=sys.stderr,
                flush=True,
            )
            os._exit(exit_code(signum))
        self.signum = signum
        print(
            f"\n{signal.Signals(signum).name}: stopping after the current chunk "
            "(interrupt again to quit at once)",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
