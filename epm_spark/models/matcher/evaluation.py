"""Matching quality: precision, recall, F1 on labelled pairs, and the F1-maximising threshold.

    precision = TP / (TP + FP)    recall = TP / (TP + FN)    F1 = 2 P R / (P + R)

The decision threshold is tuned on a validation split (never the test split) by trying every
cut between consecutive distinct probabilities and keeping the one with the highest F1.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from epm_spark.errors import InputError

__all__ = ["matching_metrics", "tune_threshold", "stratified_sample", "MatchingEvaluator"]


def matching_metrics(predicted: np.ndarray, gold: np.ndarray) -> dict[str, float | int]:
    predicted = np.asarray(predicted).astype(bool)
    gold = np.asarray(gold).astype(bool)
    if predicted.shape != gold.shape:
        raise InputError(f"{predicted.shape[0]} predictions for {gold.shape[0]} gold labels")
    tp = int((predicted & gold).sum())
    fp = int((predicted & ~gold).sum())
    fn = int((~predicted & gold).sum())
    tn = int((~predicted & ~gold).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def tune_threshold(probabilities: np.ndarray, gold: np.ndarray) -> tuple[float, float]:
    """(threshold, F1 there) maximising F1 of ``probabilities >= threshold`` against ``gold``."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(gold).astype(bool)
    if p.shape != y.shape or p.size == 0:
        raise InputError("threshold tuning needs as many probabilities as gold labels, and at least one")
    if not y.any():
        raise InputError("threshold tuning needs at least one positive pair")
    order = np.argsort(-p, kind="stable")
    p_sorted, y_sorted = p[order], y[order]
    tp = np.cumsum(y_sorted)
    predicted = np.arange(1, p.size + 1)
    # Only cut where the probability changes: equal probabilities must fall on the same side.
    last_of_run = np.r_[p_sorted[1:] != p_sorted[:-1], True]
    f1 = np.where(last_of_run, 2 * tp / (predicted + y.sum()), -1.0)
    k = int(np.argmax(f1))
    below = p_sorted[k + 1] if k + 1 < p.size else 0.0
    threshold = float((p_sorted[k] + below) / 2)
    return threshold, float(f1[k])


def stratified_sample(pairs: pd.DataFrame, n: int | None, seed: int = 0, by: str | list[str] = "label") -> pd.DataFrame:
    """Exactly ``min(n, len(pairs))`` rows keeping the share of each ``by`` value (all rows when ``n`` is None).

    Each group gets its proportional share rounded down; the rows left over go to the groups
    with the largest remainders, so a rare label keeps at least its fair share.
    """
    if n is None or len(pairs) <= n:
        return pairs.reset_index(drop=True)
    groups = [g for _, g in pairs.groupby(by, sort=True)]
    exact = np.array([n * len(g) / len(pairs) for g in groups])
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    parts = [g.sample(n=int(k), random_state=seed) for g, k in zip(groups, counts) if k]
    return pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)


@dataclass
class MatchingEvaluator:
    """Evaluates a :class:`~epm_spark.models.matcher.student.inference.Matcher` on a pair frame with gold ``label``.

    ``label`` mode thresholds P(match); ``explain`` mode takes the generated decision's label,
    and a pair whose output failed the schema counts as not matched (and lowers the
    format-valid rate, reported beside F1).
    """

    pairs: pd.DataFrame
    mode: str = "label"
    threshold: float = 0.5
    name: str = ""

    def __call__(self, matcher) -> dict:
        if self.mode not in ("label", "explain"):
            raise InputError(f"mode must be label or explain, got {self.mode!r}")
        gold = self.pairs["label"].to_numpy().astype(int)
        start = time.perf_counter()
        if self.mode == "label":
            probs = matcher.predict_proba(self.pairs, show_progress=True)
            predicted = probs >= self.threshold
            valid, tokens = np.ones(len(gold), dtype=bool), np.zeros(len(gold))
        else:
            results = matcher.explain(self.pairs, show_progress=True)
            probs = np.array([r.probability for r in results])
            predicted = np.array([r.label == "match" for r in results])
            valid = np.array([r.format_valid for r in results])
            tokens = np.array([r.tokens_generated for r in results])
        seconds = time.perf_counter() - start
        report = {"benchmark": self.name, "mode": self.mode, "pairs": int(len(gold)),
                  "positives": int(gold.sum()), "threshold": self.threshold, **matching_metrics(predicted, gold),
                  "format_valid_rate": float(valid.mean()) if len(valid) else 0.0,
                  "tokens_generated_per_pair": float(tokens.mean()) if len(tokens) else 0.0,
                  "seconds": seconds, "pairs_per_s": len(gold) / seconds if seconds else 0.0}
        if self.mode == "explain":
            agree = (probs >= self.threshold) == predicted
            report["label_mode_agreement"] = float(agree[valid].mean()) if valid.any() else 0.0
            failures = pd.Series([r.failure for r in results if r.failure]).value_counts()
            report["format_failures"] = {str(k): int(v) for k, v in failures.head(5).items()}
        self.probabilities = probs
        return report


def thresholds_by_group(p: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[dict[str, float], dict[str, float]]:
    """F1-maximising thresholds per group (benchmark) and pooled as ``default``; and the F1 of each."""
    p, y, groups = np.asarray(p, dtype=float), np.asarray(y).astype(int), np.asarray(groups).astype(str)
    thresholds, f1s = {}, {}
    for g in np.unique(groups):
        mask = groups == g
        if y[mask].any():
            thresholds[g], f1s[g] = tune_threshold(p[mask], y[mask])
    thresholds["default"], f1s["pooled"] = tune_threshold(p, y)
    return thresholds, f1s


def _f1(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    tp = (p & g).sum(axis=-1)
    denominator = p.sum(axis=-1) + g.sum(axis=-1)
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


def _accuracy(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    return (p == g).mean(axis=-1)


def paired_bootstrap_f1(predicted_a: np.ndarray, predicted_b: np.ndarray, gold: np.ndarray, *,
                        resamples: int = 2000, seed: int = 0, metric: str = "f1") -> dict[str, float]:
    """F1(a) - F1(b) on the same pairs, with a paired bootstrap 95% interval (resampling pairs).

    Both predictions are scored on each resample of the pairs, so the interval reflects the
    difference between the two systems, not the noise each has on its own (Efron & Tibshirani, 1993).
    ``metric="accuracy"`` compares accuracies instead.
    """
    score = {"f1": _f1, "accuracy": _accuracy}[metric]
    a, b, y = (np.asarray(v).astype(bool) for v in (predicted_a, predicted_b, gold))
    if not (a.shape == b.shape == y.shape) or y.size == 0:
        raise InputError("paired bootstrap needs two predictions and gold labels for the same pairs")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, y.size, size=(resamples, y.size))
    diffs = score(a[idx], y[idx]) - score(b[idx], y[idx])
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"difference": float(score(a, y) - score(b, y)), "ci95_low": float(lo), "ci95_high": float(hi),
            "pairs": int(y.size), "resamples": int(resamples)}
