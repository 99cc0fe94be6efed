"""Evaluations run in the background of the server, one at a time, through the serving registry.

State lives in memory: an evaluation is a short-lived computation whose results a client (or the
dashboard) reads back; a server restart forgets them (the numbers can be recomputed, and `tunery
eval --json` keeps them in a file).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field

from tunery.eval.dataset import EvalError
from tunery.eval.evaluate import Plan, run_plan

log = logging.getLogger("tunery.eval")


@dataclass
class EvalState:
    id: str
    project_id: str
    plan: Plan
    request: dict  # what the client asked for, echoed back
    created_at: int = field(default_factory=lambda: int(time.time()))
    status: str = "queued"  # queued | running | succeeded | failed
    finished_at: int | None = None
    completed: int = 0
    results: list[dict] = field(default_factory=list)
    error: str | None = None

    @property
    def total(self) -> int:
        return len(self.plan.runs()) * self.plan.steps_per_run


class EvaluationService:
    def __init__(self, registry):
        self.registry = registry
        self._states: dict[str, EvalState] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="tunery-evaluations", daemon=True)
        self._thread.start()

    def submit(self, project_id: str, plan: Plan, request: dict) -> EvalState:
        state = EvalState(f"eval-{uuid.uuid4().hex[:24]}", project_id, plan, request)
        with self._lock:
            self._states[state.id] = state
        self._queue.put(state.id)
        return state

    def get(self, project_id: str, eval_id: str) -> EvalState | None:
        state = self._states.get(eval_id)
        return state if state is not None and state.project_id == project_id else None

    def list(self, project_id: str) -> list[EvalState]:
        with self._lock:
            return sorted((s for s in self._states.values() if s.project_id == project_id), key=lambda s: (s.created_at, s.id), reverse=True)

    def _work(self) -> None:
        while True:
            state = self._states[self._queue.get()]
            state.status = "running"

            def advance(k: int, state=state) -> None:
                state.completed += k

            try:
                state.results, _ = run_plan(state.plan, self.registry, progress=advance)
                state.status = "succeeded"
            except EvalError as exc:
                state.error, state.status = str(exc), "failed"
            except Exception as exc:  # a model that fails to load or generate fails this evaluation only
                log.exception("evaluation %s failed", state.id)
                state.error, state.status = f"{type(exc).__name__}: {exc}", "failed"
            state.finished_at = int(time.time())
