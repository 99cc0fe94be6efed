"""Pure sampling and detokenization logic (milliseconds)."""

from __future__ import annotations

import pytest
import torch

from tunery.serve.detokenize import TextStream
from tunery.serve.sampling import SamplingParams, apply_penalties, make_generator, sample_row, top_p_filter


class CharTokenizer:
    """One token per character: ids are code points."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)


def feed(stream, text):
    return [stream.push(ord(c)) for c in text]


def test_penalties_subtract_frequency_times_count_plus_presence():
    logits = torch.zeros(5)
    out = apply_penalties(logits, [1, 1, 3], presence=0.5, frequency=0.25)
    assert out.tolist() == [0.0, -1.0, 0.0, -0.75, 0.0]


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    kept = torch.isfinite(top_p_filter(logits, 0.8)).tolist()
    assert kept == [True, True, False, False]
    assert torch.isfinite(top_p_filter(logits, 0.01)).tolist() == [True, False, False, False]


def test_seeded_generator_draws_the_same_tokens_and_another_seed_other_ones():
    logits = torch.zeros(50)  # uniform over 50 tokens: two seeds' 20 draws agree by chance with p = 50**-20
    p = SamplingParams(max_tokens=1, temperature=1.0, seed=3)

    def draws(seed):
        g = make_generator(seed)
        return [sample_row(logits, p, [], g).token_id for _ in range(20)]

    assert draws(3) == draws(3)
    assert draws(4) != draws(3)
    assert len(set(draws(3))) > 1  # it samples: not one token every time
    reference = torch.Generator().manual_seed(3)  # torch's own draws with that seed
    assert draws(3) == [int(torch.multinomial(torch.softmax(logits, -1), 1, generator=reference)) for _ in range(20)]


def test_stop_string_is_cut_and_partial_matches_are_held_back():
    s = TextStream(CharTokenizer(), stop=["END"])
    out = feed(s, "abcEN")
    assert out == ["a", "b", "c", "", ""]  # "E", "EN" might start "END"
    assert s.push(ord("D")) == "" and s.stopped
    assert s.final_text() == "abc"


def test_held_back_prefix_is_released_when_it_does_not_match():
    s = TextStream(CharTokenizer(), stop=["END"])
    assert feed(s, "xEN") == ["x", "", ""]
    assert s.push(ord("o")) == "ENo"
    assert not s.stopped


def test_flush_releases_held_text_at_the_end():
    s = TextStream(CharTokenizer(), stop=["END"])
    feed(s, "aE")
    assert s.push(None) == "E" and s.final_text() == "aE"


def test_incomplete_utf8_is_held_until_complete():
    class Bytes:
        def decode(self, ids, skip_special_tokens=True):
            return bytes(ids).decode("utf-8", errors="replace")

    s = TextStream(Bytes())
    snow = "é".encode()
    assert s.push(snow[0]) == ""
    assert s.push(snow[1]) == "é"
