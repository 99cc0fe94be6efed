"""text_similarity: each metric's value on hand-checkable pairs, and every validate error path."""

import math

import pytest
from rapidfuzz import fuzz, utils

from tunery.graders import GraderError, grade_batch, make_sample, passed, validate
from tunery.graders.text_similarity import METRICS, similarity

SCORED = [m for m in METRICS if m != "cosine"]  # cosine (a model's score): tests/test_graders_embedding.py


def grader(metric="rouge_1", **extra):
    return {"type": "text_similarity", "name": "sim", "input": "{{ sample.output_text }}",
            "reference": "{{ item.answer }}", "evaluation_metric": metric, **extra}


def run(g, output, answer):
    validate(g)
    [result] = grade_batch(g, [(make_sample(output), {"answer": answer})])
    return result


# --- metric values -------------------------------------------------------------------------

LONG = "the quick brown fox jumps over the lazy dog"  # 9 tokens: every n-gram order up to 5 exists


@pytest.mark.parametrize("metric", [m for m in SCORED if m != "meteor"])
def test_identical_text_scores_exactly_one(metric):
    assert similarity(metric, LONG, LONG) == 1.0  # == 1.0: sacrebleu's 100.00000000000004 is clamped


def test_meteor_identical_text_keeps_its_fragmentation_penalty():
    # METEOR = Fmean * (1 - 0.5 * (chunks / matches)^3); one chunk of n matches -> 1 - 0.5 / n^3.
    n = len(LONG.split())
    assert similarity("meteor", LONG, LONG) == pytest.approx(1 - 0.5 / n ** 3)
    assert similarity("meteor", "cat", "cat") == pytest.approx(0.5)


@pytest.mark.parametrize("metric", SCORED)
def test_disjoint_text_scores_zero(metric):
    # No character in common (fuzzy_match compares characters, and spaces count).
    assert similarity(metric, "abcdefgh", "uvwxyz98") == 0.0
    if metric != "fuzzy_match":  # no word in common
        assert similarity(metric, "alpha beta gamma delta epsilon", "one two three four five") == 0.0


@pytest.mark.parametrize("metric", METRICS)
def test_an_empty_side_scores_zero(metric):
    assert similarity(metric, "", LONG) == 0.0
    assert similarity(metric, LONG, "   ") == 0.0


def test_rouge_hand_checked():
    # hyp "the cat ran" vs ref "the cat sat on the mat": unigram overlap 2 (the, cat): P 2/3, R 2/6.
    hyp, ref = "the cat ran", "the cat sat on the mat"
    assert similarity("rouge_1", hyp, ref) == pytest.approx(4 / 9)
    # bigrams: overlap 1 ("the cat") of 2 and 5: P 1/2, R 1/5 -> F = 2/7.
    assert similarity("rouge_2", hyp, ref) == pytest.approx(2 / 7)
    # LCS "the cat" = 2 -> same as rouge_1 here.
    assert similarity("rouge_l", hyp, ref) == pytest.approx(4 / 9)
    # No 3-gram of the hypothesis occurs in the reference.
    assert similarity("rouge_3", hyp, ref) == 0.0


def test_rouge_uses_the_porter_stemmer():
    assert similarity("rouge_1", "cats running", "cat runs") == 1.0


def test_rouge_tokenizer_drops_non_ascii_scripts_where_gleu_keeps_them():
    assert similarity("rouge_1", "日本 語", "日本 語") == 0.0
    assert similarity("gleu", "日本 語", "日本 語") == 1.0


def test_bleu_hand_checked():
    # "the cat" vs "the cat sat": precisions 2/2 and 1/1 at effective order 2; brevity penalty exp(1 - 3/2).
    assert similarity("bleu", "the cat", "the cat sat") == pytest.approx(math.exp(-0.5))


def test_gleu_hand_checked():
    # hyp 1..4-grams: 2 + 1 = 3, ref: 3 + 2 + 1 = 6, matches 3 -> min(3/3, 3/6).
    assert similarity("gleu", "the cat", "the cat sat") == pytest.approx(0.5)


def test_gleu_tokenizes_punctuation_apart():
    # "cat." -> [cat, .]: hyp grams cat, ".", "cat ." (3), ref grams cat (1), 1 match -> min(1/3, 1/1).
    # A whitespace split would make "cat." one token and score 0.
    assert similarity("gleu", "cat.", "cat") == pytest.approx(1 / 3)


def test_meteor_matches_stems_but_not_synonyms():
    assert similarity("meteor", "runs", "running") == pytest.approx(0.5)  # Porter: run == run
    # WordNet would match big/large; without it (and without any download) they do not.
    assert similarity("meteor", "big", "large") == 0.0


