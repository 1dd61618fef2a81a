"""The learned rule that turns the tiers' signals into one calibrated P(match).

A logistic regression on standardised features (the teacher's evidence, the cross-encoder's
logit, the student's label log-odds), fitted on pairs the tiers did not train on (the valid
split): the combiner learns from data how much each tier is worth on this catalog, and
stacking (Wolpert, 1992, "Stacked generalization") with a log-loss model keeps the output a
probability (Platt, 1999):

    P(match | x) = sigmoid(w . (x - mu) / sigma + b),   min_w  sum_i logloss(y_i, P(x_i)) + ||w||^2 / (2C)

The decision threshold and every reported quality figure come from *out-of-fold*
probabilities (k-fold cross-fitting on the same pairs), never from the fit that saw the
pair: an in-sample fit flatters itself. The final weights are then refitted on all pairs.
Stored as plain JSON numbers (no pickle): a model folder is data, not code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from epm_spark.errors import InputError
from epm_spark.models.matcher.evaluation import tune_threshold

__all__ = ["Combiner", "fit_combiner", "logit", "sigmoid"]


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=float)))


def logit(p: np.ndarray, clip: float = 12.0) -> np.ndarray:
    """log(p / (1 - p)), clipped: the inverse of :func:`sigmoid` for probabilities near 0 or 1."""
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    return np.clip(np.log(p / (1 - p)), -clip, clip)


@dataclass
class Combiner:
    features: list[str]
    mean: list[float]
    scale: list[float]
    weights: list[float]
    intercept: float
    threshold: float = 0.5
    # Held-out (out-of-fold) figures of the fitting pairs: F1 at the threshold, log loss, Brier score.
    held_out: dict[str, float] = field(default_factory=dict)

    def logit(self, x: pd.DataFrame) -> np.ndarray:
        missing = [f for f in self.features if f not in x.columns]
        if missing:
            raise InputError(f"the combiner needs the features {missing}")
        z = (x[self.features].to_numpy(dtype=float) - np.asarray(self.mean)) / np.asarray(self.scale)
        return z @ np.asarray(self.weights) + self.intercept

    def predict_proba(self, x: pd.DataFrame) -> np.ndarray:
        return sigmoid(self.logit(x))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Combiner:
        return cls(**data)

    def contributions(self) -> dict[str, float]:
        """Each feature's weight per standard deviation: how much the combiner trusts it."""
        return {f: round(float(w), 4) for f, w in zip(self.features, self.weights)}


def _fit(x: np.ndarray, y: np.ndarray, c: float, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed)).fit(x, y)


def fit_combiner(x: pd.DataFrame, y: np.ndarray, *, folds: int = 5, c: float = 1.0,
                 seed: int = 0) -> tuple[Combiner, np.ndarray]:
    """Fit on (features, 0/1 labels); returns the combiner and its out-of-fold probabilities."""
    from sklearn.metrics import brier_score_loss, log_loss
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y).astype(int)
    positives = int(y.sum())
    if positives < 2 or len(y) - positives < 2:
        raise InputError(f"the combiner needs at least 2 matches and 2 non-matches, got {positives} of {len(y)}")
    folds = max(2, min(folds, positives, len(y) - positives))
    features = list(x.columns)
    data = x.to_numpy(dtype=float)
    oof = np.empty(len(y))
    for train_idx, test_idx in StratifiedKFold(folds, shuffle=True, random_state=seed).split(data, y):
        oof[test_idx] = _fit(data[train_idx], y[train_idx], c, seed).predict_proba(data[test_idx])[:, 1]
    threshold, f1 = tune_threshold(oof, y)
    model = _fit(data, y, c, seed)
    scaler, lr = model[0], model[1]
    combiner = Combiner(features, scaler.mean_.tolist(), np.where(scaler.scale_ > 0, scaler.scale_, 1.0).tolist(),
                        lr.coef_[0].tolist(), float(lr.intercept_[0]), float(threshold),
                        {"f1": float(f1), "log_loss": float(log_loss(y, np.clip(oof, 1e-7, 1 - 1e-7))),
                         "brier": float(brier_score_loss(y, oof)), "pairs": int(len(y)), "matches": positives,
                         "folds": int(folds)})
    return combiner, oof
