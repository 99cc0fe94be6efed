import pytest

from tunery.data.estimates import DEFAULT_CPU_TOKENS_PER_SECOND, estimate
from tunery.data.prices import TRAINING_PRICE_PER_1K, UnknownPriceError, price_per_1k


def test_prices_as_published():
    assert TRAINING_PRICE_PER_1K == {
        "ada": 0.0004, "babbage": 0.0006, "curie": 0.003, "davinci": 0.03,
        "babbage-002": 0.0004, "davinci-002": 0.006, "gpt-3.5-turbo": 0.008,
        "gpt-4o-mini-2024-07-18": 0.003, "gpt-4o-2024-08-06": 0.025,
        "gpt-4.1": 0.025, "gpt-4.1-mini": 0.005, "gpt-4.1-nano": 0.0015,
    }  # fmt: skip
    assert price_per_1k("gpt-4o-mini") == 0.003
    assert price_per_1k("gpt-3.5-turbo-0125") == 0.008


def test_unknown_price_is_a_clear_error():
    with pytest.raises(UnknownPriceError, match="no published training price for 'llama-3'"):
        price_per_1k("llama-3")


def test_auto_epochs_billed_tokens_and_costs_by_hand():
    # 10 examples -> auto 10 epochs; 10 x 1,234 = 12,340 billed tokens.
    e = estimate(10, 1234, compare_models=("curie", "gpt-3.5-turbo", "gpt-4o-mini"))
    assert (e.n_epochs, e.n_epochs_auto, e.billed_tokens) == (10, True, 12_340)
    assert e.cost_usd == {"curie": 0.03702, "gpt-3.5-turbo": 0.09872, "gpt-4o-mini": 0.03702}
    assert e.price_per_1k == {"curie": 0.003, "gpt-3.5-turbo": 0.008, "gpt-4o-mini": 0.003}
    assert e.tokens_per_second == DEFAULT_CPU_TOKENS_PER_SECOND and e.tokens_per_second_is_default
    assert e.compute_seconds == 12_340 / DEFAULT_CPU_TOKENS_PER_SECOND


def test_explicit_epochs_and_measured_speed():
    # 100,000 examples of 40 tokens: 4,000,000 per epoch; 2 epochs; davinci $0.03/1K -> $240.
    e = estimate(100_000, 4_000_000, n_epochs=2, compare_models=("davinci",), tokens_per_second=2000)
    assert (e.n_epochs, e.n_epochs_auto, e.billed_tokens) == (2, False, 8_000_000)
    assert e.cost_usd == {"davinci": 240.0}
    assert (e.compute_seconds, e.tokens_per_second_is_default) == (4000.0, False)
    assert estimate(100_000, 4_000_000).n_epochs == 1  # auto: 25,000 // 100,000 -> at least 1


def test_to_dict_is_json_ready():
    import json

    d = estimate(50, 5000, compare_models=("gpt-4.1",)).to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["n_epochs"] == 3 and d["billed_tokens"] == 15_000 and d["cost_usd"] == {"gpt-4.1": 0.375}


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((0, 10), {}, "n_examples must be positive"),
        ((5, -1), {}, "tokens_per_epoch must not be negative"),
        ((5, 10), {"n_epochs": 0}, 'n_epochs must be "auto" or an integer from 1 to 50, not 0'),
        ((5, 10), {"n_epochs": 51}, "not 51"),
        ((5, 10), {"n_epochs": "3"}, "not '3'"),
        ((5, 10), {"n_epochs": True}, "not True"),
        ((5, 10), {"tokens_per_second": 0}, "tokens_per_second must be positive"),
    ],
)
def test_bad_arguments(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        estimate(*args, **kwargs)
