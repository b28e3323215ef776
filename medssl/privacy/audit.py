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
``population_rows``). Each reference trains on as many subjects as the target did (the card's
``metrics.n_subjects``, else the number of members), capped at half the reference pool when the
pool holds audited subjects (so each has IN and OUT references) and at the pool otherwise; a cap
is warned about. LiRA is *online* when every audited subject is IN for at least one and OUT for
at least one reference, else *offline* (OUT references only); its Gaussian variances fall back
from per-example (>= 64 references) to pooled within-example to the global variance across
examples (the authors' code for few shadows), or the attack is refused
(:mod:`medssl.privacy.attacks`). RMIA is offline; its population samples z are windows of
population subjects that are *not audited* (neither members nor non-members) and are held out of
every reference model: by default all non-audited population subjects except those the
reference pool needs to reach twice the target's size (at least half of them go to z); ``n_z``
sets the number. Fewer than 200 z windows are warned about. RMIA's offline ``a`` is ``rmia_a``,
or tuned as ML Privacy Meter does (reference 0 plays the target with the others as references,
on the reference pool, best AUC over a = 0, 0.1, ..., 1; needs >= 2 references), else 0.3. Both
attacks are refused, before any reference is trained, when some audited window would have no
OUT reference. Window scores are pooled per subject (``aggregate`` = mean | max).

Statistics (:mod:`medssl.privacy.metrics`). AUC with a stratified bootstrap CI over subjects;
a permutation null band and one-sided p-value at the audit's own sample sizes (membership labels
permuted over the audited subjects; for the learned attacker the classifier is refitted for
each of 200 permutations). TPR at FPR 0.1 %, 1 %, 10 %: ``null`` with the reason when the FPR is
below 1 / n_nonmembers; otherwise the value, a bootstrap CI over both classes that re-estimates
the threshold (``ci_low``/``ci_high``) and the Clopper-Pearson CI conditional on the threshold
(``cp_ci_low``/``cp_ci_high``). ``tpr_at_min_fpr``: the TPR at FPR = 1 / n_nonmembers.

Control: the same attack with a control model as the target, a model of the same recipe whose
membership is independent of the audited labels: ``control_checkpoint`` (e.g. trained on other
subjects), else, for lira/rmia with >= 2 references, reference model 0 with the others as its
references (leave-one-out). Reported: its AUC, null band and p-value and AUC(target) -
AUC(control) with a paired stratified bootstrap CI. The control covers what the split-half check
cannot: a difference between the member and non-member groups (case mix, site, prevalence) that
any model of the recipe would pick up. ``conclusion`` reads "leakage detected" only when the
p-value is <= 0.05 and the difference's CI excludes 0.

Membership verification. The card stores only a SHA-256 of the training manifest (one row per
window), so a *subset* of the training data cannot be checked against it. When the members
passed are the whole training manifest, their fingerprint equals the card's and the report
says "verified"; otherwise it warns that membership could not be verified (a mislabelled
"member" makes the attack look weaker than it is).

Split-half check (``null_check``): the same attack scores of the non-members split into two
disjoint random halves (one half labelled "members"), with its own permutation band. It detects
pipeline artefacts that separate subjects regardless of membership; it cannot see differences
between members and non-members (``what`` says so); the control does.

Source check (run automatically when some non-members come from sources, the manifests' ``site``
column, that no member comes from): the same attack between non-members from the members'
source(s) and non-members from the other source(s). Non-members of the members' source are
taken from the non-member manifest, or, for the ``loss`` attack, scored from the population
manifest (subjects that are not members). An AUC far from 0.5 there measures the shift between
datasets, which the main result would otherwise mistake for membership. Skipped (with the
reason) when either group has fewer than ``MIN_SUBJECTS`` subjects.

