"""Counting by cached pre-tokenizer pieces gives exactly the tokenizer's own counts."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tunery.data.fastcount import PieceLengths

CORPUS = [
    "The movie was great, and the acting was superb!",
    "I didn't like it; 1234 reasons why.   Too long\n\nReally.",
    "Ça n'était pas terrible — 日本語のテキスト 😀 emoji",
] * 20

TEXTS = [
    "",
    " ",
    "  x",
    "a  b   ",
    "\n\n###\n\n",
    "it's we'll THEY'RE you'd",
    "123456 ab12 3.14",
    "héllo wörld ÉÀ 日本語のテキスト",
    "\t\ttabs\r\nand\x0bvt\x0cff",
    "emoji 😀👍🏽 mixed",
    "nbsp\u00a0here  \u2003em space",
    "special <|end|> inside",
    "The movie was great" * 50,
    "two  spaces, three   spaces, tab\t end ",
    "ends with two  ",
    " leading space and\n newline \nmixed\n\nruns\n \n",
    "a \n\n b",
    "it 's 'twas ok",
]
# ASCII texts each of whose whitespace runs is short: counted by chunks
CHUNKED = ["The movie was great, and the acting was superb!", "b.\nSentiment: it 's  x", " lead", "tail ", "x\n y \nz"]


def byte_level_bpe(bos: bool = False) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<bos>", "<|end|>"])
    tok.train_from_iterator(CORPUS, trainer)
    if bos:
        from tokenizers.processors import TemplateProcessing

        tok.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", tok.token_to_id("<bos>"))])
    return tok


@pytest.mark.parametrize("bos", [False, True])
@pytest.mark.parametrize("add_special_tokens", [False, True])
def test_counts_equal_the_tokenizers(bos, add_special_tokens):
    tok = byte_level_bpe(bos)
    counter = PieceLengths.for_tokenizer(tok)
    assert counter is not None
    expected = [len(e) for e in tok.encode_batch(TEXTS, add_special_tokens=add_special_tokens)]
    assert counter.lengths(TEXTS, add_special_tokens) == expected
    assert counter.enabled  # the first batch was verified and matched
    assert counter.lengths(TEXTS[::-1], add_special_tokens) == expected[::-1]  # from the cache
    assert "The" in counter.pieces and " movie" in counter.pieces


def test_counting_by_chunks_equals_the_tokenizer():
    tok = byte_level_bpe()
    counter = PieceLengths.for_tokenizer(tok)
    counter.verified = True  # no safety net: the chunk path itself must be exact
    expected = [len(e) for e in tok.encode_batch(CHUNKED, add_special_tokens=False)]
    assert counter.lengths(CHUNKED, False) == expected
    assert "movie" in counter.chunks and "The" in counter.first_chunks
    assert counter.lengths(TEXTS, False) == [len(e) for e in tok.encode_batch(TEXTS, add_special_tokens=False)]


def test_a_tokenizer_that_splits_differently_falls_back_to_encoding():
    tok = byte_level_bpe()
    counter = PieceLengths.for_tokenizer(tok)
    counter.split = counter.split_ascii = list  # a wrong split (one piece per character): the first batch's check catches it
    expected = [len(e) for e in tok.encode_batch(TEXTS, add_special_tokens=False)]
    assert counter.lengths(TEXTS, False) == expected
    assert not counter.enabled
    assert counter.lengths(TEXTS, False) == expected


def test_other_tokenizer_shapes_are_not_handled():
    word = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    word.pre_tokenizer = pre_tokenizers.Whitespace()
    assert PieceLengths.for_tokenizer(word) is None
    prefixed = byte_level_bpe()
    prefixed.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    assert PieceLengths.for_tokenizer(prefixed) is None


def test_random_whitespace_heavy_text_is_counted_exactly():
    import random

    tok = byte_level_bpe()
    counter = PieceLengths.for_tokenizer(tok)
    counter.verified = True
    rng = random.Random(0)
    alphabet = ["a", "b", "The", "movie", " ", " ", "  ", "\n", "\t", ".", ",", "'s", "'", "1", "23", "!?"]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(12))) for _ in range(3000)]
    assert counter.lengths(texts, False) == [len(e) for e in tok.encode_batch(texts, add_special_tokens=False)]


def test_batches_mixing_chunked_and_other_texts():
    """A batch is split once and looked up by chunk; texts with NUL, non-ASCII, whitespace runs
    or an added token's first character take the per-text paths: every count stays exact."""
    tok = byte_level_bpe(bos=True)
    counter = PieceLengths.for_tokenizer(tok)
    counter.verified = True
    odd = ["nul\x00inside it", "\x00", "a < b but no token", "special <|end|> here", "héllo", "two  spaces", ""]
    texts = [CHUNKED[i % len(CHUNKED)] + f" {i}" for i in range(40)]
    for k, text in enumerate(odd):
        texts.insert(3 * k + 1, text)
    for add_special_tokens in (False, True):
        expected = [len(e) for e in tok.encode_batch(texts, add_special_tokens=add_special_tokens)]
        assert counter.lengths(texts, add_special_tokens) == expected
        assert counter.lengths(CHUNKED, add_special_tokens) == [
            len(e) for e in tok.encode_batch(CHUNKED, add_special_tokens=add_special_tokens)
        ]


