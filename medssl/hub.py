"""Checkpoint folders in the Hugging Face layout: ``README.md`` (model card) and ``config.json``.

Beside ``model.safetensors`` and ``card.json`` (medssl's own card), every checkpoint folder gets

* ``README.md``: a model card with YAML front matter in the Hugging Face conventions
  (``library_name``, ``license``, ``tags``, ``pipeline_tag``, ``datasets`` where the card names
  any, ``metrics`` and ``model-index`` with the results of the card's ``benchmarks`` and
  ``privacy`` sections, each value with its interval in its name), then the card in prose:
  input contract, training, results, privacy, licence, how to load it;
* ``config.json``: ``library_name: medssl``, the architecture and the encoder spec (name,
  modality, input contract, hyper-parameters), from which :func:`medssl.load_encoder` rebuilds the
  encoder when a folder has no ``card.json`` (e.g. one downloaded with
  ``huggingface_hub.snapshot_download``, or copied without it).

Both are rewritten whenever the card changes (:func:`medssl.checkpoint.save_checkpoint`,
:func:`medssl.checkpoint.update_card`); :func:`write_hub_files` brings an older folder up to date.
Nothing here touches the network: ``huggingface_hub.upload_folder`` publishes the folder as is.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["CONFIG_FILE", "README_FILE", "hf_license", "hub_config", "model_card", "model_card_metadata",
           "write_hub_files"]

README_FILE = "README.md"
CONFIG_FILE = "config.json"
LIBRARY = "medssl"
# SPDX id (lower case) -> Hugging Face licence id; anything else is "other" with its name
_HF_LICENSES = {"apache-2.0", "mit", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0",
                "cc-by-nc-nd-4.0", "cc-by-nd-4.0", "cc0-1.0", "bsd-2-clause", "bsd-3-clause", "gpl-3.0",
                "lgpl-3.0", "agpl-3.0", "mpl-2.0", "openrail", "bigscience-openrail-m", "creativeml-openrail-m"}
_MODALITY_TAGS = {"ecg": ["ecg", "electrocardiogram", "time-series"], "mri": ["mri", "brain-mri", "3d"],
                  "retina": ["retina", "octa", "ophthalmology"], "ct": ["ct", "computed-tomography", "3d"]}


def hf_license(text: str | None) -> tuple[str, str | None]:
    """(Hugging Face licence id, licence name or None): the first SPDX-like token of ``text``
    ("Apache-2.0 (architecture); ..." -> "apache-2.0"), else ("other", text)."""
    token = re.split(r"[\s;,(]", (text or "").strip(), maxsplit=1)[0].lower()
    if token in _HF_LICENSES:
        return token, None
    return "other", (text or "unknown").strip() or "unknown"


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _r(x: float) -> float:
    return float(f"{x:.4g}")


def _setting(row: Mapping) -> str:
    if row.get("shots") is not None:
        shots = row["shots"]
        return "all labels" if shots == "all" else f"{shots} shot{'' if shots == 1 else 's'} per class"
    if row.get("label_fraction") is not None:
        return f"label fraction {row['label_fraction']}"
    return ""


def _benchmark_rows(entry: Mapping) -> list[dict]:
    """The entry's aggregate rows of this checkpoint's encoder (``entry["encoder"]`` names it
    where the benchmark compared several; otherwise every row, named with its encoder)."""
    rows = [dict(r) for r in entry.get("results") or entry.get("aggregates") or [] if isinstance(r, Mapping)]
    rows = [r for r in rows if _finite(r.get("mean"))]
    if entry.get("encoder") is not None:
        rows = [r for r in rows if r.get("encoder") == entry["encoder"]]
    return rows


def _benchmark_results(card: Mapping) -> list[dict]:
    out = []
    for entry in card.get("benchmarks") or []:
        groups: dict[tuple, list] = {}
        named = entry.get("encoder") is not None
        for r in _benchmark_rows(entry):
            groups.setdefault((r.get("task"), r.get("protocol"), r.get("dataset"), r.get("domain")), []).append(r)
        for (task, protocol, dataset, domain), rows in groups.items():
            metrics = []
            for r in rows:
                ci = (f" [95% CI {r['ci_low']:.3f}, {r['ci_high']:.3f}]"
                      if _finite(r.get("ci_low")) and _finite(r.get("ci_high")) else "")
                who = "" if named else f"{r.get('encoder')}, "
                metrics.append({"type": str(r.get("metric") or "metric"), "value": _r(float(r["mean"])),
                                "name": f"{r.get('metric')} ({who}{domain}, {_setting(r)}){ci}"})
            name = " / ".join(str(x) for x in (task, protocol) if x) or entry.get("title") or "few-shot probe"
            out.append({"task": {"type": "feature-extraction", "name": f"{name} (frozen-encoder evaluation)"},
                        "dataset": {"name": str(dataset or entry.get("dataset") or "medssl benchmark"),
                                    "type": str(dataset or entry.get("dataset") or "medssl-benchmark"),
                                    "split": str(domain)},
                        "metrics": metrics})
    return out


def _privacy_results(card: Mapping) -> list[dict]:
    out = []
    for p in card.get("privacy") or []:
        if p.get("kind") == "membership_inference" and _finite(p.get("auc")):
            ci = p.get("auc_ci") or [None, None]
            band = p.get("null_band") or [None, None]
            extra = (f" [95% CI {ci[0]:.3f}, {ci[1]:.3f}; permutation null band {band[0]:.3f}, {band[1]:.3f}; "
                     f"p = {p.get('p_value'):.3g}]" if all(_finite(v) for v in (*ci, *band, p.get("p_value")))
                     else "")
            metrics = [{"type": "membership_inference_auc", "value": _r(p["auc"]),
                        "name": f"membership-inference AUC ({p.get('threat')}/{p.get('attack')}, "
                                f"{p.get('n_members')} members vs {p.get('n_nonmembers')} non-members){extra}"}]
            for fpr, v in (p.get("tpr_at_fpr") or {}).items():
                if _finite(v):
                    metrics.append({"type": "tpr_at_fpr", "value": _r(v), "name": f"TPR at FPR {fpr}"})
            m = p.get("tpr_at_min_fpr") or {}
            if _finite(m.get("value")) and _finite(m.get("fpr")):
                metrics.append({"type": "tpr_at_fpr", "value": _r(m["value"]),
                                "name": f"TPR at FPR {m['fpr']:.3g} (smallest measurable)"})
            out.append({"task": {"type": "membership-inference",
                                 "name": f"membership-inference audit ({p.get('threat')}, {p.get('attack')})"},
                        "dataset": {"name": "training subjects vs held-out subjects", "type": "private"},
                        "metrics": metrics})
        elif p.get("kind") == "dp_sgd" and _finite(p.get("epsilon")):
            out.append({"task": {"type": "differential-privacy", "name": "DP-SGD accountant (subject level)"},
                        "dataset": {"name": "training subjects", "type": "private"},
                        "metrics": [{"type": "epsilon", "value": _r(p["epsilon"]),
                                     "name": f"epsilon at delta {p.get('delta')} ({p.get('accountant')})"}]})
    return out


def _datasets(card: Mapping) -> list[str]:
    names = list((card.get("data") or {}).get("datasets") or [])
    for entry in card.get("benchmarks") or []:
        names += [str(r["dataset"]) for r in _benchmark_rows(entry) if r.get("dataset")]
    return list(dict.fromkeys(names))


def model_card_metadata(card: Mapping) -> dict[str, Any]:
    """The YAML front matter (a dict) of a medssl card."""
    enc = card["encoder"]
    lic, lic_name = hf_license(enc.get("license"))
    method = (card.get("recipe") or {}).get("method")
    tags = [LIBRARY, "self-supervised-learning", "medical", *(_MODALITY_TAGS.get(enc.get("modality"), [])),
            *([str(method)] if method else []), str(enc["name"]), "safetensors"]
    results = _benchmark_results(card) + _privacy_results(card)
    meta: dict[str, Any] = {"library_name": LIBRARY, "license": lic}
    if lic_name:
        meta["license_name"] = re.sub(r"[^a-z0-9.-]+", "-", lic_name.lower()).strip("-")[:64] or "other"
    meta["tags"] = list(dict.fromkeys(tags))
    meta["pipeline_tag"] = "feature-extraction"
    datasets = _datasets(card)
    if datasets:
        meta["datasets"] = datasets
    if results:
        meta["metrics"] = list(dict.fromkeys(m["type"] for r in results for m in r["metrics"]))
        meta["model-index"] = [{"name": str(enc["name"]), "results": results}]
    return meta


def _md(x) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def model_card(card: Mapping) -> str:
    """README.md text: YAML front matter (:func:`model_card_metadata`) and the card in prose."""
    import yaml

    meta = model_card_metadata(card)
    enc = card["encoder"]
    recipe = card.get("recipe") or {}
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000).rstrip(), "---", "",
             f"# {enc['name']}", "",
             f"A `medssl` encoder for modality `{enc.get('modality')}`"
             + (f", pretrained with `{recipe.get('method')}`" if recipe.get("method") else "")
             + f"; embeddings of dimension {enc.get('embed_dim')}. Architecture provenance: {enc.get('provenance')}."
             + (f" Method paper: {enc.get('paper')}." if enc.get("paper") else ""), "",
             "## Use", "", "```python", "import medssl", "",
             'encoder = medssl.load_encoder("path/to/this/folder")   # config.json + model.safetensors',
             "prep = medssl.preprocessor(encoder)                     # manifest row -> input array",
             "```", "", "## Input contract", "", "| key | value |", "|---|---|"]
    lines += [f"| {_md(k)} | {_md(v)} |" for k, v in (enc.get("input") or {}).items()]
    tm = card.get("training_metrics") or {}
    lines += ["", "## Training", ""]
    lines.append(f"- precision: {card.get('precision')}; created {card.get('created')}")
    if tm:
        lines.append("- " + ", ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}"
                                      for k, v in tm.items() if not str(k).endswith("_step")))
    sha = (card.get("data") or {}).get("manifest_sha256")
    if sha:
        lines.append(f"- training manifest SHA-256: `{sha}`")
    results = meta.get("model-index", [{}])[0].get("results", [])
    if results:
        lines += ["", "## Results", "", "| task | dataset / split | metric | value |", "|---|---|---|---|"]
        for r in results:
            ds = r["dataset"]
            for m in r["metrics"]:
                lines.append(f"| {_md(r['task']['name'])} | {_md(ds['name'])}{' / ' + _md(ds['split']) if ds.get('split') else ''}"
                             f" | {_md(m['name'])} | {m['value']} |")
    conclusions = [p.get("conclusion") for p in card.get("privacy") or [] if p.get("conclusion")]
    if conclusions:
        lines += ["", "## Privacy", ""] + [f"- {_md(c)}" for c in conclusions]
    lines += ["", "## Licence", "", f"{enc.get('license')}", "", "## Versions", "",
              ", ".join(f"{k} {v}" for k, v in (card.get("versions") or {}).items()), ""]
    return "\n".join(lines)


def hub_config(card: Mapping) -> dict[str, Any]:
    """config.json: what rebuilds the encoder without card.json."""
    enc = card["encoder"]
    return {
        "library_name": LIBRARY,
        "medssl_card_schema_version": card.get("schema_version"),
        "architectures": [enc["name"]],
        "model_type": f"{LIBRARY}-{enc.get('modality')}",
        "modality": enc.get("modality"),
        "embed_dim": enc.get("embed_dim"),
        "method": (card.get("recipe") or {}).get("method"),
        "precision": card.get("precision"),
        "encoder": dict(enc),
        "weights": "model.safetensors",
    }


def write_hub_files(folder: str | Path, card: Mapping) -> tuple[Path, Path]:
    """Write ``README.md`` and ``config.json`` of a checkpoint folder from its card, atomically;
    returns their paths."""
    from medssl.io import atomic_write_text

    folder = Path(folder)
    readme = atomic_write_text(folder / README_FILE, model_card(card))
    config = atomic_write_text(folder / CONFIG_FILE, json.dumps(hub_config(card), indent=2) + "\n")
    return readme, config
