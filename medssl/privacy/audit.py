"""Subject-level membership-inference audit of a medssl checkpoint: ``audit.json`` + ``report.html``.

Threat models
  * ``score``: the attacker can evaluate the SSL method's own loss on a record (white-box: the
    checkpoint's recipe rebuilt with :func:`medssl.engine.methods.build_method`). A checkpoint
    written by ``medssl pretrain`` holds the whole method beside the encoder
    (``method.safetensors``: predictor, heads, EMA target); when its encoder weights equal the
    checkpoint's, the full method is loaded from it. Otherwise the method's other parts keep the
    recipe's seeded initialisation and a warning says the loss signal is weaker.
    For JEPA methods without that state the target encoder is set to the encoder for scoring
    (at the end of training, with the momentum near 1, the EMA target is close to the encoder); with it, the trained EMA target is used, i.e.
    the exact training loss.
    Signal: :func:`medssl.privacy.signals.ssl_loss_signal`, ``n_queries`` mask draws per window,
    all models scored with the target recipe's seed so every model sees the same masks.
  * ``embedding``: the attacker only has the released encoder (black-box embeddings).
    Signal: :func:`medssl.privacy.signals.augmentation_consistency` over ``n_queries`` (>= 2)
    augmented views (the recipe's ``augment`` list when it keeps the window shape, else
    gaussian noise + amplitude scaling + time-out).
  * ``learned``: the adaptive attacker of :mod:`medssl.privacy.learned`: both signals above,
    summarised per subject (statistics over windows and repeated queries) and fed to a logistic
    regression cross-fitted over subjects (each subject scored by a model that never saw its
    label). Attack ``loss`` only (the classifier is the attack).

Attacks: ``loss`` (threshold on the signal, no references), ``lira`` and ``rmia`` (with
``n_refs`` reference models from :mod:`medssl.privacy.references` trained on
``population_rows``). LiRA is *online* when every audited subject is IN for at least one and
OUT for at least one reference (i.e. the population contains the audited subjects), else
*offline* (OUT references only). RMIA is offline; its population samples z are windows of a
quarter of the population subjects held out of every reference model. Both are refused, before
any reference is trained, when some audited window would have no OUT reference (one reference
trained on a population that holds audited subjects). Window scores are pooled
per subject (``aggregate`` = mean | max) before the metrics.

Membership verification. The card stores only a SHA-256 of the training manifest (one row per
window), so a *subset* of the training data cannot be checked against it. When the members
passed are the whole training manifest, their fingerprint equals the card's and the report
says "verified"; otherwise it warns that membership could not be verified (a mislabelled
"member" makes the attack look weaker than it is).

Null check: the same attack scores of the non-members, split into two disjoint random halves
(one half labelled "members"); AUC ~ 0.5 and TPR ~ FPR are expected, anything else points to a
bias in the pipeline rather than leakage.

Source check (run automatically when some non-members come from sources, the manifests' ``site``
column, that no member comes from): the same attack between non-members from the members'
source(s) and non-members from the other source(s). Non-members of the members' source are
taken from the non-member manifest, or, for the ``loss`` attack, scored from the population
manifest (subjects that are not members). An AUC far from 0.5 there measures the shift between
datasets, which the main result would otherwise mistake for membership. Skipped (with the
reason) when either group has fewer than ``MIN_SUBJECTS`` subjects.

``audit.json`` schema (``schema_version`` 1; no subject or record identifiers, only counts)::

    {
      "schema_version": 1, "created": ISO-8601 UTC,
      "checkpoint": str, "encoder": str, "method": str,
      "threat": "score" | "embedding", "attack": "loss" | "lira" | "rmia",
      "mode": "online" | "offline" | null,      # null for the loss attack
      "aggregate": "mean" | "max", "n_queries": int, "n_reference_models": int,
      "n_members": int, "n_nonmembers": int,        # subjects
      "n_member_windows": int, "n_nonmember_windows": int,
      "membership_verified": bool,
      "auc": float, "auc_ci": [low, high],
      "tpr_at_fpr": {"0.001": {"value", "ci_low", "ci_high", "achievable", "fpr_realised"},
                     "0.01": {...}, "0.1": {...}},
      "roc": {"fpr": [...], "tpr": [...]},
      "null_check": {"n_members": int, "n_nonmembers": int, "auc": float, "auc_ci": [low, high],
                     "tpr_at_fpr": {same as above}},
      "source_check": null | {"skipped": reason} | {"member_sources": [...], "other_sources": [...],
                     "n_members" (same-source non-members), "n_nonmembers" (other-source), "auc", "auc_ci",
                     "tpr_at_fpr"},
      "warnings": [str]
    }
"""

