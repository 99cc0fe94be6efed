"""The runner and `tunery eval` on tiny random models (fast): answers equal the engine-free HF
greedy decode, the reference loss equals a hand-written teacher-forced cross-entropy, and the CLI
finds base folders, `tunery train` folders and ft: names of the local home."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from serve_fixtures import random_lora, save_base

from tunery.eval.dataset import load_examples
from tunery.eval.runner import reference_loss
from tunery.eval.sources import resolve_eval_model
from tunery.serve.registry import ModelRegistry

TUNERY = str(Path(sys.executable).with_name("tunery"))
ROWS = [("the quick brown fox", "positive"), ("hello world", "negative"), ("lazy dog", "neutral"), ("how are you", "positive"),
        ("fine, thank you", "positive"), ("the lazy fox", "negative"), ("jumps over", "neutral"), ("hot-loaded adapters", "positive")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    base = save_base(root / "base")
    run = root / "run"  # what `tunery train` writes: adapter/, metrics.csv
    random_lora(base, run / "adapter", seed=3)
    (run / "metrics.csv").write_text("step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n1,3.0,0.1,3.2,0.1\n2,2.0,0.2,,\n")
    data = root / "dev.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "system", "content": "Label it."}, {"role": "user", "content": t}, {"role": "assistant", "content": a}]}) + "\n" for t, a in ROWS))
    legacy = root / "legacy.jsonl"
    legacy.write_text("".join(json.dumps({"prompt": t + " ->", "completion": " " + a}) + "\n" for t, a in ROWS))
    return {"root": root, "base": base, "run": run, "data": data, "legacy": legacy}


@pytest.fixture(scope="module")
def registry():
    # fp32: answers and losses are compared exactly with one-at-a-time transformers, which the
    # batched, packed bf16 path only matches to bf16 rounding (bf16 serving: test_serve_engine).
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNERY_SERVE_DTYPE", "float32")
        reg = ModelRegistry(max_batch_size=3)  # fewer rows than examples: requests join as others leave
        yield reg
        reg.close()


def hf_greedy(model, ids, max_new):
    import torch

    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), max_new_tokens=max_new, do_sample=False, pad_token_id=0)
    return out[0, len(ids):].tolist()


def manual_loss(model, tokenizer, prompt_ids, answer_ids):
    import torch
    import torch.nn.functional as F

    ids = torch.tensor([prompt_ids + answer_ids])
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0].float()
    n = len(prompt_ids)
    return F.cross_entropy(logits[n - 1:-1], ids[0, n:], reduction="sum").item(), len(answer_ids)


@pytest.mark.parametrize("adapter", [False, True])
def test_answers_and_loss_match_plain_transformers(tiny, registry, adapter, tmp_path):
    """Through what `tunery eval` runs: an Evals run executed in this process (`run_plan_as_evals`)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunery.eval.evaluate import make_plan
    from tunery.eval.local_runs import run_plan_as_evals
    from tunery.serve.chat import render_chat
    from tunery.store.context import open_store
    from tunery.store.keys import get_or_create_project
    from tunery.store.settings import load_settings

    spec = str(tiny["run"] if adapter else tiny["base"])
    model_spec = resolve_eval_model(spec)
    served = registry.get(model_spec.source)
    examples = load_examples(tiny["data"])
    store = open_store(load_settings(tmp_path / "home"))
    try:
        with store.db.session_scope() as s:
            project_id = get_or_create_project(s).id
        results, records, _ = run_plan_as_evals(make_plan([model_spec], examples, max_tokens=5), store, project_id, registry, "t")
    finally:
        store.close()
    (result,) = results
    answers = [r["answer"] for r in records]

    model = AutoModelForCausalLM.from_pretrained(tiny["base"]).eval()
    if adapter:
        model = PeftModel.from_pretrained(model, str(tiny["run"] / "adapter")).eval()
    tok = served.tokenizer
    total = count = 0
    for e, answer in zip(examples, answers):
        ids = render_chat(tok, e.prompt)
        expected = hf_greedy(model, ids, 5)
        stop = next((i for i, t in enumerate(expected) if t == tok.eos_token_id), len(expected))
        # A random model can stop mid-character; the serving detokenizer never emits half a UTF-8 character.
        assert answer.rstrip("\ufffd") == tok.decode(expected[:stop]).rstrip("\ufffd")
        # The reference, then the end-of-turn token, as the trainer scores it.
        s, n = manual_loss(model, tok, ids, tok(e.reference, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")])
        total, count = total + s, count + n
    assert result["loss"] == pytest.approx(total / count, rel=1e-4)
    assert result["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-4)
    assert result["n"] == 8 and result["labels"] == ["negative", "neutral", "positive"]


def test_legacy_prompt_loss_scores_completion_and_eos(tiny, registry):
    from transformers import AutoModelForCausalLM

    served = registry.get(resolve_eval_model(str(tiny["base"])).source)
    examples = load_examples(tiny["legacy"])
    model = AutoModelForCausalLM.from_pretrained(tiny["base"]).eval()
    tok = served.tokenizer
    total = count = 0
    for e in examples:
        full = tok(e.prompt + e.reference + tok.eos_token)["input_ids"]
        n_prompt = len(tok(e.prompt)["input_ids"])
        s, n = manual_loss(model, tok, full[:n_prompt], full[n_prompt:])
        total, count = total + s, count + n
    assert reference_loss(served, examples)["loss"] == pytest.approx(total / count, rel=1e-4)


def run_cli(*args, home):
    env = {"TUNERY_HOME": str(home), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    return subprocess.run([TUNERY, "eval", *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def test_cli_base_fewshot_and_train_folder(tiny):
    report, answers = tiny["root"] / "r.html", tiny["root"] / "answers.jsonl"
    out = run_cli(tiny["base"], tiny["run"], "--data", tiny["data"], "--few-shot", "0,2", "--few-shot-file", tiny["data"],
                  "--max-tokens", "4", "--json", "--report", report, "--answers", answers, home=tiny["root"] / "home")
    assert out.returncode == 0, out.stderr
    runs = json.loads(out.stdout)
    assert [(r["model"], r["few_shot"]) for r in runs] == [(str(tiny["base"]), 0), (str(tiny["base"]), 2), (str(tiny["run"]), 0)]
    for r in runs:
        assert r["n"] == 8 and r["task"] == "classification" and set(r) >= {"accuracy", "macro_f1", "invalid", "loss", "perplexity"}
        assert "mae" not in r  # word labels have no order
    assert runs[2]["metrics_csv"] == str(tiny["run"] / "metrics.csv") and runs[0]["metrics_csv"] is None
    assert runs[0]["loss"] != runs[1]["loss"] != runs[2]["loss"]  # shots and the adapter change the scores
    lines = [json.loads(x) for x in answers.read_text().splitlines()]
    assert len(lines) == 24 and lines[0]["reference"] == "positive"
    for r in runs:  # accuracy is exactly what the written answers give
        mine = [x for x in lines if x["model"] == r["model"] and x["few_shot"] == r["few_shot"]]
        assert r["accuracy"] == sum(x["prediction"] == x["reference"] for x in mine) / 8
    page = report.read_text()
    assert page.count("true ↓") == 3 and "Loss during training" in page and f"{runs[2]['accuracy']:.1%}" in page


def test_cli_finds_ft_name_in_local_home(tiny):
    from tunery.jobs import states
    from tunery.store.context import open_store
    from tunery.store.jobs import Job
    from tunery.store.keys import get_or_create_project
    from tunery.store.settings import load_settings

    home = tiny["root"] / "home-ft"
    name = "ft:tiny:default:eval:ftjob-eval1"
    store = open_store(load_settings(home))
    with store.db.session_scope() as s:
        project = get_or_create_project(s)
        s.add(Job(id="ftjob-eval1", project_id=project.id, model="tiny", training_file="file-x", seed=1, method={"type": "supervised"},
                  hyperparameters={}, options={}, status=states.SUCCEEDED, fine_tuned_model=name, weights_path=str(tiny["run"] / "adapter"), result_files=[]))
    store.close()
    out = run_cli(name, "--data", tiny["data"], "--max-tokens", "3", "--json", "--no-loss", home=home)
    assert out.returncode == 0, out.stderr
    [run] = json.loads(out.stdout)
    assert run["model"] == name and run["metrics_csv"] == str(tiny["run"] / "metrics.csv") and "loss" not in run
    table = run_cli(name, "--data", tiny["data"], "--max-tokens", "3", "--no-loss", home=home)
    assert table.returncode == 0 and name in table.stdout and "accuracy" in table.stdout


def run_in_process(*args, home, monkeypatch):
    """The command in this process (no interpreter start): for the error paths, which load no model."""
    from typer.testing import CliRunner

    from tunery.cli.main import app

    monkeypatch.setenv("TUNERY_HOME", str(home))
    return CliRunner().invoke(app, ["eval", *map(str, args)])


@pytest.mark.parametrize("args,message", [
    (["ft:nope:x"], "error: ft:nope:x: no such fine-tuned model in the local Tunery home"),
    (["{base}", "--few-shot", "2"], "error: --few-shot K > 0 needs --few-shot-file"),
    (["{base}", "--few-shot", "9", "--few-shot-file", "{data}"], "error: --few-shot 9 needs at least 9 examples in the few-shot file, it has 8"),
    (["{base}", "--few-shot", "1", "--few-shot-file", "{legacy}"], "error: the few-shot file holds completion records but the data is chat records"),
    (["{base}", "--labels", "a,b"], "error: references not in --labels: 'negative', 'neutral', 'positive'"),
    (["{base}", "--task", "regression"], "error: regression needs numeric references, got 'positive'"),
    (["{root}/nothing-here"], "error: {root}/nothing-here: "),
])
def test_cli_errors_are_one_line_exit_2(tiny, args, message, monkeypatch):
    fill = lambda s: s.format(base=tiny["base"], data=tiny["data"], legacy=tiny["legacy"], root=tiny["root"])  # noqa: E731
    out = run_in_process(*map(fill, args), "--data", tiny["data"], home=tiny["root"] / "home", monkeypatch=monkeypatch)
    assert out.exit_code == 2, out.output
    assert out.stderr.startswith(fill(message)) and out.stderr.count("\n") == 1 and out.stdout == ""


def test_cli_bad_data_line(tiny, monkeypatch):
    bad = tiny["root"] / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}\n{"messages": []}\n')
    out = run_in_process(tiny["base"], "--data", bad, home=tiny["root"] / "home", monkeypatch=monkeypatch)
    assert out.exit_code == 2 and out.stderr == f"error: {bad}, line 2: 'messages' must be a non-empty list\n"


def _peft_label_probabilities(adapter, prompts, labels):
    """P(label + end of text | prompt) normalized over `labels`, one forward pass per pair, plain peft."""
    import math

    import torch
    from peft_reference import peft_model

    tok, model = peft_model(adapter)
    out = []
    for prompt in prompts:
        logps = []
        for label in labels:
            start, ids = len(tok(prompt)["input_ids"]), tok(prompt + label)["input_ids"] + [tok.eos_token_id]
            with torch.inference_mode():
                logits = model(torch.tensor([ids])).logits.float().log_softmax(-1)[0]
            logps.append(sum(logits[i - 1, ids[i]].item() for i in range(start, len(ids))))
        total = sum(math.exp(lp) for lp in logps)
        out.append([math.exp(lp) / total for lp in logps])
    return out


def test_legacy_classification_columns_binary_and_multiclass(tiny, registry):
    from tunery.eval.legacy import classification_columns, classification_columns_for_file
    from tunery.eval.metrics import auroc
    from tunery.eval.runner import label_probabilities

    binary = tiny["root"] / "binary.jsonl"
    rows = [("the quick brown fox", " 1"), ("hello world", " 0"), ("lazy dog", " 1"), ("how are you", " 0")]
    binary.write_text("".join(json.dumps({"prompt": t + " ->", "completion": c}) + "\n" for t, c in rows))
    examples = load_examples(binary)
    served = registry.get(resolve_eval_model(str(tiny["run"])).source)
    cols = classification_columns(served, examples, n_classes=2, positive_class="1", betas=[0.5])
    assert set(cols) == {"classification/accuracy", "classification/precision", "classification/recall", "classification/auroc",
                         "classification/auprc", "classification/f1.0", "classification/f0.5"}
    # The scores are the model's probabilities of " 1" against " 0", each as a whole completion (the
    # label, then the end of text: " 1" is not also counted as the start of " 10"), normalized over
    # the two; computed here independently, with peft on the adapter folder.
    probs = [label_probabilities(served, e, [" 0", " 1"]) for e in examples]
    assert all(sum(p) == pytest.approx(1.0) and 0 < p[1] < 1 for p in probs)
    reference = _peft_label_probabilities(tiny["run"] / "adapter", [t + " ->" for t, _ in rows], [" 0", " 1"])
    assert [p[1] for p in probs] == pytest.approx([p[1] for p in reference], abs=1e-5)
    assert cols["classification/auroc"] == pytest.approx(auroc([c == " 1" for _, c in rows], [p[1] for p in reference]))
    # From the weights folder and the file, as the legacy jobs call it: the same numbers.
    assert classification_columns_for_file(tiny["run"], binary, 2, "1", [0.5]) == pytest.approx(cols)
    multi = classification_columns(served, load_examples(tiny["data"]))
    assert set(multi) == {"classification/accuracy", "classification/weighted_f1_score"}
    with pytest.raises(Exception, match="3 distinct completions but classification_n_classes is 2"):
        classification_columns(served, load_examples(tiny["data"]), n_classes=2)


def test_cli_unreachable_home_database_is_one_line(tiny, monkeypatch):
    monkeypatch.setenv("TUNERY_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")  # nothing listens on port 1
    out = run_in_process("ft:a:b", "--data", tiny["data"], home=tiny["root"] / "home", monkeypatch=monkeypatch)
    assert out.exit_code == 2 and out.stderr.startswith("error: ft:a:b: cannot open the local Tunery home to look it up: ")
    assert out.stderr.count("\n") == 1


def test_cli_looks_up_ft_names_in_one_project_only(tiny, monkeypatch):
    """An ft: name of project "acme" is not found from --project default (nor the reverse): no search across projects."""
    from tunery.jobs import states
    from tunery.store.context import open_store
    from tunery.store.jobs import Job
    from tunery.store.keys import get_or_create_project
    from tunery.store.settings import load_settings

    home = tiny["root"] / "home-projects"
    name = "ft:tiny:acme:eval:ftjob-acme1"
    store = open_store(load_settings(home))
    with store.db.session_scope() as s:
        get_or_create_project(s)
        acme = get_or_create_project(s, "acme")
        s.add(Job(id="ftjob-acme1", project_id=acme.id, model="tiny", training_file="file-x", seed=1, method={"type": "supervised"},
                  hyperparameters={}, options={}, status=states.SUCCEEDED, fine_tuned_model=name, weights_path=str(tiny["run"] / "adapter"), result_files=[]))
    store.close()
    out = run_in_process(name, "--data", tiny["data"], home=home, monkeypatch=monkeypatch)
    assert out.exit_code == 2 and out.stderr.startswith(f"error: {name}: no such fine-tuned model in the local Tunery home's project 'default'")
    from tunery.eval.sources import resolve_eval_model

    found = resolve_eval_model(name, "acme", load_settings(home))
    assert (found.source.kind, found.source.path) == ("adapter", tiny["run"] / "adapter") and found.fine_tuned
