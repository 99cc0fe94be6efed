"""The job worker: validates new jobs' files, claims queued jobs, runs each in a training
subprocess, and writes what happens into the database as it happens.

In-process (`start(store)`, called by the API's lifespan) or standalone (`tunery worker`): any
number of workers can share one database and data folder; claiming is atomic (`queue.claim_next`).
Settings (environment `TUNERY_WORKER_<NAME>`, or `[worker] <name> = …` in config.toml):
`concurrency` (default one job per GPU, each subprocess seeing only its GPU; one on a CPU-only
machine), `poll_s` (1.0: how often the queue and job statuses are read), `heartbeat_s` (5.0),
`stale_after_s` (30: a job whose worker has not written a heartbeat for this long is orphaned),
`grace_s` (60: how long a signalled trainer may take to checkpoint before it is killed).

A legacy job's result file (`compiled_results.csv`, legacy columns, optional classification
metrics) is made after training by a follow-up subprocess (`legacy_results`); the job stays
`running` meanwhile and succeeds even when that step fails (a warning event says so).

Restart safety: stopping a worker (server shutdown) pauses its running jobs (the trainer
checkpoints) and puts them back in the queue to resume; a job whose worker died (no heartbeat,
or its process is gone) is re-queued to resume from its last checkpoint by the next worker that
starts, or failed after `queue.MAX_ATTEMPTS` interruptions.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import select

from tunery.jobs import legacy_results, queue, states
from tunery.jobs.runner import DEFAULT_GRACE_S, Outcome, TrainingProcess, watch
from tunery.jobs.validate import check_job_file
from tunery.store import catalog
from tunery.store import files as files_repo
from tunery.store.context import Store
from tunery.store.db import now
from tunery.store.jobs import Job
from tunery.store.keys import Project

log = logging.getLogger("tunery.jobs")

OPENAI_HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier")
LEVELS = {"warning": "warn", "warn": "warn", "error": "error", "critical": "error"}


def _setting(store: Store, name: str, default: float) -> float:
    env = os.environ.get(f"TUNERY_WORKER_{name.upper()}")
    value = env if env else (store.settings.extra.get("worker") or {}).get(name, default)
    return float(value)


def _gpu_slots() -> list[str | None]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
        return ids or [None]
    try:
        import torch  # only to count GPUs; the server imports it for serving anyway

        return [str(i) for i in range(torch.cuda.device_count())] or [None]
    except Exception:
        return [None]


def job_dir(store: Store, job_id: str) -> Path:
    return Path(store.settings.data_dir) / "jobs" / job_id


def org_name(project: Project | None) -> str:
    """The `{org}` part of model names: the project's name, reduced to name-safe characters."""
    name = project.name if project else "tunery"
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name).strip("-")
    return safe or "tunery"


def model_name_for(session, job: Job) -> str:
    """The new model's name; a fine-tune of a fine-tune keeps the original base in its name, as at OpenAI."""
    from tunery.models import naming

    org = org_name(session.get(Project, job.project_id))
    parsed = naming.parse_model_name(job.model)
    base = parsed.base if parsed is not None else job.model
    if job.legacy:
        return naming.legacy_fine_tuned_model_name(base, org, job.suffix, job.created_at)
    return naming.fine_tuned_model_name(base, org, job.suffix, job.id)


def start_model(store: Store, session, job: Job, folder: Path) -> tuple[str, Path | None]:
    """(the local spec the trainer starts from, an adapter to merge into `folder/start-model` first).

    `tunery.store.catalog` answers what `job.model` means in the job's project at run time (the
    trainer then never sees a client's name): a base model's configured spec, or the weights of the
    project's fine-tuned model to continue from (full weights as they are; an adapter merged into
    its base, which the new fine-tune then starts from). `ModelNotAvailable` when it is gone."""
    found = catalog.resolve(session, store.settings, job.project_id, job.model)
    if found.fine_tuned is None:
        return found.base_spec or str(found.path), None
    if found.kind == "full":
        return str(found.path), None
    return str(folder / "start-model"), found.path