Per-subject scores: ``subject_scores.csv`` (written atomically beside audit.json): columns
``subject_key`` (HMAC-SHA256 pseudonym of the subject id, ``subj-`` + 16 hex digits, salt from
``salt`` / $MEDSSL_PSEUDONYM_SALT / the public default, warned about), ``member`` (1/0),
``<threat>_<attack>`` (the subject's score, higher = more member-like) and, with a control,
``control_<threat>_<attack>``.

``audit.json`` schema (``schema_version`` 2; no subject or record identifiers, only counts)::

    {
      "schema_version": 2, "created": ISO-8601 UTC,
      "checkpoint": str, "encoder": str, "method": str,
      "precision": "32" | "bf16", "device": "cpu",  # what the audit scored the models in (--precision)
      "threat": "score" | "embedding" | "learned", "attack": "loss" | "lira" | "rmia",
      "mode": "online" | "offline" | null,      # null for the loss attack
      "aggregate": "mean" | "max", "n_queries": int, "n_reference_models": int,
      "references": null | {"n_train_subjects", "population_subjects",
                            "variance_in"/"variance_out" (LiRA: "per_example" | "pooled" | "global" ...),
                            "n_z_subjects", "n_z", "a", "a_source", "a_grid_auc" (RMIA)},
      "n_members": int, "n_nonmembers": int,        # subjects
      "n_member_windows": int, "n_nonmember_windows": int,
      "membership_verified": bool,
      "auc": float, "auc_ci": [low, high],
      "null_band": [low, high], "p_value": float, "n_permutations": int,
      "tpr_at_fpr": {"0.001": TPR, "0.01": TPR, "0.1": TPR},
      "tpr_at_min_fpr": {"fpr": 1 / n_nonmembers, **TPR},
          # TPR = {"value": float | null, "ci_low", "ci_high" (bootstrap, threshold re-estimated),
          #        "cp_ci_low", "cp_ci_high" (Clopper-Pearson, conditional on the threshold),
          #        "achievable": bool, "fpr_realised", "n_false_positives", "reason": null | str}
          #        (value and intervals null, with the reason, when FPR < 1 / n_nonmembers)
      "roc": {"fpr": [...], "tpr": [...]},
      "control": null | {"source": str, "mode" (lira/rmia), "n_members", "n_nonmembers", "auc", "auc_ci",
                         "null_band", "p_value", "difference": {"value", "ci_low", "ci_high"},
                         "roc": {"fpr": [...], "tpr": [...]}},   # the control's ROC, drawn beside the target's
      "conclusion": str,
      "null_check": {"what": str, "n_members", "n_nonmembers", "auc", "auc_ci", "null_band", "p_value",
                     "n_permutations", "tpr_at_fpr", "tpr_at_min_fpr"},       # the split-half check
      "source_check": null | {"skipped": reason} | {"member_sources": [...], "other_sources": [...],
                     "n_members" (same-source non-members), "n_nonmembers" (other-source), "auc", "auc_ci",
                     "null_band", "p_value", "tpr_at_fpr", "tpr_at_min_fpr"},
      "dp_check": null | {"accountant_epsilon", "delta", "verdict": str, "assumption": str,
                  "empirical": {"epsilon_lower", "beta", "n_guesses", "n_correct", "k", "n_tries"}},
                  # DP-SGD checkpoints only: medssl.privacy.dp_audit (Steinke et al. 2023, one run)
      "scores_file": "subject_scores.csv",
      "warnings": [str]
    }
"""

from __future__ import annotations

import datetime as _dt
import html
import logging
import math
import os
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medssl.checkpoint import load_encoder, read_card, read_safetensors, update_card
from medssl.data.manifest import manifest_fingerprint
from medssl.engine.pretrain import METHOD_WEIGHTS_FILE
from medssl.imaging.dicom import SALT_ENV, pseudonym
from medssl.io import atomic_write_json, atomic_write_text
from medssl.privacy.aggregate import aggregate_by_subject
from medssl.privacy.attacks import lira_offline, lira_online, loss_attack, rmia
from medssl.privacy.metrics import (
    auc_difference_ci,
    auc_permutation_test,
    auc_with_ci,
    check_fpr_feasible,
    min_nonmembers_for_fpr,
    roc_curve_points,
    tpr_table,
)
from medssl.privacy.signals import augmentation_consistency, ssl_loss_signal

__all__ = ["FPRS", "MIN_SUBJECTS", "run_audit", "run_random_targets"]

log = logging.getLogger(__name__)

FPRS = (0.001, 0.01, 0.1)
MIN_SUBJECTS = 10
LEARNED_PERMUTATIONS = 200  # the learned attacker's null refits its classifier per permutation
RMIA_MIN_Z = 200
DEFAULT_RMIA_A = 0.3
SCORES_FILE = "subject_scores.csv"
SPLIT_HALF_TEXT = (
    "the same scores between two random halves of the non-members: it detects artefacts of the pipeline that "
    "separate subjects regardless of membership (ordering, aggregation, a score tied to the record count); it "
    "cannot detect differences between members and non-members other than membership (case mix, site, label "
    "prevalence, acquisition), which the control model covers")
THREATS = ("score", "embedding", "learned")
ATTACKS = ("loss", "lira", "rmia")


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
        mstate = read_safetensors(full)
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
    """Per-window signal: loss (W, Q) for threat=score, consistency (W,) for threat=embedding,
    computed in the audit's precision (:func:`_precision`)."""
    from medssl.engine.hardware import autocast_context

    with autocast_context("cpu", _precision()):
        return _signal_in_precision(threat, cfg, checkpoint, x, n_queries, seed, score_seed, warnings, batch)


def _signal_in_precision(threat: str, cfg: dict, checkpoint: Path, x: np.ndarray, n_queries: int, seed: int,
                         score_seed: int, warnings: list[str], batch: int) -> np.ndarray:
    encoder, method = _load_method(checkpoint, cfg, warnings)
    t = torch.from_numpy(x)
    if threat == "score":
        if hasattr(method, "seed"):
            method.seed = score_seed  # same masks for target and reference models
        return np.concatenate([ssl_loss_signal(method, t[i:i + batch], n_queries, seed)
                               for i in range(0, len(t), batch)])
    from medssl.data.modalities import modality_data

    views = modality_data(encoder.spec.modality).view_augment
    if views is None:
        raise ValueError(f"the {threat} threat needs augmented views of a record; modality "
                         f"{encoder.spec.modality!r} declares none (medssl.plugins.Modality.view_augment)")
    specs = cfg.get("augment") if isinstance(cfg.get("augment"), list) else None
    augment = views(specs, encoder.spec.input, t[:1])
    out = []
    for i in range(0, len(t), batch):
        gen = torch.Generator().manual_seed(hash((seed, i)) & 0x7FFF_FFFF)
        out.append(augmentation_consistency(encoder, t[i:i + batch], augment, max(n_queries, 2), gen))
    return np.concatenate(out)


def _learned_null(features: np.ndarray, labels: np.ndarray, n_permutations: int, seed: int) -> dict:
    """Permutation null of the learned attacker: the labels are permuted and the cross-fitted
    classifier is refitted for every permutation (its scores depend on the labels)."""
    from medssl.privacy.learned import cross_fitted_scores
    from medssl.privacy.metrics import auc_score

    observed = auc_score(cross_fitted_scores(features, labels, seed=seed), labels)
    rng = np.random.default_rng(seed + 7)
    null = np.array([auc_score(cross_fitted_scores(features, p, seed=seed), p)
                     for p in (rng.permutation(labels) for _ in range(n_permutations))])
    lo, hi = np.quantile(null, [0.025, 0.975])
    return {"null_low": float(lo), "null_high": float(hi), "null_mean": float(null.mean()),
            "p_value": (1 + int((null >= observed - 1e-12).sum())) / (1 + n_permutations),
            "alternative": "greater", "n_permutations": n_permutations}


def _metrics(scores: np.ndarray, labels: np.ndarray, seed: int, n_permutations: int = 2000,
             features: np.ndarray | None = None) -> dict:
    """AUC + bootstrap CI, permutation null band + p-value, TPR table (see the module docstring).
    ``features``: the learned attacker's, so its null refits the classifier (at most 200 times)."""
    ci = auc_with_ci(scores, labels, seed=seed)
    if features is None:
        perm = auc_permutation_test(scores, labels, n_permutations, seed=seed + 3)
    else:
        perm = _learned_null(features, labels, min(n_permutations, LEARNED_PERMUTATIONS), seed)
    table = tpr_table(scores, labels, FPRS, seed=seed)
    return {"n_members": ci["n_members"], "n_nonmembers": ci["n_nonmembers"], "auc": ci["auc"],
            "auc_ci": [ci["ci_low"], ci["ci_high"]], "null_band": [perm["null_low"], perm["null_high"]],
            "p_value": perm["p_value"], "n_permutations": perm["n_permutations"],
            "tpr_at_min_fpr": table.pop("min_measurable"), "tpr_at_fpr": table}


def _conclusion(main: dict, control: dict | None, alpha: float = 0.05) -> str:
    n = f"{main['n_members']} members vs {main['n_nonmembers']} non-members"
    above = main["p_value"] <= alpha
    if control is None:
        return (f"AUC above its permutation null band (p = {main['p_value']:.3g}, {n}); no control model was "
                "audited, so a difference between the groups other than membership is not ruled out" if above else
                f"no leakage measurable at this power ({n}; p = {main['p_value']:.3g}); no control model was audited")
    d = control["difference"]
    if above and d["ci_low"] > 0:
        return (f"leakage detected: AUC above its permutation null band (p = {main['p_value']:.3g}) and above "
                f"the control's (difference {d['value']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]), {n}")
    if above:
        return (f"AUC above its permutation null band (p = {main['p_value']:.3g}) but not clearly above the "
                f"control's (difference {d['value']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]): part or all "
                "of it may come from differences between the groups other than membership")
    return (f"no leakage measurable at this power ({n}; p = {main['p_value']:.3g}, difference to the control "
            f"{d['value']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}])")


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
    control_checkpoint: str | Path | None = None,
    n_permutations: int = 2000,
    rmia_a: float | None = None,
    n_z: int | None = None,
    salt: str | None = None,
    precision: str | None = None,
) -> dict:
    """Audit ``checkpoint`` for membership leakage of ``members_rows`` vs ``nonmembers_rows``
    (manifest rows; membership per subject). Writes ``out_dir/audit.json``,
    ``out_dir/report.html`` and ``out_dir/subject_scores.csv`` (see the module docstring),
    appends a summary to the card's ``privacy`` section, and returns the audit dict.

    control_checkpoint: a model of the same recipe whose training subjects are independent of the
    audited labels (e.g. trained on other subjects); default for lira/rmia with >= 2 references:
    reference model 0 (leave-one-out). rmia_a: RMIA's offline ``a`` (default: tuned on the
    reference models when there are >= 2, else 0.3). n_z: RMIA's population subjects (default
    see the module docstring). salt: for the pseudonymous subject keys (default
    $MEDSSL_PSEUDONYM_SALT, else the public default). precision: "32" or "bf16" (autocast) for
    scoring the models (default fp32 on the CPU; reference models train at the precision their
    recipe, copied from the target's card, records). Bad settings raise ValueError."""
    from medssl.engine.hardware import resolve_inference_precision

    token = _AUDIT_PRECISION.set(resolve_inference_precision(precision, "cpu"))
    try:
        return _run_audit(checkpoint, members_rows, nonmembers_rows, threat=threat, attack=attack, n_refs=n_refs,
                          n_queries=n_queries, aggregate=aggregate, population_rows=population_rows,
                          out_dir=out_dir, seed=seed, control_checkpoint=control_checkpoint,
                          n_permutations=n_permutations, rmia_a=rmia_a, n_z=n_z, salt=salt)
    finally:
        _AUDIT_PRECISION.reset(token)


