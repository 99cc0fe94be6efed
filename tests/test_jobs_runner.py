"""Process control of the job runner: signals, exit codes, event tailing.

These tests drive a real subprocess, but a FAKE trainer (`FAKE_TRAINER` below) that only follows
the engine's process contract (events.jsonl, result.json/error.json, exit codes, SIGTERM/SIGUSR1),
so they run in milliseconds. Real training is exercised by the API integration tests.
"""

from __future__ import annotations

import json
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tunery.jobs.runner import EventTail, TrainingProcess, watch

# A stand-in trainer for process-control tests only: behaviour picked by config["mode"].
FAKE_TRAINER = textwrap.dedent(
    """
    import json, os, signal, sys, time
    cfg = json.load(open(sys.argv[sys.argv.index("--config") + 1]))
    out = cfg["out_dir"]
    def event(kind, message, **data):
        with open(os.path.join(out, "events.jsonl"), "a") as f:
            f.write(json.dumps({"type": kind, "level": "info", "message": message,
                                "created_at": int(time.time()), "data": data}) + "\\n")
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append("cancel"))
    signal.signal(signal.SIGUSR1, lambda *a: stop.append("pause"))
    mode = cfg["mode"]
    event("message", "resumed" if cfg.get("resume") else "started")
    if mode == "ok":
        for step in (1, 2):
            event("metrics", f"Step {step}/2", step=step, total_steps=2, train_loss=1.0 / step)
        with open(os.path.join(out, "events.jsonl"), "a") as f:
            f.write("not json\\n")
            f.write(json.dumps({"type": "message", "message": "no newline"}))
        json.dump({"trained_tokens": 42}, open(os.path.join(out, "result.json"), "w"))
        sys.exit(0)
    if mode == "error":
        json.dump({"code": "invalid_file_format", "message": "line 3: bad", "param": "training_file"},
                  open(os.path.join(out, "error.json"), "w"))
        sys.exit(1)
    if mode == "crash":
        print("Traceback: boom", flush=True)
        sys.exit(3)
    if mode == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:  # "loop" and "ignore": train until told otherwise
        time.sleep(0.02)
        if stop == ["cancel"]:
            sys.exit(130)
        if stop == ["pause"]:
            event("checkpoint", "checkpoint", step=5, path="checkpoints/step-5")
            sys.exit(75)
    """
)


def make_process(tmp_path: Path, mode: str, **extra) -> TrainingProcess:
    script = tmp_path / "fake_trainer_for_process_control.py"
    script.write_text(FAKE_TRAINER)
    out = tmp_path / "out"
    return TrainingProcess(tmp_path, out, {"mode": mode, "out_dir": str(out), **extra}, command=[sys.executable, str(script)])


def run(process: TrainingProcess, signal_after: tuple[float, int] | None = None, grace_s: float = 30.0):
    records: list[dict] = []
    started = time.monotonic()

    def wanted():
        if signal_after and time.monotonic() - started > signal_after[0]:
            return signal_after[1]
        return None

    process.start()
    outcome = watch(process, records.extend, wanted, poll_s=0.05, grace_s=grace_s)
    return outcome, records


def test_success_forwards_every_event_in_order_and_reads_the_result(tmp_path):
    outcome, records = run(make_process(tmp_path, "ok"))
    assert outcome.status == "succeeded" and outcome.returncode == 0
    assert outcome.result == {"trained_tokens": 42}
    assert [r["message"] for r in records] == ["started", "Step 1/2", "Step 2/2", "no newline"]
    assert records[2]["data"] == {"step": 2, "total_steps": 2, "train_loss": 0.5}
    assert json.loads((tmp_path / "config.json").read_text())["mode"] == "ok"


def test_error_json_becomes_the_job_error(tmp_path):
    outcome, _ = run(make_process(tmp_path, "error"))
    assert outcome.status == "failed" and outcome.returncode == 1
    assert outcome.error == {"code": "invalid_file_format", "message": "line 3: bad", "param": "training_file"}