class Worker:
    def __init__(
        self,
        store: Store,
        *,
        concurrency: int | None = None,
        poll_s: float = 1.0,
        heartbeat_s: float = 5.0,
        stale_after_s: float = 30.0,
        grace_s: float = DEFAULT_GRACE_S,
        command: list[str] | None = None,
    ) -> None:
        self.store = store
        self.id = queue.new_worker_id()
        slots = _gpu_slots()
        n = int(concurrency) if concurrency else len(slots)
        self.slots: list[str | None] = [slots[i % len(slots)] for i in range(n)]
        self.poll_s, self.heartbeat_s, self.stale_after_s, self.grace_s = poll_s, heartbeat_s, stale_after_s, grace_s
        self.command = command
        self.stopping = threading.Event()
        self.active: dict[str, threading.Thread] = {}
        self.free_slots = list(self.slots)
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, name="tunery-worker", daemon=True)
        self._last_recovery = 0.0

    @classmethod
    def from_settings(cls, store: Store, **overrides) -> "Worker":
        """A worker configured by `TUNERY_WORKER_*` / `[worker]` (see the module doc); `overrides` win."""
        values = {name: _setting(store, name, default) for name, default in
                  (("concurrency", 0), ("poll_s", 1.0), ("heartbeat_s", 5.0), ("stale_after_s", 30.0), ("grace_s", DEFAULT_GRACE_S))}
        values["concurrency"] = int(values["concurrency"]) or None
        values.update({k: v for k, v in overrides.items() if v})
        return cls(store, **values)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "Worker":
        log.info("worker %s started (%d slot(s))", self.id, len(self.slots))
        self.thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Pause running jobs (their trainers checkpoint), re-queue them to resume, and return."""
        self.stopping.set()
        deadline = time.monotonic() + (timeout if timeout is not None else self.grace_s + 10)
        self.thread.join(max(0.0, deadline - time.monotonic()))
        for t in list(self.active.values()):
            t.join(max(0.0, deadline - time.monotonic()))

    def run_forever(self) -> None:
        self.start()
        try:
            while self.thread.is_alive():
                self.thread.join(1.0)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.tick()
            except Exception:  # the database may be briefly locked or gone; try again next tick
                log.exception("worker tick failed")
            self.stopping.wait(self.poll_s)

    def tick(self) -> None:
        """One round: recover orphaned jobs, validate new ones, start queued ones in free slots."""
        if time.monotonic() - self._last_recovery > min(self.stale_after_s / 2, 10):
            self._last_recovery = time.monotonic()
            with self.store.db.session_scope() as session:
                for job_id, status in queue.recover_orphans(session, int(self.stale_after_s)):
                    log.warning("job %s: worker lost; now %s", job_id, status)
        self.validate_pending()
        while not self.stopping.is_set():
            with self.lock:
                if not self.free_slots:
                    return
            with self.store.db.session_scope() as session:
                job = queue.claim_next(session, self.id)
            if job is None:
                return
            with self.lock:
                slot = self.free_slots.pop(0)
                t = threading.Thread(target=self._run, args=(job.id, slot), name=f"tunery-job-{job.id}", daemon=True)
                self.active[job.id] = t
            t.start()

    # --- validating_files --------------------------------------------------------------------

    def validate_pending(self) -> None:
        with self.store.db.session_scope() as session:
            pending = session.scalars(select(Job).where(Job.status == states.VALIDATING_FILES).order_by(Job.seq).limit(20)).all()
            for job in pending:
                kind = (job.method or {}).get("type", "supervised")
                verdicts = [check_job_file(self.store.blobs, files_repo.get_file(session, job.project_id, job.training_file),
                                           job.training_file, "training_file", kind)]
                if job.validation_file:
                    verdicts.append(check_job_file(self.store.blobs, files_repo.get_file(session, job.project_id, job.validation_file),
                                                   job.validation_file, "validation_file", kind))
                error = next((v.error for v in verdicts if v.error), None)
                if error is None and not all(v.ready for v in verdicts):
                    continue  # an upload check is still running
                if error is not None:
                    if queue.transition(session, job.id, states.FAILED, [states.VALIDATING_FILES], error=error):
                        queue.add_event(session, job.id, error["message"], level="error")
                elif queue.transition(session, job.id, states.QUEUED, [states.VALIDATING_FILES], n_examples=verdicts[0].n_examples):
                    queue.add_event(session, job.id, "Files validated, moving job to queued state")

    # --- running one job ---------------------------------------------------------------------

    def _run(self, job_id: str, slot: str | None) -> None:
        try:
            self._run_job(job_id, slot)
        except Exception as exc:  # never leave a claimed job hanging on a bug of ours
            log.exception("job %s: worker error", job_id)
            with self.store.db.session_scope() as session:
                error = {"code": "internal_error", "message": f"The worker failed to run the job: {exc}", "param": None}
                if queue.transition(session, job_id, states.FAILED, [states.RUNNING, states.PAUSED], error=error, worker_id=None):
                    queue.add_event(session, job_id, error["message"], level="error")
        finally:
            with self.store.db.session_scope() as session:
                session.execute(
                    Job.__table__.update().where(Job.id == job_id, Job.worker_id == self.id).values(worker_id=None)
                )
            with self.lock:
                self.active.pop(job_id, None)
                self.free_slots.append(slot)

    def train_config(self, job: Job, out: Path, model: str | None = None) -> dict:
        blobs = self.store.blobs
        # What was asked ("auto" stays "auto"): `job.hyperparameters` shows the resolved numbers,
        # and a resumed run must be configured exactly like the run whose checkpoint it continues.
        method = job.method or {}
        hp = (method.get(method.get("type", "supervised")) or {}).get("hyperparameters") or {}
        resume = job.resume and any((out / "checkpoints").glob("step-*"))
        config = {
            "training_file": str(blobs.path(files_repo.blob_key(job.training_file))),
            "validation_file": str(blobs.path(files_repo.blob_key(job.validation_file))) if job.validation_file else None,
            "out_dir": str(out),
            "model": model or job.model,
            "seed": job.seed,
            "resume": bool(resume),
            **{k: hp.get(k, "auto") for k in OPENAI_HYPERPARAMETERS},
        }
        if method.get("type") == "dpo":
            config.update(objective="dpo", beta=hp.get("beta", "auto"))
        for key in ("max_steps", "prompt_loss_weight"):
            if (job.options or {}).get(key) is not None:
                config[key] = job.options[key]
        return config

    def _run_job(self, job_id: str, slot: str | None) -> None:
        with self.store.db.session_scope() as session:
            job = session.scalar(select(Job).where(Job.id == job_id))
            model_name = model_name_for(session, job)
            folder = job_dir(self.store, job.id)
            out = folder / "out"
            try:
                model, merge = start_model(self.store, session, job, folder)
            except (catalog.ModelNotAvailable, catalog.ModelUnusable) as exc:
                error = {"code": "model_not_found", "message": str(exc), "param": "model"}
                if queue.transition(session, job_id, states.FAILED, [states.RUNNING, states.PAUSED], error=error, worker_id=None):
                    queue.add_event(session, job_id, error["message"], level="error")
                return
            config = self.train_config(job, out, model)
            resuming = config["resume"]
            legacy, classification = job.legacy, (job.options or {}).get("classification") or {}
            queue.add_event(session, job.id, "Fine-tuning job resumed from its last checkpoint" if resuming else "Fine-tuning job started")
        if merge is not None and not (folder / "start-model" / "config.json").is_file():
            from tunery.serve.export import export_merged

            export_merged(merge, folder / "start-model")  # once: a resumed run starts from the same folder
        env = {"CUDA_VISIBLE_DEVICES": slot} if slot is not None else None
        process = TrainingProcess(folder, out, config, command=self.command, env=env)
        process.start()
        forward = _Forwarder(self.store, job_id, model_name, out, job.legacy)
        last_beat = [time.monotonic()]

        def wanted_signal() -> int | None:
            if self.stopping.is_set():
                return signal.SIGUSR1
            with self.store.db.session_scope() as session:
                if time.monotonic() - last_beat[0] > self.heartbeat_s:
                    queue.heartbeat(session, job_id, self.id)
                    last_beat[0] = time.monotonic()
                status = queue.status_of(session, job_id)
            return {states.CANCELLED: signal.SIGTERM, states.PAUSED: signal.SIGUSR1}.get(status)

        outcome = watch(process, forward, wanted_signal, poll_s=0.5, grace_s=self.grace_s)
        results = None
        if outcome.status == "succeeded" and legacy:
            results = self._compile_legacy(job_id, folder, out, classification, env, forward, wanted_signal)
        self._finish(job_id, model_name, out, outcome, process, results)

    def _compile_legacy(self, job_id: str, folder: Path, out: Path, classification: dict, env: dict | None,
                        forward: "_Forwarder", wanted_signal) -> bytes:
        """The legacy `compiled_results.csv`, made by a follow-up subprocess (`legacy_results`) while
        the job is still running; if that fails, the training metrics alone, with a warning event."""
        results = folder / "results"
        config = {"train_config": str(folder / "config.json"), "out_dir": str(out), "results_dir": str(results),
                  "classification": classification}
        process = TrainingProcess(results, results, config, command=[sys.executable, "-m", "tunery.jobs.legacy_results"], env=env)
        process.start()

        def stop_only() -> int | None:  # a cancel or a server stop ends it; a pause waits for it (it is short)
            return signal.SIGTERM if self.stopping.is_set() or wanted_signal() == signal.SIGTERM else None

        outcome = watch(process, forward, stop_only, poll_s=0.5, grace_s=self.grace_s)
        path = results / legacy_results.RESULTS_NAME
        if outcome.status == "succeeded" and path.exists():
            return path.read_bytes()
        why = (outcome.error or {}).get("message") or "it was stopped"
        with self.store.db.session_scope() as session:
            queue.add_event(session, job_id, f"The result file holds the training metrics only (no elapsed_tokens, elapsed_examples or "
                            f"classification columns): compiling it failed: {why}", level="warn")
        return legacy_results.legacy_csv(legacy_results.read_metrics(out / "metrics.csv"))

    def _finish(self, job_id: str, model_name: str, out: Path, outcome: Outcome, process: TrainingProcess,
                results: bytes | None = None) -> None:
        with self.store.db.session_scope() as session:
            job = session.scalar(select(Job).where(Job.id == job_id).execution_options(populate_existing=True))
            live = [states.RUNNING, states.PAUSED]
            if outcome.status == "succeeded":
                if job.status in live:
                    self._succeed(session, job, model_name, out, outcome.result or {}, results)
                return
            if self.stopping.is_set() and job.status == states.RUNNING and outcome.status != "cancelled":
                # Server shutdown: the trainer checkpointed (or was killed); resume on next start.
                queue.transition(session, job_id, states.QUEUED, [states.RUNNING], worker_id=None, resume=True, estimated_finish=None)
                queue.add_event(session, job_id, "The server is stopping: the job was checkpointed and will resume when a worker starts.",
                                level="warn")
                return
            if outcome.status == "paused":
                queue.update_job(session, job_id, worker_id=None, resume=True, estimated_finish=None)
                if job.status == states.PAUSED:
                    queue.add_event(session, job_id, "Fine-tuning job paused; resume it to continue from its checkpoint.")
                return
            if outcome.status == "cancelled":
                if queue.transition(session, job_id, states.CANCELLED, [states.RUNNING], worker_id=None):
                    # the trainer got a SIGTERM that was not ours (e.g. from an operator)
                    queue.add_event(session, job_id, "Fine-tuning job cancelled.")
                else:
                    queue.add_event(session, job_id, "The training process stopped after the cancellation.")
                return
            if job.status in live:
                error = outcome.error or {"code": "training_error", "message": "Training failed.", "param": None}
                queue.transition(session, job_id, states.FAILED, live, error=error, worker_id=None, estimated_finish=None)
                queue.add_event(session, job_id, f"Fine-tuning job failed: {error['message']}", level="error")

    def _succeed(self, session, job: Job, model_name: str, out: Path, result: dict, results: bytes | None = None) -> None:
        """`results`: the legacy result file (`_compile_legacy`); current-API jobs publish the trainer's metrics.csv."""
        results_name = legacy_results.RESULTS_NAME if job.legacy else "step_metrics.csv"
        csv = out / "metrics.csv"
        if job.legacy:
            data = results if results is not None else legacy_results.legacy_csv(legacy_results.read_metrics(csv))
        else:
            data = csv.read_bytes() if csv.exists() else b"step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n"
        record = files_repo.store_file(session, self.store.blobs, job.project_id, results_name, "fine-tune-results", data)
        resolved = result.get("hyperparameters") or {}
        hp = dict(job.hyperparameters or {})
        hp.update({k: resolved[k] for k in (*OPENAI_HYPERPARAMETERS, "beta") if k in resolved})  # beta: dpo jobs
        weights = result.get("output_path") or next((str(out / d) for d in ("adapter", "model") if (out / d).is_dir()), None)
        base = result.get("base_model") if isinstance(result.get("base_model"), dict) else {}
        done = queue.transition(
            session, job.id, states.SUCCEEDED, [states.RUNNING, states.PAUSED],
            fine_tuned_model=model_name,
            trained_tokens=result.get("trained_tokens"),
            hyperparameters=hp,
            result_files=[record.id],
            weights_path=str(weights) if weights else None,
            base_model_path=str(base.get("path") or result.get("base_model_path") or "") or None,
            estimated_finish=None,
            worker_id=None,
        )
        if not done:  # cancelled in the last instant: keep the user's decision, drop the results
            files_repo.delete_file(session, self.store.blobs, job.project_id, record.id)
            return
        queue.add_event(session, job.id, f"New fine-tuned model created: {model_name}")
        queue.add_event(session, job.id, "The job has successfully completed")