# ASCII texts split at ". " into sentences, with the awkward cases: punctuation runs before the
# split, empty sentences, a text that starts or ends with the split, repeated sentences.
SENTENCES = [
    "Review: The acting was superb. Also: it's long. Sentiment: good",
    "The acting was superb. Also: it's long. The end.",
    "Wait.. what? Yes. etc.). Next one.",
    "a . . b. c",
    ". starts with the split",
    "ends with the split. ",
    "no split at all",
    "Review: The acting was superb. Also: it's long. Sentiment: good",
    "",
    "one.two. three",
]


@pytest.mark.parametrize("add_special_tokens", [False, True])
def test_counting_by_sentence_equals_the_tokenizer(add_special_tokens):
    tok = byte_level_bpe(bos=True)
    counter = PieceLengths.for_tokenizer(tok)
    counter.verified = True  # no safety net: the sentence path itself must be exact
    expected = [len(e) for e in tok.encode_batch(SENTENCES, add_special_tokens=add_special_tokens)]
    assert counter.lengths(SENTENCES, add_special_tokens) == expected
    dotted, last = counter.sentences
    assert "\x00Review: The acting was superb" in dotted and " Also: it's long" not in dotted and "Also: it's long" in dotted
    hits_before = dotted.misses + last.misses
    assert counter.lengths(SENTENCES[::-1], add_special_tokens) == expected[::-1]
    assert dotted.misses + last.misses == hits_before  # every sentence came from the cache
    assert counter.by_sentence


def test_sentence_counting_stops_when_sentences_do_not_repeat(monkeypatch):
    import tunery.data.fastcount as fastcount

    monkeypatch.setattr(fastcount, "SENTENCE_TRIAL", 10)
    tok = byte_level_bpe()
    counter = PieceLengths.for_tokenizer(tok)
    counter.verified = True
    unique = [f"Sentence number {i}. Another {i * 7}. End {i}" for i in range(12)]  # 3 new sentences per text
    assert counter.lengths(unique, False) == [len(e) for e in tok.encode_batch(unique, add_special_tokens=False)]
    assert not counter.by_sentence
    assert not counter.sentences[0] and not counter.sentences[1]  # their memory is given back
    more = [f"Sentence number {i}. Then {i}" for i in range(12, 20)]
    assert counter.lengths(more, False) == [len(e) for e in tok.encode_batch(more, add_special_tokens=False)]  # by chunks now


def test_the_cache_bound_covers_sentences(monkeypatch):
    import tunery.data.fastcount as fastcount

    monkeypatch.setattr(fastcount, "MAX_CACHED_PIECES", 5)
    tok = byte_level_bpe()
    counter = PieceLengths.for_tokenizer(tok)
    counter.verified = True
    for batch in (SENTENCES, SENTENCES[::-1]):
        assert counter.lengths(batch, False) == [len(e) for e in tok.encode_batch(batch, add_special_tokens=False)]
        assert len(counter.sentences[0]) + len(counter.sentences[1]) <= len(batch) * 4  # cleared before each batch
    counter.lengths(["x"], False)
    assert len(counter.sentences[0]) + len(counter.sentences[1]) == 1  # the full caches were cleared


def test_long_sentences_are_counted_but_not_kept():
    tok = byte_level_bpe()
    counter = PieceLengths.for_tokenizer(tok)
    counter.verified = True
    texts = ["Short one. " + "word " * 100 + "end", "Short one. x"]
    assert counter.lengths(texts, False) == [len(e) for e in tok.encode_batch(texts, add_special_tokens=False)]
    assert "\x00Short one" in counter.sentences[0] and list(counter.sentences[1]) == ["x"]
