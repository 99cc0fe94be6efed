"""A self-contained HTML report of an evaluation: a summary table and inline SVG plots.

Plots: the confusion matrices of all models side by side (rows true, columns predicted, cells
shaded by the share of the row), per-class F1 as grouped bars, and the training and validation
loss curves read from each fine-tuned model's `metrics.csv`. No plotting library: SVG is text.
"""

from __future__ import annotations

import csv
import html
from collections.abc import Sequence
from pathlib import Path

COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#edc948", "#9c755f"]
SUMMARY = [  # (key, header, format)
    ("n", "n", "{:d}"),
    ("accuracy", "accuracy", "{:.1%}"),
    ("macro_f1", "macro F1", "{:.3f}"),
    ("weighted_f1", "weighted F1", "{:.3f}"),
    ("invalid", "invalid", "{:d}"),
    ("mae", "MAE", "{:.3f}"),
    ("rmse", "RMSE", "{:.3f}"),
    ("exact_match", "exact", "{:.1%}"),
    ("normalized_match", "normalized", "{:.1%}"),
    ("rouge_l", "ROUGE-L", "{:.3f}"),
    ("token_f1", "token F1", "{:.3f}"),
    ("loss", "ref. loss", "{:.4f}"),
    ("perplexity", "perplexity", "{:.2f}"),
    ("seconds", "seconds", "{:.1f}"),
]


def fmt(value, spec: str) -> str:
    if value is None:
        return "–"
    try:
        return spec.format(value)
    except (ValueError, TypeError):
        return str(value)


def summary_columns(results: Sequence[dict]) -> list[tuple[str, str, str]]:
    """The summary columns at least one result has a value for."""
    return [c for c in SUMMARY if any(r.get(c[0]) is not None for r in results)]


def read_metrics_csv(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """`{"train_loss": [(step, loss)...], "valid_loss": [...]}` from a training metrics.csv."""
    curves: dict[str, list[tuple[int, float]]] = {"train_loss": [], "valid_loss": []}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            try:
                step = int(row["step"])
            except (KeyError, TypeError, ValueError):
                continue
            for key in curves:
                value = row.get(key) or ""
                try:
                    curves[key].append((step, float(value)))
                except ValueError:
                    pass
    return curves


def _e(text) -> str:
    return html.escape(str(text))


def confusion_svg(matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str, cell: int = 34) -> str:
    columns = [*labels, "invalid"]
    left, top = 90, 60
    width, height = left + cell * len(columns) + 10, top + cell * len(labels) + 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
             f'<text x="{left}" y="16" font-size="13" font-weight="bold">{_e(title)}</text>',
             f'<text x="{left}" y="32">predicted →</text>',
             f'<text x="10" y="{top - 6}">true ↓</text>']
    for j, label in enumerate(columns):
        parts.append(f'<text x="{left + j * cell + cell / 2}" y="{top - 6}" text-anchor="middle">{_e(label)[:6]}</text>')
    for i, label in enumerate(labels):
        row = matrix[i]
        total = sum(row) or 1
        y = top + i * cell
        parts.append(f'<text x="{left - 6}" y="{y + cell / 2 + 4}" text-anchor="end">{_e(label)[:12]}</text>')
        for j, count in enumerate(row):
            share = count / total
            color = f"rgba(78,121,167,{0.08 + 0.92 * share:.3f})" if j < len(labels) else f"rgba(225,87,89,{0.08 + 0.92 * share:.3f})"
            ink = "#fff" if share > 0.5 else "#222"
            x = left + j * cell
            parts.append(f'<rect x="{x}" y="{y}" width="{cell - 2}" height="{cell - 2}" fill="{color}"><title>true {_e(label)}, predicted {_e(columns[j])}: {count}</title></rect>')
            parts.append(f'<text x="{x + cell / 2 - 1}" y="{y + cell / 2 + 4}" text-anchor="middle" fill="{ink}">{count}</text>')
    parts.append("</svg>")
    return "".join(parts)


def f1_bars_svg(results: Sequence[dict], labels: Sequence[str]) -> str:
    models = [r for r in results if r.get("per_class")]
    group = 16 * len(models) + 14
    left, top, plot_h = 40, 30, 160
    width = left + group * len(labels) + 180
    height = top + plot_h + 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
             '<text x="40" y="16" font-size="13" font-weight="bold">F1 per class</text>']
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        y = top + plot_h * (1 - tick)
        parts.append(f'<line x1="{left}" x2="{left + group * len(labels)}" y1="{y}" y2="{y}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 4}" y="{y + 4}" text-anchor="end">{tick:g}</text>')
    for i, label in enumerate(labels):
        x0 = left + i * group + 7
        for m, r in enumerate(models):
            f1 = r["per_class"].get(label, {}).get("f1", 0.0)
            h = plot_h * f1
            parts.append(f'<rect x="{x0 + m * 16}" y="{top + plot_h - h:.1f}" width="14" height="{h:.1f}" fill="{COLORS[m % len(COLORS)]}"><title>{_e(r["name"])} · {_e(label)}: F1 {f1:.3f}</title></rect>')
        parts.append(f'<text x="{x0 + 8 * len(models)}" y="{top + plot_h + 14}" text-anchor="middle">{_e(label)[:12]}</text>')
    parts += _legend([r["name"] for r in models], left + group * len(labels) + 10, top)
    parts.append("</svg>")
    return "".join(parts)


