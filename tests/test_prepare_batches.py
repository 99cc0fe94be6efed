"""The batched (list-at-a-time) steps of `tunery prepare` give exactly what their per-item forms give."""

from __future__ import annotations

import random
from array import array

from tunery.data import legacy
from tunery.data.collect import Collector
from tunery.data.prepare import _Labels
from tunery.data.split import split_indices, split_order
from tunery.data.tokens import TokenStats
from tunery.data.writer import Spool, dumps, pair_lines

WORDS = ["a", "ab", "abc", " x", "x ", "\n###\n", "é", "日本", "", " ", "END", "ab END"]


def random_strings(rng: random.Random, n: int) -> list[str]:
    return ["".join(rng.choice(WORDS) for _ in range(rng.randrange(5))) for _ in range(n)]


def test_affixes_add_many_equals_add():
    rng = random.Random(0)
    for trial in range(300):
        strings = random_strings(rng, rng.randrange(1, 40))
        if trial % 3 == 0:  # a shared prefix and suffix that later batches may break
            strings = ["pre" + s + "\nSentiment:" for s in strings]
        one, many = legacy._Affixes(), legacy._Affixes()
        for s in strings:
            one.add(s)
        k = 0
        while k < len(strings):
            step = rng.randrange(1, 8)
            many.add_many(strings[k : k + step])
            k += step
        assert (many.prefix, many.suffix, many.first, many.all_same, many.n) == (
            one.prefix, one.suffix, one.first, one.all_same, one.n
        )  # fmt: skip


def test_transform_many_equals_transform():
    rng = random.Random(1)
    prompts, completions = random_strings(rng, 200), random_strings(rng, 200)
    for bits in range(128):
        plan = legacy.LegacyPlan(task=legacy.CONDITIONAL, flags=bytearray())
        plan.lower_prompt, plan.lower_completion = bool(bits & 1), bool(bits & 2)
        plan.prompt_suffix = "\n\n###\n\n" if bits & 4 else ""
        plan.prompt_prefix_len = 2 if bits & 8 else 0
        plan.completion_prefix_len = 1 if bits & 16 else 0
        plan.completion_prefix_space = bool(bits & 32)
        plan.completion_suffix = " END" if bits & 64 else ""
        plan.space_start = bits % 3 == 0
        expected = [plan.transform(p, c) for p, c in zip(prompts, completions)]
        ps, cs = plan.transform_many(prompts, completions)
        assert list(zip(ps, cs)) == expected


def test_pair_lines_equal_dumps():
    texts = ['plain', 'quote " and \\ backslash', "tab\tnew\nline", "é 日本 😀", "\x00\x1f\x7f", "\u2028", ""]
    prompts = [a + b for a in texts for b in texts]
    completions = [b + a for a in texts for b in texts]
    assert pair_lines(prompts, completions) == [dumps({"prompt": p, "completion": c}) for p, c in zip(prompts, completions)]


def test_spool_add_many_keeps_offsets(tmp_path):
    lines = [dumps({"prompt": str(i) * i, "completion": "x"}) for i in range(50)]
    with Spool(tmp_path) as one, Spool(tmp_path) as many:
        for line in lines:
            one.add(line)
        many.add_many(lines[:7])
        many.add_many([])
        many.add_many(lines[7:])
        assert many.offsets == one.offsets and len(many) == 50
        order = list(range(50))[::-1]
        many.write(tmp_path / "out.jsonl", order)
        assert (tmp_path / "out.jsonl").read_bytes() == b"".join(reversed(lines))


def test_split_order_is_split_indices_as_arrays():
    labels = array("i", [i % 3 if i % 7 else 0 for i in range(500)])
    for stratify in (None, labels):
        train, valid = split_order(500, 60, stratify, seed=3)
        assert isinstance(train, array) and (train.tolist(), valid.tolist()) == split_indices(500, 60, stratify, seed=3)


