"""Checkpoint folders in the Hugging Face layout: README.md model card with YAML front matter,
config.json, and medssl.load_encoder on a folder that has only config.json + weights."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

import medssl
from medssl.checkpoint import CheckpointError, save_checkpoint, update_card
from medssl.hub import hf_license, model_card_metadata
from medssl.registry import create_encoder

SMALL = {"depth": 1, "embed_dim": 32, "num_heads": 2}


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


@pytest.fixture()
def checkpoint(tmp_path):
    torch.manual_seed(0)
    enc = create_encoder("ecg_jepa_tiny", **SMALL).eval()
    folder = save_checkpoint(enc, tmp_path / "ckpt", recipe={"method": "ecg_jepa", "trainer": {"precision": "32"}},
                             data_fingerprint="ab" * 32, metrics={"loss": 0.25, "n_subjects": 40})
    results = [{"kind": "aggregate", "encoder": e, "domain": d, "shots": 5, "metric": "auroc_macro", "mean": m,
                "ci_low": m - 0.05, "ci_high": m + 0.05} for e, m0 in (("mine", 0.8), ("random init", 0.6))
               for d, m in (("in", m0), ("out", m0 - 0.1))]
    update_card(folder, "benchmarks", {"report": "r.json", "encoder": "mine", "results": results})
    update_card(folder, "privacy", {"kind": "membership_inference", "threat": "score", "attack": "loss",
                                    "n_members": 12, "n_nonmembers": 24, "auc": 0.61, "auc_ci": [0.45, 0.77],
                                    "null_band": [0.3, 0.7], "p_value": 0.12, "tpr_at_fpr": {"0.01": None, "0.1": 0.25},
                                    "tpr_at_min_fpr": {"fpr": 1 / 24, "value": 0.0833},
                                    "conclusion": "no leakage measurable"})
    return enc, folder


def test_readme_front_matter_follows_hugging_face_conventions(checkpoint):
    _, folder = checkpoint
    text = (folder / "README.md").read_text()
    meta = _front_matter(text)
    assert meta["library_name"] == "medssl" and meta["license"] == "apache-2.0"
    assert meta["pipeline_tag"] == "feature-extraction"
    assert {"medssl", "ecg", "ecg_jepa", "ecg_jepa_tiny", "self-supervised-learning"} <= set(meta["tags"])
    assert meta["metrics"] == ["auroc_macro", "membership_inference_auc", "tpr_at_fpr"]
    (index,) = meta["model-index"]
    assert index["name"] == "ecg_jepa_tiny"
    bench = [r for r in index["results"] if r["task"]["type"] == "feature-extraction"]
    # only this checkpoint's rows ("mine"), one result per domain, value and interval from the card
    assert [r["dataset"]["split"] for r in bench] == ["in", "out"]
    (m_in,) = bench[0]["metrics"]
    assert m_in["type"] == "auroc_macro" and m_in["value"] == 0.8 and "[95% CI 0.750, 0.850]" in m_in["name"]
    assert not any("random init" in m["name"] for r in bench for m in r["metrics"])
    (priv,) = [r for r in index["results"] if r["task"]["type"] == "membership-inference"]
    assert priv["metrics"][0] == {"type": "membership_inference_auc", "value": 0.61, "name": (
        "membership-inference AUC (score/loss, 12 members vs 24 non-members) [95% CI 0.450, 0.770; permutation null "
        "band 0.300, 0.700; p = 0.12]")}
    assert [m["value"] for m in priv["metrics"][1:]] == [0.25, 0.0833]  # the null TPR at FPR 0.01 is left out
    assert "| sampling_rate |" in text and "no leakage measurable" in text and "ab" * 32 in text


def test_readme_parses_with_huggingface_hub(checkpoint):
    hub = pytest.importorskip("huggingface_hub", reason="huggingface_hub not installed (dev extra)")
    _, folder = checkpoint
    card = hub.ModelCard.load(folder / "README.md")
    assert card.data.library_name == "medssl" and card.data.license == "apache-2.0"
    results = card.data.eval_results
    assert len(results) == 5  # one EvalResult per metric: AUROC in + out, privacy AUC + 2 TPRs
    assert {(r.task_type, r.metric_type, r.metric_value) for r in results} >= {
        ("feature-extraction", "auroc_macro", 0.8), ("membership-inference", "membership_inference_auc", 0.61)}


def test_config_json_and_readme_follow_the_card(checkpoint):
    enc, folder = checkpoint
    config = json.loads((folder / "config.json").read_text())
    assert config["library_name"] == "medssl" and config["architectures"] == ["ecg_jepa_tiny"]
    assert config["encoder"] == json.loads((folder / "card.json").read_text())["encoder"]
    assert config["embed_dim"] == 32 and config["method"] == "ecg_jepa"
    before = _front_matter((folder / "README.md").read_text())
    update_card(folder, "privacy", {"kind": "dp_sgd", "epsilon": 3.5, "delta": 1e-5, "accountant": "rdp"})
    after = _front_matter((folder / "README.md").read_text())
    assert len(after["model-index"][0]["results"]) == len(before["model-index"][0]["results"]) + 1
    assert after["model-index"][0]["results"][-1]["metrics"][0]["value"] == 3.5


def test_load_encoder_reads_a_hugging_face_layout_folder(checkpoint, tmp_path):
    enc, folder = checkpoint
    hf = tmp_path / "hf-snapshot"  # what snapshot_download gives: no card.json
    hf.mkdir()
    for name in ("config.json", "model.safetensors", "README.md"):
        shutil.copy(folder / name, hf / name)
    loaded = medssl.load_encoder(hf)
    x = torch.randn(2, len(enc.spec.input["leads"]), enc.spec.input["num_samples"])
    with torch.no_grad():
        assert torch.equal(loaded(x), enc(x))
    assert loaded.spec == enc.spec
    # a config.json of another library, or none at all, is refused naming the file
    (hf / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(CheckpointError, match="config.json: not a medssl config.json"):
        medssl.load_encoder(hf)
    (hf / "config.json").unlink()
    with pytest.raises(CheckpointError, match="model card missing"):
        medssl.load_encoder(hf)


def test_licence_ids():
    assert hf_license("Apache-2.0 (architecture); weights: none") == ("apache-2.0", None)
    assert hf_license("CC-BY-NC-4.0 (weights, from the PTB-XL licence)") == ("cc-by-nc-4.0", None)
    assert hf_license("research use only") == ("other", "research use only")
    card = {"encoder": {"name": "x", "modality": "ct", "license": "research use only", "embed_dim": 8}}
    meta = model_card_metadata(card)
    assert meta["license"] == "other" and meta["license_name"] == "research-use-only"
    assert "model-index" not in meta and "datasets" not in meta  # nothing measured, nothing claimed
