"""``epm-spark evaluate matching`` for a cascade folder: the cascade, and with ``--ablation`` each tier alone.

The same pairs of one split are scored by

* ``teacher``: the agentic teacher's rule decision (score > 0), as ``evaluate teacher`` reports it;
* ``cross_encoder``: the fast tier's P(match) at its own threshold, tuned on the valid split;
* ``student_sft`` / ``student_rl``: the student after SFT and after RL, label mode, at the
  threshold each tuned on the valid pairs it scored in training;
* ``cascade``: the tiers together, with the share of pairs each tier decided.

P/R/F1 and pairs/s for each, as one JSON object. ``--mode explain`` has the student write its
decision for the pairs and reports the format-valid rate and how often the explanation's
label agrees with the cascade's.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from epm_spark.config import Settings
from epm_spark.errors import InputError

__all__ = ["evaluate_cascade"]

log = logging.getLogger(__name__)


def _timed(score) -> tuple[Any, float]:
    start = time.perf_counter()
    value = score()
    return value, time.perf_counter() - start


def _report(predicted: np.ndarray, gold: np.ndarray, seconds: float, **extra: Any) -> dict[str, Any]:
    from epm_spark.models.matcher.evaluation import matching_metrics

    return {**matching_metrics(predicted, gold), "seconds": round(seconds, 2),
            "pairs_per_s": round(len(gold) / seconds, 1) if seconds else None, **extra}


def evaluate_cascade(settings: Settings, *, bench, pairs, model: str, ablation: bool = False,
                     mode: str = "label") -> dict[str, Any]:
    from epm_spark.models.matcher.cascade.cascade import TIERS, Cascade
    from epm_spark.models.matcher.cascade.combiner import sigmoid
    from epm_spark.models.matcher.evaluation import paired_bootstrap_f1
    from epm_spark.models.matcher.student.inference import Matcher
    from epm_spark.models.matcher.supervision.teacher import AgenticTeacher

    if mode not in ("label", "explain"):
        raise InputError(f"mode must be label or explain, got {mode!r}")
    gold = pairs["label"].to_numpy().astype(int)
    cascade = Cascade.load(model, settings.matcher.inference)
    name = bench.name if bench.name in cascade.spec["thresholds"]["fast"] else None
    decided, seconds = _timed(lambda: cascade.decide(pairs, benchmark=name, show_progress=True))
    shares = decided["decided_by"].value_counts(normalize=True)
    predicted = (decided["label"] == "match").to_numpy()
    by_tier = {}
    for tier in TIERS:
        mask = (decided["decided_by"] == tier).to_numpy()
        if mask.any():
            by_tier[tier] = {"pairs": int(mask.sum()), "accuracy": round(float((predicted[mask] == gold[mask]).mean()), 4),
                             "fp": int((predicted[mask] & (gold[mask] == 0)).sum()),
                             "fn": int((~predicted[mask] & (gold[mask] == 1)).sum())}
    report: dict[str, Any] = {
        "benchmark": bench.name, "pairs": int(len(gold)), "positives": int(gold.sum()), "model": model,
        "thresholds_for": name or "default",
        "cascade": _report((decided["label"] == "match").to_numpy(), gold, seconds,
                           decided_by={t: round(float(shares.get(t, 0.0)), 4) for t in TIERS}, by_tier=by_tier,
                           tier_seconds={k: round(v, 2) for k, v in cascade.timings.items() if k != "pairs"},
                           standing_used=cascade.standing_used, cross_encoder_decides=cascade.cross_encoder_decides),
    }
    if ablation:
        tiers: dict[str, Any] = {}
        alone: dict[str, np.ndarray] = {}
        results, s = _timed(lambda: AgenticTeacher().decide(pairs))
        alone["teacher"] = np.array([r.label == "match" for r in results])
        tiers["teacher"] = _report(alone["teacher"], gold, s)
        logits, s = _timed(lambda: cascade.cross_encoder.predict_logits(pairs, show_progress=True))
        t = cascade.threshold(name, "cross_encoder")
        alone["cross_encoder"] = sigmoid(logits) >= t
        tiers["cross_encoder"] = _report(alone["cross_encoder"], gold, s, threshold=t)
        for stage in ("sft", "rl"):
            folder = Path(model) / f"student-{stage}"
            if not folder.is_dir():
                continue
            student = Matcher.load(str(folder), settings.matcher.inference)
            probs, s = _timed(lambda: student.predict_proba(pairs, show_progress=True))
            alone[f"student_{stage}"] = probs >= student.threshold()
            tiers[f"student_{stage}"] = _report(alone[f"student_{stage}"], gold, s, threshold=student.threshold())
            del student
        report["tiers_alone"] = tiers
        # F1(cascade) - F1(tier alone) on these pairs, with a paired bootstrap 95% interval.
        report["cascade_minus_tier"] = {tier: paired_bootstrap_f1(predicted, p, gold) for tier, p in alone.items()}
    if mode == "explain":
        explanations, s = _timed(lambda: cascade.explain(pairs, show_progress=True))
        valid = np.array([e.format_valid for e in explanations])
        agree = np.array([e.label == label for e, label in zip(explanations, decided["label"])])
        report["explain"] = {
            "pairs": len(explanations), "format_valid_rate": float(valid.mean()),
            "agrees_with_cascade": float(agree[valid].mean()) if valid.any() else 0.0,
            "tokens_generated_per_pair": float(np.mean([e.tokens_generated for e in explanations])),
            "pairs_per_s": round(len(explanations) / s, 3) if s else None,
        }
    return report