class _Forwarder:
    """Turns the trainer's event records into job events, metrics and checkpoints in the DB."""

    def __init__(self, store: Store, job_id: str, model_name: str, out: Path, legacy: bool) -> None:
        self.store, self.job_id, self.model_name, self.out, self.legacy = store, job_id, model_name, out, legacy

    def __call__(self, records: list[dict]) -> None:
        from tunery.models.naming import checkpoint_model_name

        with self.store.db.session_scope() as session:
            job = session.scalar(select(Job).where(Job.id == self.job_id))
            for r in records:
                kind = r.get("type", "message")
                data = r.get("data") if isinstance(r.get("data"), dict) else {}
                level = LEVELS.get(str(r.get("level", "info")).lower(), "info")
                created = int(r["created_at"]) if isinstance(r.get("created_at"), (int, float)) else now()
                message = str(r.get("message") or "")
                if kind == "metrics":
                    if isinstance(data.get("eta_seconds"), (int, float)):
                        queue.update_job(session, self.job_id, estimated_finish=now() + int(data["eta_seconds"]))
                    queue.add_event(session, self.job_id, message or _metrics_message(data), level=level, type="metrics",
                                    data=data, created_at=created)
                elif kind == "checkpoint" and isinstance(data.get("step"), int):
                    path = Path(str(data.get("path") or f"checkpoints/step-{data['step']}"))
                    path = path if path.is_absolute() else self.out / path
                    name = None if self.legacy else checkpoint_model_name(self.model_name, data["step"])
                    queue.add_checkpoint(session, job, data["step"], str(path), data.get("metrics") or {}, data.get("epoch"), name)
                    queue.forget_missing_checkpoints(session, self.job_id)  # the trainer keeps only the newest few
                    queue.add_event(session, self.job_id, message or f"Checkpoint created at step {data['step']}", level=level,
                                    created_at=created)
                elif message:
                    queue.add_event(session, self.job_id, message, level=level, data=data, created_at=created)
                resolved = data.get("hyperparameters")
                if isinstance(resolved, dict):  # the trainer announces the numbers "auto" became
                    hp = dict(job.hyperparameters or {})
                    hp.update({k: resolved[k] for k in OPENAI_HYPERPARAMETERS if k in resolved})
                    job.hyperparameters = hp


def _metrics_message(data: dict) -> str:
    text = f"Step {data.get('step')}/{data.get('total_steps')}: training loss={data.get('train_loss', float('nan')):.4f}"
    if isinstance(data.get("valid_loss"), (int, float)):
        text += f", validation loss={data['valid_loss']:.4f}"
    return text


def start(store: Store) -> Worker:
    """The API lifespan hook: an in-process worker with the configured settings."""
    return Worker.from_settings(store).start()
