"""The `tunery prepare` pipeline as a library: read, check, fix, split, write, count, estimate.

`prepare(options, decide=..., counter=..., progress=...)` returns a `Report`; it prints nothing
and asks nothing itself (the CLI supplies `decide` for the [Y/n] questions and renders the
report). Two streaming passes over the input keep memory bounded whatever the file size:

1. check every record (legacy prompt/completion checks, chat or DPO checks) and gather what the
   dataset-level decisions need (hashes for duplicates, affixes, case counts...);
2. if no error remains: apply the necessary and the accepted remedies, convert to the target
   format, spool the records to a temporary JSONL (keeping only byte offsets), count tokens in
   batches; then shuffle/split the offsets and copy the lines into the output files. For
   prompt/completion data pass 2 replays a compact file of (position, prompt, completion) that
   pass 1 wrote, instead of parsing and templating the input again.

Which format is written: `to` if given; otherwise the input's own shape, and prompt/completion
when the records are built from table columns with templates (the legacy flow, whose separator
and ending checks only make sense there). `to="chat"` converts prompt/completion records (or
templated rows) to `{"messages": [system?, user, assistant]}` first, and then the chat checks run.
"""

from __future__ import annotations

import json
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import compress, islice
from pathlib import Path
from typing import Any

from tunery.data import legacy
from tunery.data.collect import Collector
from tunery.data.dpo import output_key
from tunery.data.findings import Finding, Level
from tunery.data.formats import CHAT, COMPLETION, DPO, FileFormat, FormatError
from tunery.data.memory import trim_heap
from tunery.data.pairs import PairSpool
from tunery.data.readers import BadRecord, DataError, Source, open_source
from tunery.data.split import DEFAULT_SEED, split_order, valid_size
from tunery.data.templates import Template, TemplateError, Where, build_record
from tunery.data.writer import Spool, dumps, output_paths, pair_lines

SHAPES = (COMPLETION, CHAT, DPO)
TOKEN_BATCH = 512
APPLY_BATCH = 512  # records per pass-2 step (lists, so that the per-record work runs in C maps)
MAX_LABELS = 10_000  # distinct labels tracked for stratification; beyond it, not classification


Decide = Callable[[Finding], bool]
Progress = Callable[[str, int, int], None]  # (stage, done bytes, total bytes)


