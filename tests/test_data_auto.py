import pytest

from tunery.data.auto import auto_batch_size, auto_n_epochs


@pytest.mark.parametrize(
    "n, epochs",
    [(1, 25), (3, 25), (4, 25), (5, 20), (10, 10), (33, 3), (34, 3), (100, 3), (8333, 3), (8334, 2), (25_000, 1), (100_000, 1)],
)
def test_auto_n_epochs_follows_the_cookbook_rule(n, epochs):
    assert auto_n_epochs(n) == epochs


def test_auto_n_epochs_for_ten_examples_matches_a_real_openai_job():
    assert auto_n_epochs(10) == 10


@pytest.mark.parametrize("n, batch", [(1, 1), (10, 1), (1000, 2), (10_000, 20), (500_000, 256)])
def test_auto_batch_size_is_two_per_mille_capped(n, batch):
    assert auto_batch_size(n) == batch


@pytest.mark.parametrize("fn", [auto_n_epochs, auto_batch_size])
def test_auto_rules_refuse_empty_data(fn):
    with pytest.raises(ValueError):
        fn(0)
