"""Teachers: who writes the structured decisions (with rationales) the student learns from.

A teacher takes a pair frame (see :mod:`epm_spark.models.matcher.pairs`: ``left_*`` and
``right_*`` listing columns, optionally ``label``) and returns one
:class:`TeacherResult` per row, in order. Two teachers ship:

* :class:`AgenticTeacher`: offline, no endpoint. A pipeline of named steps,
  ``strip_noise -> extract_attributes -> compare -> decide``, whose rationale quotes
  the values it extracted ("Different capacity (1 TB vs 2 TB)").
* :class:`EndpointTeacher`: any OpenAI-compatible chat endpoint (a vLLM server or a
  hosted API), through :class:`~epm_spark.models.matcher.supervision.endpoint.ChatEndpoint`.

A result either holds a valid :class:`MatchDecision` or says why there is none
(``failure``); nothing is filled in by default.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import pandas as pd

from epm_spark.models.attributes import (
    AttributeComparison, Evidence, ListingAttributes, compare, extract, strip_noise, token_weights,
)
from epm_spark.models.matcher.decision import (
    ATTRIBUTES, MATCH, MAX_RATIONALE_CHARS, NO_MATCH, MatchDecision, parse_decision,
)
from epm_spark.models.matcher.pairs import gold_label, listing
from epm_spark.progress import progress

__all__ = [
    "Teacher",
    "TeacherResult",
    "DecisionRules",
    "AgentTrace",
    "AgenticTeacher",
    "EndpointTeacher",
    "build_teacher",
    "rationale_for",
    "agreement",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherResult:
    """One teacher answer: a valid decision, or the reason there is none."""

    teacher: str
    decision: MatchDecision | None
    raw: str | None = None
    failure: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.decision is not None

    @property
    def label(self) -> str | None:
        return self.decision.label if self.decision else None


@runtime_checkable
class Teacher(Protocol):
    """Anything that decides pairs: ``decide(pairs) -> list[TeacherResult]`` in row order."""

    name: str

    def decide(self, pairs: pd.DataFrame) -> list[TeacherResult]: ...


# ----------------------------------------------------------------------------- agentic teacher


@dataclass(frozen=True)
class DecisionRules:
    """How the agentic teacher weighs evidence: a sum of log-odds, match when positive.

    ``score = bias + sum(weight[attribute, verdict]) + line_weight * (line_similarity - line_center)``;
    ``confidence = sigmoid(|score|)``. A model-number *near miss* (same family, other
    variant: MZ-77E1T0B vs MZ-77E2T0B) weighs ``model_near_miss``; unrelated codes
    weigh ``model_unrelated`` (listings often carry different kinds of codes). A product
    line that differs by its numbers, edition, licence or accessory-vs-product weighs
    ``line_conflict``; one that merely shares few words weighs ``line_different``.
    """

    bias: float = -0.5
    model_same: float = 4.0
    model_near_miss: float = -3.0
    model_unrelated: float = -2.0
    brand_same: float = 0.5
    brand_different: float = -3.0
    capacity_same: float = 1.0
    capacity_different: float = -3.0
    colour_same: float = 0.3
    colour_different: float = -3.5
    quantity_different: float = -2.0
    quantity_one_side: float = -1.0
    condition_different: float = -1.0
    line_different: float = -1.0
    line_conflict: float = -2.5
    line_weight: float = 4.0
    line_center: float = 0.55

    def score(self, evidence: Evidence) -> tuple[float, dict[str, float]]:
        """The score and each attribute's contribution to it."""
        v = evidence.verdicts
        parts: dict[str, float] = {}
        model = evidence["model_number"]
        if model.verdict == "same":
            parts["model_number"] = self.model_same
        elif model.verdict == "different":
            parts["model_number"] = self.model_near_miss if model.reason == "near miss" else self.model_unrelated
        if v["brand"] == "same":
            parts["brand"] = self.brand_same
        elif v["brand"] == "different":
            parts["brand"] = self.brand_different
        if v["capacity"] == "same":
            parts["capacity"] = self.capacity_same
        elif v["capacity"] == "different":
            parts["capacity"] = self.capacity_different
        if v["colour"] == "same":
            parts["colour"] = self.colour_same
        elif v["colour"] == "different":
            parts["colour"] = self.colour_different
        if v["quantity"] == "different":
            one_side = evidence["quantity"].reason != ""
            parts["quantity"] = self.quantity_one_side if one_side else self.quantity_different
        if v["condition"] == "different":
            parts["condition"] = self.condition_different
        line = self.line_weight * (evidence.line_similarity - self.line_center)
        if v["product_line"] == "different":
            similarity_only = evidence["product_line"].reason.startswith("similarity")
            line += self.line_different if similarity_only else self.line_conflict
        parts["product_line"] = line
        return self.bias + sum(parts.values()), parts


