"""The HTML page a run's `report_url` points at: counts, per-criterion pass rates, the task
metrics (`tunery.eval.run_metrics`: accuracy, F1, MAE, the confusion matrix as a table), failed
items. Every value from a user (names, rows, labels, model answers) is escaped."""

from __future__ import annotations

import json
from html import escape

from tunery.eval.report import SUMMARY, fmt
from tunery.eval.run_metrics import run_metrics, task_from


def metrics_section(metrics: dict | None) -> str:
    if not metrics:
        return ""
    head = [(k, h, spec) for k, h, spec in SUMMARY if metrics.get(k) is not None]
    out = (f"<h2>Metrics</h2><p>Task <b>{escape(metrics['task'])}</b>, references from criterion "
           f"<code>{escape(str(metrics['criterion']))}</code>.</p><table border=\"1\"><tr>"
           + "".join(f"<th>{escape(h)}</th>" for _, h, _ in head) + "</tr><tr>"
           + "".join(f"<td>{escape(fmt(metrics[k], spec))}</td>" for k, _, spec in head) + "</tr></table>")
    matrix, labels = metrics.get("confusion_matrix"), metrics.get("labels")
    if matrix and labels:
        cols = "".join(f"<th>{escape(label)}</th>" for label in labels) + "<th>invalid</th>"
        body = "".join(f"<tr><th>{escape(label)}</th>" + "".join(f"<td>{n}</td>" for n in row) + "</tr>" for label, row in zip(labels, matrix))
        out += f"<h3>Confusion matrix (rows: true, columns: predicted)</h3><table border=\"1\" class=\"confusion\"><tr><th></th>{cols}</tr>{body}</table>"
    return out


def render_run_report(record, run, items, max_failed: int = 200) -> str:
    metrics = run_metrics(record.testing_criteria, items, task_from((run.report or {}).get("task")))
    names = {c["id"]: c.get("name", c["id"]) for c in record.testing_criteria}
    counts = run.result_counts or {}
    crit = "".join(
        f"<tr><td>{escape(names.get(r['testing_criteria'], r['testing_criteria']))}</td><td>{r['passed']}</td><td>{r['failed']}</td>"
        f"<td>{(r['passed'] / max(1, r['passed'] + r['failed'])):.1%}</td></tr>" for r in (run.per_testing_criteria_results or []))
    failed = [it for it in items if it.status != "pass"][:max_failed]
    rows = "".join(
        f"<tr><td>{it.datasource_item_id}</td><td><pre>{escape(json.dumps(it.datasource_item, ensure_ascii=False))}</pre></td>"
        f"<td><pre>{escape(''.join(m.get('content', '') for m in (it.sample or {}).get('output', [])))}</pre></td>"
        f"<td>{escape(', '.join(names.get(r['name'], r['name']) for r in it.results if not r['passed']))}</td>"
        f"<td>{escape(((it.sample or {}).get('error') or {}).get('message', ''))}</td></tr>" for it in failed)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Eval run {escape(run.id)}</title></head><body>
<h1>{escape(record.name or record.id)} — {escape(run.name)}</h1>
<p>Run <code>{escape(run.id)}</code>, model <code>{escape(run.model or '(samples given)')}</code>, status <b>{escape(run.status)}</b>.</p>
<p>Items: {counts.get('total', 0)} · passed {counts.get('passed', 0)} · failed {counts.get('failed', 0)} · errored {counts.get('errored', 0)}</p>
<h2>Testing criteria</h2><table border="1"><tr><th>criterion</th><th>passed</th><th>failed</th><th>pass rate</th></tr>{crit}</table>
{metrics_section(metrics)}
<h2>Failed items</h2><table border="1"><tr><th>row</th><th>item</th><th>output</th><th>failed criteria</th><th>error</th></tr>{rows}</table>
</body></html>"""
