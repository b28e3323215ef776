"""medssl.privacy.load_audit: audit.json files as pandas DataFrames."""

from __future__ import annotations

import json
import math

import pytest

from medssl.privacy import load_audit
from test_plots import audit_result


def _write(folder, **kw):
    folder.mkdir(parents=True)
    doc = audit_result(**kw)
    doc["tpr_at_fpr"]["0.01"] = {"value": None, "ci_low": None, "ci_high": None, "cp_ci_low": None,
                                 "cp_ci_high": None, "achievable": False, "reason": "not estimable: FPR 0.01"}
    (folder / "audit.json").write_text(json.dumps(doc))
    (folder / "subject_scores.csv").write_text("subject_key,member,score_loss\nsubj-1,1,0.9\nsubj-2,0,0.1\n")
    return doc


def test_summary_one_row_per_audit(tmp_path):
    a = _write(tmp_path / "a")
    _write(tmp_path / "b", control=False)
    df = load_audit([tmp_path / "a", tmp_path / "b" / "audit.json"])
    assert len(df) == 2 and df["path"].str.endswith("audit.json").all()
    assert df.loc[0, "auc"] == a["auc"] and df.loc[0, "auc_ci_low"] == a["auc_ci"][0]
    assert df.loc[0, "null_high"] == a["null_band"][1] and df.loc[0, "p_value"] == a["p_value"]
    assert df.loc[0, "tpr@0.1"] == 0.5 and math.isnan(df.loc[0, "tpr@0.01"])  # not estimable: NaN
    assert df.loc[0, "tpr@min_fpr"] == 0.5 and df.loc[0, "min_fpr"] == pytest.approx(1 / 24)
    assert df.loc[0, "auc_minus_control"] == 0.33 and df.loc[0, "control_source"] == "control checkpoint"
    assert df.loc[1, "control_auc"] is None or math.isnan(df.loc[1, "control_auc"])
    assert df["tpr@0.01"].dtype.kind == "f"


def test_tpr_roc_and_scores_tables(tmp_path):
    doc = _write(tmp_path / "a")
    tpr = load_audit(tmp_path / "a", "tpr")
    assert tpr["fpr"].tolist() == pytest.approx([0.1, 0.01, 1 / 24])
    assert tpr["smallest_measurable"].tolist() == [False, False, True]
    assert tpr["achievable"].tolist() == [True, False, True] and "not estimable" in tpr["reason"][1]
    roc = load_audit(tmp_path / "a", "roc")
    assert (roc["curve"] == "target").sum() == len(doc["roc"]["fpr"])
    assert (roc["curve"] == "control").sum() == len(doc["control"]["roc"]["fpr"])
    scores = load_audit(str(tmp_path / "a"), "scores")
    assert scores["member"].tolist() == [1, 0] and "score_loss" in scores.columns


def test_load_audit_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(FileNotFoundError, match="no audit.json"):
        load_audit(tmp_path)
    (tmp_path / "audit.json").write_text('{"results": []}')
    with pytest.raises(ValueError, match="not a medssl audit.json"):
        load_audit(tmp_path)
    with pytest.raises(ValueError, match="unknown table"):
        load_audit(tmp_path, "curves")
    with pytest.raises(ValueError, match="no audit given"):
        load_audit([])
