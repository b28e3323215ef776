"""The self-contained ``report.html`` of a benchmark's results (``results.json``,
:mod:`medssl.bench.runner`; written by :func:`medssl.bench.runner.write_results`).

:func:`make_report` gathers rows of every kind (run, aggregate, gap, comparison; split on their
``kind``) with a title, config and notes into the dict :func:`render_html` draws; NaN/inf floats
and numpy scalars are handled.

The HTML has no external resources (inline CSS and SVG, no JS): per-shots tables of
``mean [ci_low, ci_high]`` per encoder with the domains side by side and the gap
(first domain minus each other, e.g. in - out) with its interval, charts drawn with matplotlib
(:mod:`medssl.plots`: the metric vs shots with one panel per domain on a shared y axis, intervals
on every point and the chance line; bars per domain at the largest setting and the gap with its
interval), the comparisons with p-values, the notes and the config. Every string is HTML-escaped.
A ``"gaps"`` list (rows of kind ``gap``: the benchmark's paired bootstrap of the gap) gives the gap
intervals; without it they combine the two domains' intervals as independent (normal approximation).
An optional ``"ranking"`` list (from :func:`medssl.bench.runner.run_benchmark`) adds a ranking
section. Rows of :func:`medssl.bench.runner.run_benchmark` also carry ``task``, ``protocol`` and may carry
``label_fraction`` instead of ``shots``: the page then has one results section (table and charts)
per task x protocol x metric, and the setting column shows the shots or the label fraction.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
import os
import platform
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from medssl.plots import setting_text


__all__ = ["make_report", "machine_info", "render_html"]


def machine_info() -> dict:
    """Hardware/software description without identifying host names."""
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
    }
    try:
        import sklearn

        info["sklearn"] = sklearn.__version__
    except ImportError:  # pragma: no cover - sklearn is a dependency
        pass
    return info


P_ADJUSTMENT = "Holm"
VERDICT_ALPHA = 0.05


def adjust_comparisons(comparisons: list[dict]) -> list[dict]:
    """Add `p_holm` to every comparison: Holm's step-down adjustment over all the comparisons of
    the report (encoders x tasks x metrics x shots x domains form one family), beside the raw
    `p_value`. In place; returns the list."""
    from medssl.bench.ranking import holm_adjust

    for c, p in zip(comparisons, holm_adjust([c.get("p_value") for c in comparisons])):
        c["p_holm"] = p
    return comparisons


def comparison_verdict(c: Mapping, alpha: float = VERDICT_ALPHA) -> str:
    """"better than" / "worse than" / "not distinguishable from" for encoder_a vs encoder_b, from
    the Holm-adjusted p-value (`p_holm`, or the raw one when no family was adjusted) and the sign
    of the difference (flipped for lower-is-better metrics)."""
    p = c.get("p_holm", c.get("p_value"))
    if p is None or not math.isfinite(p) or p >= alpha:
        return "not distinguishable from"
    better = (c.get("delta") or 0.0) > 0
    if c.get("higher_is_better") is False:
        better = not better
    return "better than" if better else "worse than"


def make_report(rows: Iterable[Mapping], *, title: str, config: Mapping | None = None,
                notes: Sequence[str] = ()) -> dict:
    """The dict :func:`render_html` draws, from benchmark rows (split on their ``kind``)."""
    rows = list(rows)
    by_kind = {k: [dict(r) for r in rows if r.get("kind") == k] for k in ("aggregate", "run", "comparison", "gap")}
    return {
        "title": title,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": dict(config or {}),
        "results": by_kind["aggregate"],
        "runs": by_kind["run"],
        "comparisons": adjust_comparisons(by_kind["comparison"]),
        **({"gaps": by_kind["gap"]} if by_kind["gap"] else {}),
        "p_adjustment": f"{P_ADJUSTMENT} (family: all comparisons of the report); verdicts at "
                        f"adjusted p < {VERDICT_ALPHA}",
        "notes": list(notes),
    }


def _jsonable(obj):
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, range)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# --------------------------------------------------------------------------- HTML


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _num(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return str(int(x))
    return f"{float(x):.{digits}f}"


def _p(p) -> str:
    if p is None or (isinstance(p, float) and not math.isfinite(p)):
        return "–"
    return "&lt;0.001" if p < 0.001 else f"{p:.3f}"


def _shots_order(values) -> list:
    uniq = list(dict.fromkeys(values))
    ints = sorted(v for v in uniq if isinstance(v, int) and not isinstance(v, bool))
    return ints + [v for v in uniq if v not in ints]


def _setting(row: Mapping):
    """The row's shots, or its label fraction when it has no shots."""
    return row.get("shots") if row.get("shots") is not None else row.get("label_fraction")


