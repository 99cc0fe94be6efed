"""examples/sentiment/sentiment.py end to end against a real `tunery serve` (packaged SmolLM2):
prepare, upload, a two-step job, the three-way comparison as one eval with three runs
(`client.evals`); then `--job` re-evaluates that job."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from api_support import ServerProcess, create_key, server_env

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "sentiment" / "sentiment.py"
SST5 = ROOT.parent / "shared" / "data" / "sst5"


EXPECTED_KEYS = ("n", "accuracy", "macro_f1", "weighted_f1", "invalid", "mae")


def expected_metrics(labels: list[str], matrix: list[list[int]], truth: list[str]) -> dict:
    """The headline metrics worked out from a run's confusion matrix (rows: true label, columns:
    predicted label then invalid), after checking its rows against the dev file's own labels."""
    assert labels == ["0", "1", "2", "3", "4"] and len(matrix) == len(labels)
    assert [sum(row) for row in matrix] == [truth.count(label) for label in labels]  # every dev example, in its true row
    k, n = len(labels), len(truth)
    support = [sum(row) for row in matrix]
    predicted = [sum(row[j] for row in matrix) for j in range(k)]
    f1 = [2 * matrix[i][i] / (predicted[i] + support[i]) if predicted[i] + support[i] else 0.0 for i in range(k)]
    scored = sum(matrix[i][j] for i in range(k) for j in range(k))
    errors = sum(abs(i - j) * matrix[i][j] for i in range(k) for j in range(k))  # the labels are the numbers 0-4
    return {"n": n, "accuracy": sum(matrix[i][i] for i in range(k)) / n, "macro_f1": sum(f1) / k,
            "weighted_f1": sum(f * s for f, s in zip(f1, support)) / n, "invalid": sum(row[k] for row in matrix),
            "mae": errors / scored if scored else float("nan")}


def run_script(server: ServerProcess, key: str, work: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**server_env(server.home), "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": key, "COLUMNS": "200"}
    env.pop("OPENAI_ORG_ID", None)
    return subprocess.run([sys.executable, str(SCRIPT), "--work", str(work), "--dev-limit", "6", "--few-shot", "2", *args],
                          env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.skipif(not SST5.is_dir(), reason="needs ../shared/data/sst5")
def test_sentiment_case_study_runs_end_to_end_and_reuses_a_job(tmp_path):
    home = tmp_path / "home"
    key = create_key(home)
    server = ServerProcess(home).start(timeout=120)
    try:
        out = run_script(server, key, tmp_path / "run", "--train-limit", "24", "--max-steps", "2", "--batch-size", "8")
        assert out.returncode == 0, out.stdout + out.stderr
        results = json.loads((tmp_path / "run" / "results.json").read_text())
        job = results["job"]
        assert job["status"] == "succeeded" and job["fine_tuned_model"].startswith("ft:")
        results_ = results["eval"]["results"]
        runs = {(r["model"], r["few_shot"]) for r in results_}
        assert runs == {("SmolLM2-135M-Instruct", 0), ("SmolLM2-135M-Instruct", 2), (job["fine_tuned_model"], 0)}
        truth = [row["label"].strip() for row in csv.DictReader((tmp_path / "run" / "dev.csv").open(encoding="utf-8"))]
        for r in results_:
            got = {k: float("nan") if r[k] is None else r[k] for k in EXPECTED_KEYS}  # no MAE when every answer is invalid
            assert got == pytest.approx(expected_metrics(r["labels"], r["confusion_matrix"], truth), rel=1e-12, nan_ok=True)
            # The eval's string_check passes answers that are exactly their label; the metrics also read
            # "The rating is 3." as 3, so they count at least as many correct answers.
            assert r["result_counts"]["passed"] <= sum(row[i] for i, row in enumerate(r["confusion_matrix"]))
            assert r["result_counts"]["total"] == len(truth) and r["report_url"].endswith(f"/runs/{r['run_id']}/report")
        for n in (1, 2, 3):
            assert "<html" in (tmp_path / "run" / f"report_{n}.html").read_text().lower()
        assert "Majority class share" in out.stdout

        again = run_script(server, key, tmp_path / "again", "--job", job["id"])
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"reusing {job['id']}" in again.stdout and "1. tunery prepare" not in again.stdout
        reused = json.loads((tmp_path / "again" / "results.json").read_text())
        assert [r["accuracy"] for r in reused["eval"]["results"]] == [r["accuracy"] for r in results_]

        missing = run_script(server, key, tmp_path / "missing", "--job", "ftjob-doesnotexist")
        assert missing.returncode == 1 and missing.stderr.startswith("--job ftjob-doesnotexist:") and "Traceback" not in missing.stderr
    finally:
        server.stop()
