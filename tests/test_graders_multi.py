"""multi: the three forms of `graders`, the formula language, grade-time errors, every validate error."""

import math

import pytest

from tunery.graders import GradeResult, GraderError, grade_batch, make_sample, validate
from tunery.graders import grade as dispatch
from tunery.graders.formula import (FormulaSyntaxError, FormulaValueError, MAX_DEPTH, MAX_LENGTH, compile_formula,
                                    evaluate)
from tunery.graders.multi import merge_into, sub_graders

NAME = {"type": "text_similarity", "name": "name", "input": "{{ sample.output_json.name }}",
        "reference": "{{ item.name }}", "evaluation_metric": "fuzzy_match", "pass_threshold": 0.8}
EMAIL = {"type": "string_check", "name": "email", "input": "{{ sample.output_json.email }}",
         "reference": "{{ item.email }}", "operation": "eq"}
ITEM = {"name": "Ada Lovelace", "email": "ada@example.com"}


def multi(graders=None, formula="(name + email) / 2", **extra):
    """G-GRADERS' own multigrader example (an object map whose keys are the formula's variables)."""
    graders = {"name": NAME, "email": EMAIL} if graders is None else graders
    return {"type": "multi", "name": "contact", "graders": graders, "calculate_output": formula, **extra}


def grade_one(g, output, item=ITEM):
    validate(g, context="rft")
    [result] = grade_batch(g, [(make_sample(output), item)])
    return result


def check(string, names=("a", "b")):
    return compile_formula(string, set(names))


def value(string, **values):
    return evaluate(compile_formula(string, set(values)), values)


def raises_at(g, param, context="run"):
    with pytest.raises(GraderError) as err:
        validate(g, context=context)
    assert err.value.param == param, err.value.message
    return err.value.message


# --- grading ------------------------------------------------------------------------------

def test_guide_example_combines_sub_rewards():
    result = grade_one(multi(), '{"name": "Ada Lovelace", "email": "ada@example.com"}')
    assert result.sub_rewards == {"name": 1.0, "email": 1.0}
    assert (result.reward, result.type, result.name) == (1.0, "multi", "contact")

    result = grade_one(multi(), '{"name": "ada lovelace", "email": "ada@example.org"}')
    assert result.sub_rewards == {"name": 1.0, "email": 0.0}  # fuzzy_match ignores case; eq does not
    assert result.reward == 0.5
    assert not any(result.errors.values())


def test_each_row_gets_its_own_sub_rewards_and_each_sub_grader_runs_once_per_batch(monkeypatch):
    calls = []
    real = dispatch.grade_batch

    def counting(grader, pairs, judge=None):
        calls.append((grader["type"], len(pairs)))
        return real(grader, pairs, judge)

    monkeypatch.setattr(dispatch, "grade_batch", counting)
    g = multi(formula="name * 10 + email")
    validate(g, context="run")
    outputs = ['{"name": "Ada Lovelace", "email": "x"}', '{"name": "zzzz", "email": "ada@example.com"}',
               '{"name": "Ada Lovelace", "email": "ada@example.com"}']
    results = dispatch.grade_batch(g, [(make_sample(o), ITEM) for o in outputs])
    assert [r.sub_rewards["email"] for r in results] == [0.0, 1.0, 1.0]
    assert results[0].reward == 10.0 and results[2].reward == 11.0
    assert results[1].reward == pytest.approx(results[1].sub_rewards["name"] * 10 + 1)
    assert sorted(calls) == [("multi", 3), ("string_check", 3), ("text_similarity", 3)]


def test_single_grader_object_is_keyed_by_its_name():
    g = multi(graders=dict(EMAIL), formula="email * 0.5")
    assert set(sub_graders(g)) == {"email"}
    assert grade_one(g, '{"email": "ada@example.com"}').reward == 0.5


def test_array_of_graders_is_keyed_by_their_names():
    g = multi(graders=[NAME, EMAIL], formula="max(name, email)")
    result = grade_one(g, '{"name": "nobody at all", "email": "ada@example.com"}')
    assert result.sub_rewards["email"] == 1.0 and result.reward == 1.0


def test_sub_grader_error_flags_are_ored_into_the_result():
    # The model's answer is not JSON, so output_json is null and {{ sample.output_json.email }} is missing.
    result = grade_one(multi(formula="email + 0.25"), "plain text")
    assert result.errors["invalid_variable_error"] is True
    assert result.sub_rewards == {"name": 0.0, "email": 0.0}
    assert result.reward == 0.25  # the formula still runs on the sub-graders' 0 rewards
    assert result.errors["formula_parse_error"] is False