def _cell(row: Mapping | None) -> str:
    if row is None:
        return "<td>–</td>"
    return (f"<td>{_num(row.get('mean'))} <span class=ci>[{_num(row.get('ci_low'))}, "
            f"{_num(row.get('ci_high'))}]</span></td>")


def _gap_lookup(gaps: list[dict] | None) -> dict:
    """{(encoder, domain, setting): (gap, low, high)} of the benchmark's bootstrap gap rows."""
    return {(g.get("encoder"), g.get("domain"), _setting(g)): (g.get("gap"), g.get("ci_low"), g.get("ci_high"))
            for g in gaps or []}


def _results_table(results: list[dict], domains: list, encoders: list, shots: list, setting: str = "shots",
                   gaps: dict | None = None) -> str:
    from medssl.plots import gap_interval

    key = {(r.get("encoder"), r.get("domain"), _setting(r)): r for r in results}
    head = "".join(f"<th>{_e(d)}</th>" for d in domains)
    head += "".join(f"<th>gap ({_e(domains[0])} − {_e(d)})</th>" for d in domains[1:])
    out = [f"<table><thead><tr><th>encoder</th><th>{_e(setting)}</th>{head}</tr></thead><tbody>"]
    for e in encoders:
        for s in shots:
            cells = [_cell(key.get((e, d, s))) for d in domains]
            ref = key.get((e, domains[0], s))
            for d in domains[1:]:
                other = key.get((e, d, s))
                gap = (gaps or {}).get((e, d, s))
                if gap is None and ref and other:
                    gap = gap_interval(ref, other)
                cells.append(_cell(None if gap is None else {"mean": gap[0], "ci_low": gap[1], "ci_high": gap[2]}))
            out.append(f"<tr><td>{_e(e)}</td><td>{_e(setting_text(s))}</td>{''.join(cells)}</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def _png_data_uri(rgb: np.ndarray) -> str:
    """A data: URI of an (H, W, 3) uint8 image as PNG (zlib + CRC chunks; no imaging library)."""
    import base64
    import struct
    import zlib

    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[i].tobytes() for i in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def overlay_rgb(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, scale: int = 3) -> np.ndarray:
    """(H, W, 3) uint8: the image's first channel in grey (1st-99th percentile window), the truth's
    outline in green, the prediction's in red (yellow where they coincide). 3-D inputs (C, D, H, W)
    show the slice along the first spatial axis with the most truth (or prediction) voxels."""
    from scipy import ndimage

    img = np.asarray(image, dtype=np.float64)[0]
    t, p = np.asarray(truth)[0] > 0.5, np.asarray(pred)[0] > 0.5
    if img.ndim == 3:
        area = t.reshape(t.shape[0], -1).sum(axis=1) + 1e-3 * p.reshape(p.shape[0], -1).sum(axis=1)
        k = int(np.argmax(area))
        img, t, p = img[k], t[k], p[k]
    lo, hi = np.percentile(img, [1, 99])
    grey = np.clip((img - lo) / (hi - lo or 1.0), 0, 1)
    rgb = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=2)
    t_edge, p_edge = t & ~ndimage.binary_erosion(t), p & ~ndimage.binary_erosion(p)
    rgb[t_edge] = (0, 200, 0)
    rgb[p_edge] = (230, 30, 30)
    rgb[t_edge & p_edge] = (240, 220, 0)
    return np.kron(rgb, np.ones((scale, scale, 1), dtype=np.uint8)) if scale > 1 else rgb


def overlay_example(encoder: str, task: str, domain: str, record_id: str, image: np.ndarray, truth: np.ndarray,
                    pred: np.ndarray) -> dict:
    """A report example: its caption and the :func:`overlay_rgb` picture as a PNG data URI."""
    return {"encoder": encoder, "task": task, "domain": domain, "record_id": record_id,
            "png": _png_data_uri(overlay_rgb(image, truth, pred))}