def _check_settings(threat, attack, aggregate, n_queries, n_permutations, rmia_a) -> None:
    if threat not in THREATS:
        raise ValueError(f"threat must be one of {THREATS}, got {threat!r}")
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {ATTACKS}, got {attack!r}")
    if aggregate not in ("mean", "max"):
        raise ValueError(f"aggregate must be mean or max, got {aggregate!r}")
    if n_queries < 1:
        raise ValueError(f"n_queries must be >= 1, got {n_queries}")
    if n_permutations < 100:
        raise ValueError(f"n_permutations must be >= 100 for a usable null band, got {n_permutations}")
    if rmia_a is not None and not 0.0 <= rmia_a <= 1.0:
        raise ValueError(f"rmia_a must be in [0, 1], got {rmia_a}")


def _audited_subjects(members_rows, nonmembers_rows, threat, attack, n_refs, population_rows) -> tuple[set, set]:
    """(member subjects, non-member subjects): disjoint, enough of each, and what the attack needs."""
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
    return mem_s, non_s


def _cards(checkpoint: Path, control_checkpoint: Path | None) -> tuple[dict, dict, dict]:
    """(target card, its recipe, the control's recipe (the target's when there is no control))."""
    card = read_card(checkpoint)
    cfg = card.get("recipe") or {}
    if not cfg.get("method"):
        raise ValueError(f"{checkpoint}: the card has no training recipe; the audit rebuilds the method from it")
    if control_checkpoint is None:
        return card, cfg, cfg
    ccard = read_card(control_checkpoint)
    if (ccard.get("recipe") or {}).get("method") != cfg["method"] or ccard["encoder"]["name"] != card["encoder"]["name"]:
        raise ValueError("the control checkpoint must have the target's method and encoder "
                         f"({cfg['method']}, {card['encoder']['name']})")
    return card, cfg, ccard.get("recipe") or cfg


def _estimability_warnings(n_nonmembers: int) -> list[str]:
    """TPRs at FPRs the non-members cannot measure are reported as null, not refused."""
    out = []
    for f in FPRS:
        try:
            check_fpr_feasible(n_nonmembers, f)
        except ValueError:
            out.append(f"TPR at FPR {f:g} is not estimable with {n_nonmembers} non-member subjects "
                       f"(needs >= {min_nonmembers_for_fpr(f)}): reported as null; see the TPR at the "
                       f"smallest measurable FPR (1/{n_nonmembers})")
    return out


