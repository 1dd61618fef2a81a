"""What the cheap tier knows about a pair: the agentic teacher's evidence as numbers.

The teacher's rule score alone is a decision; its parts are better as *features*, since how
much a "different colour" or a model-number near miss means differs between catalogs, and a
combiner fitted on a benchmark's own labelled pairs learns that instead of trusting rules
written with other catalogs in view. Per pair:

* ``teacher_score``: the rules' log-odds (clipped to [-12, 12]);
* ``<attribute>_same`` / ``<attribute>_different``: one-hot verdicts (``unknown`` is neither);
* ``model_near_miss``: the model numbers differ by a variant (MZ-77E1T0 vs MZ-77E2T0);
* ``line_similarity``: the weighted token overlap of the product lines.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from epm_spark.models.matcher.attributes import Evidence
from epm_spark.models.matcher.decision import ATTRIBUTES
from epm_spark.models.matcher.teacher import AgenticTeacher

__all__ = ["TEACHER_FEATURES", "teacher_features", "evidence_features"]

TEACHER_FEATURES: tuple[str, ...] = (
    "teacher_score",
    *(f"{a}_{v}" for a in ATTRIBUTES for v in ("same", "different")),
    "model_near_miss",
    "line_similarity",
)


def evidence_features(evidence: list[Evidence], teacher: AgenticTeacher) -> pd.DataFrame:
    rows = []
    for e in evidence:
        score, _ = teacher.rules.score(e)
        row = {"teacher_score": float(np.clip(score, -12.0, 12.0))}
        for a in ATTRIBUTES:
            v = e.verdict(a)
            row[f"{a}_same"], row[f"{a}_different"] = float(v == "same"), float(v == "different")
        mn = e["model_number"]
        row["model_near_miss"] = float(mn.verdict == "different" and mn.reason == "near miss")
        row["line_similarity"] = float(e.line_similarity)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(TEACHER_FEATURES), dtype=float)


def teacher_features(pairs: pd.DataFrame, teacher: AgenticTeacher | None = None) -> tuple[pd.DataFrame, list[Evidence]]:
    """(features, evidence) for each row of a pair frame, in row order."""
    teacher = teacher or AgenticTeacher()
    evidence = teacher.evidence(pairs)
    return evidence_features(evidence, teacher), evidence