from __future__ import annotations

import datetime as _dt
import html
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from medssl.checkpoint import load_encoder, read_card, update_card
from medssl.data.manifest import manifest_fingerprint
from medssl.engine.pretrain import METHOD_WEIGHTS_FILE
from medssl.io import atomic_write_json, atomic_write_text
from medssl.privacy.aggregate import aggregate_by_subject
from medssl.privacy.attacks import lira_offline, lira_online, loss_attack, rmia
from medssl.privacy.metrics import (
    auc_with_ci,
    check_fpr_feasible,
    min_nonmembers_for_fpr,
    roc_curve_points,
    roc_loglog_svg,
    tpr_at_fpr,
)
from medssl.privacy.signals import augmentation_consistency, ssl_loss_signal

__all__ = ["FPRS", "MIN_SUBJECTS", "run_audit"]

log = logging.getLogger(__name__)

FPRS = (0.001, 0.01, 0.1)
MIN_SUBJECTS = 10
THREATS = ("score", "embedding", "learned")
ATTACKS = ("loss", "lira", "rmia")
_DEFAULT_VIEW_AUGMENT = [
    {"name": "gaussian_noise", "std": 0.05}, {"name": "amplitude_scale", "magnitude": [0.8, 1.25]},
    {"name": "time_out", "ratio": [0.1, 0.2]},
]


def _subjects(rows: Sequence[dict]) -> set[str]:
    return {str(r["subject_id"]) for r in rows}


def _load_method(checkpoint: Path, cfg: dict, warnings: list[str]):
    """(encoder, method) of the checkpoint, method in eval mode with the checkpoint's encoder."""
    from medssl.engine.methods import build_method

    trained = load_encoder(checkpoint)
    with torch.random.fork_rng(devices=[]):  # seeded init of the parts not in the checkpoint
        torch.manual_seed(int(cfg.get("seed", 0)))
        encoder, method = build_method(cfg)
    enc_state = trained.state_dict()
    loaded_full = False
    full = checkpoint / METHOD_WEIGHTS_FILE
    if full.is_file():
        mstate = load_file(str(full))
        same = all(torch.equal(mstate.get(f"encoder.{k}", torch.empty(0)), v) for k, v in enc_state.items())
        if same:
            method.load_state_dict(mstate, strict=True)
            loaded_full = True
        else:
            log.warning("%s does not hold this checkpoint's encoder; using the encoder weights only", full)
    if not loaded_full:
        warnings.append(
            "the full SSL method state (predictor/heads) was not available: the loss signal uses the "
            "checkpoint's encoder with the recipe's seeded initialisation of the other parts, a weaker attacker"
        )
    method.encoder.load_state_dict(enc_state, strict=True)
    if hasattr(method, "target_encoder") and not loaded_full:
        method.target_encoder.load_state_dict(enc_state, strict=True)  # JEPA: target := encoder for scoring
    encoder = method.encoder
    encoder.spec = trained.spec
    return encoder, method.eval()


def _arrays(cfg: dict, rows: Sequence[dict], encoder) -> tuple[np.ndarray, list[dict]]:
    from medssl.engine.pretrain import load_training_arrays

    signals, used, skipped = load_training_arrays(cfg, rows, encoder)
    for path, reason in skipped:
        log.warning("skipped %s: %s", path, reason)
    return np.array(signals, dtype=np.float32), used  # a writable copy of the memory map