def test_crash_without_report_names_the_exit_code_and_keeps_its_output_for_the_operator(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="tunery.jobs"):
        outcome, _ = run(make_process(tmp_path, "crash"))
    assert outcome.status == "failed"
    assert outcome.error["code"] == "training_process_died"
    # the job's error is shown to clients: no log line in it; the server log has them
    assert outcome.error["message"] == (
        "The training process exited with code 3 without an error report. Its output is in the job's train.log on the server."
    )
    assert "Traceback: boom" in caplog.text


def test_sigterm_cancels(tmp_path):
    outcome, records = run(make_process(tmp_path, "loop"), signal_after=(0.2, signal.SIGTERM))
    assert outcome.status == "cancelled" and outcome.returncode == 130
    assert records[0]["message"] == "started"


def test_sigusr1_pauses_after_a_checkpoint_and_resume_appends_only_new_events(tmp_path):
    process = make_process(tmp_path, "loop")
    outcome, records = run(process, signal_after=(0.2, signal.SIGUSR1))
    assert outcome.status == "paused" and outcome.returncode == 75
    assert [r["type"] for r in records] == ["message", "checkpoint"]

    again = make_process(tmp_path, "ok", resume=True)
    outcome, records = run(again)
    assert outcome.status == "succeeded"
    assert records[0]["message"] == "resumed"  # the first run's events are not forwarded twice


def test_events_a_crashed_watcher_never_forwarded_are_sent_by_the_next_run(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "events.jsonl").write_text('{"type": "message", "message": "forwarded"}\n{"type": "message", "message": "not yet"}\n')
    (tmp_path / "events.offset").write_text(str(len('{"type": "message", "message": "forwarded"}\n')))
    outcome, records = run(make_process(tmp_path, "ok", resume=True))
    assert [r["message"] for r in records[:2]] == ["not yet", "resumed"]
    assert int((tmp_path / "events.offset").read_text()) == (out / "events.jsonl").stat().st_size


def test_a_killed_trainer_fails_with_a_clear_message(tmp_path):
    process = make_process(tmp_path, "loop")
    outcome, _ = run(process, signal_after=(0.2, signal.SIGKILL))
    assert outcome.status == "failed" and outcome.returncode == -9
    assert outcome.error["message"].startswith(
        "The training process was killed by SIGKILL (out of memory, or killed by an operator) before it finished."
    )


def test_a_trainer_ignoring_cancel_is_killed_after_the_grace_period(tmp_path):
    outcome, _ = run(make_process(tmp_path, "ignore"), signal_after=(0.2, signal.SIGTERM), grace_s=0.3)
    assert outcome.returncode == -9 and outcome.status == "failed"


def test_stale_markers_from_a_previous_run_are_removed_before_start(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "error.json").write_text('{"code": "old"}')
    outcome, _ = run(make_process(tmp_path, "ok"))
    assert outcome.status == "succeeded" and not (out / "error.json").exists()


def test_event_tail_waits_for_complete_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    tail = EventTail(path)
    assert tail.read() == []
    path.write_text('{"a": 1}\n{"b": ')
    assert tail.read() == [{"a": 1}]
    with open(path, "a") as f:
        f.write('2}\n[1]\n{oops\n')
    assert tail.read() == [{"b": 2}]  # a non-object and a broken line are skipped
    assert tail.bad_lines == ["{oops"]


@pytest.mark.parametrize("sig,expected", [(signal.SIGUSR1, "paused"), (signal.SIGTERM, "cancelled")])
def test_signals_before_the_trainer_installs_handlers_still_pause_or_cancel(tmp_path, sig, expected):
    script = tmp_path / "fake_slow_import.py"
    script.write_text("import time; time.sleep(30)")  # like a trainer still importing torch
    process = TrainingProcess(tmp_path, tmp_path / "out", {}, command=[sys.executable, str(script)])
    outcome, _ = run(process, signal_after=(0.2, sig))
    assert outcome.status == expected and outcome.returncode == -sig


@pytest.mark.parametrize("rc,expected", [(130, "cancelled"), (75, "paused")])
def test_exit_codes_map_to_statuses(tmp_path, rc, expected):
    script = tmp_path / "fake_exit.py"
    script.write_text(f"import sys; sys.exit({rc})")
    process = TrainingProcess(tmp_path, tmp_path / "out", {}, command=[sys.executable, str(script)])
    process.start()
    assert watch(process, lambda r: None, lambda: None, poll_s=0.05).status == expected
