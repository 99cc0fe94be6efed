"""`text_similarity`: score a rendered input against a rendered reference with one metric, in [0, 1].

The metric libraries are the ones OpenAI's python-grader image ships (rapidfuzz, nltk, rouge-score)
plus sacrebleu for BLEU. They are imported inside each metric so that loading the graders package
(every Evals run, every graders/run call) does not pay nltk's import time for a metric not used.
Nothing here downloads data: the tokenizers are regular expressions (no punkt), METEOR runs
without WordNet (see `_meteor`), and `cosine` embeds with the all-MiniLM-L6-v2 files that a pinned
package ships (`tunery.graders.embedding`), not OpenAI's text-embedding-3-large.
"""

from __future__ import annotations

import functools
import math
import re

from tunery.graders.checks import optional, require
from tunery.graders.result import GradeResult, GraderError
from tunery.graders.template import MissingVariable, render

ROUGE = {f"rouge_{n}": f"rouge{n}" for n in range(1, 6)} | {"rouge_l": "rougeL"}
METRICS = ("cosine", "fuzzy_match", "bleu", "gleu", "meteor", *ROUGE)

# Words and single punctuation marks, as nltk's word_tokenize roughly splits them, without punkt.
_TOKEN = re.compile(r"\w+|[^\w\s]")


def validate(grader: dict, param: str, context: str) -> None:
    require(grader, "name", str, param)
    require(grader, "input", str, param)
    require(grader, "reference", str, param)
    metric = require(grader, "evaluation_metric", str, param)
    if metric not in METRICS:
        raise GraderError(f"Invalid value for '{param}.evaluation_metric': expected one of {', '.join(METRICS)}; "
                          f"got {metric!r}.", f"{param}.evaluation_metric")
    if metric == "cosine":
        _validate_cosine(param, context)
    # An Evals testing criterion needs a threshold to pass or fail (EvalGraderTextSimilarity).
    if context == "eval":
        require(grader, "pass_threshold", (int, float), param)
    else:
        optional(grader, "pass_threshold", (int, float), param)


def _validate_cosine(param: str, context: str) -> None:
    from tunery.graders import embedding  # torch is imported only when something is embedded

    where = f"{param}.evaluation_metric"
    if context == "rft":
        # OpenAI documents cosine as "only available for evals"; refusing it here too keeps an RFT
        # grader that Tunery accepts one that OpenAI accepts.
        raise GraderError(f"Invalid value for '{where}': 'cosine' is only available for evals and graders/run "
                          "(as on OpenAI), not in a reinforcement fine-tuning grader; use fuzzy_match, bleu, gleu, "
                          "meteor or rouge_*.", where)
    try:
        embedding.model_dir()  # refuse at creation, not at the first graded row, when the model is missing
    except embedding.EmbeddingUnavailable as exc:
        raise GraderError(f"Invalid value for '{where}': 'cosine' cannot run on this server: {exc}.", where) from exc


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _fuzzy_match(got: str, ref: str) -> float:
    # G-GRADERS' own example: WRatio with rapidfuzz's default_process (lowercase, strip punctuation).
    from rapidfuzz import fuzz, utils
    return fuzz.WRatio(got, ref, processor=utils.default_process) / 100.0


def _bleu(got: str, ref: str) -> float:
    # sacrebleu's sentence BLEU: its 13a tokenizer, exp smoothing, effective n-gram order.
    import sacrebleu
    return sacrebleu.sentence_bleu(got, [ref]).score / 100.0


def _gleu(got: str, ref: str) -> float:
    from nltk.translate.gleu_score import sentence_gleu
    return sentence_gleu([tokens(ref)], tokens(got))


class _NoWordNet:
    """A WordNet with no synsets: METEOR then matches exact words and Porter stems only, never
    synonyms (WordNet data is not installed and is never downloaded). Scores can therefore be lower
    than OpenAI's, whose nltk has WordNet."""

    def synsets(self, *args, **kwargs) -> list:
        return []


def _meteor(got: str, ref: str) -> float:
    from nltk.translate.meteor_score import meteor_score
    return meteor_score([tokens(ref)], tokens(got), wordnet=_NoWordNet())


@functools.cache
def _rouge_scorer(name: str):
    from rouge_score import rouge_scorer
    return rouge_scorer.RougeScorer([name], use_stemmer=True)


def _rouge(metric: str):
    # rouge-score's own tokenizer (lowercase, ASCII letters and digits) and Porter stemmer; F-measure.
    name = ROUGE[metric]
    return lambda got, ref: _rouge_scorer(name).score(ref, got)[name].fmeasure


SCORERS = {"fuzzy_match": _fuzzy_match, "bleu": _bleu, "gleu": _gleu, "meteor": _meteor,
           **{m: _rouge(m) for m in ROUGE}}


def _cosine(pairs: list[tuple[str, str]]) -> list[float]:
    from tunery.graders import embedding

    return embedding.cosine(pairs)


def _clamp(value: float) -> float:
    # Cosine can be negative (opposed embeddings): that is no similarity, so it scores 0 like a disjoint text.
    return min(1.0, max(0.0, value)) if math.isfinite(value) else 0.0


def similarities(metric: str, pairs: list[tuple[str, str]]) -> list[float]:
    """Each `(got, ref)` pair's score clamped to [0, 1]; an empty side scores 0 (there is nothing to
    match). `cosine` embeds all the pairs in one batch."""
    scores = [0.0] * len(pairs)
    rows = [i for i, (got, ref) in enumerate(pairs) if got.strip() and ref.strip()]
    if metric == "cosine":
        values = _cosine([pairs[i] for i in rows]) if rows else []
    else:
        values = [SCORERS[metric](*pairs[i]) for i in rows]
    for i, value in zip(rows, values):
        scores[i] = _clamp(float(value))
    return scores


def similarity(metric: str, got: str, ref: str) -> float:
    return similarities(metric, [(got, ref)])[0]


def grade(grader: dict, pairs: list[tuple[dict, dict]], judge=None) -> list[GradeResult]:
    results, texts, rows = [], [], []
    for row, (sample, item) in enumerate(pairs):
        result = GradeResult(reward=0.0, name=grader["name"], type="text_similarity")
        results.append(result)
        namespaces = {"sample": sample, "item": item}
        try:
            texts.append((render(grader["input"], namespaces), render(grader["reference"], namespaces)))
        except MissingVariable:
            result.errors["invalid_variable_error"] = True
            continue
        rows.append(row)
    for row, score in zip(rows, similarities(grader["evaluation_metric"], texts)):
        results[row].reward = score
    return results