def test_split_is_the_same_shuffle_as_before():
    # The list-based implementation this replaced, inline: an existing seed must keep its split.
    def reference(n, n_valid, labels, seed):
        rng = random.Random(seed)
        groups = {}
        for i, label in enumerate(labels):
            groups.setdefault(label, []).append(i)
        classes = sorted(groups)
        exact = {c: len(groups[c]) * n_valid / n for c in classes}
        take = {c: int(exact[c]) for c in classes}
        for c in sorted(classes, key=lambda c: (-(exact[c] - take[c]), -len(groups[c]), c))[: n_valid - sum(take.values())]:
            take[c] += 1
        train, valid = [], []
        for c in classes:
            rng.shuffle(groups[c])
            valid += groups[c][: take[c]]
            train += groups[c][take[c] :]
        rng.shuffle(train)
        rng.shuffle(valid)
        return train, valid

    labels = [i % 5 for i in range(1000)]
    assert split_indices(1000, 111, labels, seed=42) == reference(1000, 111, labels, 42)


def test_token_stats_add_columns_equals_add():
    rng = random.Random(2)
    totals = [rng.choice([3, 50, 4000, 9000, 10**6]) + rng.randrange(100) for _ in range(3000)]
    trained = [rng.randrange(t + 1) for t in totals]
    lines = list(range(10, 3010))
    one, many = TokenStats(context_length=8192), TokenStats(context_length=8192)
    for t, tr, line in zip(totals, trained, lines):
        one.add(t, tr, line)
    many.add_columns(array("i", totals), array("i", trained), array("q", lines))
    assert many.to_dict() == one.to_dict()
    assert [f.to_dict() for f in many.findings()] == [f.to_dict() for f in one.findings()]


def test_labels_add_many_equals_add():
    rng = random.Random(3)
    labels = [rng.choice([" a", " b", None, " c", ""]) for _ in range(1000)]
    one, many = _Labels(), _Labels()
    for label in labels:
        one.add(label)
    for k in range(0, 1000, 97):
        many.add_many(labels[k : k + 97])
    assert (many.ids, many.counts, many.per_example, many.overflow) == (one.ids, one.counts, one.per_example, one.overflow)


def test_labels_add_many_gives_up_past_the_limit(monkeypatch):
    import tunery.data.prepare as prepare

    monkeypatch.setattr(prepare, "MAX_LABELS", 5)
    labels = [str(i % 8) for i in range(40)]
    one, many = _Labels(), _Labels()
    for label in labels:
        one.add(label)
    many.add_many(labels)
    assert many.overflow and one.overflow and not many.is_classification()


def test_legacy_scan_across_batches():
    """Duplicates, empty and long rows spread over several scan batches: the same flags and lines."""
    n = 3 * legacy._BATCH + 17
    rows = []
    for i in range(1, n + 1):
        prompt = f"p{i % 2500}"  # rows past 2500 repeat an earlier prompt ...
        completion = "" if i % 1000 == 0 else f" c{i % 2500}"  # ... and its completion
        if i % 1500 == 0:
            prompt = "x" * legacy.LONG_CHARS
        rows.append((i, prompt, completion))
    scan = legacy.LegacyScan(Collector(), "row")
    for line, p, c in rows:
        scan.add(line, p, c)
    plan = scan.finish()
    seen, flags, dups, empties, longs = set(), bytearray(), [], [], []
    for line, p, c in rows:  # the per-row rule
        if not c:
            flags.append(legacy.EMPTY)
            empties.append(line)
            continue
        f = legacy.LONG if len(p) + len(c) > legacy.LONG_CHARS else 0
        if f:
            longs.append(line)
        if (p, c) in seen:
            f |= legacy.DUPLICATE
            dups.append(line)
        seen.add((p, c))
        flags.append(f)
    assert plan.flags == flags
    assert (scan.n_read, scan.n_dup, scan.n_empty, scan.n_long) == (n, len(dups), len(empties), len(longs))
    assert (scan.dup_lines, scan.empty_lines, scan.long_lines) == (dups[:5], empties[:5], longs[:5])
    assert scan.not_space_start == 0 and scan.prompts.n == n - len(empties)


