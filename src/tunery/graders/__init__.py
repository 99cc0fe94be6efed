"""OpenAI's graders: pure scoring over a sample and a data row, no web and no serving imports.

The public surface (used by the Evals API worker, `/v1/fine_tuning/alpha/graders/*` and
reinforcement fine-tuning):

- `validate(grader, *, context)` raises `GraderError(param, message)` for a bad grader object;
  `context` is "eval" (testing criteria), "run" (graders/run, graders/validate) or "rft".
- `grade_batch(grader, pairs, judge=None)` scores a list of `(sample, item)` pairs and returns
  one `GradeResult` per pair; model graders send all their prompts to `judge` at once so the
  serving engine can batch them.
- `passed(grader, result)` applies the Evals pass rule of a testing criterion.
- `make_sample(output_text, ...)` builds the `sample` namespace from a model's answer.
"""

from tunery.graders.result import ERROR_KEYS, GradeResult, GraderError
from tunery.graders.judge import Judge, JudgeReply
from tunery.graders.sample import make_sample
from tunery.graders.grade import grade_batch, passed, validate

__all__ = [
    "ERROR_KEYS", "GradeResult", "GraderError", "Judge", "JudgeReply",
    "make_sample", "grade_batch", "passed", "validate",
]
