"""The default matcher: a decision cascade of three tiers and two learned combiners.

1. **teacher**: the agentic teacher's evidence (model numbers, near-miss codes, capacities,
   colours) through a logistic calibration fitted on the train split. A pair whose calibrated
   P(match) is below ``teacher_sure`` or above ``1 - teacher_sure`` is decided here, at
   thousands of pairs per second.
2. **cross_encoder**: the fine-tuned cross-encoder's logit, the teacher's evidence and the pair's
   standing among its listings' other candidates and known matches (:mod:`.standing`), combined by the *fast*
   combiner (fitted on the valid split, see :mod:`.combiner`); a set that holds listings'
   candidates unlike valid did, or a catalog against itself, is combined without the standing
   (``fast_plain``). A pair whose log-odds are more than ``band`` from the threshold's is decided here.
   This tier decides only where it was shown to beat the teacher tier alone on held-out valid
   pairs (``cross_encoder_decides``); otherwise the teacher tier decides every pair at its own
   valid threshold and the cross-encoder is not run.
3. **student**: the EPM-RL student LLM reads the pairs left in the band (at most
   ``max_student_share`` of a batch, nearest the threshold first); its label log-odds join the
   others in the *full* combiner, which decides them when it was the more accurate of the two
   combiners on the band's held-out valid pairs (``student_decides``), and it writes their
   structured rationale on request (explain mode).

Every pair gets one calibrated probability, a label and the tier that decided it. Evidence and
rationale come with every decision: the teacher's for pairs the student did not explain.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from epm_spark.errors import InputError
from epm_spark.models.matcher.cascade.combiner import Combiner, logit
from epm_spark.models.matcher.cascade.cross_encoder import CrossEncoder, CrossEncoderSettings
from epm_spark.models.matcher.cascade.features import TitleTfidf, pair_features
from epm_spark.models.matcher.cascade.standing import (
    KNOWN_FEATURES, STANDING_FEATURES, known_features, pair_tops, same_source, shared_shares, standing_features,
    standing_score, standing_transfers,
)
from epm_spark.models.matcher.decision import MATCH, NO_MATCH
from epm_spark.models.matcher.model_folder import CARD_FILE, read_card
from epm_spark.models.matcher.settings import InferenceSettings
from epm_spark.models.matcher.supervision.teacher import AgenticTeacher, rationale_for

__all__ = ["CASCADE_FILE", "KNOWN_FILE", "TIERS", "Cascade", "is_cascade", "uses_standing"]

log = logging.getLogger(__name__)

CASCADE_FILE = "cascade.json"
TFIDF_FILE = "title_tfidf.json"
KNOWN_FILE = "known_matches.json"
TIERS = ("teacher", "cross_encoder", "student")
CE_FEATURE, STUDENT_FEATURE = "cross_encoder_logit", "student_logit"


def is_cascade(path: str | Path) -> bool:
    return (Path(path) / CASCADE_FILE).is_file() and (Path(path) / CARD_FILE).is_file()


def uses_standing(path: str | Path) -> bool:
    """Whether a cascade folder's fast combiner reads the pairs' standing (a batch job then ranks
    each listing's candidates over the whole run before deciding); not where the teacher tier
    decides every pair."""
    if not is_cascade(path):
        return False
    return _reads_standing(json.loads((Path(path) / CASCADE_FILE).read_text(encoding="utf-8")))


def _cross_encoder_decides(spec: dict[str, Any]) -> bool:
    # Folders trained before the check was recorded: the cross-encoder decides.
    return bool(spec.get("cross_encoder_decides", True))


def _reads_standing(spec: dict[str, Any]) -> bool:
    return _cross_encoder_decides(spec) and any(f in STANDING_FEATURES for f in spec["combiners"]["fast"]["features"])


class Cascade:
    """A trained cascade folder: ``decide(pairs)`` gives one decision per pair, in row order."""

    def __init__(self, folder: str | Path, *, inference: InferenceSettings | None = None, with_student: bool = True):
        self.folder = Path(folder)
        if not is_cascade(self.folder):
            raise InputError(f"{folder} is not a cascade model folder (no {CASCADE_FILE} beside {CARD_FILE})")
        self.card = read_card(self.folder)
        self.spec: dict[str, Any] = json.loads((self.folder / CASCADE_FILE).read_text(encoding="utf-8"))
        self.inference = inference or InferenceSettings()
        self.teacher = AgenticTeacher()
        self.teacher_tier = Combiner.from_dict(self.spec["combiners"]["teacher"])
        self.fast = Combiner.from_dict(self.spec["combiners"]["fast"])
        plain = self.spec["combiners"].get("fast_plain")
        self.fast_plain = Combiner.from_dict(plain) if plain else None
        full = self.spec["combiners"].get("full")
        self.full = Combiner.from_dict(full) if full and with_student else None
        ce = self.spec["cross_encoder"]
        self.cross_encoder = CrossEncoder.load(self.folder / ce["path"], CrossEncoderSettings(**ce["settings"]),
                                               device=self.inference.device)
        self.tfidf = TitleTfidf.from_dict(json.loads((self.folder / TFIDF_FILE).read_text(encoding="utf-8")))
        # Each listing's labelled matches of the train split, where the fast combiner reads them.
        self.reads_known = KNOWN_FEATURES[0] in self.fast.features
        self.known = (json.loads((self.folder / KNOWN_FILE).read_text(encoding="utf-8"))
                      if self.reads_known else {})
        self._student = None
        self.timings: dict[str, float] = {}
        # Whether the last decide() read the standing features (None: this cascade has none).
        self.standing_used: bool | None = None

    @classmethod
    def load(cls, path: str | Path, settings: InferenceSettings | None = None, *, with_student: bool = True) -> Cascade:
        return cls(path, inference=settings, with_student=with_student)

    # ------------------------------------------------------------------ thresholds and tiers

    def threshold(self, benchmark: str | None = None, combiner: str = "fast") -> float:
        table = self.spec["thresholds"][combiner]
        return float(table.get(benchmark, table["default"]) if benchmark else table["default"])

    @property
    def cross_encoder_decides(self) -> bool:
        """Whether the cross-encoder's tier decides the pairs the teacher is unsure of."""
        return _cross_encoder_decides(self.spec)

    @property
    def band(self) -> float:
        return float(self.spec["band"])

    @property
    def student(self):
        """The student tier's matcher, loaded on first use (None when the cascade has none)."""
        if self._student is None and self.spec.get("student"):
            from epm_spark.models.matcher.student.inference import Matcher

            self._student = Matcher.load(str(self.folder / self.spec["student"]), self.inference)
        return self._student

    # ------------------------------------------------------------------ decisions

    @property
    def uses_standing(self) -> bool:
        """Whether the fast combiner reads the pairs' standing among their listings' candidates."""
        return _reads_standing(self.spec)

    def _tier_scores(self, pairs: pd.DataFrame, x: pd.DataFrame, show_progress: bool) -> tuple[np.ndarray, np.ndarray]:
        """The teacher tier's P(match) for every pair, the cross-encoder's logit where it was not sure (else NaN)."""
        p_teacher = self.teacher_tier.predict_proba(x[self.teacher_tier.features])
        sure = self.spec["teacher_sure"]
        rest = np.flatnonzero((p_teacher >= sure) & (p_teacher <= 1 - sure) & self.cross_encoder_decides)
        ce = np.full(len(pairs), np.nan)
        if len(rest):
            ce[rest] = self.cross_encoder.predict_logits(pairs.iloc[rest], show_progress=show_progress)
        return p_teacher, ce

    def score(self, pairs: pd.DataFrame, *, show_progress: bool = False) -> pd.DataFrame:
        """The cheap tiers' scores (``p_teacher``, ``cross_encoder_logit``, ``standing_score``), one row per pair.

        A batch job scores every candidate first, gathers each listing's best scores over the whole
        run, then calls :meth:`decide` with both (``scores``, ``tops``)."""
        pairs = pairs.reset_index(drop=True)
        x = pair_features(pairs, self.teacher.evidence(pairs), self.teacher)
        p_teacher, ce = self._tier_scores(pairs, x, show_progress)
        return pd.DataFrame({"p_teacher": p_teacher, CE_FEATURE: ce,
                             "standing_score": standing_score(p_teacher, ce, self.spec["teacher_sure"])})

    @property
    def valid_same_source(self) -> bool:
        """Whether the standing weights were learned on pairs of one source against itself (a pool
        of offers, as WDC Products'); cascades trained before this was recorded learned on two."""
        return bool((self.spec.get("standing") or {}).get("same_source", False))

    def standing_applies(self, shares: dict[str, float]) -> bool:
        """Whether a scored set whose pairs share their listings in these ``shares`` (per side, see
        :func:`.standing.shared_shares`) is decided with the standing features; a cascade without a
        fallback combiner always reads them."""
        spec = self.spec.get("standing")
        if self.fast_plain is None or not spec:
            return True
        return standing_transfers(spec["shared"], shares, spec["tolerance"])

    def decide(self, pairs: pd.DataFrame, *, benchmark: str | None = None, use_student: bool = True,
               show_progress: bool = False, scores: pd.DataFrame | None = None,
               tops: dict[str, pd.DataFrame] | None = None,
               shares: dict[str, float] | None = None) -> pd.DataFrame:
        """Columns: probability, label, decided_by, p_teacher, cross_encoder_logit, p_fast, p_student, in_band
        (the pairs the student explains), and the teacher's evidence, noise and rationale for every pair.

        ``scores`` (from :meth:`score`) skips the cheap tiers' models; ``tops`` gives each pair's
        listings' candidate counts and best scores over a larger run, ``shares`` that run's
        :func:`.standing.shared_shares` (see :mod:`.standing`). Without them, ``pairs`` is the whole
        candidate set."""
        n = len(pairs)
        pairs = pairs.reset_index(drop=True)
        self.standing_used = None
        t0 = time.perf_counter()
        evidence = self.teacher.evidence(pairs)
        x = pair_features(pairs, evidence, self.teacher)
        t1 = time.perf_counter()
        if scores is None:
            p_teacher, ce = self._tier_scores(pairs, x, show_progress)
        else:
            p_teacher = scores["p_teacher"].to_numpy(dtype=float)
            ce = scores[CE_FEATURE].to_numpy(dtype=float)
        sure = self.spec["teacher_sure"]
        if self.cross_encoder_decides:
            by_teacher, teacher_threshold = (p_teacher < sure) | (p_teacher > 1 - sure), 0.5
        else:
            by_teacher, teacher_threshold = np.ones(n, dtype=bool), self.threshold(benchmark, "teacher")
        out = pd.DataFrame({"probability": p_teacher,
                            "label": np.where(p_teacher >= teacher_threshold, MATCH, NO_MATCH),
                            "decided_by": "teacher", "p_teacher": p_teacher, CE_FEATURE: ce,
                            "p_fast": np.nan, "p_student": np.nan})
        rest = np.flatnonzero(~by_teacher)
        # The pairs the fallback combiner (no standing) decides, and each pair's fast threshold.
        plain = np.zeros(n, dtype=bool)
        fast_thresholds = np.full(n, self.threshold(benchmark))
        if len(rest):
            x[CE_FEATURE] = ce
            x.loc[rest, TitleTfidf.FEATURE] = self.tfidf.cosine(pairs.iloc[rest])
            if self.uses_standing:
                s = standing_score(p_teacher, ce, sure)
                tops = tops if tops is not None else pair_tops(pairs, s)
                x[list(STANDING_FEATURES)] = standing_features(s, tops)
                if self.reads_known:
                    x[list(KNOWN_FEATURES)] = known_features(pairs, self.known)
                if self.fast_plain is not None:
                    applies = self.standing_applies(shares if shares is not None else shared_shares(tops))
                    # Weights learned on pairs of two catalogs do not carry over to one catalog
                    # against itself, where most listings have no duplicate at all (and back): the
                    # standing applies to pairs of the kind valid held.
                    plain = np.logical_or(not applies, same_source(pairs) != self.valid_same_source)
                self.standing_used = bool((~plain[rest]).any())
            for combiner, name, rows in ((self.fast, "fast", rest[~plain[rest]]),
                                         (self.fast_plain, "fast_plain", rest[plain[rest]])):
                if len(rows):
                    p_fast = combiner.predict_proba(x.loc[rows])
                    fast_thresholds[rows] = self.threshold(benchmark, name)
                    out.loc[rows, "p_fast"] = p_fast
                    out.loc[rows, "probability"] = p_fast
                    out.loc[rows, "label"] = np.where(p_fast >= fast_thresholds[rows], MATCH, NO_MATCH)
            out.loc[rest, "decided_by"] = "cross_encoder"
        t3 = time.perf_counter()
        chosen = (self.band_pairs(out, fast_thresholds) if use_student and self.full is not None
                  else np.array([], int))
        out["in_band"] = False
        out.loc[chosen, "in_band"] = True
        if len(chosen) and self.spec.get("student_decides", True):
            p_student = self.student.predict_proba(pairs.iloc[chosen], show_progress=show_progress)
            x.loc[chosen, STUDENT_FEATURE] = logit(p_student)
            p_full = self.full.predict_proba(x.loc[chosen])
            out.loc[chosen, "p_student"] = p_student
            out.loc[chosen, "probability"] = p_full
            out.loc[chosen, "label"] = np.where(p_full >= self.threshold(benchmark, "full"), MATCH, NO_MATCH)
            out.loc[chosen, "decided_by"] = "student"
        t4 = time.perf_counter()
        self.timings = {"teacher": t1 - t0, "cross_encoder": t3 - t1, "student": t4 - t3, "pairs": n}
        labels = out["label"].tolist()
        out["evidence"] = [{a: v for a, v in e.verdicts.items() if v != "unknown"} for e in evidence]
        out["noise_ignored"] = [list(e.noise) for e in evidence]
        out["rationale"] = [rationale_for(e, label) for e, label in zip(evidence, labels)]
        return out

    def band_pairs(self, decided: pd.DataFrame, thresholds: np.ndarray | float) -> np.ndarray:
        """Rows the student should see: in the band around their fast threshold, capped, nearest first."""
        p_fast = decided["p_fast"].to_numpy(dtype=float)
        distance = np.abs(logit(np.nan_to_num(p_fast, nan=0.0)) - logit(np.asarray(thresholds, dtype=float)))
        in_band = np.flatnonzero(~np.isnan(p_fast) & (distance <= self.band))
        cap = math.ceil(self.spec["max_student_share"] * len(decided))
        if len(in_band) > cap:
            in_band = np.sort(in_band[np.argsort(distance[in_band], kind="stable")[:cap]])
        return in_band

    def explain(self, pairs: pd.DataFrame, **kwargs: Any):
        """The student's explained decisions (see :meth:`Matcher.explain`)."""
        if self.student is None:
            raise InputError(f"the cascade {self.folder} has no student tier to explain with")
        return self.student.explain(pairs, **kwargs)

