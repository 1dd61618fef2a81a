"""What the cheap tier knows about a pair: the agentic teacher's evidence as numbers.

The teacher's rule score alone is a decision; its parts are better as *features*, since how
much a "different colour" or a model-number near miss means differs between catalogs, and a
combiner fitted on a benchmark's own labelled pairs learns that instead of trusting rules
written with other catalogs in view. Per pair:

* ``teacher_score``: the rules' log-odds (clipped to [-12, 12]);
* ``<attribute>_same`` / ``<attribute>_different``: one-hot verdicts (``unknown`` is neither);
* ``model_near_miss``: the model numbers differ by a variant (MZ-77E1T0 vs MZ-77E2T0);
* ``model_conflicts``: how many model codes each listing carries that the other does not explain
  (the smaller count, up to 3), whether or not they also share one (455035-B22 vs 533993-B22
  beside a shared DL120 server name): the rules read a shared code as the same model, and the
  combiner learns how often part numbers that disagree overrule it;
* ``line_similarity``: the weighted token overlap of the product lines;
* ``codes_jaccard``: the Jaccard overlap of the title tokens that hold a digit (model codes,
  capacities, years), a classic entity-matching similarity (Konda et al., 2016, Magellan);
* ``measure_conflicts`` / ``measure_agreements``: how many units (GB, mm, MHz, inch, port, EU
  sizes, ...) both titles quantify with different / the same numbers (55in vs 65in, EU 43 vs
  EU 41), the sizes and speeds the attribute lexicons do not name;
* ``price_log_ratio`` / ``price_known``: ``|log(price_a / price_b)|`` where both prices are known in
  the same currency (an upgrade edition and the full product differ mainly by price), else 0 and 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from epm_spark.models.attributes import Evidence, unexplained_codes
from epm_spark.models.matcher.decision import ATTRIBUTES
from epm_spark.models.matcher.supervision.teacher import AgenticTeacher

__all__ = ["TEACHER_FEATURES", "pair_features", "TitleTfidf"]

TEACHER_FEATURES: tuple[str, ...] = (
    "teacher_score",
    *(f"{a}_{v}" for a in ATTRIBUTES for v in ("same", "different")),
    "model_near_miss",
    "model_conflicts",
    "line_similarity",
    "codes_jaccard",
    "measure_conflicts",
    "measure_agreements",
    "price_log_ratio",
    "price_known",
)

_CODE = re.compile(r"[^\W_]*\d[\w\-./]*", re.UNICODE)


def _codes(title: Any) -> set[str]:
    return {t.strip("-./").lower() for t in _CODE.findall(str(title or ""))} - {""}


_TOKEN_SPLIT = re.compile(r"[\s\-/,;:()\[\]|+]+")
_BY = re.compile(r"(?<=\d)x(?=\d)")  # 2x16GB
_NUMBER = re.compile(r"^\d+(?:[.,]\d+)?$")
_NUMBER_UNIT = re.compile(r'^(\d+(?:[.,]\d+)?)([a-z"]{1,5})$')
_UNIT_ALIASES = {'"': "in", "inch": "in", "inches": "in", "zoll": "in"}
# Size systems written before the number (EU 43, US 9); every other unit follows it.
_PREFIX_UNITS = frozenset({"eu", "us", "uk", "size", "gr", "taille"})


def _measures(title: Any) -> dict[str, frozenset[float]]:
    """unit -> the numbers a title gives it: "55in", "55 inch", "4-port", "EU 43"."""
    text = _BY.sub(" x ", str(title or "").lower().replace("''", '"'))
    tokens = [t for t in _TOKEN_SPLIT.split(text) if t]
    found: dict[str, set[float]] = {}

    def add(unit: str, value: str) -> None:
        if unit == "x":  # the "2x" of a 2x16GB kit is not a unit of its own
            return
        found.setdefault(_UNIT_ALIASES.get(unit, unit), set()).add(float(value.replace(",", ".")))

    for i, token in enumerate(tokens):
        attached = _NUMBER_UNIT.match(token)
        if attached:
            add(attached.group(2), attached.group(1))
        elif _NUMBER.match(token):
            after = tokens[i + 1] if i + 1 < len(tokens) else ""
            if after == '"' or (after.isalpha() and len(after) <= 6):
                add(after, token)
            before = tokens[i - 1] if i else ""
            if before in _PREFIX_UNITS:
                add(before, token)
    return {unit: frozenset(values) for unit, values in found.items()}


def _price(row: Mapping[str, Any], side: str) -> tuple[float | None, str | None]:
    value, currency = row.get(f"{side}_price"), row.get(f"{side}_currency")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None, None
    if not math.isfinite(value) or value <= 0:
        return None, None
    return value, (currency if isinstance(currency, str) and currency else None)


def pair_features(pairs: pd.DataFrame, evidence: list[Evidence], teacher: AgenticTeacher) -> pd.DataFrame:
    """The features of :data:`TEACHER_FEATURES` for each row of a pair frame and its evidence."""
    rows = []
    for r, e in zip(pairs.to_dict("records"), evidence, strict=True):
        score, _ = teacher.rules.score(e)
        row = {"teacher_score": float(np.clip(score, -12.0, 12.0))}
        for a in ATTRIBUTES:
            v = e.verdict(a)
            row[f"{a}_same"], row[f"{a}_different"] = float(v == "same"), float(v == "different")
        mn = e["model_number"]
        row["model_near_miss"] = float(mn.verdict == "different" and mn.reason == "near miss")
        rest_a, rest_b = unexplained_codes(e.left, e.right)
        row["model_conflicts"] = float(min(3, len(rest_a), len(rest_b)))
        row["line_similarity"] = float(e.line_similarity)
        a, b = _codes(r.get("left_title")), _codes(r.get("right_title"))
        row["codes_jaccard"] = len(a & b) / len(a | b) if a | b else 0.0
        ma, mb = _measures(r.get("left_title")), _measures(r.get("right_title"))
        shared = ma.keys() & mb.keys()
        row["measure_conflicts"] = float(min(3, sum(ma[u] != mb[u] for u in shared)))
        row["measure_agreements"] = float(min(3, sum(ma[u] == mb[u] for u in shared)))
        (pa, ca), (pb, cb) = _price(r, "left"), _price(r, "right")
        known = pa is not None and pb is not None and (ca is None or cb is None or ca == cb)
        row["price_log_ratio"] = abs(math.log(pa / pb)) if known else 0.0
        row["price_known"] = float(known)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(TEACHER_FEATURES), dtype=float)


class TitleTfidf:
    """Cosine of character n-gram TF-IDF vectors of the two titles (``title_tfidf``).

    Character 3-5-grams within words survive the spelling, spacing and hyphenation that
    split a model code differently in two shops; the inverse document frequencies come from
    the train split's titles, so the words every listing of a catalog carries weigh little.
    Stored as plain JSON (vocabulary and idf), not as a pickle.
    """

    FEATURE = "title_tfidf"

    def __init__(self, vectorizer):
        self.vectorizer = vectorizer

    @staticmethod
    def _new(**kwargs: Any):
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=2, sublinear_tf=True,
                               lowercase=True, dtype=np.float32, **kwargs)

    @classmethod
    def fit(cls, pairs: pd.DataFrame) -> TitleTfidf:
        titles = pd.concat([pairs["left_title"], pairs["right_title"]]).fillna("").astype(str)
        return cls(cls._new().fit(titles.drop_duplicates()))

    def cosine(self, pairs: pd.DataFrame) -> np.ndarray:
        a = self.vectorizer.transform(pairs["left_title"].fillna("").astype(str))
        b = self.vectorizer.transform(pairs["right_title"].fillna("").astype(str))
        return np.asarray(a.multiply(b).sum(axis=1), dtype=float).ravel()

    def to_dict(self) -> dict[str, Any]:
        return {"vocabulary": {k: int(v) for k, v in self.vectorizer.vocabulary_.items()},
                "idf": [round(float(x), 6) for x in self.vectorizer.idf_]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TitleTfidf:
        vectorizer = cls._new(vocabulary=data["vocabulary"])
        vectorizer.idf_ = np.asarray(data["idf"], dtype=np.float32)
        return cls(vectorizer)
