"""The one thread that runs torch in a serving process.

Every OS thread that runs a parallel torch op gets its own OpenMP team of worker threads. Once a
process has more OpenMP workers than cores, GNU OpenMP (torch's) stops spinning between parallel
regions and sleeps on a futex instead, and a decoding step, over a thousand small parallel ops,
pays a wake-up for each: measured on the 2-core CPU machine, one idle thread that had once run a
single matmul took 8 clients from 101-123 to 76-78 generated tokens/s. Loading a model in a
request thread, hot-loading an adapter or scoring in an evaluation thread did exactly that.

So the model work of every engine (its steps), model and adapter loading, and scoring run here,
one after the other: `call(fn)` runs `fn` between two steps and returns its result (or raises
its exception) in the calling thread.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future


class ComputeThread:
    def __init__(self) -> None:
        self.cond = threading.Condition()  # guards the queues; engines notify it when work arrives
        self._calls: deque[tuple[Future, object, tuple, dict]] = deque()
        self._engines: list = []  # objects with `has_work()` and `step()`
        self._thread: threading.Thread | None = None

    def call(self, fn, *args, **kwargs):
        """Run `fn(*args, **kwargs)` on the compute thread (directly when already on it) and wait."""
        if threading.current_thread() is self._thread:
            return fn(*args, **kwargs)
        future: Future = Future()
        with self.cond:
            self._calls.append((future, fn, args, kwargs))
            self._start()
            self.cond.notify()
        return future.result()

    def add(self, engine) -> None:
        with self.cond:
            self._engines.append(engine)
            self._start()

    def remove(self, engine) -> None:
        with self.cond:
            if engine in self._engines:
                self._engines.remove(engine)

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="tunery-compute", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self._calls and not any(e.has_work() for e in self._engines):
                    self.cond.wait()
                calls, self._calls = self._calls, deque()
                busy = [e for e in self._engines if e.has_work()]
            for future, fn, args, kwargs in calls:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args, **kwargs))
                    except BaseException as exc:  # handed to the caller, never kills the thread
                        future.set_exception(exc)
            for engine in busy:  # one step each, round robin: no engine starves another
                engine.step()


COMPUTE = ComputeThread()