@dataclass
class _Audit:
    """One audit's settings and target; its methods are the attack's signals and statistics."""

    checkpoint: Path
    cfg: dict
    threat: str
    aggregate: str
    n_queries: int
    seed: int
    score_seed: int
    n_permutations: int
    warnings: list[str]

    def signal(self, threat: str, x: np.ndarray, ckpt: Path | None = None, recipe: dict | None = None,
               warn: bool = False) -> np.ndarray:
        """The model's per-window signal (the target's unless ``ckpt``); its warnings go to the
        audit's when ``warn``."""
        return _signal(threat, self.cfg if recipe is None else recipe, self.checkpoint if ckpt is None else ckpt, x,
                       self.n_queries, self.seed, self.score_seed, self.warnings if warn else [])

    def learned_features(self, xs: np.ndarray, ws: np.ndarray, subjects: Sequence[str], ckpt: Path | None = None,
                         recipe: dict | None = None) -> np.ndarray:
        from medssl.privacy.learned import subject_features

        target = ckpt is None or ckpt == self.checkpoint
        losses = self.signal("score", xs, ckpt, recipe, warn=target)
        consistency = self.signal("embedding", xs, ckpt, recipe)
        return subject_features(subjects, ws, losses, consistency)

    def threshold_scores(self, sig: np.ndarray) -> np.ndarray:
        return loss_attack(sig) if self.threat == "score" else np.asarray(sig, dtype=np.float64)

    def loss_scores(self, xs: np.ndarray, ws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(subjects, scores) of the threshold attack on windows xs of subjects ws."""
        return aggregate_by_subject(self.threshold_scores(self.signal(self.threat, xs)), ws, self.aggregate)

    def metrics(self, scores: np.ndarray, labels: np.ndarray, features: np.ndarray | None = None) -> dict:
        return _metrics(scores, labels, self.seed, self.n_permutations, features)


@dataclass
class _Windows:
    """The audited windows: arrays of members then non-members, their subjects and rows."""

    x: np.ndarray
    subjects: np.ndarray
    used_mem: list[dict]
    used_non: list[dict]
    verified: bool


def _windows(au: _Audit, card: dict, members_rows, nonmembers_rows, enc_probe) -> _Windows:
    """The model-ready windows of both sides, and the membership check against the card's
    training-manifest fingerprint."""
    x_mem, used_mem = _arrays(au.cfg, members_rows, enc_probe)
    x_non, used_non = _arrays(au.cfg, nonmembers_rows, enc_probe)
    recorded = (card.get("data") or {}).get("manifest_sha256")
    verified = bool(recorded) and manifest_fingerprint(used_mem) == recorded
    if not verified:
        au.warnings.append(
            "membership could not be verified: the members are not the checkpoint's whole recorded training "
            "manifest (the card keeps only its SHA-256, so a subset cannot be checked)" if recorded else
            "membership could not be verified: the card records no training-manifest fingerprint")
    subjects = np.array([str(r["subject_id"]) for r in [*used_mem, *used_non]])
    return _Windows(np.concatenate([x_mem, x_non]), subjects, used_mem, used_non, verified)


@dataclass
class _Scores:
    """Per-subject attack scores of the target (and of a control model when there is one)."""

    subjects: np.ndarray
    labels: np.ndarray
    target: np.ndarray
    control: np.ndarray | None = None
    control_source: str | None = None
    control_info: dict | None = None
    features: np.ndarray | None = None  # the learned attacker's subject statistics
    mode: str | None = None
    n_refs: int = 0
    references: dict | None = None


def _score(au: _Audit, attack: str, w: _Windows, mem_s: set, non_s: set, control_checkpoint: Path | None,
           ccfg: dict, population_rows, n_refs: int, out_dir: Path, enc_probe, target_size: int,
           rmia_a: float | None, n_z: int | None) -> _Scores:
    """Score every subject with the attack: the learned classifier (cross-fitted), or a threshold
    on the target's signal, calibrated by reference models for lira/rmia; the control model (a
    control checkpoint, else reference model 0 left out) the same way."""
    subjects = np.array(sorted(set(w.subjects.tolist())))
    sc = _Scores(subjects, np.isin(subjects, sorted(mem_s)), np.empty(0))
    if au.threat == "learned":
        from medssl.privacy.learned import cross_fitted_scores

        sc.features = au.learned_features(w.x, w.subjects, subjects)
        sc.target = cross_fitted_scores(sc.features, sc.labels, seed=au.seed)
        if control_checkpoint is not None:
            cf = au.learned_features(w.x, w.subjects, subjects, control_checkpoint, ccfg)
            sc.control, sc.control_source = cross_fitted_scores(cf, sc.labels, seed=au.seed), "control checkpoint"
        return sc
    target = au.signal(au.threat, w.x, warn=True)
    csig = au.signal(au.threat, w.x, control_checkpoint, ccfg) if control_checkpoint is not None else None
    control_win = None
    if attack == "loss":
        win_scores = au.threshold_scores(target)
        if csig is not None:
            control_win, sc.control_source = au.threshold_scores(csig), "control checkpoint"
    else:
        ref = _ReferenceAttack(attack, au.threat, au.cfg, w.x, w.subjects, mem_s | non_s, population_rows, n_refs,
                               au.n_queries, out_dir, au.seed, au.score_seed, enc_probe, target_size, rmia_a, n_z,
                               au.warnings)
        target_z = ref.signal_on_z(au.checkpoint, au.cfg)
        sc.references, win_scores = ref.score(target, target_z)
        sc.mode, sc.n_refs = sc.references.pop("mode"), ref.n_refs
        if csig is not None:
            sc.control_info, control_win = ref.score(csig, ref.signal_on_z(control_checkpoint, ccfg))
            sc.control_source = "control checkpoint"
        elif ref.n_refs >= 2:
            try:
                sc.control_info, control_win = ref.score(ref.ref_sig[0], ref.ref_z_sig(0), exclude=0)
                sc.control_source = "reference model 0 (leave-one-out: the others are its references)"
            except ValueError as err:
                au.warnings.append(f"the leave-one-out control (reference model 0 as the target) is impossible: "
                                   f"{err}; pass a control checkpoint (--control) or train more reference models")
    if sc.control_source is not None:
        sc.control = aggregate_by_subject(control_win, w.subjects, au.aggregate)[1]
    sc.target = aggregate_by_subject(win_scores, w.subjects, au.aggregate)[1]
    return sc


def _control(au: _Audit, sc: _Scores) -> dict | None:
    """The control model's audit and its AUC difference from the target's (None, with a warning,
    without a control)."""
    if sc.control is None:
        au.warnings.append("no control model was audited: pass a control checkpoint (the same recipe trained on "
                           "subjects independent of the audited labels, --control) or use lira/rmia with >= 2 "
                           "reference models; without it, differences between the member and non-member groups "
                           "other than membership cannot be told apart from leakage")
        return None
    diff = auc_difference_ci(sc.target, sc.control, sc.labels, seed=au.seed + 5)
    cm = au.metrics(sc.control, sc.labels)
    cfpr, ctpr, _ = roc_curve_points(sc.control, sc.labels)
    return {"source": sc.control_source, **({"mode": sc.control_info.get("mode")} if sc.control_info else {}),
            "n_members": cm["n_members"], "n_nonmembers": cm["n_nonmembers"], "auc": cm["auc"],
            "auc_ci": cm["auc_ci"], "null_band": cm["null_band"], "p_value": cm["p_value"],
            "difference": {"value": diff["difference"], "ci_low": diff["ci_low"], "ci_high": diff["ci_high"]},
            "roc": {"fpr": cfpr.tolist(), "tpr": ctpr.tolist()}}


def _group_metrics(au: _Audit, sc: _Scores):
    """The attack between two groups of subjects (a labelled "members"); the learned attacker is
    refitted (cross-fitted) on them."""

    def group_metrics(mask_a: np.ndarray, mask_b: np.ndarray) -> dict:
        keep = mask_a | mask_b
        if sc.features is not None:
            from medssl.privacy.learned import cross_fitted_scores

            scores = cross_fitted_scores(sc.features[keep], mask_a[keep], seed=au.seed)
            return au.metrics(scores, mask_a[keep], sc.features[keep])
        return au.metrics(sc.target[keep], mask_a[keep])

    return group_metrics


def _split_half_check(au: _Audit, sc: _Scores, group_metrics) -> dict:
    """The same scores between two random halves of the non-members (SPLIT_HALF_TEXT)."""
    non_idx = np.flatnonzero(~sc.labels)
    half = np.zeros(len(sc.subjects), dtype=bool)
    half[np.random.default_rng(au.seed + 1).permutation(non_idx)[: non_idx.size // 2]] = True
    return {"what": SPLIT_HALF_TEXT, **group_metrics(half, ~sc.labels & ~half)}


def _write_subject_scores(out_dir: Path, sc: _Scores, column: str, salt: str | None, warnings: list[str]) -> None:
    """subject_scores.csv: pseudonymous subject key, membership, score (and the control's)."""
    keys = [pseudonym(s, salt=salt, prefix="subj") for s in sc.subjects.tolist()]
    if not salt and not os.environ.get(SALT_ENV):
        warnings.append(f"subject keys in {SCORES_FILE} use the public default salt: anyone holding the subject ids "
                        f"can link them; set ${SALT_ENV} (kept secret) for keys only its holder can link")
    lines = ["subject_key,member," + column + (f",control_{column}" if sc.control is not None else "")]
    for i, k in enumerate(keys):
        row = [k, str(int(sc.labels[i])), repr(float(sc.target[i]))]
        if sc.control is not None:
            row.append(repr(float(sc.control[i])))
        lines.append(",".join(row))
    atomic_write_text(out_dir / SCORES_FILE, "\n".join(lines) + "\n")


def _card_summary(result: dict, out_dir: Path) -> dict:
    """The card's ``privacy`` entry of an audit."""
    control, dp = result["control"], result["dp_check"]
    return {
        "kind": "membership_inference", "created": result["created"], "audit": str(out_dir / "audit.json"),
        **{k: result[k] for k in ("threat", "attack", "mode", "n_members", "n_nonmembers", "auc", "auc_ci",
                                  "null_band", "p_value", "n_reference_models", "membership_verified", "conclusion")},
        "tpr_at_fpr": {k: v["value"] for k, v in result["tpr_at_fpr"].items()},
        "tpr_not_estimable": {k: v["reason"] for k, v in result["tpr_at_fpr"].items() if not v["achievable"]},
        "tpr_at_min_fpr": {"fpr": result["tpr_at_min_fpr"]["fpr"], "value": result["tpr_at_min_fpr"]["value"]},
        "control_auc_difference": control["difference"] if control else None,
        "dp_empirical_epsilon_lower": dp["empirical"]["epsilon_lower"] if dp else None,
        "split_half_check_auc": result["null_check"]["auc"],
    }


def _run_audit(checkpoint, members_rows, nonmembers_rows, *, threat, attack, n_refs, n_queries, aggregate,
               population_rows, out_dir, seed, control_checkpoint, n_permutations, rmia_a, n_z, salt) -> dict:
    """Check, read the windows, score the subjects, measure (target, control, split-half, source and
    DP checks), write."""
    from medssl.privacy.dp_audit import dp_check

    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    control_checkpoint = Path(control_checkpoint) if control_checkpoint is not None else None
    _check_settings(threat, attack, aggregate, n_queries, n_permutations, rmia_a)
    mem_s, non_s = _audited_subjects(members_rows, nonmembers_rows, threat, attack, n_refs, population_rows)
    card, cfg, ccfg = _cards(checkpoint, control_checkpoint)
    warnings = [*_estimability_warnings(len(non_s)), *source_mismatch_warnings(members_rows, nonmembers_rows)]
    au = _Audit(checkpoint, cfg, threat, aggregate, n_queries, seed, int(cfg.get("seed", 0)), n_permutations,
                warnings)
    enc_probe = load_encoder(checkpoint)
    w = _windows(au, card, members_rows, nonmembers_rows, enc_probe)
    target_size = int((card.get("metrics") or {}).get("n_subjects") or len(mem_s))
    sc = _score(au, attack, w, mem_s, non_s, control_checkpoint, ccfg, population_rows, n_refs, out_dir, enc_probe,
                target_size, rmia_a, n_z)

    main = au.metrics(sc.target, sc.labels, sc.features)
    fpr, tpr, _ = roc_curve_points(sc.target, sc.labels)
    control = _control(au, sc)
    group_metrics = _group_metrics(au, sc)
    null = _split_half_check(au, sc, group_metrics)
    source_check = _source_check(members_rows, nonmembers_rows, population_rows, sc.subjects, sc.labels, attack,
                                 group_metrics, sc.features, sc.target, cfg, enc_probe, au.loss_scores,
                                 au.learned_features, seed, n_permutations)
    dp = dp_check(card, sc.target, sc.labels)

    out_dir.mkdir(parents=True, exist_ok=True)
    _write_subject_scores(out_dir, sc, f"{threat}_{attack}", salt, warnings)
    result = {
        "schema_version": 2,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": str(checkpoint), "encoder": card["encoder"]["name"], "method": cfg.get("method"),
        "precision": _precision(), "device": "cpu",
        "threat": threat, "attack": attack, "mode": sc.mode, "aggregate": aggregate, "n_queries": n_queries,
        "n_reference_models": sc.n_refs, "references": sc.references,
        "n_members": int(sc.labels.sum()), "n_nonmembers": int((~sc.labels).sum()),
        "n_member_windows": len(w.used_mem), "n_nonmember_windows": len(w.used_non),
        "membership_verified": w.verified,
        "auc": main["auc"], "auc_ci": main["auc_ci"], "null_band": main["null_band"], "p_value": main["p_value"],
        "n_permutations": main["n_permutations"],
        "tpr_at_fpr": main["tpr_at_fpr"], "tpr_at_min_fpr": main["tpr_at_min_fpr"],
        "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
        "control": control, "conclusion": _conclusion(main, control),
        "null_check": null, "source_check": source_check, "dp_check": dp,
        "scores_file": SCORES_FILE, "warnings": warnings,
    }
    atomic_write_json(out_dir / "audit.json", result)
    atomic_write_text(out_dir / "report.html", render_html(result))
    update_card(checkpoint, "privacy", _card_summary(result, out_dir))
    return result


_AUDIT_PRECISION: ContextVar[str] = ContextVar("medssl_audit_precision", default="32")


def _precision() -> str:
    """The precision this audit scores models in ("32" | "bf16"; set by run_audit's ``precision``)."""
    return _AUDIT_PRECISION.get()


class _ReferenceAttack:
    """LiRA or RMIA with reference models trained on the population (see the module docstring):
    trains (or reuses) the references, scores the audited windows with them, and scores any
    target signal (the audited model's, a control's, or a reference's own, leaving it out)."""

    def __init__(self, attack, threat, cfg, x, win_subjects, audited, population_rows, n_refs, n_queries, out_dir,
                 seed, score_seed, enc_probe, target_size, rmia_a, n_z, warnings):
        from medssl.privacy.references import membership_matrix, train_reference_models

        self.attack, self.threat, self.cfg = attack, threat, cfg
        self.n_queries, self.seed, self.score_seed = n_queries, seed, score_seed
        pop_subjects = sorted(_subjects(population_rows))
        audited_in_pop = [s for s in pop_subjects if s in audited]
        extra = [s for s in pop_subjects if s not in audited]
        rng = np.random.default_rng(seed)
        z_subjects: set[str] = set()
        if attack == "rmia":
            if not extra:
                raise ValueError("rmia: the population samples z must be subjects outside the audit, and every "
                                 "population subject is audited; add other subjects to --population")
            if n_z is None:
                need = max(0, 2 * target_size - len(audited_in_pop))
                n_z = max(math.ceil(len(extra) / 2), len(extra) - need)
                if not audited_in_pop:
                    n_z = min(n_z, len(extra) - 2)
            if not 1 <= n_z <= len(extra) - (0 if audited_in_pop else 2):
                raise ValueError(f"rmia: n_z = {n_z} population subjects for z, but {len(extra)} non-audited "
                                 "population subjects must also leave >= 2 for the reference models")
            z_subjects = set(rng.choice(extra, n_z, replace=False).tolist())
        ref_rows = [r for r in population_rows if str(r["subject_id"]) not in z_subjects]
        pool = sorted(_subjects(ref_rows))
        shared = any(s in audited for s in pool)
        cap = len(pool) // 2 if shared else len(pool)
        n_in = max(1, min(target_size, cap))
        if n_in < target_size:
            warnings.append(
                f"reference models train on {n_in} subjects, fewer than the target's {target_size}: the population "
                f"left for them has {len(pool)} subjects (needs >= {2 * target_size if shared else target_size}); "
                "smaller training sets over-fit differently from the target")
        planned = membership_matrix(n_refs, len(pool), seed, n_in)[
            :, np.searchsorted(pool, win_subjects).clip(0, len(pool) - 1)]
        planned &= np.isin(win_subjects, pool)[None]
        if not (~planned).any(axis=0).all() and (attack == "rmia" or not planned.any(axis=0).all()):
            raise ValueError(
                f"{attack}: {int((~(~planned).any(axis=0)).sum())} audited window(s) would have no OUT reference "
                "model; use more reference models (--refs >= 2) or a population disjoint from the audited subjects")
        self.refs = train_reference_models(cfg, ref_rows, n_refs, out_dir / "references", seed, n_in=n_in)
        self.n_refs = len(self.refs)
        self.ref_sig = np.stack([self._sig(r.checkpoint, cfg, x) for r in self.refs])
        self.ref_in = np.stack([r.membership(win_subjects) for r in self.refs])  # (R, W)
        self.info = {"n_train_subjects": n_in, "population_subjects": len(pop_subjects)}
        self.x_z = None
        if attack == "rmia":
            z_rows = [r for r in population_rows if str(r["subject_id"]) in z_subjects]
            self.x_z, _ = _arrays(cfg, z_rows, enc_probe)
            self.z_r = np.stack([self._sig(r.checkpoint, cfg, self.x_z) for r in self.refs])
            self.info.update(n_z_subjects=len(z_subjects), n_z=int(len(self.x_z)))
            if len(self.x_z) < RMIA_MIN_Z:
                warnings.append(f"RMIA has {len(self.x_z)} population samples z (fewer than {RMIA_MIN_Z}): its "
                                f"scores take at most {len(self.x_z) + 1} values and its low-FPR figures are coarse")
            if rmia_a is not None:
                self.a, self.info["a_source"] = float(rmia_a), "given"
            elif self.n_refs >= 2:
                self.a, grid = self._tune_a(ref_rows, audited, enc_probe)
                self.info.update(a_source="tuned on reference model 0 (others as references)", a_grid_auc=grid)
                if not grid:
                    self.info["a_source"] = "default (the tuning windows held one class only)"
                    warnings.append(f"RMIA's a = {DEFAULT_RMIA_A} untuned: reference 0's tuning windows held "
                                    "one class only (use more reference models)")
            else:
                self.a, self.info["a_source"] = DEFAULT_RMIA_A, "default (one reference model: nothing to tune on)"
                warnings.append(f"RMIA's a = {DEFAULT_RMIA_A} untuned: tuning needs >= 2 reference models")
            self.info["a"] = self.a

    def _sig(self, ckpt, cfg, xs):
        return _signal(self.threat, cfg, ckpt, xs, self.n_queries, self.seed, self.score_seed, [])

    def signal_on_z(self, ckpt, cfg):
        return None if self.x_z is None else self._sig(ckpt, cfg, self.x_z)

    def ref_z_sig(self, i):
        return None if self.x_z is None else self.z_r[i]

    def _prob(self, sig):
        sig = np.asarray(sig)
        return np.exp(-sig.mean(axis=-1)) if self.threat == "score" else np.clip((1 + sig) / 2, 1e-6, 1)

    def _tune_a(self, ref_rows, audited, enc_probe) -> tuple[float, dict]:
        """Privacy Meter's way: reference 0 plays the target, the others are its references, on
        windows whose membership in reference 0 is known (the audited windows and the reference
        pool's); the a with the best window-level AUC wins ({} and the default a when those windows
        hold one class only). The audited labels are not used."""
        from medssl.privacy.metrics import auc_score

        # every audited window (its membership in each reference is known; outside the pool: OUT for all)
        # and the pool's other windows
        extra_rows = [r for r in ref_rows if str(r["subject_id"]) not in audited]
        sig, member = self.ref_sig, self.ref_in
        if extra_rows:
            x_e, used = _arrays(self.cfg, extra_rows, enc_probe)
            ws = [str(r["subject_id"]) for r in used]
            sig = np.concatenate([sig, np.stack([self._sig(r.checkpoint, self.cfg, x_e) for r in self.refs])], axis=1)
            member = np.concatenate([member, np.stack([r.membership(ws) for r in self.refs])], axis=1)
        usable = (~member[1:]).any(axis=0)
        grid = {}
        labels = member[0, usable]
        if labels.all() or not labels.any():
            return DEFAULT_RMIA_A, grid
        for a in np.round(np.linspace(0, 1, 11), 2):
            s = rmia(self._prob(sig[0, usable]), self._prob(sig[1:, usable]), self._prob(self.z_r[0]),
                     self._prob(self.z_r[1:]), reference_in=member[1:, usable], a=float(a), offline=True)
            grid[f"{a:g}"] = auc_score(s, labels)
        best = max(grid, key=grid.get)
        return float(best), grid

    def score(self, t_sig, t_z=None, exclude: int | None = None) -> tuple[dict, np.ndarray]:
        """({"mode", ...}, window scores) of target signal t_sig (and its z signal for RMIA),
        with reference ``exclude`` left out (it is the target)."""
        keep = [i for i in range(self.n_refs) if i != exclude]
        r_sig, r_in = self.ref_sig[keep], self.ref_in[keep]
        if self.attack == "lira":
            t_, r_ = (-t_sig, -r_sig) if self.threat == "score" else ((1 + t_sig) / 2, (1 + r_sig) / 2)
            tr = None if self.threat == "score" else "logit"
            info = dict(self.info)
            if r_in.any(axis=0).all() and (~r_in).any(axis=0).all():
                s = lira_online(t_, r_, r_in, transform=tr, info=info)
                return {"mode": "online", **info}, s
            s = lira_offline(t_, r_, r_in, transform=tr, info=info)
            return {"mode": "offline", **info}, s
        s = rmia(self._prob(t_sig), self._prob(r_sig), self._prob(t_z), self._prob(self.z_r[keep]),
                 reference_in=r_in, a=self.a, offline=True)
        return {"mode": "offline", **self.info}, s


def _site_of(rows: Sequence[dict]) -> dict[str, str]:
    return {str(r["subject_id"]): str(r.get("site") or "") for r in rows}


def _source_check(members_rows, nonmembers_rows, population_rows, subjects, labels, attack, group_metrics,
                  features, subj_scores, cfg, enc_probe, loss_scores, learned_features, seed,
                  n_permutations) -> dict | None:
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
        return {**base, **_metrics(cross_fitted_scores(f, a, seed=seed), a, seed, n_permutations, f)}
    _, extra_scores = loss_scores(x_extra, ws)
    scores = np.concatenate([subj_scores[same], extra_scores, subj_scores[other]])
    a = np.r_[np.ones(int(same.sum()) + extra_scores.size, bool), np.zeros(int(other.sum()), bool)]
    return {**base, **_metrics(scores, a, seed, n_permutations)}


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


def _fmt(v) -> str:
    return "null" if v is None else f"{v:.3f}"


def _fpr_rows(table: dict, min_fpr: dict | None = None) -> str:
    rows = []
    for f, r in table.items():
        if not r["achievable"]:
            rows.append(f"<tr><td>{html.escape(f)}</td><td>null</td><td></td><td></td>"
                        f"<td>{html.escape(r['reason'])}</td></tr>")
            continue
        rows.append(f"<tr><td>{html.escape(f)}</td><td>{r['value']:.3f}</td>"
                    f"<td>[{r['ci_low']:.3f}, {r['ci_high']:.3f}]</td>"
                    f"<td>[{r['cp_ci_low']:.3f}, {r['cp_ci_high']:.3f}]</td><td></td></tr>")
    if min_fpr is not None:
        r = min_fpr
        rows.append(f"<tr><td>{r['fpr']:.3g} (smallest measurable: 1 false positive)</td><td>{r['value']:.3f}</td>"
                    f"<td>[{r['ci_low']:.3f}, {r['ci_high']:.3f}]</td>"
                    f"<td>[{r['cp_ci_low']:.3f}, {r['cp_ci_high']:.3f}]</td><td></td></tr>")
    return "".join(rows)


def _band(d: dict) -> str:
    return (f"AUC {d['auc']:.3f} (95% bootstrap CI [{d['auc_ci'][0]:.3f}, {d['auc_ci'][1]:.3f}]); permutation null "
            f"band at these sample sizes [{d['null_band'][0]:.3f}, {d['null_band'][1]:.3f}], one-sided p = "
            f"{d['p_value']:.3g} ({d['n_permutations']} permutations)" if "n_permutations" in d else
            f"AUC {d['auc']:.3f} (95% bootstrap CI [{d['auc_ci'][0]:.3f}, {d['auc_ci'][1]:.3f}]); permutation null "
            f"band [{d['null_band'][0]:.3f}, {d['null_band'][1]:.3f}], one-sided p = {d['p_value']:.3g}")


def _control_html(control: dict | None) -> str:
    e = html.escape
    if control is None:
        return ("<h2>Control</h2><p class=warn>No control model was audited: a difference between the member and "
                "non-member groups other than membership cannot be told apart from leakage.</p>")
    d = control["difference"]
    return (f"<h2>Control</h2><p>The same attack with {e(control['source'])} as the target, a model whose "
            f"membership is independent of the audited labels: {e(_band(control))}. AUC(target) - AUC(control) = "
            f"{d['value']:+.3f} (95% paired bootstrap CI [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]).</p>")


def _source_html(check: dict | None) -> str:
    if not check:
        return ""
    e = html.escape
    head = (f"<h2>Source check</h2><p>Non-members come from source(s) {e(', '.join(check['other_sources']))} "
            f"that hold no member (members: {e(', '.join(check['member_sources']))}).</p>")
    if "skipped" in check:
        return head + f"<p class=warn>Not run: {e(check['skipped'])}</p>"
    return head + (f"<p>The same attack between {check['n_members']} non-members of the members' source(s) and "
                   f"{check['n_nonmembers']} of the other source(s): {e(_band(check))}. Near 0.5: the sources are "
                   "interchangeable for this attack. Far from 0.5: part of the main result measures the "
                   "difference between datasets, not membership.</p>")


def _dp_html(check: dict | None) -> str:
    if not check:
        return ""
    e = html.escape
    emp = check["empirical"]
    acc = "none" if check["accountant_epsilon"] is None else f"{check['accountant_epsilon']:.3g}"
    return (f"<h2>DP-SGD check</h2><p>Accountant's epsilon {e(acc)} (delta {e(str(check['delta']))}); empirical "
            f"lower bound from this audit (one-run auditing, Steinke et al. 2023, 95% confidence) "
            f"{emp['epsilon_lower']:.3f} ({emp['n_correct']} of {emp['n_guesses']} guesses right). "
            f"{e(check['verdict'])}. Assumes {e(check['assumption'])}.</p>")


def render_html(result: dict) -> str:
    """Self-contained HTML page of an audit dict (inline CSS + SVG, every string escaped); the ROC
    chart is :func:`medssl.plots.roc_chart` (log-log, unmeasurable FPRs shaded, chance band, control)."""
    from medssl.plots import roc_chart

    e = html.escape
    null = result["null_check"]
    attack = result["attack"] + (f" ({result['mode']}, {result['n_reference_models']} reference models)"
                                 if result["mode"] else "")
    svg = roc_chart(result)
    warn = "".join(f"<li>{e(w)}</li>" for w in result["warnings"]) or "<li>none</li>"
    head = ("<tr><th>FPR</th><th>TPR</th><th>95% CI (bootstrap over both classes, threshold re-estimated)</th>"
            "<th>95% CI (Clopper-Pearson, conditional on the threshold)</th><th></th></tr>")
    scores = f"<p>Per-subject scores (pseudonymous keys): <code>{e(result['scores_file'])}</code>.</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>medssl membership-inference audit</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em}}.warn{{color:#a04000}}
figure.chart{{margin:0}}figure.chart svg{{max-width:100%;height:auto}}figure.chart figcaption{{color:#555}}</style>
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
<p><b>{e(result['conclusion'])}</b></p>
<p>{e(_band(result))}. Bootstrap over subjects; the null band is the central 95% of the AUCs with the
membership labels permuted over the audited subjects.</p>
<p>TPR at fixed FPRs. An FPR below 1/(non-members) is not estimable and is reported as null;
the last row is the TPR at the smallest FPR these non-members can measure.</p>
<table>{head}{_fpr_rows(result['tpr_at_fpr'], result['tpr_at_min_fpr'])}</table>
{scores}
<h3>ROC (log-log)</h3>
{svg}
{_control_html(result.get('control'))}
<h2>Split-half check (null check)</h2>
<p>{e(null['what'])}. {null['n_members']} vs {null['n_nonmembers']} subjects: {e(_band(null))}.</p>
{_source_html(result.get("source_check"))}
{_dp_html(result.get("dp_check"))}
<h2>Warnings</h2>
<ul class="warn">{warn}</ul>
</body></html>
"""


def run_random_targets(
    cfg: dict,
    rows: Sequence[dict],
    *,
    n_targets: int,
    n_members: int,
    out_dir: str | Path,
    seed: int = 0,
    **audit_kwargs,
) -> dict:
    """Several target models with randomised membership (as ML Privacy Meter audits): target t
    is recipe ``cfg`` trained on a random ``n_members`` of the subjects of ``rows`` (recipe seed
    ``cfg["seed"] + 1000 + t``) and audited by :func:`run_audit` with the remaining subjects as
    non-members (``audit_kwargs`` passed on). One audit is one draw of the member set; the spread
    over draws shows how much of a single audit's AUC is the draw.

    Writes ``out_dir/targets.json``: {"n_targets", "n_members", "n_nonmembers",
    "audits": [str] (each target's audit.json, relative), "auc": {"values", "mean", "sd", "min", "max"},
    "p_value": {"values"}, "tpr_at_min_fpr": {"values", "mean", "sd"}} and returns it."""
    import copy

    from medssl.engine.pretrain import pretrain

    out_dir = Path(out_dir)
    subjects = sorted(_subjects(rows))
    if n_targets < 2:
        raise ValueError(f"n_targets must be >= 2 for a spread, got {n_targets}")
    if not MIN_SUBJECTS <= n_members <= len(subjects) - MIN_SUBJECTS:
        raise ValueError(f"n_members must leave >= {MIN_SUBJECTS} subjects on each side of {len(subjects)}, "
                         f"got {n_members}")
    rng = np.random.default_rng(seed)
    docs, paths = [], []
    for t in range(n_targets):
        chosen = set(rng.choice(subjects, n_members, replace=False).tolist())
        members = [r for r in rows if str(r["subject_id"]) in chosen]
        nonmembers = [r for r in rows if str(r["subject_id"]) not in chosen]
        tcfg = copy.deepcopy(cfg)
        tcfg["seed"] = int(cfg.get("seed", 0)) + 1000 + t
        ckpt = pretrain(tcfg, members, out_dir / f"target_{t:03d}", progress_bar=False)
        folder = out_dir / f"target_{t:03d}" / "audit"
        docs.append(run_audit(ckpt, members, nonmembers, out_dir=folder, seed=seed + t, **audit_kwargs))
        paths.append(str(folder.relative_to(out_dir) / "audit.json"))

    def spread(values: list[float]) -> dict:
        v = np.asarray(values, dtype=np.float64)
        return {"values": v.tolist(), "mean": float(v.mean()), "sd": float(v.std(ddof=1)),
                "min": float(v.min()), "max": float(v.max())}

    summary = {"n_targets": n_targets, "n_members": n_members, "n_nonmembers": len(subjects) - n_members,
               "audits": paths, "auc": spread([d["auc"] for d in docs]),
               "p_value": {"values": [d["p_value"] for d in docs]},
               "tpr_at_min_fpr": spread([d["tpr_at_min_fpr"]["value"] for d in docs])}
    atomic_write_json(out_dir / "targets.json", summary)
    return summary
