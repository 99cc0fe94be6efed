import pytest

from tunery.eval.labels import label_order, numeric_labels, parse_label

SENTIMENT = ["very negative", "negative", "neutral", "positive", "very positive"]
STARS = ["1", "2", "3", "4", "5"]


@pytest.mark.parametrize("answer,expected", [
    ("positive", "positive"),
    ("  Positive.\n", "positive"),  # case and punctuation
    ("POSITIVE", "positive"),
    ("The sentiment is very positive!", "very positive"),  # the longer label, not "positive"
    ("It's negative, not positive.", "negative"),  # the first label named
    ("Very Negative", "very negative"),
    ("neutral-ish", "neutral"),  # punctuation splits words
    ("I cannot tell", None),
    ("positively glowing", None),  # whole words only
    ("", None),
])
def test_word_labels(answer, expected):
    assert parse_label(answer, SENTIMENT) == expected


@pytest.mark.parametrize("answer,expected", [
    ("4", "4"),
    (" 4", "4"),
    ("4 stars", "4"),
    ("Rating: 5/5", "5"),  # the first number
    ("4.0", "4"),
    ("7", None),  # a number that is not a label
    ("four", None),
    ("", None),
])
def test_numeric_labels(answer, expected):
    assert parse_label(answer, STARS) == expected


def test_exact_label_with_inner_spaces_wins():
    assert parse_label("a b", ["a", "a b"]) == "a b"


def test_label_order_and_numeric_values():
    assert label_order(["10", "9", "1"]) == ["1", "9", "10"]
    assert label_order(["b", "a"]) == ["a", "b"]
    assert numeric_labels(["0", "2.5"]) == {"0": 0.0, "2.5": 2.5}
    assert numeric_labels(["0", "x"]) is None
