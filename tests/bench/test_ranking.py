import numpy as np
import pytest
from scipy.stats import rankdata

from medssl.bench.ranking import average_ranks, rank_table, ranking_heatmap_svg


def _row(rows, enc):
    return next(r for r in rows if r["encoder"] == enc)


def test_average_ranks_ties_direction_nan():
    assert average_ranks([0.9, 0.5, 0.5, 0.1], True).tolist() == [1.0, 2.5, 2.5, 4.0]
    assert average_ranks([0.9, 0.5, 0.5, 0.1], False).tolist() == [4.0, 2.5, 2.5, 1.0]
    assert average_ranks([np.nan, 0.2, 0.7], True).tolist() == [3.0, 2.0, 1.0]  # NaN ranks last
    assert average_ranks([np.inf, np.nan, 3.0], False).tolist() == [2.5, 2.5, 1.0]  # tied with inf loss
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(50, 7)).astype(float)
    np.testing.assert_allclose(average_ranks(x, True), rankdata(-x, axis=1))


def test_rank_table_fomo_scheme_by_hand():
    scores = [
        # task "seg": A best on dice, B best on hd95 (lower is better) -> A 1.5, B 1.5, C 3
        {"encoder": "A", "task": "seg", "metric": "dice", "value": 0.90},
        {"encoder": "B", "task": "seg", "metric": "dice", "value": 0.80},
        {"encoder": "C", "task": "seg", "metric": "dice", "value": 0.70},
        {"encoder": "A", "task": "seg", "metric": "hd95", "value": 5.0},
        {"encoder": "B", "task": "seg", "metric": "hd95", "value": 2.0},
        {"encoder": "C", "task": "seg", "metric": "hd95", "value": 9.0},
        # task "age": mae lower better; B and C tie -> A 1, B 2.5, C 2.5
        {"encoder": "A", "task": "age", "metric": "mae", "value": 3.0},
        {"encoder": "B", "task": "age", "metric": "mae", "value": 4.0},
        {"encoder": "C", "task": "age", "metric": "mae", "value": 4.0},
    ]
    rows = rank_table(scores)
    assert [r["encoder"] for r in rows] == ["A", "B", "C"]
    a, b, c = (_row(rows, e) for e in "ABC")
    assert a["metric_ranks"]["seg"] == {"dice": 1.0, "hd95": 2.0}
    assert b["metric_ranks"]["seg"] == {"dice": 2.0, "hd95": 1.0}
    assert a["task_ranks"] == {"seg": 1.5, "age": 1.0}
    assert b["task_ranks"] == {"seg": 1.5, "age": 2.5}
    assert c["task_ranks"] == {"seg": 3.0, "age": 2.5}
    assert (a["mean_rank"], b["mean_rank"], c["mean_rank"]) == (1.25, 2.0, 2.75)
    assert (a["position"], b["position"], c["position"]) == (1, 2, 3)
    assert a["values"]["seg"]["hd95"] == 5.0
    # flipping the hd95 direction changes the seg ranks
    rows2 = rank_table(scores, higher_is_better={"hd95": True})
    assert _row(rows2, "C")["metric_ranks"]["seg"]["hd95"] == 1.0


def test_rank_table_tied_final_positions_and_errors():
    scores = [{"encoder": e, "task": t, "metric": "auroc", "value": v}
              for t, vals in (("t1", (0.9, 0.8)), ("t2", (0.7, 0.8))) for e, v in zip("XY", vals)]
    rows = rank_table(scores)
    assert [r["position"] for r in rows] == [1, 1] and rows[0]["mean_rank"] == 1.5
    with pytest.raises(ValueError, match="missing score"):
        rank_table(scores[:-1])
    with pytest.raises(ValueError, match="duplicate"):
        rank_table(scores + scores[:1])
    with pytest.raises(ValueError, match="direction"):
        rank_table([{"encoder": "X", "task": "t", "metric": "weird", "value": 1.0}])
    with pytest.raises(ValueError, match="needs 'value'"):
        rank_table([{"encoder": "X", "task": "t", "metric": "auroc", "values": [1.0]}])


def test_heatmap_svg_escapes_and_shows_numbers():
    freq = np.array([[0.93, 0.07], [0.07, 0.93]])
    svg = ranking_heatmap_svg(freq, ["<script>alert(1)</script>", 'a "b" & c'])
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert "a &quot;b&quot; &amp; c" in svg
    assert svg.count("<rect") == 4 and svg.count(">0.93<") == 2 and svg.count(">0.07<") == 2
    assert "#ffffff" in svg  # light text on the dark high-frequency cells
    with pytest.raises(ValueError):
        ranking_heatmap_svg(freq, ["only one"])
