"""Executes eval runs: a thread in the server process, sharing the serving registry with
`/v1/chat/completions` (one copy of each model in memory, one engine batching both).

Each batch of rows is submitted to the engine at once (so it batches them), graded with
`tunery.graders.grade_batch`, and written as output items in one transaction; counts and usage
are recomputed from the items. A run `in_progress` when the server stopped resumes at start from
the first row without an item. Cancel: the route sets `canceled`; the worker sees it between
batches and while waiting, cancels its generations and writes nothing more.

`RunExecutor` runs one run synchronously in the calling thread (what `tunery eval` uses, with
its own registry and model resolution); `RunWorker` is a thread looping over queued runs with
one. A `completions` source whose `input_messages` is an `item_reference` to a string is a raw
completion prompt (tokenized as `/v1/completions` does, no chat template): legacy prompt/completion
data. A list is messages, rendered with the model's chat template.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable

from sqlalchemy import select

from tunery.eval.evals_config import EvalInputError
from tunery.eval.runs import DEFAULT_SAMPLING, message_text, source_rows
from tunery.graders import grade_batch, make_sample, passed
from tunery.serve.chat import ChatError, render_chat
from tunery.serve.registry import ModelSource
from tunery.serve.sampling import SamplingParams
from tunery.store import catalog
from tunery.store import evals as repo
from tunery.store.db import now

log = logging.getLogger("tunery.eval")
# Rows submitted to the engine together, and written together: a window of several of the
# engine's waves (its batch limit is 32), so sorting it by prompt length gives waves of similar lengths.
BATCH = int(os.environ.get("TUNERY_EVAL_BATCH", "128"))


class RunCanceled(Exception):
    pass


def _status(store, run_id: str) -> str | None:
    with store.db.session_scope() as s:
        run = s.get(repo.EvalRunRecord, _seq(s, run_id))
        return run.status if run else None


def _seq(session, run_id):
    return session.scalar(select(repo.EvalRunRecord.seq).where(repo.EvalRunRecord.id == run_id))


def _render(template: dict, item: dict) -> list[dict] | str:
    """The chat messages of a row, or its raw prompt (an item_reference to a string)."""
    from tunery.graders.template import lookup, render

    ns = {"item": item}
    if template["type"] == "item_reference":
        messages = lookup(template["item_reference"], ns)
        if isinstance(messages, str):
            return messages
        if not isinstance(messages, list):
            raise ValueError(f"{template['item_reference']} is neither a list of messages nor a prompt string")
        return [{"role": m["role"], "content": message_text(m, "message")} for m in messages]
    return [{"role": m["role"], "content": render(message_text(m, "template"), ns)} for m in template["template"]]


def catalog_source(store, project_id: str, model: str) -> ModelSource:
    """What the API's model names mean (`tunery.store.catalog`), as a serving source."""
    with store.db.session_scope() as s:
        found = catalog.resolve(s, store.settings, project_id, model)
    return ModelSource(model, found.kind, found.path, base_path=found.base_path, context_length=found.context_length)