def _signal(threat: str, cfg: dict, checkpoint: Path, x: np.ndarray, n_queries: int, seed: int,
            score_seed: int, warnings: list[str], batch: int = 64) -> np.ndarray:
    """Per-window signal: loss (W, Q) for threat=score, consistency (W,) for threat=embedding."""
    encoder, method = _load_method(checkpoint, cfg, warnings)
    t = torch.from_numpy(x)
    if threat == "score":
        if hasattr(method, "seed"):
            method.seed = score_seed  # same masks for target and reference models
        return np.concatenate([ssl_loss_signal(method, t[i:i + batch], n_queries, seed)
                               for i in range(0, len(t), batch)])
    from medssl.ecg.augment import build_augment

    specs = cfg.get("augment") if isinstance(cfg.get("augment"), list) else None
    augment = build_augment(specs or _DEFAULT_VIEW_AUGMENT, sampling_rate=encoder.spec.input.get("sampling_rate"))
    probe = augment(t[:1], torch.Generator().manual_seed(0))
    if probe.shape != t[:1].shape:
        augment = build_augment(_DEFAULT_VIEW_AUGMENT)
    out = []
    for i in range(0, len(t), batch):
        gen = torch.Generator().manual_seed(hash((seed, i)) & 0x7FFF_FFFF)
        out.append(augmentation_consistency(encoder, t[i:i + batch], augment, max(n_queries, 2), gen))
    return np.concatenate(out)


def _fpr_table(scores: np.ndarray, labels: np.ndarray) -> dict:
    out = {}
    for f in FPRS:
        r = tpr_at_fpr(scores, labels, f)
        out[f"{f:g}"] = {k: r[k] for k in ("value", "ci_low", "ci_high", "achievable", "fpr_realised")}
    return out