def _examples_section(examples: list[dict]) -> str:
    if not examples:
        return ""
    out = ["<h2>Segmentation examples</h2><p>Outlines: truth in green, prediction in red (yellow where "
           "they coincide); first seed of the largest label fraction, the evaluation records with the "
           "largest masks.</p><div class=charts>"]
    for ex in examples:
        caption = f"{ex.get('encoder')} — {ex.get('task')} — {ex.get('domain')} — {ex.get('record_id')}"
        src = str(ex.get("png", ""))
        if src.startswith("data:image/png;base64,"):
            out.append(f'<figure><img alt="{_e(caption)}" src="{_e(src)}"><figcaption>{_e(caption)}'
                       f"</figcaption></figure>")
    out.append("</div>")
    return "".join(out)


def _table(heads: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """An HTML table, one line per row: header cells and row cells already rendered (escaped)."""
    out = ["<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in heads) + "</tr></thead><tbody>"]
    out += ["<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows]
    out.append("</tbody></table>")
    return "\n".join(out)


def _comparisons_table(comps: list[dict]) -> str:
    if not comps:
        return "<p>No comparisons (fewer than two encoders).</p>"
    extra = [k for k in ("task", "protocol", "metric") if any(k in c for c in comps)] if _grouped(comps) else []
    heads = [*extra, "domain", "shots", "A", "B", "Δ (A − B)", "95% CI", "p", "p (Holm)", "method"]
    return _table(heads, ([*(_e(c.get(k)) for k in extra), _e(c.get("domain")), _e(setting_text(_setting(c))),
                           _e(c.get("encoder_a")), _e(c.get("encoder_b")), _num(c.get("delta")),
                           f"[{_num(c.get('ci_low'))}, {_num(c.get('ci_high'))}]", _p(c.get("p_value")),
                           _p(c.get("p_holm")), _e(c.get("method", ""))] for c in comps))


def _runs_table(runs: list[dict]) -> str:
    extra = [k for k in ("task", "protocol", "metric") if any(k in r for r in runs)] if _grouped(runs) else []
    heads = ["encoder", *extra, "domain", "shots", "seed", "value" if extra else "AUROC", "train subjects",
             "excluded classes", "warnings"]
    return _table(heads, ([_e(r.get("encoder")), *(_e(r.get(k)) for k in extra), _e(r.get("domain")),
                           _e(setting_text(_setting(r))), _e(r.get("seed")), _num(r.get("value")), _num(r.get("n_train_subjects")),
                           _e(", ".join(map(str, r.get("excluded_classes") or []))),
                           _e("; ".join(map(str, r.get("warnings") or [])))] for r in runs))


def _grouped(rows: list[dict]) -> bool:
    """Whether rows come from a multi-task benchmark (they name a task or protocol)."""
    return any("task" in r or "protocol" in r for r in rows)


def _results_sections(results: list[dict], gaps: list[dict] | None = None) -> list[str]:
    """One results table + charts per task x protocol x metric (a single section for plain rows)."""
    from medssl.plots import domain_gap_chart, results_chart

    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r.get("task"), r.get("protocol"), r.get("metric")), []).append(r)
    gap_groups: dict[tuple, list[dict]] = {}
    for g in gaps or []:
        gap_groups.setdefault((g.get("task"), g.get("protocol"), g.get("metric")), []).append(g)
    body = []
    for (task, protocol, metric), rows in groups.items():
        encoders = list(dict.fromkeys(r.get("encoder") for r in rows))
        domains = list(dict.fromkeys(r.get("domain") for r in rows))
        shots = _shots_order([_setting(r) for r in rows])
        fraction = all(r.get("shots") is None and r.get("label_fraction") is not None for r in rows)
        setting = "label fraction" if fraction else "shots"
        axis = "label fraction (of training subjects)" if fraction else "shots (subjects per class)"
        if _grouped(rows):
            body.append(f"<h3>{_e(task)} — {_e(protocol)} — {_e(metric)}</h3>")
            chart_metric = str(metric)
        else:
            chart_metric = "AUROC"
        glook = _gap_lookup(gap_groups.get((task, protocol, metric)))
        body.append(_results_table(rows, domains, encoders, shots, setting, glook))
        charts = results_chart(rows, domains=domains, encoders=encoders, settings=shots, metric=chart_metric,
                               setting_label=axis) or f"<p>No finite results to chart for {_e(metric)}.</p>"
        if len(domains) > 1:
            at = shots[-1]
            charts += domain_gap_chart(rows, encoders=encoders, domains=domains, setting=at, metric=chart_metric,
                                       gaps={(e, d): v for (e, d, s), v in glook.items() if s == at} or None)
        body.append('<div class="charts">' + charts + "</div>")
    return body


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.ci{color:#666;font-size:90%}
figure{margin:0;font-size:85%}.charts{display:flex;flex-direction:column;gap:1.2em;margin-bottom:1.5em}
figure.chart svg{max-width:100%;height:auto}figure.chart figcaption{color:#555;margin-top:0.3em}
pre{background:#f7f7f7;padding:0.6em;overflow:auto}
"""


def _skipped_section(skipped: list[dict]) -> str:
    """The records left out (results.json ``skipped``): dataset, encoder, stage, record, reason."""
    if not skipped:
        return ""
    return (f"<h2>Skipped records ({len(skipped)})</h2><table><thead><tr><th>dataset</th><th>encoder</th>"
            "<th>stage</th><th>record</th><th>reason</th></tr></thead><tbody>"
            + "".join(f"<tr><td>{_e(x.get('dataset'))}</td><td>{_e(x.get('encoder') or 'all')}</td>"
                      f"<td>{_e(x.get('stage'))}</td><td>{_e(x.get('record'))}</td><td>{_e(x.get('reason'))}</td></tr>"
                      for x in skipped) + "</tbody></table>")


def render_html(report: Mapping) -> str:
    """The self-contained HTML page for a schema-1 report dict."""
    report = _jsonable(report)
    results = list(report.get("results") or [])
    metrics = sorted({str(r.get("metric")) for r in results})
    title = report.get("title") or "medssl benchmark"
    body = [f"<h1>{_e(title)}</h1>",
            f"<p>Created {_e(report.get('created', ''))}; metric: {_e(', '.join(metrics))}; "
            f"intervals are 95% subject-level bootstrap percentile intervals.</p>"]
    if results:
        body.append("<h2>Results</h2>")
        body.extend(_results_sections(results, list(report.get("gaps") or [])))
    else:
        body.append("<p>No results.</p>")
    if report.get("ranking"):
        body.append("<h2>Ranking</h2><p>FOMO-style: per domain, encoders ranked on each metric of each "
                    "task x protocol x setting, ranks averaged over metrics, then over those tasks "
                    "(1 = best).</p>")
        from medssl.bench.ranking import ranking_heatmap_svg

        for block in report["ranking"]:
            body.append(f"<h3>{_e(block.get('domain'))} ({_e(block.get('n_tasks'))} tasks)</h3><table><thead><tr>"
                        "<th>encoder</th><th>position</th><th>mean rank</th></tr></thead><tbody>"
                        + "".join(f"<tr><td>{_e(r.get('encoder'))}</td><td>{_num(r.get('position'))}</td>"
                                  f"<td>{_num(r.get('mean_rank'), 2)}</td></tr>" for r in block.get("rows", []))
                        + "</tbody></table>")
            freq = block.get("position_frequencies")
            if freq:
                names = list(freq)
                body.append(ranking_heatmap_svg([freq[n] for n in names], names, title=(
                    f"Final position over {block.get('n_bootstrap')} bootstrap resamples of the test subjects")))
    body.append(_examples_section(list(report.get("examples") or [])))
    body.append("<h2>Paired comparisons</h2>")
    body.append(_comparisons_table(list(report.get("comparisons") or [])))
    notes = report.get("notes") or []
    if notes:
        body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    body.append(_skipped_section(list(report.get("skipped") or [])))
    runs = list(report.get("runs") or [])
    if runs:
        body.append(f"<details><summary>Per-seed runs ({len(runs)})</summary>{_runs_table(runs)}</details>")
    body.append("<h2>Configuration</h2><pre>" + _e(json.dumps(report.get("config", {}), indent=2)) + "</pre>")
    body.append("<h2>Machine</h2><pre>" + _e(json.dumps(report.get("machine", {}), indent=2)) + "</pre>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n").encode("ascii", "xmlcharrefreplace").decode("ascii")