class RunExecutor:
    """Executes runs in the calling thread. `resolve(store, project_id, model)` maps a data
    source's model to a `ModelSource` (default: the catalog); `progress(n)` is called as rows are written."""

    def __init__(self, store, registry, judges=None, batch_size: int = BATCH,
                 resolve: Callable[..., ModelSource] = catalog_source, progress: Callable[[int], None] | None = None):
        self.store, self.registry, self.judges, self.batch_size = store, registry, judges, batch_size
        self.resolve, self.progress = resolve, progress

    def run(self, run_id: str) -> None:
        """`execute`, with any exception failing this run alone (status failed, error run_failed)."""
        try:
            self.execute(run_id)
        except Exception as exc:
            log.exception("eval run %s failed", run_id)
            self._finish(run_id, repo.FAILED, {"code": "run_failed", "message": f"{type(exc).__name__}: {exc}"})

    def _finish(self, run_id, status, error=None) -> None:
        with self.store.db.session_scope() as s:
            run = s.get(repo.EvalRunRecord, _seq(s, run_id) or -1)
            if run is not None and run.status not in repo.FINISHED:
                run.status, run.error, run.updated_at = status, error, now()

    def execute(self, run_id: str) -> None:
        with self.store.db.session_scope() as s:
            run = s.get(repo.EvalRunRecord, _seq(s, run_id))
            record = s.scalar(select(repo.EvalRecord).where(repo.EvalRecord.id == run.eval_id))
            run.status, run.attempts, run.updated_at = repo.IN_PROGRESS, run.attempts + 1, now()
            ds, project_id, criteria, eval_id = run.data_source, run.project_id, record.testing_criteria, record.id
            done = repo.done_rows(s, run_id)
        try:
            rows = source_rows(self.store, project_id, ds["source"], "data_source.source")
        except EvalInputError as exc:
            return self._finish(run_id, repo.FAILED, {"code": exc.code or "invalid_data_source", "message": exc.message})
        served = None
        if ds["type"] == "completions":
            try:
                source = self.resolve(self.store, project_id, ds["model"])
            except (catalog.ModelNotAvailable, catalog.ModelUnusable) as exc:
                return self._finish(run_id, repo.FAILED, {"code": "model_not_found", "message": str(exc)})
            served = self.registry.get(source)
        todo = [i for i in range(len(rows)) if i not in done]
        batches = [todo[start:start + self.batch_size] for start in range(0, len(todo), self.batch_size)]
        # Pipelined: the next batch is submitted before this one is awaited, so while the slowest
        # rows of a batch finish (and while it is graded and written) the engine's free slots
        # already decode the next batch's rows instead of idling.
        pending = following = None
        try:
            pending = self._submit(served, ds, [rows[i] for i in batches[0]]) if served and batches else None
            for k, batch in enumerate(batches):
                if _status(self.store, run_id) != repo.IN_PROGRESS:
                    return self._cancel(pending)
                if served:
                    following = self._submit(served, ds, [rows[i] for i in batches[k + 1]]) if k + 1 < len(batches) else None
                    try:
                        samples = self._collect(run_id, pending, also=following)
                    except RunCanceled:
                        return
                    pending, following = following, None
                else:
                    samples = [self._given(rows[i]) for i in batch]
                self._write(run_id, eval_id, project_id, criteria, batch, rows, samples)
                if self.progress is not None:
                    self.progress(len(batch))
        except BaseException:
            self._cancel(pending, following)  # a failed run leaves nothing generating in the engine
            raise
        self._finish(run_id, repo.COMPLETED)

    @staticmethod
    def _cancel(*pendings) -> None:
        for pending in pendings:
            for g in (pending or {}).get("gens", ()):
                if g:
                    g[0].cancel()

    def _given(self, row: dict) -> dict:
        sample = row.get("sample") or {}
        text = sample.get("output_text", "")
        graded = {**make_sample(text if isinstance(text, str) else "", sample.get("output_tools"), sample.get("choices")), **sample}
        wire = {"input": [], "output": [{"role": "assistant", "content": graded["output_text"]}], "finish_reason": "stop", "model": "",
                "usage": {"total_tokens": 0, "completion_tokens": 0, "prompt_tokens": 0, "cached_tokens": 0}, "error": None,
                "temperature": 0.0, "max_completion_tokens": 0, "top_p": 1.0, "seed": 0}
        return {"graded": graded, "wire": wire}

    def _submit(self, served, ds: dict, rows: list[dict]) -> dict:
        """Renders and submits every row of a batch to the engine; `_collect` awaits them. A row
        that cannot be rendered or does not fit the context gets its error here and is not sent.
        Rows go in shortest prompt first: the engine admits waves in arrival order and pads each
        wave's prompts to its longest, so waves of similar lengths waste less compute on padding
        (the results keep the rows' order)."""
        sp = {**DEFAULT_SAMPLING, **{k: v for k, v in (ds.get("sampling_params") or {}).items() if v is not None}}
        max_tokens = sp.get("max_completion_tokens") or self.store.settings.default_max_tokens
        out, gens, events, ready = [], [None] * len(rows), [], []
        for i, row in enumerate(rows):
            wire = {"input": [], "output": [], "finish_reason": "", "model": ds["model"], "error": None,
                    "usage": {"total_tokens": 0, "completion_tokens": 0, "prompt_tokens": 0, "cached_tokens": 0},
                    "temperature": float(sp["temperature"]), "max_completion_tokens": int(max_tokens), "top_p": float(sp["top_p"]), "seed": int(sp["seed"])}
            out.append({"wire": wire, "graded": make_sample("")})
            try:
                messages = _render(ds["input_messages"], row["item"])
                if isinstance(messages, str):  # a raw prompt: the sample's input shows it as one user message
                    wire["input"] = [{"role": "user", "content": messages}]
                    ids = served.tokenizer(messages)["input_ids"]
                else:
                    wire["input"] = messages
                    ids = render_chat(served.tokenizer, messages)
                if len(ids) + max_tokens > served.context_length:
                    raise ValueError(f"the prompt ({len(ids)} tokens) and max_completion_tokens exceed the model's context of {served.context_length}")
            except (ChatError, ValueError, KeyError) as exc:
                wire["error"] = {"code": "invalid_input", "message": str(exc)}
                continue
            ready.append((len(ids), i, ids))
        for _, i, ids in sorted(ready):
            params = SamplingParams(max_tokens=max_tokens, temperature=float(sp["temperature"]), top_p=float(sp["top_p"]),
                                    seed=sp["seed"], timeout=self.store.settings.max_generation_seconds)
            done = threading.Event()
            events.append(done)
            parts: list = []

            def cb(e, parts=parts, done=done):
                parts.append(e)
                if e.finish_reason is not None:
                    done.set()
            gens[i] = (served.engine.submit(ids, params, served.tokenizer, served.adapter, callback=cb), parts)
        return {"model": ds["model"], "out": out, "gens": gens, "events": events}

    def _collect(self, run_id: str, pending: dict, also: dict | None = None) -> list[dict]:
        """The batch's samples once every row has finished. Canceled meanwhile: its generations and
        `also`'s (the next batch, already submitted) are canceled and RunCanceled is raised."""
        out, gens = pending["out"], pending["gens"]
        for done in pending["events"]:
            while not done.wait(0.5):
                if _status(self.store, run_id) != repo.IN_PROGRESS:
                    self._cancel(pending, also)
                    raise RunCanceled
        for entry, g in zip(out, gens):
            if g is None:
                continue
            gen, parts = g
            wire = entry["wire"]
            if parts and parts[-1].error:
                wire["error"] = {"code": "generation_failed", "message": parts[-1].error}
                continue
            text = "".join(e.text for e in parts)
            wire["output"] = [{"role": "assistant", "content": text}]
            wire["finish_reason"] = gen.finish_reason or ""
            p, c = len(gen.prompt_ids), len(gen.generated)
            wire["usage"] = {"total_tokens": p + c, "completion_tokens": c, "prompt_tokens": p, "cached_tokens": 0}
            entry["graded"] = {**make_sample(text), "model": pending["model"]}
        return out

    def _write(self, run_id, eval_id, project_id, criteria, batch, rows, samples) -> None:
        pairs = [(s["graded"], rows[i]["item"]) for i, s in zip(batch, samples)]
        judge = self.judges(project_id) if self.judges else None
        per = [grade_batch(c, pairs, judge=judge) for c in criteria]
        with self.store.db.session_scope() as s:
            run = s.get(repo.EvalRunRecord, _seq(s, run_id) or -1)
            if run is None or run.status != repo.IN_PROGRESS:
                return  # canceled or deleted meanwhile
            for k, (i, sample) in enumerate(zip(batch, samples)):
                results, ok, errored = [], True, sample["wire"]["error"] is not None
                for c, res in zip(criteria, per):
                    r = res[k]
                    good = (not errored) and passed(c, r)
                    ok &= good
                    errored |= any(v for key, v in r.errors.items() if isinstance(v, bool))
                    results.append({"name": c["id"], "type": c["type"], "score": r.reward, "passed": good, "sample": r.sample,
                                    "errors": {key: v for key, v in r.errors.items() if v}})
                s.add(repo.EvalOutputItemRecord(
                    id=f"outputitem_{uuid.uuid4().hex}", run_id=run_id, eval_id=eval_id, status="pass" if ok and not errored else "fail",
                    errored=errored, datasource_item_id=i, datasource_item=rows[i]["item"], results=results, sample=sample["wire"]))
            s.flush()
            _tally(s, run, criteria)


