"""The 15 checks of OpenAI's legacy `prepare_data` tool (openai 0.28.1), in bounded memory.

The legacy tool loads everything into pandas. Here a first streaming pass (`LegacyScan.add`)
gathers what its decisions need: counts, sets of 64-bit hashes of (prompt, completion) for
duplicates and of completions for the task type, running common prefixes/suffixes, letter-case counts, long
rows, which candidate separators occur. `LegacyScan.finish()` then makes the same decisions as
`openai/validators.py` and returns a `LegacyPlan`; after the user accepts or declines the
recommended remedies, a second pass calls `LegacyPlan.keep(i)` and `LegacyPlan.transform(p, c)`
on every row, applying the remedies in the legacy order.

Like the legacy tool, every decision is taken on the data as read (after the necessary fixes);
the recommended remedies are then applied one after the other.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import repeat
from operator import add as _plus
from typing import Any

from tunery.data.collect import Collector
from tunery.data.duplicates import Duplicates
from tunery.data.findings import Finding, Level

MIN_EXAMPLES = 100
LONG_CHARS = 10_000
MAX_PROMPT_PREFIX = 12
MIN_COMPLETION_PREFIX = 5
LONG_XFIX = 10
CLASSIFICATION_THRESHOLD = 3  # classification when unique completions < n / 3
PROMPT_SEPARATORS = [" ->", "\n\n###\n\n", "\n\n===\n\n", "\n\n---\n\n", "\n\n===>\n\n", "\n\n--->\n\n"]
FALLBACK_SEPARATOR = "\n\n### =>\n\n"
COMPLETION_ENDINGS = ["\n", ".", " END", "***", "+++", "&&&", "$$$", "@@@", "%%%"]
FALLBACK_ENDING = " [END]"
GUIDE = "https://platform.openai.com/docs/guides/fine-tuning/preparing-your-dataset"

OPEN_ENDED = "open-ended generation"
CLASSIFICATION = "classification"
CONDITIONAL = "conditional generation"

_BATCH = 512  # rows per scan step: C-level maps over lists, little memory held
_ASCII = bytes(range(128))
_UPPER = bytes(range(65, 91))
_LOWER = bytes(range(97, 123))
_NOT_UPPER = bytes(b for b in range(256) if b not in _UPPER)
_NOT_LOWER = bytes(b for b in range(256) if b not in _LOWER)

# Flags per row, kept in one bytearray between the passes.
EMPTY, DUPLICATE, LONG = 1, 2, 4


def show(text: str) -> str:
    """Newlines shown as `\\n`, as the legacy messages do."""
    return text.replace("\n", "\\n")


def _common_prefix(a: str, b: str) -> str:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return a[:i]


def _common_suffix(a: str, b: str) -> str:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[-1 - i] == b[-1 - i]:
        i += 1
    return a[len(a) - i :] if i else ""


class _Affixes:
    """Running longest common prefix and suffix of a stream of strings."""

    __slots__ = ("prefix", "suffix", "first", "all_same", "n")

    def __init__(self) -> None:
        self.prefix = self.suffix = self.first = ""
        self.all_same = True
        self.n = 0

    def add(self, s: str) -> None:
        if self.n == 0:
            self.prefix = self.suffix = self.first = s
        else:
            if self.all_same and s != self.first:
                self.all_same = False
            if not s.startswith(self.prefix):
                self.prefix = _common_prefix(self.prefix, s)
            if not s.endswith(self.suffix):
                self.suffix = _common_suffix(self.suffix, s)
        self.n += 1

    def add_many(self, strings: list[str]) -> None:
        """`add` each string, with C-level scans over the batch (same result)."""
        if not strings:
            return
        if self.n == 0:
            self.prefix = self.suffix = self.first = strings[0]
        k = len(strings)
        if self.all_same and strings.count(self.first) != k:
            self.all_same = False
        prefix, suffix = self.prefix, self.suffix
        if prefix and sum(map(str.startswith, strings, repeat(prefix))) != k:
            # the common prefix of a set is that of its smallest and largest strings
            self.prefix = _common_prefix(prefix, _common_prefix(min(strings), max(strings)))
        if suffix and sum(map(str.endswith, strings, repeat(suffix))) != k:
            backwards = [s[::-1] for s in strings]
            self.suffix = _common_suffix(suffix, _common_prefix(min(backwards), max(backwards))[::-1])
        self.n += k


class _Text:
    """Case counts and which candidate strings occur, over batches of joined strings."""

    def __init__(self, candidates: list[str]):
        self.upper = self.lower = 0
        self.absent = list(candidates)  # candidates not seen in any value yet
        self.batch: list[str] = []

    def add(self, s: str) -> None:
        self.batch.append(s)
        if len(self.batch) >= _BATCH:
            self.flush()

    def add_many(self, strings: list[str]) -> None:
        self.batch.extend(strings)
        if len(self.batch) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.batch:
            return
        # NUL never occurs in a candidate, so joining cannot create a false match.
        text = "\x00".join(self.batch)
        self.batch = []
        if self.absent:
            # a candidate's first two characters are searched once for all candidates sharing them
            # (the "\n\n..." separators): text without them holds none of those candidates
            heads: dict[str, bool] = {}
            self.absent = [
                c for c in self.absent
                if not heads.setdefault(c[:2], c[:2] in text) or c not in text
            ]  # fmt: skip
        # ASCII letters: count bytes in C (UTF-8 bytes of other characters are all >= 0x80).
        b = text.encode("utf-8", "surrogatepass")
        self.upper += len(b.translate(None, _NOT_UPPER))
        self.lower += len(b.translate(None, _NOT_LOWER))
        if not text.isascii():  # the few other characters, with the legacy tool's exact test
            # UTF-8 spells every non-ASCII character with bytes >= 0x80 only: dropping the ASCII
            # bytes leaves exactly those characters' encodings
            rest = b.translate(None, _ASCII).decode("utf-8", "surrogatepass")
            self.upper += sum(1 for c in rest if c.isupper() and c.isalpha())
            self.lower += sum(1 for c in rest if c.islower() and c.isalpha())


@dataclass
class Remedy:
    """A recommended remedy: `finding` is asked through `decide`; `apply` records the choice."""

    finding: Finding
    apply: Callable[[], None]


@dataclass
class LegacyPlan:
    """What the second pass does to every row (all off until a remedy turns it on)."""

    task: str
    flags: bytearray
    drop: int = EMPTY  # rows whose flags intersect this are dropped
    lower_prompt: bool = False
    lower_completion: bool = False
    prompt_suffix: str = ""  # appended to every prompt
    prompt_prefix_len: int = 0  # characters removed from every prompt's start
    completion_prefix_len: int = 0
    completion_prefix_space: bool = False  # keep one leading space after removing the prefix
    completion_suffix: str = ""
    space_start: bool = False
    findings: list[Finding] = field(default_factory=list)
    remedies: list[Remedy] = field(default_factory=list)
    fatal: bool = False  # an error the legacy tool stops on
    common_prompt_suffix: str = ""  # as read, for the "more than once" check in pass 2
    common_completion_suffix: str = ""

    def keep(self, index: int) -> bool:
        return not (self.flags[index] & self.drop)

    def transform(self, prompt: str, completion: str) -> tuple[str, str]:
        if self.lower_prompt:
            prompt = prompt.lower()
        if self.lower_completion:
            completion = completion.lower()
        if self.prompt_suffix:
            prompt += self.prompt_suffix
        if self.prompt_prefix_len:
            prompt = prompt[self.prompt_prefix_len :]
        if self.completion_prefix_len:
            completion = completion[self.completion_prefix_len :]
            if self.completion_prefix_space:
                completion = " " + completion
        if self.completion_suffix:
            completion += self.completion_suffix
        if self.space_start and not completion.startswith(" "):
            completion = " " + completion
        return prompt, completion

    def transform_many(self, prompts: list[str], completions: list[str]) -> tuple[list[str], list[str]]:
        """`transform` over lists (the same steps in the same order, one C-level map per step)."""
        if self.lower_prompt:
            prompts = list(map(str.lower, prompts))
        if self.lower_completion:
            completions = list(map(str.lower, completions))
        if self.prompt_suffix:
            suffix = self.prompt_suffix
            prompts = [p + suffix for p in prompts]
        if self.prompt_prefix_len:
            cut = self.prompt_prefix_len
            prompts = [p[cut:] for p in prompts]
        if self.completion_prefix_len:
            cut = self.completion_prefix_len
            completions = [(" " + c[cut:]) for c in completions] if self.completion_prefix_space else [c[cut:] for c in completions]
        if self.completion_suffix:
            suffix = self.completion_suffix
            completions = [c + suffix for c in completions]
        if self.space_start:
            completions = [c if c[:1] == " " else " " + c for c in completions]
        return prompts, completions

    def decide(self, decide: Callable[[Finding], bool]) -> None:
        """Ask about each recommended remedy in the legacy order and record the answers."""
        for remedy in self.remedies:
            accepted = bool(decide(remedy.finding))
            remedy.finding.data["applied"] = accepted
            if accepted:
                remedy.apply()


def _not_a_string(line: int, name: str, value: Any) -> Finding:
    return Finding(
        code="invalid_type",
        level=Level.ERROR,
        message=f"`{name}` must be a string, not {type(value).__name__}",
        line=line,
        field=name,
    )


def check_record(record: dict[str, Any], line: int) -> list[Finding]:
    """The errors of one prompt/completion example used as it is (an uploaded file).

    The scan's per-record checks (`LegacyScan.fields`), where what `tunery prepare` would change
    is an error, since nothing changes an uploaded file: a number is not converted to a string,
    and a missing or empty completion is not dropped. A missing or null prompt is the empty prompt
    of open-ended generation; other keys are ignored, as the trainer ignores them.
    """
    out = []
    for name in ("prompt", "completion"):
        value = record.get(name)
        if value is not None and not isinstance(value, str):
            out.append(_not_a_string(line, name, value))
    completion = record.get("completion")
    if completion is None or completion == "":
        what = "has no `completion`" if completion is None else "has an empty `completion`"
        out.append(
            Finding(
                code="empty_completion",
                level=Level.ERROR,
                message=f"the example {what}: nothing to train on (`tunery prepare` removes such rows)",
                line=line,
                field="completion",
            )
        )
    return out


class LegacyScan:
    """First pass over `{"prompt","completion"}` records: call `add` per record, then `finish`."""

    def __init__(self, collector: Collector, unit: str = "line"):
        self.collector = collector
        self.unit = unit
        self.n_read = 0
        self.flags = bytearray()
        self.pairs: Duplicates | None = Duplicates()  # 64-bit hashes of (prompt, completion)
        self.pair_rows = array("i")  # each hashed pair's index in `flags`, and its line
        self.pair_lines = array("q")
        self.seen_completions: set[int] = set()
        self.n_dup = 0
        self.dup_lines: list[int] = []
        self.prompt_chars = 0
        self.prompts = _Affixes()
        self.completions = _Affixes()
        self.prompt_text = _Text(["\n", *PROMPT_SEPARATORS])
        self.completion_text = _Text(COMPLETION_ENDINGS)
        self.not_space_start = 0
        self.empty_lines: list[int] = []
        self.n_empty = 0
        self.long_lines: list[int] = []
        self.n_long = 0
        self.seen_prompt_key = False
        self.seen_completion_key = False
        self._pending: list[tuple[int, str, str]] = []  # rows not scanned yet

    # -- records ---------------------------------------------------------------------------

    def fields(self, line: int, record: dict[str, Any]) -> tuple[str, str] | None:
        """(prompt, completion) of a record, applying checks 2-4; None when the record is unusable."""
        if len(record) == 2 and "prompt" in record and "completion" in record:
            self.seen_prompt_key = self.seen_completion_key = True
            prompt, completion = record["prompt"], record["completion"]
        else:
            prompt = completion = None
            extra = []
            for key, value in record.items():
                name = str(key)
                if name == "prompt" or name == "completion":
                    pass
                elif name.lower() in ("prompt", "completion") and name.lower() not in record:
                    self.collector.add(
                        Finding(
                            code="column_case",
                            level=Level.FIX,
                            message=f"the `{name.lower()}` column/key should be lowercase; renamed `{name}` to `{name.lower()}`",
                            line=line,
                            field=name,
                        )
                    )
                    name = name.lower()
                else:
                    extra.append(name)
                    continue
                if name == "prompt":
                    self.seen_prompt_key, prompt = True, value
                else:
                    self.seen_completion_key, completion = True, value
            if extra:
                conflicts = [e for e in extra if "prompt" in e.lower() or "completion" in e.lower()]
                warn = (
                    f"; WARNING: {conflicts} contain `prompt` or `completion` in their name and are ignored, "
                    "the columns `prompt` and `completion` are used"
                    if conflicts
                    else ""
                )
                self.collector.add(
                    Finding(
                        code="extra_columns",
                        level=Level.FIX,
                        message=f"only `prompt` and `completion` are used; removed additional columns/keys {extra}{warn}",
                        line=line,
                        field=extra[0],
                        data={"columns": extra},
                    )
                )
        prompt = self._string(line, "prompt", prompt)
        completion = self._string(line, "completion", completion)
        if prompt is None or completion is None:
            return None
        return prompt, completion

    def _string(self, line: int, name: str, value: Any) -> str | None:
        if isinstance(value, str):
            return value
        if value is None:
            return ""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self.collector.add(
                Finding(
                    code="converted_to_string",
                    level=Level.FIX,
                    message=f"`{name}` is a number ({value!r}); converted to the string {str(value)!r}",
                    line=line,
                    field=name,
                )
            )
            return str(value)
        self.collector.add(_not_a_string(line, name, value))
        return None

    def add(self, line: int, prompt: str, completion: str) -> None:
        """Record one row (every row read, including those with an empty completion).

        Rows are buffered and scanned in batches (C-level maps over lists instead of Python per
        row); `finish` scans the rest, so read the counts only after it.
        """
        pending = self._pending
        pending.append((line, prompt, completion))
        if len(pending) >= _BATCH:
            self._scan()

    def add_many(self, lines: list[int], prompts: list[str], completions: list[str]) -> None:
        """`add` for each row of three columns."""
        self._scan()
        self._pending = list(zip(lines, prompts, completions))
        self._scan()

    def _scan(self) -> None:
        rows, self._pending = self._pending, []
        if not rows:
            return
        self.n_read += len(rows)
        lines, prompts, completions = (list(x) for x in zip(*rows))
        if not all(completions):  # empty completions: flagged (dropped later) and not scanned
            keep = []
            for k, c in enumerate(completions):
                if c:
                    keep.append(k)
                else:
                    self.n_empty += 1
                    if len(self.empty_lines) < 5:
                        self.empty_lines.append(lines[k])
            empty = bytearray([EMPTY]) * len(rows)
            for k in keep:
                empty[k] = 0
            lines, prompts, completions = ([x[k] for k in keep] for x in (lines, prompts, completions))
        else:
            empty = None
        flags = bytearray(len(lines))
        sizes = list(map(len, prompts))
        self.prompt_chars += sum(sizes)
        if lines and max(map(_plus, sizes, map(len, completions))) > LONG_CHARS:
            for k, n in enumerate(map(_plus, sizes, map(len, completions))):
                if n > LONG_CHARS:
                    flags[k] |= LONG
                    self.n_long += 1
                    if len(self.long_lines) < 5:
                        self.long_lines.append(lines[k])
        # duplicates are settled in `finish`, from the hashes (rows past the first are flagged)
        first_row = len(self.flags)
        self.pairs.add_many(map(hash, zip(prompts, completions)))
        self.pair_rows.extend(range(first_row, first_row + len(rows)) if empty is None else (first_row + k for k in keep))
        self.pair_lines.extend(lines)
        if empty is None:
            self.flags += flags
        else:
            for k, f in zip(keep, flags):
                empty[k] = f
            self.flags += empty
        self.seen_completions.update(map(hash, completions))
        self.prompts.add_many(prompts)
        self.completions.add_many(completions)
        self.prompt_text.add_many(prompts)
        self.completion_text.add_many(completions)
        self.not_space_start += len(completions) - sum(map(str.startswith, completions, repeat(" ")))

    # -- decisions -------------------------------------------------------------------------

    def finish(self) -> LegacyPlan:
        """Take the legacy tool's decisions; returns the plan with its findings and remedies."""
        self._scan()
        if self.pairs is not None:
            for k in self.pairs.repeats():  # a duplicate of an earlier row (the first one is kept)
                self.flags[self.pair_rows[k]] |= DUPLICATE
                self.n_dup += 1
                if len(self.dup_lines) < 5:
                    self.dup_lines.append(self.pair_lines[k])
            # not needed any more: the flags say which rows are duplicates
            self.pairs, self.pair_rows, self.pair_lines = None, array("i"), array("q")
        self.prompt_text.flush()
        self.completion_text.flush()
        unit = self.unit
        n = self.prompts.n  # rows with a completion
        out: list[Finding] = []
        plan = LegacyPlan(task=CONDITIONAL, flags=self.flags, findings=out)

        def finding(code: str, level: Level, message: str, **kw: Any) -> Finding:
            f = Finding(code=code, level=level, message=message, **kw)
            out.append(f)
            return f

        def recommend(f: Finding, remedy: str, apply: Callable[[], None]) -> None:
            f.data["remedy"] = remedy
            f.data["recommended"] = True
            plan.remedies.append(Remedy(f, apply))

        # 1. number of examples
        if self.n_read < MIN_EXAMPLES:
            finding(
                "few_examples",
                Level.WARNING,
                f"the file contains {self.n_read} prompt-completion pairs; we recommend at least a few hundred "
                "(performance tends to rise linearly with every doubling of the examples)",
                data={"n": self.n_read},
            )
        # 2-3. necessary columns (a column missing from every record; renames were reported per record)
        for name, seen in (("prompt", self.seen_prompt_key), ("completion", self.seen_completion_key)):
            if not seen and self.n_read:
                plan.fatal = True
                finding(
                    "missing_column",
                    Level.ERROR,
                    f"`{name}` column/key is missing; name your columns/keys `prompt` and `completion` "
                    "(or build them with --prompt/--completion templates)",
                    field=name,
                )
        if plan.fatal:
            return plan
        # 5. empty completions (necessary: dropped)
        if self.n_empty:
            finding(
                "empty_completion",
                Level.FIX,
                f"{self.n_empty} rows have an empty `completion`; removed them (first at {unit} "
                f"{', '.join(map(str, self.empty_lines))})",
                line=self.empty_lines[0],
                field="completion",
                count=self.n_empty,
                lines=list(self.empty_lines),
            )
        if n == 0:
            plan.fatal = True
            finding("no_examples", Level.ERROR, "no example has a non-empty completion")
            return plan

        # the task type, on the rows left after the necessary fixes
        unique_completions = len(self.seen_completions)
        plan.task = infer_task(n, unique_completions, self.prompt_chars)
        # 6. classification advice
        if plan.task == CLASSIFICATION:
            finding(
                "classification",
                Level.INFO,
                f"the data looks like classification ({unique_completions} distinct completions over {n} examples); "
                "a small, fast base model usually does well, and a held-out validation set estimates accuracy",
                data={"n_classes": unique_completions},
            )

        # 7. duplicates (keep the first of each (prompt, completion))
        if self.n_dup:
            lines = self.dup_lines
            f = finding(
                "duplicate_rows",
                Level.WARNING,
                f"{self.n_dup} duplicated prompt-completion pairs (first at {unit} {', '.join(map(str, lines))})",
                line=lines[0],
                count=self.n_dup,
                lines=list(lines),
            )
            recommend(f, f"Remove {self.n_dup} duplicate rows", lambda: setattr(plan, "drop", plan.drop | DUPLICATE))

        # 8. long examples
        if plan.task != OPEN_ENDED and self.n_long:
            f = finding(
                "long_examples",
                Level.WARNING,
                f"{self.n_long} examples are very long (prompt + completion over {LONG_CHARS:,} characters; "
                f"first at {unit} {', '.join(map(str, self.long_lines))})",
                line=self.long_lines[0],
                count=self.n_long,
                lines=list(self.long_lines),
            )
            recommend(f, f"Remove {self.n_long} long examples", lambda: setattr(plan, "drop", plan.drop | LONG))

        # 9-10. mostly upper case
        for name, text in (("prompt", self.prompt_text), ("completion", self.completion_text)):
            if text.upper * 2 > text.lower:
                f = finding(
                    f"uppercase_{name}",
                    Level.WARNING,
                    f"more than a third of the letters in `{name}` are upper case ({text.upper:,} upper, "
                    f"{text.lower:,} lower); upper-case text tends to train worse than normal mixed case",
                    field=name,
                    data={"upper": text.upper, "lower": text.lower},
                )
                attr = f"lower_{name}"
                recommend(f, f"Lowercase all your data in column/key `{name}`", lambda attr=attr: setattr(plan, attr, True))

        # 11. common prompt suffix (the separator)
        if plan.task != OPEN_ENDED:
            absent = set(self.prompt_text.absent)
            separator = FALLBACK_SEPARATOR
            for option in PROMPT_SEPARATORS:
                if option == " ->" and "\n" not in absent:
                    continue
                if option in absent:
                    separator = option
                    break
            suffix = self.prompts.suffix
            if self.prompts.all_same:
                plan.fatal = True
                finding(
                    "identical_prompts",
                    Level.ERROR,
                    f"all prompts are identical: `{show(self.prompts.first)}`; leave the prompts empty for "
                    "open-ended generation, otherwise make them differ",
                    field="prompt",
                )
                return plan
            if suffix:
                plan.common_prompt_suffix = suffix
                long = len(suffix) > LONG_XFIX
                finding(
                    "prompt_suffix",
                    Level.WARNING if long else Level.INFO,
                    f"all prompts end with the separator `{show(suffix)}`"
                    + (f"; it is very long, consider a shorter one such as `{show(separator)}`" if long else ""),
                    field="prompt",
                    data={"suffix": suffix},
                )
            else:
                f = finding(
                    "missing_prompt_separator",
                    Level.WARNING,
                    "the prompts do not end with a common separator; a fixed separator at the end of every prompt "
                    f"tells the model where the completion begins ({GUIDE})",
                    field="prompt",
                    data={"separator": separator},
                )

                def add_separator(separator: str = separator) -> None:
                    plan.prompt_suffix = separator

                recommend(f, f"Add a suffix separator `{show(separator)}` to all prompts", add_separator)

        # 12. common prompt prefix
        prefix = self.prompts.prefix
        if prefix and not self.prompts.all_same:
            if len(prefix) > MAX_PROMPT_PREFIX:
                f = finding(
                    "prompt_prefix",
                    Level.WARNING,
                    f"all prompts start with the prefix `{show(prefix)}`; fine-tuning does not need the task "
                    "instruction or few-shot examples in every prompt, only the input",
                    field="prompt",
                    data={"prefix": prefix},
                )
                recommend(
                    f,
                    f"Remove prefix `{show(prefix)}` from all prompts",
                    lambda: setattr(plan, "prompt_prefix_len", len(prefix)),
                )
            else:
                finding("prompt_prefix", Level.INFO, f"all prompts start with the prefix `{show(prefix)}`", field="prompt")

        # 13. common completion prefix
        cprefix = self.completions.prefix
        if len(cprefix) >= MIN_COMPLETION_PREFIX and not self.completions.all_same:
            f = finding(
                "completion_prefix",
                Level.WARNING,
                f"all completions start with the prefix `{show(cprefix)}`; the completion should hold only the output",
                field="completion",
                data={"prefix": cprefix},
            )

            def strip_completion_prefix() -> None:
                plan.completion_prefix_len = len(cprefix)
                plan.completion_prefix_space = cprefix.startswith(" ")

            recommend(f, f"Remove prefix `{show(cprefix)}` from all completions", strip_completion_prefix)

        # 14. common completion ending (not for open-ended generation or classification)
        if plan.task == CONDITIONAL:
            if self.completions.all_same:
                plan.fatal = True
                first = show(self.completions.first)
                finding(
                    "identical_completions",
                    Level.ERROR,
                    f"all completions are identical: `{first}`; the model would only learn to repeat it",
                    field="completion",
                )
                return plan
            absent = set(self.completion_text.absent)
            ending = next((e for e in COMPLETION_ENDINGS if e in absent), FALLBACK_ENDING)
            csuffix = self.completions.suffix
            if csuffix:
                plan.common_completion_suffix = csuffix
                long = len(csuffix) > LONG_XFIX
                finding(
                    "completion_suffix",
                    Level.WARNING if long else Level.INFO,
                    f"all completions end with `{show(csuffix)}`"
                    + (f"; it is very long, consider a shorter one such as `{show(ending)}`" if long else ""),
                    field="completion",
                    data={"suffix": csuffix},
                )
            else:
                f = finding(
                    "missing_completion_ending",
                    Level.WARNING,
                    "the completions do not end with a common ending; a fixed ending tells the model where to stop "
                    f"and gives you a stop sequence ({GUIDE})",
                    field="completion",
                    data={"ending": ending},
                )

                def add_ending(ending: str = ending) -> None:
                    plan.completion_suffix = ending

                recommend(f, f"Add a suffix ending `{show(ending)}` to all completions", add_ending)

        # 15. completions should start with a space
        if self.not_space_start:
            f = finding(
                "completion_space",
                Level.WARNING,
                f"{self.not_space_start} completions do not start with a space (` `); a leading space tends to "
                "give better results with GPT-style tokenizers",
                field="completion",
                count=self.not_space_start,
            )
            recommend(f, "Add a whitespace character to the beginning of the completion", lambda: setattr(plan, "space_start", True))
        return plan


def infer_task(n: int, unique_completions: int, prompt_chars: int) -> str:
    """The legacy task type: open-ended if every prompt is empty, classification if few distinct completions."""
    if prompt_chars == 0:
        return OPEN_ENDED
    if unique_completions < n / CLASSIFICATION_THRESHOLD:
        return CLASSIFICATION
    return CONDITIONAL