def test_meteor_ignores_case():
    assert similarity("meteor", "Cat", "cat") == pytest.approx(0.5)


def test_fuzzy_match_is_rapidfuzz_wratio_with_default_process():
    a, b = "apple pie recipe", "Apple pies: a recipe"
    expected = fuzz.WRatio(a, b, processor=utils.default_process) / 100
    assert 0 < expected < 1
    assert similarity("fuzzy_match", a, b) == pytest.approx(expected)
    # default_process lowercases and turns punctuation into spaces, then trims (G-GRADERS' example uses it).
    assert similarity("fuzzy_match", "Hello World!", "hello world") == 1.0
    assert fuzz.WRatio("Hello World!", "hello world") < 100


@pytest.mark.parametrize("metric", SCORED)
def test_rewards_lie_in_the_unit_interval(metric):
    for hyp, ref in [("a a a a a a", "a"), ("x y z", "x y z x y z x y z"), ("!!! ???", "!!!"), ("日本 語", "日本")]:
        assert 0.0 <= similarity(metric, hyp, ref) <= 1.0


# --- grading through the dispatch table -----------------------------------------------------

def test_grade_batch_renders_templates_and_scores_each_row():
    g = grader("rouge_1", pass_threshold=0.5)
    validate(g, context="eval")
    rows = [(make_sample("the cat ran"), {"answer": "the cat sat on the mat"}),
            (make_sample("the cat sat on the mat"), {"answer": "the cat sat on the mat"})]
    first, second = grade_batch(g, rows)
    assert (first.name, first.type) == ("sim", "text_similarity")
    assert first.reward == pytest.approx(4 / 9) and second.reward == 1.0
    assert not passed(g, first) and passed(g, second)
    assert not any(first.errors.values())


def test_non_string_values_render_as_json():
    g = grader("fuzzy_match") | {"reference": "{{ item.n }}"}
    validate(g)
    [result] = grade_batch(g, [(make_sample("42"), {"n": 42})])
    assert result.reward == 1.0


@pytest.mark.parametrize("field,template", [("input", "{{ sample.nope }}"), ("reference", "{{ item.missing }}"),
                                            ("reference", "{{ other.answer }}")])
def test_missing_template_variable_flags_invalid_variable_and_scores_zero(field, template):
    g = grader("fuzzy_match") | {field: template}
    result = run(g, "same", "same")
    assert result.reward == 0.0
    assert result.errors["invalid_variable_error"] is True
    assert [k for k, v in result.errors.items() if v] == ["invalid_variable_error"]


# --- validate -------------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["name", "input", "reference", "evaluation_metric"])
def test_missing_required_field(field):
    g = grader()
    del g[field]
    with pytest.raises(GraderError) as err:
        validate(g)
    assert err.value.param == f"grader.{field}"
    assert "Missing required parameter" in err.value.message


@pytest.mark.parametrize("field,value", [("name", 3), ("input", ["x"]), ("reference", None), ("evaluation_metric", 1),
                                         ("pass_threshold", "0.5"), ("pass_threshold", True)])
def test_wrong_type(field, value):
    g = grader() | {field: value}
    with pytest.raises(GraderError) as err:
        validate(g, param="testing_criteria[2]", context="eval" if field == "pass_threshold" else "run")
    assert err.value.param == f"testing_criteria[2].{field}"


@pytest.mark.parametrize("metric", ["rouge_6", "rouge-1", "ROUGE_L", "bleurt", ""])
def test_unknown_metric(metric):
    with pytest.raises(GraderError) as err:
        validate(grader(metric))
    assert err.value.param == "grader.evaluation_metric"
    assert repr(metric) in err.value.message


@pytest.mark.parametrize("context", ["eval", "run"])
def test_cosine_is_accepted_for_evals_and_graders_run(context):
    validate(grader("cosine", pass_threshold=0.5), context=context)


def test_cosine_is_refused_for_rft_naming_the_field():
    with pytest.raises(GraderError) as err:
        validate(grader("cosine"), context="rft")
    assert err.value.param == "grader.evaluation_metric"
    assert "only available for evals" in err.value.message


def test_pass_threshold_is_required_only_as_an_eval_criterion():
    validate(grader(), context="run")
    validate(grader(), context="rft")
    validate(grader(pass_threshold=0.7), context="eval")
    with pytest.raises(GraderError) as err:
        validate(grader(), context="eval")
    assert err.value.param == "grader.pass_threshold"