class UsageError(DataError):
    """Options that cannot work together, a bad template or filter: exit code 2."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=2)


@dataclass
class PrepareOptions:
    path: Path
    prompt: str | None = None  # templates over table columns
    completion: str | None = None
    system: str | None = None
    to: str | None = None  # "chat" | "completion" | None (keep the input's shape)
    where: str | None = None
    valid_fraction: float | None = None
    split: bool | None = None  # None: split classification data only (the legacy rule)
    seed: int = DEFAULT_SEED
    out_dir: Path | None = None


@dataclass
class Report:
    input: str
    format: str
    unit: str  # what finding lines count: "line" or "row"
    shape: str | None = None  # what the input records are: completion, chat, dpo
    target: str | None = None  # what was written
    task: str | None = None  # legacy task type (prompt/completion data)
    n_read: int = 0  # records read (after --where)
    n_filtered: int = 0  # rows --where left out
    n_examples: int = 0  # examples written
    n_train: int = 0
    n_valid: int = 0
    findings: list[Finding] = field(default_factory=list)
    remedies: list[dict[str, Any]] = field(default_factory=list)  # recommended remedies and the answers
    tokens: dict[str, Any] | None = None
    estimates: dict[str, Any] | None = None
    outputs: list[str] = field(default_factory=list)
    classification: dict[str, Any] | None = None  # n_classes, positive_class, labels
    separator: str | None = None  # what every prompt ends with (legacy data)
    stop: str | None = None  # what every completion ends with
    seed: int = DEFAULT_SEED

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level is Level.ERROR]

    @property
    def usable(self) -> bool:
        return not self.errors and bool(self.outputs)

    def to_dict(self) -> dict[str, Any]:
        levels = Counter(f.level.value for f in self.findings)
        return {
            "input": self.input,
            "format": self.format,
            "unit": self.unit,
            "shape": self.shape,
            "target": self.target,
            "task": self.task,
            "usable": self.usable,
            "n_examples": self.n_examples,
            "counts": {
                "read": self.n_read,
                "filtered": self.n_filtered,
                "examples": self.n_examples,
                "train": self.n_train,
                "valid": self.n_valid,
                "errors": levels.get("error", 0),
                "warnings": levels.get("warning", 0),
                "fixes": levels.get("fix", 0),
            },
            "findings": [f.to_dict() for f in self.findings],
            "remedies": self.remedies,
            "tokens": self.tokens,
            "estimates": self.estimates,
            "outputs": self.outputs,
            "classification": self.classification,
            "separator": self.separator,
            "stop": self.stop,
            "seed": self.seed,
        }


def accept_all(finding: Finding) -> bool:
    return True


# -- reading: rows -> records ---------------------------------------------------------------


class _Records:
    """Iterates `(position, record)` after `--where` and the templates; re-iterable for pass 2."""

    def __init__(self, source: Source, options: PrepareOptions):
        self.source = source
        self.options = options
        self.where = Where(options.where) if options.where else None
        self.templated = options.prompt is not None or options.completion is not None
        if self.templated and options.completion is None:
            raise UsageError("--prompt needs --completion (the text the model learns to write)")
        self.prompt = Template(options.prompt, "--prompt") if options.prompt is not None else None
        self.completion = Template(options.completion, "--completion") if options.completion is not None else None
        self.filtered = 0
        self.check: _Check | None = None  # set by pass 1

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        self.filtered = 0
        checked = False
        where, to = self.where, self.options.to or "completion"
        for position, record in self.source:
            if isinstance(record, dict):
                if not checked:
                    checked = True
                    columns = [str(k) for k in record]
                    for t in (self.where, self.prompt, self.completion):
                        if t is not None:
                            try:
                                t.check_columns(columns)
                            except TemplateError as exc:
                                raise UsageError(str(exc)) from None
                if where is not None and not where(record):
                    self.filtered += 1
                    continue
                if self.templated:
                    record = build_record(record, self.prompt, self.completion, self.options.system, to)
            yield position, record


    def pairs(self) -> Iterator[tuple[list[int], list[str], list[str]]] | None:
        """Blocks of (positions, prompts, completions) straight from CSV/TSV rows when iterating
        would only template them into `{"prompt", "completion"}` records (no --where, no --to
        chat); else None."""
        rows = None
        if self.templated and self.where is None and (self.options.to or "completion") == "completion":
            rows = self.source.rows()
        return None if rows is None else self._pairs(rows)

    def _pairs(self, rows: Iterator[tuple[int, list[str]]]) -> Iterator[tuple[list[int], list[str], list[str]]]:
        self.filtered = 0
        prompt = completion = None
        while block := list(islice(rows, APPLY_BATCH)):
            if completion is None:  # the first row: the columns are known, as in `__iter__`
                columns = self.source.header
                for t in (self.prompt, self.completion):
                    if t is not None:
                        try:
                            t.check_columns(columns)
                        except TemplateError as exc:
                            raise UsageError(str(exc)) from None
                prompt = self.prompt.row_renderer(columns) if self.prompt is not None else (lambda row: "")
                completion = self.completion.row_renderer(columns)
            positions, cells = zip(*block)
            yield list(positions), list(map(prompt, cells)), list(map(completion, cells))


def _to_chat(record: dict[str, Any], system: str | None) -> dict[str, Any]:
    """A prompt/completion record as a single-turn chat example."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": record.get("prompt") or ""})
    messages.append({"role": "assistant", "content": record.get("completion")})
    return {"messages": messages}