def test_duplicates_by_bitmap_equal_a_set():
    from tunery.data.duplicates import BITS, Duplicates

    rng = random.Random(4)
    # many values share their low bits (bitmap collisions) without being equal, some repeat
    values = [rng.randrange(-(2**63), 2**63) for _ in range(3000)]
    values += [v ^ (rng.randrange(1, 2**20) << BITS) for v in values[:500]]  # same bitmap slot
    values += rng.sample(values, 400)  # true repeats
    rng.shuffle(values)
    dups = Duplicates()
    for k in range(0, len(values), 256):
        dups.add_many(values[k : k + 256])
    seen, expected = set(), []
    for k, v in enumerate(values):
        if v in seen:
            expected.append(k)
        seen.add(v)
    assert list(dups.repeats()) == expected and len(dups) == len(values)
    assert list(Duplicates().repeats()) == []


def test_pair_spool_gives_back_every_row_in_blocks(tmp_path):
    from tunery.data.pairs import BLOCK, PairSpool

    rng = random.Random(5)
    rows = [(i * 3 + 1, rng.choice(WORDS) * rng.randrange(3) + "\ud800" * (i % 97 == 0), rng.choice(WORDS)) for i in range(2 * BLOCK + 5)]
    spool = PairSpool(tmp_path)
    for position, p, c in rows:
        spool.add(position, p, c)
    blocks = list(spool.blocks())
    spool.close()
    assert [len(b) for b in blocks] == [BLOCK, BLOCK, 5]
    assert [row for b in blocks for row in b] == [(position, (p, c)) for position, p, c in rows]


def test_templated_csv_rows_give_the_records_the_generic_path_gives(tmp_path):
    """CSV rows templated straight from lists equal the dict-per-row path (taken with --where)."""
    import csv as csv_module
    import json

    from tunery.data.prepare import PrepareOptions, prepare

    src = tmp_path / "data.csv"
    rng = random.Random(6)
    with open(src, "w", newline="", encoding="utf-8") as f:
        w = csv_module.writer(f)
        w.writerow(["a", "b", "a", "label"])  # a repeated name: the last one wins in a dict
        for i in range(1500):
            row = [rng.choice(WORDS) + str(i), rng.choice(WORDS), f"second {i % 40}", rng.choice(["pos", "neg", "", "neu"])]
            w.writerow(row[: rng.choice([2, 3, 4, 4, 4])])  # short rows are padded with ""
    for prompt, completion in (("{a}", "{label}"), ("Q: {b}\\n{a}!", " {label} {b}"), ("{b}", "{b}")):
        results = []
        for where in (None, "label == label"):
            out = tmp_path / f"out{len(results)}"
            report = prepare(PrepareOptions(path=src, prompt=prompt, completion=completion, where=where, out_dir=out, split=False))
            written = [json.loads(line) for p in report.outputs for line in open(p, encoding="utf-8")]
            results.append(([f.to_dict() for f in report.findings], report.n_read, written))
        assert results[0] == results[1]


def test_letter_case_counts_cover_every_character():
    rng = random.Random(7)
    alphabet = ["a", "Z", "é", "É", "ß", "Σ", "σ", "日", "1", " ", "ǅ", "Ⅻ", "😀", "\ud800"]
    strings = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(30))) for _ in range(700)]
    text = legacy._Text([])
    for s in strings:
        text.add(s)
    text.flush()
    joined = "".join(strings)  # the legacy tool's own test, character by character
    assert text.upper == sum(1 for c in joined if c.isupper() and c.isalpha())
    assert text.lower == sum(1 for c in joined if c.islower() and c.isalpha())
