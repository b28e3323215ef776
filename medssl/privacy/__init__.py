"""Membership-inference audits for medssl encoders.

Membership is a property of a *subject*: attacks score record windows
(:mod:`medssl.privacy.signals`, :mod:`medssl.privacy.attacks`), scores are aggregated per
subject (:mod:`medssl.privacy.aggregate`) and evaluated at low false-positive rates with
subject-level confidence intervals (:mod:`medssl.privacy.metrics`). Context: Wang et al. 2026,
"Membership Inference Attacks Expose Participation Privacy in ECG Foundation Encoders".
"""