def _metrics(scores: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    ci = auc_with_ci(scores, labels, seed=seed)
    return {"n_members": ci["n_members"], "n_nonmembers": ci["n_nonmembers"], "auc": ci["auc"],
            "auc_ci": [ci["ci_low"], ci["ci_high"]], "tpr_at_fpr": _fpr_table(scores, labels)}


def source_mismatch_warnings(members_rows: Sequence[dict], nonmembers_rows: Sequence[dict]) -> list[str]:
    """A warning when non-members come from sources (the manifests' `site` column) that no member
    comes from: the attack may then detect the dataset shift, not membership."""
    def sources(rows):
        return {str(r.get("site") or "") for r in rows}

    foreign = sources(nonmembers_rows) - sources(members_rows)
    if not foreign:
        return []
    return [
        f"{len(foreign)} non-member source(s) hold no member: differences between datasets (scanner, "
        "site, preprocessing) can be mistaken for membership. The source check (below) runs the same attack "
        "between non-members of the members' source and of the other source(s): an AUC far from 0.5 there "
        "measures the shift, not leakage."
    ]


def run_audit(
    checkpoint: str | Path,
    members_rows: Sequence[dict],
    nonmembers_rows: Sequence[dict],
    *,
    threat: str = "score",
    attack: str = "loss",
    n_refs: int = 0,
    n_queries: int = 4,
    aggregate: str = "mean",
    population_rows: Sequence[dict] | None = None,
    out_dir: str | Path,
    seed: int = 0,
) -> dict:
    """Audit ``checkpoint`` for membership leakage of ``members_rows`` vs ``nonmembers_rows``
    (manifest rows; membership per subject). Writes ``out_dir/audit.json`` and
    ``out_dir/report.html`` (see the module docstring), appends a summary to the card's
    ``privacy`` section, and returns the audit dict. Bad settings raise ValueError."""
    checkpoint = Path(checkpoint)
    out_dir = Path(out_dir)
    if threat not in THREATS:
        raise ValueError(f"threat must be one of {THREATS}, got {threat!r}")
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {ATTACKS}, got {attack!r}")
    if aggregate not in ("mean", "max"):
        raise ValueError(f"aggregate must be mean or max, got {aggregate!r}")
    if n_queries < 1:
        raise ValueError(f"n_queries must be >= 1, got {n_queries}")
    mem_s, non_s = _subjects(members_rows), _subjects(nonmembers_rows)
    overlap = mem_s & non_s
    if overlap:
        raise ValueError(f"{len(overlap)} subject(s) are both members and non-members; "
                         "make the member and non-member manifests subject-disjoint")
    for side, s in (("members", mem_s), ("non-members", non_s)):
        if len(s) < MIN_SUBJECTS:
            raise ValueError(f"{len(s)} {side} subjects: an audit needs at least {MIN_SUBJECTS} subjects per side")
    if threat == "learned" and attack != "loss":
        raise ValueError("threat learned is its own attack (a classifier over subject statistics): use --attack loss")
    if attack in ("lira", "rmia"):
        if n_refs < 1:
            raise ValueError(f"attack {attack} needs reference models: set n_refs >= 1 (e.g. --refs 4)")
        if not population_rows:
            raise ValueError(f"attack {attack} needs population rows to train reference models on (--population)")
    card = read_card(checkpoint)
    cfg = card.get("recipe") or {}
    if not cfg.get("method"):
        raise ValueError(f"{checkpoint}: the card has no training recipe; the audit rebuilds the method from it")

    warnings: list[str] = []
    for f in FPRS:
        try:
            check_fpr_feasible(len(non_s), f)
        except ValueError:  # reported, not refused: the figure is then a lower bound
            warnings.append(f"TPR at FPR {f:g} is not achievable with {len(non_s)} non-member subjects "
                            f"(needs >= {min_nonmembers_for_fpr(f)}); the figure is the TPR at 0 false positives")
    warnings += source_mismatch_warnings(members_rows, nonmembers_rows)
    # the arrays, and the membership check against the card's fingerprint
    enc_probe = load_encoder(checkpoint)
    x_mem, used_mem = _arrays(cfg, members_rows, enc_probe)
    x_non, used_non = _arrays(cfg, nonmembers_rows, enc_probe)
    recorded = (card.get("data") or {}).get("manifest_sha256")
    verified = bool(recorded) and manifest_fingerprint(used_mem) == recorded
    if not verified:
        warnings.append(
            "membership could not be verified: the members are not the checkpoint's whole recorded training "
            "manifest (the card keeps only its SHA-256, so a subset cannot be checked)" if recorded else
            "membership could not be verified: the card records no training-manifest fingerprint")
    x = np.concatenate([x_mem, x_non])
    win_subjects = np.array([str(r["subject_id"]) for r in [*used_mem, *used_non]])
    score_seed = int(cfg.get("seed", 0))

    def learned_features(xs: np.ndarray, ws: np.ndarray, subjects: Sequence[str]) -> np.ndarray:
        from medssl.privacy.learned import subject_features

        losses = _signal("score", cfg, checkpoint, xs, n_queries, seed, score_seed, warnings)
        consistency = _signal("embedding", cfg, checkpoint, xs, n_queries, seed, score_seed, [])
        return subject_features(subjects, ws, losses, consistency)

    def loss_scores(xs: np.ndarray, ws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(subjects, scores) of the threshold attack on windows xs of subjects ws."""
        sig = _signal(threat, cfg, checkpoint, xs, n_queries, seed, score_seed, [])
        return aggregate_by_subject(loss_attack(sig) if threat == "score" else np.asarray(sig, np.float64), ws,
                                    aggregate)

    mode = None
    n_ref_used = 0
    features = None
    if threat == "learned":
        from medssl.privacy.learned import cross_fitted_scores

        subjects = np.array(sorted(set(win_subjects.tolist())))
        features = learned_features(x, win_subjects, subjects)
        labels = np.isin(subjects, sorted(mem_s))
        subj_scores = cross_fitted_scores(features, labels, seed=seed)
    else:
        target = _signal(threat, cfg, checkpoint, x, n_queries, seed, score_seed, warnings)
        if attack == "loss":
            win_scores = loss_attack(target) if threat == "score" else np.asarray(target, dtype=np.float64)
        else:
            mode, n_ref_used, win_scores = _reference_attack(
                attack, threat, cfg, checkpoint, x, win_subjects, target, population_rows, n_refs, n_queries,
                out_dir, seed, score_seed, enc_probe)
        subjects, subj_scores = aggregate_by_subject(win_scores, win_subjects, aggregate)
        labels = np.isin(subjects, sorted(mem_s))
    main = _metrics(subj_scores, labels, seed)
    fpr, tpr, _ = roc_curve_points(subj_scores, labels)

    def group_metrics(mask_a: np.ndarray, mask_b: np.ndarray) -> dict:
        """The attack between two groups of subjects (a labelled "members"); the learned attacker
        is refitted (cross-fitted) on them."""
        keep = mask_a | mask_b
        if features is not None:
            from medssl.privacy.learned import cross_fitted_scores

            scores = cross_fitted_scores(features[keep], mask_a[keep], seed=seed)
        else:
            scores = subj_scores[keep]
        return _metrics(scores, mask_a[keep], seed)

    # null check: two random halves of the non-members
    non_idx = np.flatnonzero(~labels)
    half = np.zeros(len(subjects), dtype=bool)
    half[np.random.default_rng(seed + 1).permutation(non_idx)[: non_idx.size // 2]] = True
    null = group_metrics(half, ~labels & ~half)
    source_check = _source_check(members_rows, nonmembers_rows, population_rows, subjects, labels, attack,
                                 group_metrics, features, subj_scores, cfg, enc_probe, loss_scores,
                                 learned_features, seed)

    result = {
        "schema_version": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": str(checkpoint), "encoder": card["encoder"]["name"], "method": cfg.get("method"),
        "threat": threat, "attack": attack, "mode": mode, "aggregate": aggregate, "n_queries": n_queries,
        "n_reference_models": n_ref_used,
        "n_members": int(labels.sum()), "n_nonmembers": int((~labels).sum()),
        "n_member_windows": len(used_mem), "n_nonmember_windows": len(used_non),
        "membership_verified": verified,
        "auc": main["auc"], "auc_ci": main["auc_ci"], "tpr_at_fpr": main["tpr_at_fpr"],
        "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
        "null_check": null, "source_check": source_check, "warnings": warnings,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "audit.json", result)
    atomic_write_text(out_dir / "report.html", render_html(result))
    update_card(checkpoint, "privacy", {
        "kind": "membership_inference", "created": result["created"], "audit": str(out_dir / "audit.json"),
        **{k: result[k] for k in ("threat", "attack", "mode", "n_members", "n_nonmembers", "auc", "auc_ci",
                                  "n_reference_models", "membership_verified")},
        "tpr_at_fpr": {k: v["value"] for k, v in result["tpr_at_fpr"].items()},
        "null_check_auc": null["auc"],
    })
    return result


def _reference_attack(attack, threat, cfg, checkpoint, x, win_subjects, target, population_rows, n_refs, n_queries,
                      out_dir, seed, score_seed, enc_probe):
    """(mode, number of references, window scores) of LiRA or RMIA with reference models trained on
    the population (see the module docstring)."""
    from medssl.privacy.references import membership_matrix, train_reference_models

    pop_subjects = sorted(_subjects(population_rows))
    rng = np.random.default_rng(seed)
    z_subjects = set()
    if attack == "rmia":
        z_subjects = set(rng.choice(pop_subjects, max(1, len(pop_subjects) // 4), replace=False).tolist())
    ref_rows = [r for r in population_rows if str(r["subject_id"]) not in z_subjects]
    # which references will train on each audited window, known before training anything
    pool = sorted(_subjects(ref_rows))
    planned = membership_matrix(n_refs, len(pool), seed)[:, np.searchsorted(pool, win_subjects).clip(0, len(pool) - 1)]
    planned &= np.isin(win_subjects, pool)[None]
    if not (~planned).any(axis=0).all() and (attack == "rmia" or not planned.any(axis=0).all()):
        raise ValueError(
            f"{attack}: {int((~(~planned).any(axis=0)).sum())} audited window(s) would have no OUT reference "
            "model; use more reference models (--refs >= 2) or a population disjoint from the audited subjects")
    refs = train_reference_models(cfg, ref_rows, n_refs, out_dir / "references", seed)
    ref_sig = np.stack([_signal(threat, cfg, r.checkpoint, x, n_queries, seed, score_seed, []) for r in refs])
    ref_in = np.stack([r.membership(win_subjects) for r in refs])  # (R, W)
    if attack == "lira":
        t_sig, r_sig = (-target, -ref_sig) if threat == "score" else ((1 + target) / 2, (1 + ref_sig) / 2)
        tr = None if threat == "score" else "logit"
        if ref_in.any(axis=0).all() and (~ref_in).any(axis=0).all():
            return "online", len(refs), lira_online(t_sig, r_sig, ref_in, transform=tr)
        return "offline", len(refs), lira_offline(t_sig, r_sig, ref_in, transform=tr)
    z_rows = [r for r in population_rows if str(r["subject_id"]) in z_subjects]
    x_z, _ = _arrays(cfg, z_rows, enc_probe)
    z_t = _signal(threat, cfg, checkpoint, x_z, n_queries, seed, score_seed, [])
    z_r = np.stack([_signal(threat, cfg, r.checkpoint, x_z, n_queries, seed, score_seed, []) for r in refs])

    def prob(sig):
        return np.exp(-np.asarray(sig).mean(axis=-1)) if threat == "score" else np.clip((1 + sig) / 2, 1e-6, 1)

    return "offline", len(refs), rmia(prob(target), prob(ref_sig), prob(z_t), prob(z_r), reference_in=ref_in,
                                      offline=True)


def _site_of(rows: Sequence[dict]) -> dict[str, str]:
    return {str(r["subject_id"]): str(r.get("site") or "") for r in rows}


def _source_check(members_rows, nonmembers_rows, population_rows, subjects, labels, attack, group_metrics,
                  features, subj_scores, cfg, enc_probe, loss_scores, learned_features, seed) -> dict | None:
    """The attack between non-members of the members' source(s) and non-members of the other
    source(s); None when every non-member source also holds members."""
    member_sites = set(_site_of(members_rows).values())
    site = _site_of(nonmembers_rows)
    other_sites = sorted(set(site.values()) - member_sites)
    if not other_sites:
        return None
    base = {"member_sources": sorted(member_sites), "other_sources": other_sites}
    same = np.array([not labels[i] and site.get(s) in member_sites for i, s in enumerate(subjects)])
    other = np.array([not labels[i] and site.get(s) in other_sites for i, s in enumerate(subjects)])
    if same.sum() >= MIN_SUBJECTS and other.sum() >= MIN_SUBJECTS:
        return {**base, **group_metrics(same, other)}
    extra = [r for r in (population_rows or []) if str(r.get("site") or "") in member_sites
             and str(r["subject_id"]) not in set(subjects.tolist())]
    n_extra = len(_subjects(extra))
    if attack != "loss" or same.sum() + n_extra < MIN_SUBJECTS or other.sum() < MIN_SUBJECTS:
        return {**base, "skipped": (
            f"needs >= {MIN_SUBJECTS} non-member subjects from the members' source(s) and from the other "
            f"source(s); have {int(same.sum())} (+{n_extra} in the population, usable by the loss attack only) "
            f"and {int(other.sum())}: pass more same-source non-members (--nonmembers) or a population of the "
            "members' source (--population)")}
    x_extra, used_extra = _arrays(cfg, extra, enc_probe)
    ws = np.array([str(r["subject_id"]) for r in used_extra])
    if features is not None:
        from medssl.privacy.learned import cross_fitted_scores

        extra_subjects = np.array(sorted(set(ws.tolist())))
        f = np.concatenate([features[same], learned_features(x_extra, ws, extra_subjects), features[other]])
        a = np.r_[np.ones(int(same.sum()) + len(extra_subjects), bool), np.zeros(int(other.sum()), bool)]
        return {**base, **_metrics(cross_fitted_scores(f, a, seed=seed), a, seed)}
    _, extra_scores = loss_scores(x_extra, ws)
    scores = np.concatenate([subj_scores[same], extra_scores, subj_scores[other]])
    a = np.r_[np.ones(int(same.sum()) + extra_scores.size, bool), np.zeros(int(other.sum()), bool)]
    return {**base, **_metrics(scores, a, seed)}


_THREAT_TEXT = {
    "score": "The attacker can run the model's self-supervised training objective (white-box access to the "
             "SSL method) and reads its loss on each record window: training records tend to get a lower loss.",
    "embedding": "The attacker only queries the released encoder for embeddings and measures how consistent "
                 "the embeddings of augmented views of a record are: training records tend to be more consistent.",
    "learned": "An adaptive attacker: the model's loss over repeated queries and the consistency of its "
               "embeddings are summarised per subject and a classifier learns which statistics betray members; "
               "each subject is scored by a classifier trained on other subjects of known membership "
               "(cross-fitting), an upper bound for an outsider who knows a few members.",
}


def _fpr_rows(table: dict) -> str:
    rows = []
    for f, r in table.items():
        ok = "" if r["achievable"] else " (not achievable: TPR at 0 false positives)"
        rows.append(f"<tr><td>{html.escape(f)}</td><td>{r['value']:.3f}</td>"
                    f"<td>[{r['ci_low']:.3f}, {r['ci_high']:.3f}]</td><td>{html.escape(ok)}</td></tr>")
    return "".join(rows)


def _source_html(check: dict | None) -> str:
    if not check:
        return ""
    e = html.escape
    head = (f"<h2>Source check</h2><p>Non-members come from source(s) {e(', '.join(check['other_sources']))} "
            f"that hold no member (members: {e(', '.join(check['member_sources']))}).</p>")
    if "skipped" in check:
        return head + f"<p class=warn>Not run: {e(check['skipped'])}</p>"
    return head + (f"<p>The same attack between {check['n_members']} non-members of the members' source(s) and "
                   f"{check['n_nonmembers']} of the other source(s): AUC {check['auc']:.3f} "
                   f"[{check['auc_ci'][0]:.3f}, {check['auc_ci'][1]:.3f}]. Near 0.5: the sources are "
                   "interchangeable for this attack. Far from 0.5: part of the main result measures the "
                   "difference between datasets, not membership.</p>")


def render_html(result: dict) -> str:
    """Self-contained HTML page of an audit dict (inline CSS + SVG, every string escaped)."""
    e = html.escape
    null = result["null_check"]
    attack = result["attack"] + (f" ({result['mode']}, {result['n_reference_models']} reference models)"
                                 if result["mode"] else "")
    svg = roc_loglog_svg(result["roc"]["fpr"], result["roc"]["tpr"], label=f"{result['attack']} attack")
    warn = "".join(f"<li>{e(w)}</li>" for w in result["warnings"]) or "<li>none</li>"
    head = "<tr><th>FPR</th><th>TPR</th><th>95% CI (Clopper-Pearson)</th><th></th></tr>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>medssl membership-inference audit</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em}}.warn{{color:#a04000}}</style>
</head><body>
<h1>Membership-inference audit</h1>
<p>Checkpoint encoder <b>{e(str(result['encoder']))}</b>, method <b>{e(str(result['method']))}</b>.</p>
<h2>Threat model</h2>
<p>{e(_THREAT_TEXT[result['threat']])} Attack: {e(attack)}. Window scores are pooled per subject
({e(result['aggregate'])}); membership is decided per subject.</p>
<p>{result['n_members']} member subjects ({result['n_member_windows']} windows) and {result['n_nonmembers']}
non-member subjects ({result['n_nonmember_windows']} windows). Membership verified against the card:
{'yes' if result['membership_verified'] else 'no'}.</p>
<h2>Results</h2>
<p>AUC {result['auc']:.3f} (95% bootstrap CI over subjects [{result['auc_ci'][0]:.3f}, {result['auc_ci'][1]:.3f}])</p>
<table>{head}{_fpr_rows(result['tpr_at_fpr'])}</table>
<h3>ROC (log-log)</h3>
{svg}
<h2>Null check</h2>
<p>The same scores, non-members only, split into two random halves ({null['n_members']} vs {null['n_nonmembers']}
subjects): expected AUC near 0.5 and TPR near FPR. AUC {null['auc']:.3f}
[{null['auc_ci'][0]:.3f}, {null['auc_ci'][1]:.3f}].</p>
<table>{head}{_fpr_rows(null['tpr_at_fpr'])}</table>
{_source_html(result.get("source_check"))}
<h2>Warnings</h2>
<ul class="warn">{warn}</ul>
</body></html>
"""