@dataclass(frozen=True)
class AgentTrace:
    """What each step of the agentic teacher produced for one pair (for debugging and docs)."""

    noise: tuple[tuple[str, ...], tuple[str, ...]]
    left: ListingAttributes
    right: ListingAttributes
    evidence: Evidence
    score: float
    contributions: dict[str, float]
    decision: MatchDecision


_PHRASE = {
    "brand": "brand", "model_number": "model number", "product_line": "product line", "capacity": "capacity",
    "colour": "colour", "quantity": "quantity", "condition": "condition",
}


def _short(value: str | None, limit: int = 40) -> str:
    value = value or "?"
    return value if len(value) <= limit else value[: limit - 3].rstrip() + "..."


def _clause(c: AttributeComparison) -> str:
    name = _PHRASE[c.attribute]
    if c.verdict == "same":
        if c.attribute == "capacity" and c.reason:
            return f"same {name} ({c.reason})"
        shown = c.left if c.left == c.right or not c.right else f"{_short(c.left)} / {_short(c.right)}"
        if c.attribute == "product_line":
            shown = _short(c.left if len(c.left or "") <= len(c.right or "") else c.right)
        return f"same {name} ({_short(shown, 60)})"
    detail = f"{_short(c.left)} vs {_short(c.right)}"
    if c.attribute == "model_number" and c.reason == "near miss":
        detail += ", a near miss"
    if c.attribute == "quantity" and c.reason:
        detail += ", pack size on one side only"
    return f"different {name} ({detail})"


def rationale_for(evidence: Evidence, label: str) -> str:
    """A short rationale in the canonical phrasing ("same brand (x)", "different capacity (a vs b)").

    Differences come first for ``no_match``, agreements first for ``match``; clauses that
    do not fit in :data:`MAX_RATIONALE_CHARS` are left out, never cut mid-claim.
    """
    known = [evidence[a] for a in ATTRIBUTES if evidence.verdict(a) != "unknown"]
    first = "different" if label == NO_MATCH else "same"
    known.sort(key=lambda c: c.verdict != first)
    ending = "Same product." if label == MATCH else "Not the same product."
    if label == MATCH and not any(c.verdict == "same" for c in known):
        ending = "Titles agree; nothing contradicts. Same product."
    if label == NO_MATCH and not any(c.verdict == "different" for c in known):
        ending = "No shared model number or product line. Not the same product."
    sentences: list[str] = []
    budget = MAX_RATIONALE_CHARS - len(ending) - 1
    for c in known:
        clause = _clause(c)
        sentence = clause[0].upper() + clause[1:] + "."
        if len(" ".join([*sentences, sentence])) > budget:
            continue
        sentences.append(sentence)
    return " ".join([*sentences, ending])


class AgenticTeacher:
    """The offline teacher: strip seller noise, extract attributes, compare, decide.

    Token weights for the product-line similarity are fitted on the titles of each
    frame passed to :meth:`decide` (no labels are read), so words common in that
    catalog ("digital camera") count less than rare ones ("cyber-shot").
    """

    steps = ("strip_noise", "extract_attributes", "compare", "decide")

    def __init__(self, rules: DecisionRules | None = None, *, name: str = "agentic", use_weights: bool = True):
        self.rules = rules or DecisionRules()
        self.name = name
        self.use_weights = use_weights

    # Each step is a method so a trace can show what it produced.
    def strip_noise(self, item: Mapping[str, Any]) -> tuple[str, ...]:
        return strip_noise(str(item.get("title") or "")).removed

    def extract_attributes(self, item: Mapping[str, Any]) -> ListingAttributes:
        return extract(item)

    def compare(self, left: ListingAttributes, right: ListingAttributes,
                weights: Mapping[str, float] | None = None) -> Evidence:
        return compare(left, right, weights=weights)

    def decide_one(self, evidence: Evidence) -> tuple[MatchDecision, float, dict[str, float]]:
        score, parts = self.rules.score(evidence)
        label = MATCH if score > 0 else NO_MATCH
        confidence = 1.0 / (1.0 + math.exp(-abs(score)))
        decision = MatchDecision(
            label=label,
            confidence=round(confidence, 2),
            evidence={a: v for a, v in evidence.verdicts.items() if v != "unknown"},
            noise_ignored=evidence.noise,
            rationale=rationale_for(evidence, label),
        )
        return decision, score, parts

    def trace(self, left: Mapping[str, Any], right: Mapping[str, Any],
              weights: Mapping[str, float] | None = None) -> AgentTrace:
        noise = (self.strip_noise(left), self.strip_noise(right))
        a, b = self.extract_attributes(left), self.extract_attributes(right)
        evidence = self.compare(a, b, weights)
        decision, score, parts = self.decide_one(evidence)
        return AgentTrace(noise, a, b, evidence, score, parts, decision)

    def weights_for(self, pairs: pd.DataFrame) -> dict[str, float] | None:
        if not self.use_weights or pairs.empty:
            return None
        titles = pd.concat([pairs["left_title"], pairs["right_title"]]).dropna().drop_duplicates()
        return token_weights(strip_noise(t).text for t in titles)

    def evidence(self, pairs: pd.DataFrame) -> list[Evidence]:
        """The compared attributes of every pair, in row order (each listing extracted once)."""
        weights = self.weights_for(pairs)
        cache: dict[tuple[str, str], ListingAttributes] = {}

        def attrs(row: Mapping[str, Any], side: str) -> ListingAttributes:
            key = (str(row.get(f"{side}_source")), str(row.get(f"{side}_id")))
            if key not in cache or key == ("None", "None"):
                cache[key] = self.extract_attributes(listing(row, side))
            return cache[key]

        rows = progress(pairs.to_dict("records"), total=len(pairs), desc=f"teacher {self.name}", unit="pair")
        return [self.compare(attrs(row, "left"), attrs(row, "right"), weights) for row in rows]

    def results(self, evidence: Sequence[Evidence]) -> list[TeacherResult]:
        """The decisions for evidence already extracted (see :meth:`evidence`)."""
        results = []
        for e in evidence:
            decision, _, _ = self.decide_one(e)
            results.append(TeacherResult(self.name, decision, raw=decision.to_json()))
        return results

    def decide(self, pairs: pd.DataFrame) -> list[TeacherResult]:
        return self.results(self.evidence(pairs))