class RunWorker:
    """The server's thread: executes queued (and, after a restart, interrupted) runs, oldest first."""

    def __init__(self, store, registry, judges=None, batch_size: int = BATCH):
        self.store = store
        self.executor = RunExecutor(store, registry, judges, batch_size)
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tunery-eval-runs", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with self.store.db.session_scope() as s:
                    todo = [r.id for r in repo.runs_to_work(s)]
                for run_id in todo:
                    if self._stop.is_set():
                        return
                    self.executor.run(run_id)  # one broken run fails alone; the worker goes on
            except Exception:  # e.g. the database briefly unreachable: try again on the next tick
                log.exception("eval run worker")
            self._wake.wait(1.0)
            self._wake.clear()


def _tally(session, run, criteria) -> None:
    """Counts, per-criterion results and usage, from all the run's items (so a resume adds up)."""
    items = repo.run_items(session, run.id)
    errored = sum(1 for it in items if it.errored)
    good = sum(1 for it in items if it.status == "pass")
    run.result_counts = {"total": len(items), "errored": errored, "failed": len(items) - errored - good, "passed": good}
    run.per_testing_criteria_results = [
        {"testing_criteria": c["id"], "passed": sum(1 for it in items if it.results[j]["passed"]),
         "failed": sum(1 for it in items if not it.results[j]["passed"])} for j, c in enumerate(criteria)]
    # Per model: the run's own generations, then what model graders' judges answered (a judge
    # that is the run's model adds to its entry).
    used: dict[str, list[dict]] = {run.model: []} if run.model else {}
    for it in items:
        if run.model and it.sample and it.sample.get("error") is None:
            used[run.model].append(it.sample["usage"])
        for r in it.results:
            judged = r.get("sample")
            if isinstance(judged, dict) and judged.get("model") and judged.get("error") is None:
                used.setdefault(judged["model"], []).append(judged["usage"])
    if used:
        keys = ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens")
        run.per_model_usage = [{"model_name": m, "invocation_count": len(u), **{k: sum(x.get(k, 0) for x in u) for k in keys}}
                               for m, u in used.items()]
    run.updated_at = now()


def start(store, registry, judges=None) -> RunWorker:
    return RunWorker(store, registry, judges)