def _chat_label(record: dict[str, Any]) -> str | None:
    """The last assistant answer: the class of a chat classification example."""
    for m in reversed(record.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "assistant":
            content = m.get("content")
            return content if isinstance(content, str) else None
    return None


# -- the pipeline ---------------------------------------------------------------------------


def prepare(
    options: PrepareOptions,
    decide: Decide = accept_all,
    counter: Any = None,
    progress: Progress | None = None,
) -> Report:
    """Check and prepare one file. Raises `DataError` (or `UsageError`) when it cannot start."""
    if options.to not in (None, "chat", "completion"):
        raise UsageError(f"--to must be 'chat' or 'completion', not {options.to!r}")
    if options.system and options.to != "chat":
        raise UsageError("--system needs --to chat (a system message exists only in chat examples)")
    if options.valid_fraction is not None and not 0 < options.valid_fraction < 1:
        raise UsageError(f"--valid-fraction must be between 0 and 1, got {options.valid_fraction}")
    if options.split is False and options.valid_fraction is not None:
        raise UsageError("--valid-fraction and --no-split contradict each other")
    try:
        records = _Records(open_source(options.path), options)
    except TemplateError as exc:
        raise UsageError(str(exc)) from None
    source = records.source
    report = Report(input=str(options.path), format=source.format, unit=source.unit, seed=options.seed)
    collector = Collector()
    collector.extend(source.notes)

    def tick(stage: str) -> Callable[[], None] | None:
        if progress is None:
            return None
        return lambda: progress(stage, source.bytes_read, source.size)

    out_dir = options.out_dir if options.out_dir is not None else source.path.parent
    try:
        return _run(options, records, report, collector, decide, counter, progress, tick, out_dir)
    finally:
        if records.check is not None:
            records.check.close()


def _run(
    options: PrepareOptions,
    records: _Records,
    report: Report,
    collector: Collector,
    decide: Decide,
    counter: Any,
    progress: Progress | None,
    tick: Callable[[str], Callable[[], None] | None],
    out_dir: Path,
) -> Report:
    """The two passes (see the module docstring); `prepare` owns the temporary files."""
    source = records.source
    # Pass 1: check.
    shape, check = None, None
    # Rows without the keys of any format are prompt/completion rows whose checks name what is missing.
    file_format = FileFormat(source.unit, default=COMPLETION)
    n = 0
    on_tick = tick("checking")
    pairs = records.pairs()
    if pairs is not None:  # table rows templated into prompt/completion: no record dicts
        for positions, prompts, completions in pairs:
            n += len(positions)
            if check is None:
                shape = COMPLETION
                check = records.check = _checker("completion", shape, source.unit, collector, options.system, out_dir)
                check.scan.seen_prompt_key = check.scan.seen_completion_key = True
            check.add_pairs(positions, prompts, completions)
            trim_heap()  # as below
            if on_tick is not None:
                on_tick()
    for position, record in records if pairs is None else ():
        n += 1
        if not n & 2047:
            if on_tick is not None:
                on_tick()
            if not n & 8191:
                # Freed heap pages (lists, joined batches) stay resident until trimmed: the C
                # heap fragments, and the peak RSS would grow with the file.
                trim_heap()
        if isinstance(record, BadRecord):
            collector.add(_error("invalid_json", record.message, position))
            continue
        try:
            this = file_format.check(record, position)
        except FormatError as exc:
            collector.add(exc.finding(position))
            continue
        if shape is None:
            shape = this
            target = options.to or shape
            if shape == CHAT and target == COMPLETION or shape == DPO and target != DPO and options.to:
                raise UsageError(f"{source.path}: cannot convert {shape} examples to {target} examples")
            check = records.check = _checker(target, shape, source.unit, collector, options.system, out_dir)
        check.add(position, record)
    if on_tick is not None:
        on_tick()
    report.n_filtered = records.filtered
    report.n_read = n
    if records.filtered:
        collector.add(
            Finding("filtered", Level.INFO, f"--where left out {records.filtered} rows", count=records.filtered)
        )
    if shape is None:
        if n == 0:
            collector.add(_error("no_examples", "no examples to prepare" + (" after --where" if records.filtered else ""), None))
        report.findings = collector.findings()
        return report
    report.shape = shape
    report.target = check.target
    if collector.has_errors():  # the remedies do not fix errors: report them all and stop
        report.findings = collector.findings() + check.dataset_findings()
        return report
    check.decide(decide)
    trim_heap()  # pass 1's sets of hashes are gone
    report.findings = collector.findings() + check.dataset_findings()
    report.remedies = [
        {"code": r.finding.code, "remedy": r.finding.data.get("remedy"), "applied": bool(r.finding.data.get("applied"))}
        for r in check.remedies
    ]
    report.task = check.task
    if check.fatal or any(f.level is Level.ERROR for f in report.findings):
        return report

    # Pass 2: fix, convert, spool, count tokens.
    with Spool(out_dir) as spool:
        tally = _Tokens(counter, check.target)
        on_tick = tick("writing")
        i = 0
        for batch in check.replay_batches(records):
            applied = check.apply_batch(i, batch)
            i += len(batch)
            spool.add_many(applied.lines)
            tally.add_batch(applied)
            trim_heap()  # as in pass 1
            if on_tick is not None:
                on_tick()
        tally.flush()
        if on_tick is not None:
            on_tick()
        refused = tally.refused_finding(source.unit)
        if refused is not None:  # found while counting: stop before writing, like every other error
            report.findings.append(refused)
            return report
        report.findings.extend(check.final_findings())
        report.n_examples = len(spool)
        report.task = check.final_task()
        labels = check.labels()
        if labels is not None:
            report.classification = check.classification()
        report.separator, report.stop = check.affixes()
        if report.n_examples == 0:
            report.findings.append(_error("no_examples", "no examples are left after the remedies", None))
            return report

        # Split, shuffle, write.
        n_out = report.n_examples
        split = options.split
        if split is None:
            split = options.valid_fraction is not None or report.task == legacy.CLASSIFICATION
        if split and n_out < 2:
            report.findings.append(
                Finding("no_split", Level.WARNING, f"{n_out} example cannot be split; wrote a single file")
            )
            split = False
        n_valid = valid_size(n_out, options.valid_fraction) if split else 0
        stratify = labels if (split and labels is not None) else None
        train, valid = split_order(n_out, n_valid, stratify, options.seed)
        trim_heap()
        paths = output_paths(source.path, options.out_dir, split)
        for p in paths:
            if p.resolve() == source.path.resolve():
                raise UsageError(f"{p}: the output would overwrite the input")
        total = spool.offsets[-1]
        done = 0
        for path, order in zip(paths, (train, valid) if split else (train,)):
            base = done
            done += spool.write(path, order, (lambda b, base=base: progress("writing", base + b, total)) if progress else None)
            report.outputs.append(str(path))
            trim_heap()
        report.n_train, report.n_valid = len(train), len(valid)
        if tally.enabled:
            report.tokens, token_findings = tally.stats(train, valid)
            report.findings.extend(token_findings)
            report.estimates = _estimates(report.n_train, report.tokens)
    if report.n_train < 10:
        report.findings.append(
            Finding(
                "too_few_training_examples",
                Level.WARNING,
                f"the training file has {report.n_train} examples; a fine-tuning job needs at least 10",
                data={"n_train": report.n_train},
            )
        )
    return report


def _error(code: str, message: str, line: int | None, field: str | None = None) -> Finding:
    return Finding(code=code, level=Level.ERROR, message=message, line=line, field=field)


# -- per-shape checks and remedies ----------------------------------------------------------


def _checker(target: str, shape: str, unit: str, collector: Collector, system: str | None, folder: Path) -> _Check:
    if target == "completion":
        return _LegacyCheck(collector, unit, folder)
    if target == "chat":
        return _ChatCheck(collector, unit, convert=shape == "completion", system=system)
    return _DpoCheck(collector, unit)


@dataclass
class _Applied:
    """The examples one pass-2 batch keeps: input positions, output lines, and for counting
    either the records or (prompt/completion data) the two text columns."""

    positions: list[int] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    prompts: list[str] | None = None
    completions: list[str] | None = None


class _Check:
    """Pass 1 (`add`), decisions (`decide`), pass 2 (`apply`) for one target format."""

    target = ""
    task: str | None = None
    fatal = False
    remedies: list[legacy.Remedy] = []

    def add(self, position: int, record: dict[str, Any]) -> None: ...

    def decide(self, decide: Decide) -> None: ...

    def apply(self, index: int, position: int, record: Any) -> dict[str, Any] | None: ...

    def apply_batch(self, start: int, rows: list[tuple[int, Any]]) -> _Applied:
        """`apply` to consecutive rows (indices from `start`): what is kept, as records and lines."""
        done = _Applied()
        for index, (position, record) in enumerate(rows, start):
            out = self.apply(index, position, record)
            if out is not None:
                done.positions.append(position)
                done.records.append(out)
                done.lines.append(dumps(out))
        return done

    def replay(self, records: _Records) -> Iterator[tuple[int, Any]]:
        """What pass 2 iterates: the input again, by default."""
        return iter(records)

    def replay_batches(self, records: _Records) -> Iterator[list[tuple[int, Any]]]:
        """`replay` in lists of up to APPLY_BATCH rows."""
        rows = self.replay(records)
        while batch := list(islice(rows, APPLY_BATCH)):
            yield batch

    def close(self) -> None: ...

    def dataset_findings(self) -> list[Finding]:
        return []

    def final_findings(self) -> list[Finding]:
        return []

    def final_task(self) -> str | None:
        return self.task

    def labels(self) -> Any:
        return None

    def classification(self) -> dict[str, Any] | None:
        return None

    def affixes(self) -> tuple[str | None, str | None]:
        return None, None


class _Labels:
    """Label ids per written example, for stratified splits; gives up past MAX_LABELS classes."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.counts: Counter[str] = Counter()
        self.per_example = array("i")
        self.overflow = False

    def add(self, label: str | None) -> None:
        if self.overflow:
            return
        key = label if label is not None else ""
        i = self.ids.get(key)
        if i is None:
            if len(self.ids) >= MAX_LABELS:
                self.overflow = True
                self.ids.clear()
                self.per_example = array("i")
                return
            i = self.ids[key] = len(self.ids)
        self.counts[key] += 1
        self.per_example.append(i)

    def add_many(self, labels: list[str | None]) -> None:
        """`add` each label (new ids in order of first occurrence, as `add` gives them)."""
        if self.overflow:
            return
        if None in labels:
            labels = ["" if label is None else label for label in labels]
        ids = self.ids
        for key in dict.fromkeys(labels):
            if key not in ids:
                if len(ids) >= MAX_LABELS:
                    self.overflow = True
                    self.ids.clear()
                    self.per_example = array("i")
                    return
                ids[key] = len(ids)
        self.counts.update(labels)
        self.per_example.extend(map(ids.__getitem__, labels))

    def is_classification(self) -> bool:
        n = len(self.per_example)
        return not self.overflow and n > 0 and len(self.ids) < n / legacy.CLASSIFICATION_THRESHOLD

    def summary(self) -> dict[str, Any]:
        n_classes = len(self.ids)
        most = self.counts.most_common()
        return {
            "n_classes": n_classes,
            # the legacy tool's positive class for binary metrics: the most frequent completion
            "positive_class": most[0][0] if n_classes == 2 else None,
            "labels": dict(most[:50]),
        }


class _LegacyCheck(_Check):
    target = "completion"

    def __init__(self, collector: Collector, unit: str, folder: Path):
        self.collector = collector
        self.scan = legacy.LegacyScan(collector, unit)
        # Pass 1 keeps each row's (position, prompt, completion) in a compact temporary file, so
        # pass 2 need not parse, filter and template the input again.
        self.pairs = PairSpool(folder)
        self.plan: legacy.LegacyPlan | None = None
        self.remedies = []
        self.labels_ = _Labels()
        self.prompts = legacy._Affixes()
        self.completions = legacy._Affixes()
        self.repeated = {"prompt": [0, None], "completion": [0, None]}
        self.unit = unit

    def add(self, position: int, record: dict[str, Any]) -> None:
        pair = self.scan.fields(position, record)
        if pair is not None:
            self.add_pair(position, *pair)

    def add_pairs(self, positions: list[int], prompts: list[str], completions: list[str]) -> None:
        """`add` for records already known to be {"prompt": str, "completion": str}."""
        self.scan.add_many(positions, prompts, completions)
        self.pairs.add_many(positions, prompts, completions)

    def add_pair(self, position: int, prompt: str, completion: str) -> None:
        self.scan.add(position, prompt, completion)
        self.pairs.add(position, prompt, completion)

    def replay(self, records: _Records) -> Iterator[tuple[int, tuple[str, str]]]:
        for block in self.replay_batches(records):
            yield from block

    def replay_batches(self, records: _Records) -> Iterator[list[tuple[int, tuple[str, str]]]]:
        pairs, source = self.pairs, records.source
        pairs.flush()
        total = pairs.tell()
        for block in pairs.blocks():
            yield block
            source.bytes_read = source.size * pairs.tell() // max(total, 1)

    def close(self) -> None:
        self.pairs.close()

    def decide(self, decide: Decide) -> None:
        self.plan = self.scan.finish()
        self.task = self.plan.task
        self.fatal = self.plan.fatal
        self.remedies = self.plan.remedies
        if not self.fatal:
            self.plan.decide(decide)

    def dataset_findings(self) -> list[Finding]:
        return self.plan.findings if self.plan is not None else []

    def apply(self, index: int, position: int, record: dict[str, Any]) -> dict[str, Any] | None:
        plan = self.plan
        if not plan.keep(index):
            return None
        p, c = record  # from `replay`
        for name, value, suffix in (("prompt", p, plan.common_prompt_suffix), ("completion", c, plan.common_completion_suffix)):
            if suffix and suffix in value[: -len(suffix)]:
                seen = self.repeated[name]
                seen[0] += 1
                seen[1] = seen[1] or position
        p, c = plan.transform(p, c)
        self.prompts.add(p)
        self.completions.add(c)
        self.labels_.add(c)
        return {"prompt": p, "completion": c}

    def apply_batch(self, start: int, rows: list[tuple[int, tuple[str, str]]]) -> _Applied:
        """`apply` over a batch: the same steps as lists (C-level maps), lines written directly."""
        plan = self.plan
        drop = plan.drop
        kept = [row for row, flag in zip(rows, plan.flags[start : start + len(rows)]) if not flag & drop]
        done = _Applied()
        if not kept:
            done.prompts, done.completions = [], []
            return done
        positions = [position for position, _ in kept]
        prompts = [pc[0] for _, pc in kept]
        completions = [pc[1] for _, pc in kept]
        for name, values, suffix in (
            ("prompt", prompts, plan.common_prompt_suffix),
            ("completion", completions, plan.common_completion_suffix),
        ):
            if suffix:
                cut = len(suffix)  # `suffix in value[:-cut]`, without copying the value
                hits = [position for position, value in zip(positions, values) if value.find(suffix, 0, len(value) - cut) >= 0]
                if hits:
                    seen = self.repeated[name]
                    seen[0] += len(hits)
                    seen[1] = seen[1] or hits[0]
        prompts, completions = plan.transform_many(prompts, completions)
        self.prompts.add_many(prompts)
        self.completions.add_many(completions)
        self.labels_.add_many(completions)
        done.positions, done.prompts, done.completions = positions, prompts, completions
        done.lines = pair_lines(prompts, completions)
        return done

    def final_findings(self) -> list[Finding]:
        out = []
        plan = self.plan
        for name, suffix in (("prompt", plan.common_prompt_suffix), ("completion", plan.common_completion_suffix)):
            count, line = self.repeated[name]
            if count:
                out.append(
                    Finding(
                        f"{name}_suffix_repeated",
                        Level.WARNING,
                        f"{count} {name}s contain the common suffix `{legacy.show(suffix)}` more than once "
                        f"(first at {self.unit} {line}); make the {'separator' if name == 'prompt' else 'ending'} unique",
                        line=line,
                        field=name,
                        count=count,
                    )
                )
        return out

    def final_task(self) -> str | None:
        # The legacy tool infers the task again on the final data (after the remedies) to split it.
        if self.task == legacy.OPEN_ENDED or self.prompts.n == 0:
            return self.task
        return legacy.CLASSIFICATION if self.labels_.is_classification() else legacy.CONDITIONAL

    def labels(self) -> Any:
        if self.final_task() != legacy.CLASSIFICATION:
            return None
        return self.labels_.per_example

    def classification(self) -> dict[str, Any] | None:
        return self.labels_.summary()

    def affixes(self) -> tuple[str | None, str | None]:
        # A stop sequence is the common ending of varied completions; a class label has none.
        stop = self.completions.suffix if self.final_task() == legacy.CONDITIONAL and not self.completions.all_same else ""
        return self.prompts.suffix or None, stop or None


class _Dedup:
    """Duplicate examples by a 64-bit hash of their canonical JSON (the first one is kept)."""

    def __init__(self, unit: str):
        self.unit = unit
        self.seen: set[int] = set()
        self.flags = bytearray()
        self.n = 0
        self.lines: list[int] = []
        self.drop = False

    def add(self, position: int, record: Any) -> None:
        h = hash(json.dumps(record, sort_keys=True, ensure_ascii=False))
        if h in self.seen:
            self.flags.append(1)
            self.n += 1
            if len(self.lines) < 5:
                self.lines.append(position)
        else:
            self.seen.add(h)
            self.flags.append(0)

    def finding(self) -> tuple[Finding, legacy.Remedy] | None:
        self.seen = set()
        if not self.n:
            return None
        f = Finding(
            "duplicate_examples",
            Level.WARNING,
            f"{self.n} examples are exact duplicates of earlier ones (first at {self.unit} {', '.join(map(str, self.lines))})",
            line=self.lines[0],
            count=self.n,
            lines=list(self.lines),
            data={"remedy": f"Remove {self.n} duplicate examples", "recommended": True},
        )
        return f, legacy.Remedy(f, lambda: setattr(self, "drop", True))

    def keep(self, index: int) -> bool:
        return not (self.drop and self.flags[index])


class _ChatCheck(_Check):
    target = "chat"

    def __init__(self, collector: Collector, unit: str, convert: bool, system: str | None):
        from tunery.data.chat import ChatStats

        self.collector = collector
        self.unit = unit
        self.convert = convert
        self.system = system
        self.stats = ChatStats()
        self.dedup = _Dedup(unit)
        self.findings: list[Finding] = []
        self.remedies = []
        self.labels_ = _Labels()

    def _record(self, record: dict[str, Any]) -> dict[str, Any]:
        return _to_chat(record, self.system) if self.convert else record

    def add(self, position: int, record: dict[str, Any]) -> None:
        from tunery.data.chat import check_chat_record

        record = self._record(record)
        problems = check_chat_record(record, position)
        self.collector.extend(problems)
        if not any(p.level is Level.ERROR for p in problems):
            self.stats.add(record, position)
        self.dedup.add(position, record)

    def decide(self, decide: Decide) -> None:
        found = self.dedup.finding()
        if found is not None:
            self.findings.append(found[0])
            self.remedies.append(found[1])
        for r in self.remedies:
            r.finding.data["applied"] = accepted = bool(decide(r.finding))
            if accepted:
                r.apply()

    def dataset_findings(self) -> list[Finding]:
        return self.stats.findings() + self.findings

    def apply(self, index: int, position: int, record: dict[str, Any]) -> dict[str, Any] | None:
        if not self.dedup.keep(index):
            return None
        record = self._record(record)
        self.labels_.add(_chat_label(record))
        return record

    def labels(self) -> Any:
        # The legacy task rule is for prompt/completion data: chat data is never split on its own
        # account, but a split the user asks for is stratified when the answers look like classes.
        return self.labels_.per_example if self.labels_.is_classification() else None

    def final_task(self) -> str | None:
        return None

    def classification(self) -> dict[str, Any] | None:
        return self.labels_.summary()


class _DpoCheck(_ChatCheck):
    target = "dpo"

    def __init__(self, collector: Collector, unit: str):
        self.collector = collector
        self.unit = unit
        self.dedup = _Dedup(unit)
        self.findings = []
        self.remedies = []
        self.labels_ = _Labels()

    def add(self, position: int, record: dict[str, Any]) -> None:
        from tunery.data.dpo import check_dpo_record

        self.collector.extend(check_dpo_record(record, position))
        self.dedup.add(position, record)

    def dataset_findings(self) -> list[Finding]:
        return self.findings

    def apply(self, index: int, position: int, record: dict[str, Any]) -> dict[str, Any] | None:
        return record if self.dedup.keep(index) else None

    def labels(self) -> Any:
        return None

    def final_task(self) -> str | None:
        return None


# -- tokens and estimates (the partner modules, isolated here) ------------------------------


class _Tokens:
    """Token counts per written example (4 bytes each plus its input line), summarised per split."""

    def __init__(self, counter: Any, target: str):
        self.counter = counter
        self.enabled = counter is not None
        self.target = target
        self.batch: list[dict[str, Any]] = []
        self.prompts: list[str] = []  # prompt/completion examples waiting, as two columns
        self.completions: list[str] = []
        self.total = array("i")
        self.trained = array("i")
        self.lines = array("q")
        self.refused: list[tuple[int, str]] = []  # (line, why) of examples the chat template cannot render

    def add(self, record: dict[str, Any], position: int) -> None:
        if self.enabled:
            self.batch.append(record)
            self.lines.append(position)
            if len(self.batch) >= TOKEN_BATCH:
                self._count_records()

    def add_batch(self, applied: _Applied) -> None:
        if not self.enabled:
            return
        self.lines.extend(applied.positions)
        if applied.prompts is not None:  # prompt/completion columns: counted in slices
            self.prompts += applied.prompts
            self.completions += applied.completions
            while len(self.prompts) >= TOKEN_BATCH:
                self._count_pairs(TOKEN_BATCH)
            return
        for record in applied.records:
            self.batch.append(record)
            if len(self.batch) >= TOKEN_BATCH:
                self._count_records()

    def _count_pairs(self, n: int) -> None:
        prompts, completions = self.prompts[:n], self.completions[:n]
        del self.prompts[:n], self.completions[:n]
        total, trained = self.counter.count_pairs(prompts, completions)
        self.total.extend(total)
        self.trained.extend(trained)

    def flush(self) -> None:
        if self.prompts:
            self._count_pairs(len(self.prompts))
        self._count_records()

    def _count_records(self) -> None:
        if not self.batch:
            return
        records, self.batch = self.batch, []
        first = len(self.total)
        errors: list[Any] = []
        if self.target == "completion":
            counts = self.counter.count_completion(records)
        elif self.target == "chat":
            counts = self.counter.count_chat(records, errors=errors)
        else:  # DPO: the prompt and the preferred answer (what the policy is pushed towards)
            chats = []
            for r in records:
                given = r.get("input") or {}
                chats.append({"messages": list(given.get("messages") or []) + list(r.get(output_key(r, "preferred_output")) or []), "tools": given.get("tools")})
            counts = self.counter.count_chat(chats, errors=errors)
        for error in errors:
            self.refused.append((self.lines[first + error.index], error.reason))
        for count in counts:
            total, trained = count if count is not None else (0, 0)
            self.total.append(total)
            self.trained.append(trained)

    def refused_finding(self, unit: str) -> Finding | None:
        """One error for every example the model's chat template cannot render (it could not train on them)."""
        if not self.refused:
            return None
        line, why = self.refused[0]
        n = len(self.refused)
        return Finding(
            "chat_template_error",
            Level.ERROR,
            f"the model's chat template cannot render {n} example(s), first at {unit} {line}: {why}",
            line=line,
            count=n,
            lines=[ln for ln, _ in self.refused[:5]],
        )

    def stats(self, train: Any, valid: Any) -> tuple[dict[str, Any], list[Finding]]:
        """TokenStats of the training file (validation tokens are not billed: only their sum)."""
        from tunery.data.tokens import TokenStats

        stats = TokenStats(getattr(self.counter, "context_length", None))
        total, trained, lines = self.total, self.trained, self.lines
        chosen = bytearray(len(total))
        for i in train:
            chosen[i] = 1
        # counted straight from the arrays (no copies at the run's end, where memory peaks)
        totals = Counter(compress(total, chosen))
        stats.add_counts(totals, Counter(compress(trained, chosen)))
        ctx = stats.context_length
        if ctx is not None and totals and max(totals) > ctx:
            for t, line in zip(compress(total, chosen), compress(lines, chosen)):  # in file order
                if t > ctx:
                    stats.add_over_context(t, line)
        out = stats.to_dict()
        out["valid_tokens"] = sum(total[i] for i in valid)
        return out, stats.findings()


def _estimates(n_train: int, tokens: dict[str, Any]) -> dict[str, Any] | None:
    """Epochs by OpenAI's auto rule, billed tokens, OpenAI's price and the local compute time."""
    if n_train <= 0:
        return None
    from tunery.data.estimates import estimate

    return estimate(n_train, tokens["billable_tokens_per_epoch"]).to_dict()