# ----------------------------------------------------------------------------- endpoint teacher


class EndpointTeacher:
    """A chat endpoint as teacher: one prompt per pair, answers parsed with the strict parser.

    Requests go through :class:`~epm_spark.models.matcher.supervision.endpoint.ChatEndpoint` (bounded
    concurrency, retries with back-off, on-disk cache, token and cost accounting). An
    answer that fails :func:`parse_decision` is asked again once, with the parser's
    reason; a second failure is recorded as a format failure.
    """

    def __init__(self, endpoint: Any, *, name: str | None = None, strict: bool = True, format_retries: int = 1):
        self.endpoint = endpoint
        self.name = name or f"endpoint:{endpoint.settings.model}"
        self.strict = strict
        self.format_retries = format_retries

    def decide(self, pairs: pd.DataFrame) -> list[TeacherResult]:
        from epm_spark.models.matcher.supervision.prompts import decision_messages, repair_message

        rows = pairs.to_dict("records")
        conversations = [decision_messages(listing(r, "left"), listing(r, "right")) for r in rows]
        answers = self.endpoint.complete_parsed(conversations, lambda text: parse_decision(text, strict=self.strict),
                                                repair_message, format_retries=self.format_retries,
                                                desc=f"teacher {self.name}")
        return [TeacherResult(self.name, a.value, a.text, a.failure, a.prompt_tokens, a.completion_tokens, a.cached)
                for a in answers]


def build_teacher(kind: str, settings: Any = None) -> Teacher:
    """The teacher named by ``kind`` (``agentic`` or ``endpoint``) from the ``teacher`` settings."""
    from epm_spark.errors import ConfigError

    if kind == "agentic":
        return AgenticTeacher()
    if kind == "endpoint":
        from epm_spark.models.matcher.supervision.endpoint import ChatEndpoint

        if settings is None:
            raise ConfigError("the endpoint teacher needs the teacher.endpoint settings")
        endpoint = ChatEndpoint(settings.endpoint)
        return EndpointTeacher(endpoint, strict=settings.strict_format, format_retries=settings.format_retries)
    raise ConfigError(f"unknown teacher {kind!r}; choose agentic or endpoint")


# ----------------------------------------------------------------------------- agreement


@dataclass
class Agreement:
    """How a teacher's labels agree with gold: the teacher is scored as a classifier."""

    pairs: int = 0
    decided: int = 0
    failures: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    to_review: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "pairs": self.pairs, "decided": self.decided, "failures": self.failures,
            "precision": round(self.precision, 4), "recall": round(self.recall, 4), "f1": round(self.f1, 4),
            "accuracy": round((self.tp + self.tn) / self.decided, 4) if self.decided else 0.0,
            "to_review": self.to_review, "tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn,
            **self.extra,
        }


def agreement(results: Sequence[TeacherResult], labels: Sequence[Any]) -> Agreement:
    """Score teacher labels against gold labels; a failure counts as a pair to review."""
    out = Agreement(pairs=len(results))
    for result, gold in zip(results, labels, strict=True):
        truth = gold_label(gold)
        if not result.ok:
            out.failures += 1
            out.to_review += 1
            continue
        out.decided += 1
        predicted = result.label == MATCH
        actual = truth == MATCH
        out.tp += predicted and actual
        out.fp += predicted and not actual
        out.fn += actual and not predicted
        out.tn += not predicted and not actual
        out.to_review += predicted != actual
    return out
