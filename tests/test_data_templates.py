"""Templates over table columns, shell escapes, and the safe --where language."""

from __future__ import annotations

import pytest

from tunery.data.templates import Template, TemplateError, Where, build_record, unescape


def test_unescape_shell_typed_escapes():
    assert unescape(r"a\n\nb\tc\\n") == "a\n\nb\tc\\n"
    assert unescape("real\nnewline") == "real\nnewline"


def test_render_columns_with_escapes_and_missing_values():
    t = Template(r"{review_title}\n\n{review_body}", "--prompt")
    assert t.fields == ["review_title", "review_body"]
    assert t.render({"review_title": "Great", "review_body": "Works."}) == "Great\n\nWorks."
    assert t.render({"review_title": None}) == "\n\n"
    assert Template(" {stars}").render({"stars": 5}) == " 5"
    assert Template("{{literal}} {x}").render({"x": "1"}) == "{literal} 1"


def test_unknown_column_names_it_and_lists_the_columns():
    t = Template("{title}", "--prompt")
    with pytest.raises(TemplateError, match=r"--prompt: unknown column 'title'; the columns are: review_title, stars"):
        t.check_columns(["review_title", "stars"])


@pytest.mark.parametrize("text", ["{}", "{0}", "{a.b}", "{a[0]}", "{unclosed"])
def test_bad_template_fields(text):
    with pytest.raises(TemplateError):
        Template(text, "--completion")


ROW = {"language": "en", "stars": "4", "title": "ok", "empty": ""}


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("language == 'en'", True),
        ("language != 'en'", False),
        ("stars >= 4", True),
        ("stars > 4", False),
        ("stars == 4", True),
        ("stars == '4'", True),
        ("stars in [4, 5]", True),
        ("stars not in ['1', '2']", True),
        ("language in ('de', 'fr')", False),
        ("language == 'en' and stars < 3", False),
        ("language == 'de' or stars <= 4", True),
        ("not language == 'de'", True),
        ("'k' in title", True),
        ("1 < stars < 5", True),
        ("title", True),
        ("empty", False),
        ("title == 3", False),
        ("title != 3", True),
        ("stars > -1", True),
    ],
)
def test_where_expressions(expr, expected):
    assert Where(expr)(ROW) is expected


@pytest.mark.parametrize(
    "expr, message",
    [
        ("__import__('os').system('true')", "Call is not allowed"),
        ("language.upper() == 'EN'", "Call is not allowed"),
        ("stars + 1 > 2", "BinOp is not allowed"),
        ("language == 'en' if True else False", "IfExp is not allowed"),
        ("stars in [x]", "lists may only hold literal values"),
        ("language ==", "invalid expression"),
        ("stars is None", "operator Is is not allowed"),
    ],
)
def test_where_rejects_anything_but_comparisons(expr, message):
    with pytest.raises(TemplateError, match=message):
        Where(expr)


def test_where_unknown_column():
    w = Where("lang == 'en'")
    with pytest.raises(TemplateError, match=r"--where: unknown column 'lang'; the columns are: language, stars"):
        w.check_columns(["language", "stars"])


def test_build_record_completion_and_chat():
    p, c = Template("{title}"), Template(" {stars}")
    assert build_record(ROW, p, c, None, "completion") == {"prompt": "ok", "completion": " 4"}
    assert build_record(ROW, p, c, "Rate it.", "chat") == {
        "messages": [
            {"role": "system", "content": "Rate it."},
            {"role": "user", "content": "ok"},
            {"role": "assistant", "content": " 4"},
        ]
    }
    assert build_record(ROW, None, c, None, "chat")["messages"] == [
        {"role": "user", "content": ""},
        {"role": "assistant", "content": " 4"},
    ]
