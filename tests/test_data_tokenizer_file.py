"""The lean tokenizer.json reading gives exactly the tokenizer `Tokenizer.from_file` gives."""

from __future__ import annotations

import json

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tunery.data.tokenizer_file import load_tokenizer, merges_as_strings

CORPUS = ['The "movie" was great \\ and the acting was superb!', "héllo wörld 日本語 😀 <|end|>", "x\ty\nz"] * 30


def byte_level_bpe() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|end|>", "merges"])
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def test_pretty_and_compact_files_load_the_same_tokenizer(tmp_path):
    tok = byte_level_bpe()
    for pretty in (True, False):
        path = tmp_path / f"tokenizer_{pretty}.json"
        tok.save(str(path), pretty=pretty)
        assert merges_as_strings(path.read_bytes()) is not None  # the lean path is taken
        lean = load_tokenizer(path)
        assert lean.to_str() == Tokenizer.from_file(str(path)).to_str()
        assert [e.ids for e in lean.encode_batch(CORPUS)] == [e.ids for e in tok.encode_batch(CORPUS)]


def test_tokens_with_spaces_or_other_layouts_are_loaded_as_is(tmp_path):
    tok = byte_level_bpe()
    data = json.loads(tok.to_str())
    spaced = json.loads(json.dumps(data))
    spaced["model"]["merges"][0] = ["a b", "c"]  # "a b c" would be ambiguous
    assert merges_as_strings(json.dumps(spaced).encode()) is None
    reordered = {"model": data["model"], **{k: v for k, v in data.items() if k != "model"}}  # model not last
    assert merges_as_strings(json.dumps(reordered).encode()) is None
    data["model"]["merges"] = [" ".join(m) for m in data["model"]["merges"]]  # already strings
    assert merges_as_strings(json.dumps(data).encode()) is None
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(reordered))
    assert load_tokenizer(path).to_str() == Tokenizer.from_file(str(path)).to_str()
