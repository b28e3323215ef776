"""The reports in a real browser: headless Chromium renders report.html (benchmark and audit) to a
PNG, and every chart must be on it, found by the colours only that chart uses. A page with its
charts stripped is rendered too and must show none of them, so the check can fail.

Skipped when no Chromium is installed (Debian: ``apt-get install -y chromium``)."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from test_plots import audit_result, bench_rows

CHROMIUM = next((c for c in ("chromium", "chromium-browser", "google-chrome") if shutil.which(c)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install -y chromium)")

# colour -> the chart that alone uses it
BENCH_MARKS = {"#1f77b4": "results (first encoder's line)", "#dd8452": "domain-gap (second domain's bars)"}
AUDIT_MARKS = {"#c0392b": "roc (target curve)", "#1f77b4": "roc (control curve)"}


def screenshot(html_path, png_path, tmp_path, size="1400,2400") -> np.ndarray:
    from PIL import Image

    profile = tmp_path / f"profile-{png_path.stem}"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
           f"--user-data-dir={profile}", f"--screenshot={png_path}", f"--window-size={size}",
           html_path.resolve().as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=180)
    return np.asarray(Image.open(png_path).convert("RGB")).astype(np.int16)


def pixels_near(img: np.ndarray, color: str, tol: int = 24) -> int:
    rgb = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
    return int((np.abs(img - rgb).max(axis=-1) <= tol).sum())


def strip_charts(page: str) -> str:
    return re.sub(r'<figure class="chart".*?</figure>', "", page, flags=re.S)


def test_reports_show_every_chart_in_chromium(tmp_path):
    from medssl.bench.report import make_report, render_html
    from medssl.privacy.audit import render_html as audit_html

    bench = render_html(make_report(bench_rows(), title="screenshot"))
    audit = audit_html(audit_result())
    pages = {"bench": (bench, BENCH_MARKS), "audit": (audit, AUDIT_MARKS), "stripped": (strip_charts(bench),
                                                                                        BENCH_MARKS)}
    counts = {}
    for name, (page, marks) in pages.items():
        html_path = tmp_path / f"{name}.html"
        html_path.write_text(page)
        img = screenshot(html_path, tmp_path / f"{name}.png", tmp_path)
        assert img.shape[0] >= 2000 and img.shape[1] >= 1300
        counts[name] = {what: pixels_near(img, c) for c, what in marks.items()}
    for name in ("bench", "audit"):
        missing = [what for what, n in counts[name].items() if n < 150]
        assert not missing, f"{name} report: chart(s) not on the screenshot: {missing} ({counts[name]})"
    # the same page without its charts shows none of their colours: the check above can fail
    assert all(n < 20 for n in counts["stripped"].values()), counts["stripped"]
