"""Cancel and pause: signal handlers that set flags the loop checks between micro-batches.

SIGTERM / SIGINT -> cancel (exit 130, nothing that looks finished is written);
SIGUSR1 -> pause (checkpoint now, exit 75). Library callers can call `cancel()` / `pause()`.
"""

from __future__ import annotations

import signal
import threading

EXIT_OK, EXIT_ERROR, EXIT_PAUSED, EXIT_CANCELLED = 0, 1, 75, 130


class Cancelled(Exception):
    """Raised inside the loop when a cancel was requested."""


class Control:
    def __init__(self):
        self.cancelled = threading.Event()
        self.paused = threading.Event()
        self._previous: dict[int, object] = {}

    def cancel(self, *_):
        self.cancelled.set()

    def pause(self, *_):
        self.paused.set()

    def check_cancel(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled()

    def install(self) -> "Control":
        """Route the signals here (only possible from the main thread; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig, handler in ((signal.SIGTERM, self.cancel), (signal.SIGINT, self.cancel), (signal.SIGUSR1, self.pause)):
            self._previous[sig] = signal.signal(sig, handler)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
