"""The HTML page a run's `report_url` points at: counts, per-criterion pass rates, failed items.
Every value from a user (names, rows, model answers) is escaped."""

from __future__ import annotations

import json
from html import escape


def render_run_report(record, run, items, max_failed: int = 200) -> str:
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
<h2>Failed items</h2><table border="1"><tr><th>row</th><th>item</th><th>output</th><th>failed criteria</th><th>error</th></tr>{rows}</table>
</body></html>"""