def _legend(names: Sequence[str], x: int, y: int) -> list[str]:
    out = []
    for m, name in enumerate(names):
        out.append(f'<rect x="{x}" y="{y + m * 16}" width="10" height="10" fill="{COLORS[m % len(COLORS)]}"/>')
        out.append(f'<text x="{x + 14}" y="{y + m * 16 + 9}">{_e(name)[:28]}</text>')
    return out


def loss_svg(curves: dict[str, dict[str, list[tuple[int, float]]]]) -> str:
    """Training (solid) and validation (dashed, with dots) loss against step, one colour per model."""
    points = [p for c in curves.values() for series in c.values() for p in series]
    if not points:
        return ""
    left, top, w, h = 50, 30, 480, 220
    max_step = max(s for s, _ in points) or 1
    lo, hi = min(v for _, v in points), max(v for _, v in points)
    hi = hi if hi > lo else lo + 1
    sx = lambda s: left + w * s / max_step  # noqa: E731
    sy = lambda v: top + h * (1 - (v - lo) / (hi - lo))  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + w + 200}" height="{top + h + 40}" font-family="sans-serif" font-size="11">',
             f'<text x="{left}" y="16" font-size="13" font-weight="bold">Loss during training (solid: train, dashed: validation)</text>',
             f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#bbb"/>']
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        parts.append(f'<text x="{left - 4}" y="{sy(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>')
    parts.append(f'<text x="{left + w}" y="{top + h + 14}" text-anchor="end">step {max_step}</text>')
    for m, (name, c) in enumerate(curves.items()):
        color = COLORS[m % len(COLORS)]
        for key, dash in (("train_loss", ""), ("valid_loss", ' stroke-dasharray="5,3"')):
            series = c.get(key) or []
            if not series:
                continue
            path = " ".join(f"{sx(s):.1f},{sy(v):.1f}" for s, v in series)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.5"{dash}><title>{_e(name)} {key}</title></polyline>')
            if key == "valid_loss":
                parts += [f'<circle cx="{sx(s):.1f}" cy="{sy(v):.1f}" r="2.5" fill="{color}"><title>{_e(name)} step {s}: {v:.4f}</title></circle>' for s, v in series]
    parts += _legend(list(curves), left + w + 10, top)
    parts.append("</svg>")
    return "".join(parts)


def render_report(results: Sequence[dict], title: str = "Tunery evaluation", data: str | None = None) -> str:
    """The whole HTML page. Each result has `name` and the metrics `tunery.eval.runner` computes;
    `metrics_csv` (a path) adds its training curves."""
    cols = summary_columns(results)
    head = "".join(f"<th>{_e(h)}</th>" for _, h, _ in cols)
    rows = "".join(
        f"<tr><td>{_e(r['name'])}</td>" + "".join(f"<td>{_e(fmt(r.get(k), spec))}</td>" for k, _, spec in cols) + "</tr>" for r in results
    )
    body = [f"<h1>{_e(title)}</h1>"]
    if data:
        body.append(f"<p>Data: <code>{_e(data)}</code></p>")
    body.append(f"<table><tr><th>model</th>{head}</tr>{rows}</table>")
    classified = [r for r in results if r.get("confusion_matrix")]
    if classified:
        labels = classified[0]["labels"]
        body.append("<h2>Confusion matrices</h2><div class='row'>")
        body += [f"<div>{confusion_svg(r['confusion_matrix'], r['labels'], r['name'])}</div>" for r in classified]
        body.append("</div><h2>Per-class F1</h2>")
        body.append(f1_bars_svg(classified, labels))
        body.append(_per_class_table(classified, labels))
    curves = {r["name"]: read_metrics_csv(r["metrics_csv"]) for r in results if r.get("metrics_csv") and Path(r["metrics_csv"]).is_file()}
    if curves:
        body.append("<h2>Training</h2>" + loss_svg(curves))
    style = ("body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}"
             ".row{display:flex;flex-wrap:wrap;gap:16px}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n"


def _per_class_table(results: Sequence[dict], labels: Sequence[str]) -> str:
    head = "".join(f"<th>{_e(r['name'])} P / R / F1</th>" for r in results)
    rows = []
    for label in labels:
        cells = "".join(
            "<td>{:.2f} / {:.2f} / {:.2f}</td>".format(*(r["per_class"][label][k] for k in ("precision", "recall", "f1"))) for r in results
        )
        rows.append(f"<tr><td>{_e(label)}</td>{cells}</tr>")
    return f"<table><tr><th>class</th>{head}</tr>{''.join(rows)}</table>"


def write_report(path: str | Path, results: Sequence[dict], title: str = "Tunery evaluation", data: str | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(results, title, data), encoding="utf-8")
    return path