def test_merge_ors_flags_keeps_the_first_detail_and_sums_usage_per_model():
    into = GradeResult(reward=0.0, name="m", type="multi")
    a = GradeResult(reward=0.0, name="a", type="score_model",
                    token_usage={"judge": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}})
    a.errors["model_grader_server_error"] = True
    a.errors["model_grader_server_error_details"] = "first"
    b = GradeResult(reward=1.0, name="b", type="score_model",
                    token_usage={"judge": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
                                 "other": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
    b.errors["model_grader_server_error_details"] = "second"
    for part in (a, b):
        merge_into(into, part)
    assert into.errors["model_grader_server_error"] is True
    assert into.errors["model_grader_server_error_details"] == "first"
    assert into.errors["other_error"] is False
    assert into.token_usage == {"judge": {"prompt_tokens": 15, "completion_tokens": 3, "total_tokens": 18},
                                "other": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
    assert into.metadata()["token_usage"] == 20  # the spec's integer total


@pytest.mark.parametrize("formula", ["name / (email - email)", "log(email)", "sqrt(email - 1)", "(email - 1) ^ 0.5",
                                     "exp(1000 + name)", "10 ^ 10 ^ 10 + name", "floor(1e308 * 10 + name)"])
def test_formula_without_a_finite_value_flags_formula_parse_error_and_scores_zero(formula):
    result = grade_one(multi(formula=formula), '{"name": "x", "email": "wrong"}')
    assert result.errors["formula_parse_error"] is True
    assert result.reward == 0.0
    assert result.sub_rewards["email"] == 0.0  # still reported


# --- the formula language -----------------------------------------------------------------

@pytest.mark.parametrize("formula,expected", [
    ("a + b * 2", 9.0), ("(a + b) * 2", 10.0), ("a - b - 1", -4.0), ("8 / 4 / 2", 1.0),
    ("2 ^ 3 ^ 2", 512.0), ("2 ** 3", 8.0), ("-2 ^ 2", -4.0), ("(-2) ^ 2", 4.0), ("-a + +b", 3.0),
    ("a * b ^ 2", 16.0), ("2 ^ -1", 0.5), ("1e-1 * 10", 1.0),
    ("min(a, b)", 1.0), ("max(a, b, 5)", 5.0), ("min(b)", 4.0), ("abs(a - b)", 3.0),
    ("floor(2.7)", 2.0), ("ceil(2.1)", 3.0), ("floor(-2.5)", -3.0), ("exp(0)", 1.0), ("sqrt(b)", 2.0),
    ("log(exp(2))", 2.0), ("log(8, 2)", 3.0), ("max(a, min(b, 2)) ^ 2 / 2", 2.0),
])
def test_formula_values(formula, expected):
    assert value(formula, a=1.0, b=4.0) == pytest.approx(expected)


def test_formula_results_are_floats():
    assert type(value("floor(a)", a=2.5)) is float


@pytest.mark.parametrize("formula,values", [("a / 0", {"a": 1.0}), ("log(0)", {}), ("sqrt(-1)", {}),
                                            ("a / b", {"a": 0.0, "b": 0.0}), ("a * 1", {"a": math.nan}),
                                            ("a - a", {"a": math.inf}), ("(-8) ^ (1/3)", {})])
def test_formula_value_errors(formula, values):
    with pytest.raises(FormulaValueError):
        evaluate(compile_formula(formula, set(values)), values)


@pytest.mark.parametrize("formula", [
    "", "   ", "a +", "(a", "a b", "a; b", "a = 1", "__import__('os').system('x')", "a.real", "a[0]",
    "a if b else 1", "a % b", "a // b", "a < b", "a and b", "'x'", "True", "None", "1j", "lambda: 1", "[a]",
    "foo(a)", "a(b)", "min()", "abs(a, b)", "log(a, b, 2)", "sqrt(x=a)", "max(*a)", "c + a", "A + b",
    "a ^^ b", "not a", "~a", "f'{a}'", "(a := 1)",
])
def test_formula_outside_the_grammar_is_refused(formula):
    with pytest.raises(FormulaSyntaxError):
        check(formula)


def test_unknown_variable_names_the_keys():
    with pytest.raises(FormulaSyntaxError, match=r"unknown variable 'c'.*a, b"):
        check("a + c")


def test_formula_size_limits():
    check("+".join(["a"] * MAX_DEPTH))
    with pytest.raises(FormulaSyntaxError, match="nested deeper"):
        check("+".join(["a"] * (MAX_DEPTH + 2)))
    with pytest.raises(FormulaSyntaxError, match="nested deeper"):
        check("-" * 2000 + "a")  # CPython's own parser recursion
    with pytest.raises(FormulaSyntaxError, match="longer than"):
        check("a" + " " * MAX_LENGTH)


# --- validate -------------------------------------------------------------------------------

def test_valid_forms_and_contexts():
    for context in ("run", "rft"):
        validate(multi(), context=context)
        validate(multi(graders=dict(EMAIL), formula="email"), context=context)
        validate(multi(graders=[NAME, EMAIL]), context=context)


def test_multi_is_not_an_eval_criterion():
    assert "testing criteria" in raises_at(multi(), "grader.type", context="eval")


@pytest.mark.parametrize("field", ["name", "graders", "calculate_output"])
def test_missing_required_field(field):
    g = multi()
    del g[field]
    assert "Missing required parameter" in raises_at(g, f"grader.{field}")


@pytest.mark.parametrize("field,bad", [("name", 1), ("graders", "name"), ("graders", None), ("calculate_output", 1),
                                       ("calculate_output", ["a"])])
def test_wrong_type(field, bad):
    raises_at(multi() | {field: bad}, f"grader.{field}")


@pytest.mark.parametrize("graders", [{}, []])
def test_no_graders(graders):
    assert "at least one" in raises_at(multi(graders=graders, formula="1"), "grader.graders")


@pytest.mark.parametrize("key", ["my key", "1st", "a-b", "", "min", "log", "if", "True", "naïve"])
def test_keys_must_be_formula_variables(key):
    g = multi(graders={key: EMAIL, "email": EMAIL}, formula="email")
    assert "formula variable" in raises_at(g, f"grader.graders.{key}")


def test_names_key_the_single_and_array_forms():
    raises_at(multi(graders=EMAIL | {"name": "e mail"}, formula="1"), "grader.graders.name")
    raises_at(multi(graders=[NAME, EMAIL | {"name": "max"}], formula="1"), "grader.graders[1].name")
    raises_at(multi(graders=[NAME, EMAIL | {"name": "name"}]), "grader.graders[1].name")  # duplicate
    raises_at(multi(graders=[NAME, {k: v for k, v in EMAIL.items() if k != "name"}]), "grader.graders[1].name")
    raises_at(multi(graders=[NAME, "email"]), "grader.graders[1]")


def test_sub_graders_are_validated_with_their_path():
    raises_at(multi(graders={"name": NAME, "email": "x"}), "grader.graders.email")
    no_op = {k: v for k, v in EMAIL.items() if k != "operation"}
    raises_at(multi(graders={"name": NAME, "email": no_op}), "grader.graders.email.operation")
    raises_at(multi(graders=[NAME, no_op]), "grader.graders[1].operation")
    raises_at(multi(graders=no_op, formula="email"), "grader.graders.operation")
    raises_at(multi(graders={"name": NAME | {"evaluation_metric": "cosine"}, "email": EMAIL}),
              "grader.graders.name.evaluation_metric", context="rft")
    raises_at(multi(graders={"name": NAME | {"type": "nope"}, "email": EMAIL}), "grader.graders.name.type")


def test_multi_cannot_nest():
    inner = multi()
    assert "cannot contain another multi" in raises_at(multi(graders={"inner": inner}, formula="inner"),
                                                       "grader.graders.inner.type")
    raises_at(multi(graders=inner, formula="contact"), "grader.graders.type")
    raises_at(multi(graders=[inner], formula="contact"), "grader.graders[0].type")


@pytest.mark.parametrize("formula,words", [("name + phone", "unknown variable 'phone'"), ("name +", "cannot parse"),
                                           ("0.5 * text_similarity_score +  0.5 * string_check_score)", "cannot parse"),
                                           ("pow(name, 2)", "unknown function"), ("name % 2", "not allowed")])
def test_bad_formula_names_calculate_output(formula, words):
    assert words in raises_at(multi(formula=formula), "grader.calculate_output")
