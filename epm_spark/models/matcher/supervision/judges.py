"""Judges: how good is a decision's reasoning, as a score in [0, 1].

Every judge has ``score(decisions, lefts, rights) -> list[float | None]`` over parallel
lists (a decision and the two listings it is about). ``None`` means the judge could
not score that decision (an endpoint that failed); TRL's GRPO treats it as missing.

* :class:`AttributeConsistencyJudge`: checks the decision's claims (evidence verdicts
  and rationale phrases such as "same capacity") and the values it quotes against the
  attributes extracted from the two listings. No model, deterministic.
* :class:`~epm_spark.models.matcher.supervision.preference.PreferenceJudge`: a learned cross-encoder
  reward model (Bradley-Terry on preferred vs corrupted rationales).
* :class:`EndpointJudge`: an LLM endpoint scoring against a rubric.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from epm_spark.models.attributes import (
    Evidence, model_numbers_related, looks_like_model_number, compare, extract, normalise_model_number, parse_measures,
)
from epm_spark.models.matcher.decision import ATTRIBUTES, MATCH, NO_MATCH, MatchDecision

__all__ = [
    "Judge",
    "Claim",
    "JudgeScore",
    "rationale_claims",
    "AttributeConsistencyJudge",
    "EndpointJudge",
    "build_judge",
]

log = logging.getLogger(__name__)


@runtime_checkable
class Judge(Protocol):
    name: str

    def score(self, decisions: Sequence[MatchDecision], lefts: Sequence[Mapping[str, Any]],
              rights: Sequence[Mapping[str, Any]]) -> list[float | None]: ...


# ----------------------------------------------------------------------------- claims in rationales

_ATTRIBUTE_WORDS = {
    "model_number": r"model\s+numbers?|model\s+codes?|model\s+no\.?|part\s+numbers?|models?|mpns?|skus?|references?",
    "product_line": r"product\s+lines?|lines?|series|family|families|editions?|versions?",
    "brand": r"brands?|manufacturers?|makers?",
    "capacity": r"capacity|capacities|sizes?|storage|memory|volumes?|dimensions?",
    "colour": r"colou?rs?|finish(?:es)?",
    "quantity": r"quantity|quantities|pack\s+sizes?|pack|count|bundles?",
    "condition": r"conditions?",
}
_ATTR = "|".join(f"(?P<{a}>{w})" for a, w in _ATTRIBUTE_WORDS.items())
_SAME = r"same|identical|matching|equal|consistent"
_DIFF = r"different|differing|mismatched|mismatching|distinct|conflicting"
_CLAIM_PATTERNS = [
    # "same capacity", "not the same brand", "different model number"
    re.compile(rf"\b(?P<neg>not\s+(?:the\s+)?)?(?P<v>{_SAME}|{_DIFF})\s+(?:{_ATTR})\b", re.I),
    # "the capacities are the same", "brand is different", "colours are not identical"
    re.compile(rf"\b(?:{_ATTR})\s+(?:are|is)\s+(?P<neg>not\s+)?(?:the\s+)?(?P<v>{_SAME}|{_DIFF})\b", re.I),
    # "capacities match", "the brand differs", "model numbers do not match"
    re.compile(rf"\b(?:{_ATTR})\s+(?P<v>match(?:es)?|agrees?|differs?|(?:do|does)(?:\s+not|n't)\s+match|mismatch(?:es)?"
               rf"|conflicts?)\b", re.I),
]


@dataclass(frozen=True)
class Claim:
    attribute: str
    verdict: str  # same / different
    source: str  # evidence / rationale
    text: str = ""


_SAME_WORD = re.compile(rf"^(?:{_SAME}|match(?:es)?|agrees?)$", re.I)


def _verdict_word(word: str, negated: bool) -> str:
    same = bool(_SAME_WORD.match(word.strip())) != negated
    return "same" if same else "different"


def rationale_claims(rationale: str) -> list[Claim]:
    """Attribute claims a rationale makes in words ("same capacity", "brands differ")."""
    claims: list[Claim] = []
    seen: set[tuple[int, int]] = set()
    for pattern in _CLAIM_PATTERNS:
        for m in pattern.finditer(rationale or ""):
            span = m.span()
            if any(s <= span[0] < e for s, e in seen):
                continue
            seen.add(span)
            attribute = next(a for a in _ATTRIBUTE_WORDS if m.group(a))
            claims.append(Claim(attribute, _verdict_word(m.group("v"), bool(m.groupdict().get("neg"))),
                                "rationale", m.group(0)))
    return claims


# ----------------------------------------------------------------------------- attribute judge


@dataclass
class JudgeScore:
    score: float
    claims: list[tuple[Claim, str, float]] = field(default_factory=list)  # claim, extracted verdict, credit
    values: list[tuple[str, bool]] = field(default_factory=list)  # quoted value, found in a listing
    coherent: bool = True
    notes: list[str] = field(default_factory=list)


# Attributes whose difference alone makes two listings different products.
_DECISIVE = ("brand", "model_number", "capacity", "quantity")


class AttributeConsistencyJudge:
    """Score a decision by checking what it claims against what the listings say.

    Items checked: every attribute the decision claims is ``same``/``different`` (in
    ``evidence`` or in the rationale's words) and every capacity or model number the
    rationale quotes. Credit per item: 1 when the extracted attributes agree, 0 when
    they contradict it (or a quoted value is in neither listing), ``unverifiable_credit``
    when the listings do not say. A contradicted item weighs ``contradiction_weight``
    times a confirmed one, so one false claim is not averaged away by easy true ones::

        claims = sum(w_i * credit_i) / sum(w_i)     (w_i = contradiction_weight if credit_i == 0 else 1)
        score  = claim_weight * claims + (1 - claim_weight) * coherent

    ``coherent`` is 1 unless the label contradicts the decision's own claims (``match``
    while claiming a decisive attribute, brand / model number / capacity / quantity,
    differs; ``no_match`` while every claim says same) or says ``match`` although the
    listings' extracted attributes show a decisive difference. A decision with no
    checkable item gets ``no_claims_credit`` as its claims term: saying nothing is not
    good reasoning.
    """

    name = "attribute_consistency"

    def __init__(self, claim_weight: float = 0.7, unverifiable_credit: float = 0.5, no_claims_credit: float = 0.25,
                 contradiction_weight: float = 3.0):
        self.claim_weight = claim_weight
        self.unverifiable_credit = unverifiable_credit
        self.no_claims_credit = no_claims_credit
        self.contradiction_weight = contradiction_weight

    def judge(self, decision: MatchDecision, left: Mapping[str, Any], right: Mapping[str, Any],
              evidence: Evidence | None = None) -> JudgeScore:
        evidence = evidence or compare(extract(left), extract(right))
        truth = evidence.verdicts
        claims = [Claim(a, v, "evidence") for a, v in decision.evidence.items() if v in ("same", "different")]
        claims += rationale_claims(decision.rationale)
        out = JudgeScore(0.0)
        credits: list[float] = []
        claimed: dict[str, set[str]] = {}
        for claim in claims:
            claimed.setdefault(claim.attribute, set()).add(claim.verdict)
            actual = truth[claim.attribute]
            credit = self.unverifiable_credit if actual == "unknown" else float(actual == claim.verdict)
            out.claims.append((claim, actual, credit))
            credits.append(credit)
        for attribute, verdicts in claimed.items():
            if len(verdicts) > 1:
                out.notes.append(f"claims both same and different {attribute}")
                credits.append(0.0)
        for value, found in self._quoted_values(decision.rationale, evidence):
            out.values.append((value, found))
            credits.append(float(found))
        if decision.label == MATCH:
            out.coherent = not any("different" in claimed.get(a, ()) or truth[a] == "different" for a in _DECISIVE)
        elif decision.label == NO_MATCH and claimed:
            out.coherent = any("different" in v for v in claimed.values())
        weights = [self.contradiction_weight if c == 0.0 else 1.0 for c in credits]
        mean = sum(w * c for w, c in zip(weights, credits)) / sum(weights) if credits else self.no_claims_credit
        out.score = self.claim_weight * mean + (1.0 - self.claim_weight) * float(out.coherent)
        return out

    @staticmethod
    def _quoted_values(rationale: str, evidence: Evidence) -> list[tuple[str, bool]]:
        """Capacities and model numbers the rationale quotes, each found in a listing or not."""
        a, b = evidence.left, evidence.right
        found: list[tuple[str, bool]] = []
        measures = (*a.measures, *b.measures)
        for m in parse_measures(rationale or ""):
            found.append((m.text, any(m.same_as(x) for x in measures)))
        for token in re.split(r"[\s,;()\[\]]+", rationale or ""):
            token = token.strip(".:")
            if not looks_like_model_number(token):
                continue
            code = normalise_model_number(token)
            known = (*a.model_numbers, *b.model_numbers)
            found.append((token, code in a.search_text or code in b.search_text
                          or any(model_numbers_related(code, k) for k in known)))
        return found

    def score(self, decisions: Sequence[MatchDecision], lefts: Sequence[Mapping[str, Any]],
              rights: Sequence[Mapping[str, Any]]) -> list[float | None]:
        return [self.judge(d, left, right).score for d, left, right in zip(decisions, lefts, rights, strict=True)]


# ----------------------------------------------------------------------------- endpoint judge


class EndpointJudge:
    """An LLM endpoint as judge: a rubric prompt, the answer ``{"score": s, "reason": "..."}``.

    Same client as the endpoint teacher (:class:`~epm_spark.models.matcher.supervision.endpoint.ChatEndpoint`:
    cache, retries, accounting). An answer without a readable score in [0, 1] is asked
    again once; a second failure, or a failed request, scores ``None`` and is counted
    in ``failures``.
    """

    name = "endpoint"

    def __init__(self, endpoint: Any, *, format_retries: int = 1):
        self.endpoint = endpoint
        self.format_retries = format_retries
        self.failures = 0

    def score(self, decisions: Sequence[MatchDecision], lefts: Sequence[Mapping[str, Any]],
              rights: Sequence[Mapping[str, Any]]) -> list[float | None]:
        from epm_spark.models.matcher.supervision.prompts import judge_messages, parse_judge_score, repair_message

        conversations = [judge_messages(d, left, right) for d, left, right in zip(decisions, lefts, rights,
                                                                                   strict=True)]
        answers = self.endpoint.complete_parsed(conversations, parse_judge_score,
                                                lambda reason: repair_message(reason, judge=True),
                                                format_retries=self.format_retries, desc="judge")
        scores: list[float | None] = [a.value for a in answers]
        failed = sum(s is None for s in scores)
        if failed:
            self.failures += failed
            log.warning("endpoint judge: %d of %d decisions could not be scored", failed, len(scores))
        return scores


def build_judge(settings: Any) -> Judge:
    """The judge that ``settings.judges.kind`` names (``settings``: the root :class:`Settings`)."""
    from epm_spark.errors import ConfigError

    judges = settings.judges
    if judges.kind == "attribute":
        return AttributeConsistencyJudge(claim_weight=judges.claim_weight)
    if judges.kind == "preference":
        from epm_spark.models.matcher.supervision.preference import PreferenceJudge

        if not judges.preference.path:
            raise ConfigError("judges.kind is preference but judges.preference.path names no trained judge; "
                              "train one with `epm-spark train-judge`")
        return PreferenceJudge.load(judges.preference.path)
    if judges.kind == "endpoint":
        from epm_spark.models.matcher.supervision.endpoint import ChatEndpoint

        endpoint = judges.endpoint if judges.endpoint.base_url else settings.teacher.endpoint
        if not endpoint.configured:
            raise ConfigError("judges.kind is endpoint but neither judges.endpoint nor teacher.endpoint "
                              "has a base_url and model")
        return EndpointJudge(ChatEndpoint(endpoint))
    raise ConfigError(f"unknown judge {judges.kind!r}")


assert set(_ATTRIBUTE_WORDS) == set(ATTRIBUTES)
