import json

import numpy as np

from medssl.bench.report import make_report, render_html
from medssl.bench.runner import results_doc, write_results


def _rows():
    rows = []
    for e, base in (("ecg-mae", 0.8), ("<script>alert(1)</script>", 0.6)):
        for d, drop in (("in", 0.0), ("out", 0.1)):
            for s in (1, 5, "all"):
                m = base - drop + (0.05 if s == "all" else 0.01 * (s if s != "all" else 0))
                rows.append({"kind": "aggregate", "encoder": e, "domain": d, "shots": s, "metric": "auroc_macro",
                             "mean": m, "std": 0.01, "ci_low": m - 0.03, "ci_high": m + 0.03, "n_seeds": 5,
                             "n_test_subjects": 40, "n_test_records": 80})
                rows.append({"kind": "run", "encoder": e, "domain": d, "shots": s, "seed": 0,
                             "metric": "auroc_macro", "value": m, "n_train_subjects": 3, "n_train_records": 6,
                             "excluded_classes": [], "warnings": []})
    rows.append({"kind": "comparison", "domain": "in", "shots": 5, "metric": "auroc_macro",
                 "encoder_a": "ecg-mae", "encoder_b": "<script>alert(1)</script>", "delta": 0.2345,
                 "ci_low": 0.1, "ci_high": 0.3, "p_value": 0.0123, "n_seeds": 5, "method": "paired"})
    return rows


def test_write_results_json_and_html(tmp_path):
    doc = results_doc(_rows(), title="Bench <b>", config={"shots": [1, 5, "all"], "nan": float("nan")},
                      notes=["note & <i>"])
    paths = write_results(doc, tmp_path / "out")
    jp, hp = paths["json"], paths["html"]
    data = json.loads(jp.read_text())
    assert data["schema_version"] == 1 and len(data["aggregates"]) == 12 and len(data["records"]) == 12
    assert len(data["comparisons"]) == 1 and data["config"]["nan"] is None
    assert "node" not in data["machine"] and "hostname" not in data["machine"]
    text = hp.read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "Bench &lt;b&gt;" in text and "note &amp; &lt;i&gt;" in text
    assert "0.810 <span class=ci>[0.780, 0.840]</span>" in text  # ecg-mae, in, 1 shot: mean [CI]
    assert "0.100" in text  # in - out gap
    assert "0.234" in text and "0.012" in text  # comparison delta and p-value
    # one results chart (a panel per domain) + the in/out bars and gap, all inline SVG
    assert text.count('<figure class="chart"') == 2 and text.count("<svg") == 2
    assert "by domain at all" in text and "gap: in minus other domain" in text
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "").replace(
        'xmlns:xlink="http://www.w3.org/1999/xlink"', "")
    assert "<link" not in text and "src=" not in text
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "results.csv", "results.json"]


def test_html_handles_numpy_and_nan():
    rows = _rows()
    rows[0]["mean"] = np.float64("nan")
    rows[0]["ci_low"] = np.float32(0.5)
    html = render_html(make_report(rows, title="t"))
    assert "<svg" in html and "–" not in html  # non-ASCII written as character references
