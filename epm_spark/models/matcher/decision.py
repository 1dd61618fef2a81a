"""The structured decision every matcher, teacher and judge speaks.

One JSON object per pair::

    {"label": "no_match",
     "confidence": 0.93,
     "evidence": {"brand": "same", "model_number": "same", "capacity": "different"},
     "noise_ignored": ["free shipping", "+ case"],
     "rationale": "Same Samsung 870 EVO line, but 1TB vs 2TB."}

``evidence`` maps each attribute the decision looked at to ``same``, ``different``
or ``unknown``; attributes left out count as ``unknown``. :func:`parse_decision` is
strict: anything that does not parse and validate raises :class:`DecisionFormatError`
with the reason. It never fills in a default for what the model failed to say.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from epm_spark.models.attributes import ATTRIBUTES

__all__ = [
    "MATCH",
    "NO_MATCH",
    "LABELS",
    "ATTRIBUTES",
    "VERDICTS",
    "MatchDecision",
    "DecisionFormatError",
    "parse_decision",
    "DECISION_JSON_SCHEMA",
    "short_decision_json",
    "parse_short_decision",
]

MATCH, NO_MATCH = "match", "no_match"
LABELS = (MATCH, NO_MATCH)
VERDICTS = ("same", "different", "unknown")
MAX_RATIONALE_CHARS = 600

DECISION_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["label", "confidence", "evidence", "noise_ignored", "rationale"],
    "additionalProperties": False,
    "properties": {
        "label": {"enum": list(LABELS)},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "evidence": {
            "type": "object",
            "additionalProperties": False,
            "properties": {a: {"enum": list(VERDICTS)} for a in ATTRIBUTES},
        },
        "noise_ignored": {"type": "array", "items": {"type": "string"}},
        "rationale": {"type": "string", "maxLength": MAX_RATIONALE_CHARS},
    },
}


class DecisionFormatError(ValueError):
    """A generated decision does not follow the schema; ``reason`` says how."""

    def __init__(self, reason: str, text: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.text = text


@dataclass(frozen=True)
class MatchDecision:
    label: str
    confidence: float
    evidence: dict[str, str] = field(default_factory=dict)
    noise_ignored: tuple[str, ...] = ()
    rationale: str = ""

    @property
    def is_match(self) -> bool:
        return self.label == MATCH

    def verdict(self, attribute: str) -> str:
        return self.evidence.get(attribute, "unknown")

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "confidence": round(float(self.confidence), 4),
            "evidence": {a: self.evidence[a] for a in ATTRIBUTES if a in self.evidence},
            "noise_ignored": list(self.noise_ignored),
            "rationale": self.rationale,
        }

    def to_json(self) -> str:
        """Compact JSON in a fixed key order: the exact text a student is trained to produce."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(", ", ": "))

    @classmethod
    def from_dict(cls, data: Any) -> MatchDecision:
        return _validate(data, "")


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


def parse_decision(text: str, *, strict: bool = True) -> MatchDecision:
    """Parse and validate one decision.

    ``strict``: the text (stripped, optionally in a ```json fence) must be exactly one
    JSON object. Not strict: the first balanced ``{...}`` in the text is used, so a
    chatty prefix or suffix is tolerated, but the object itself must still validate.
    """
    return _validate(_decode_object(text, strict), text)


def _decode_object(text: str, strict: bool) -> Any:
    if not isinstance(text, str):
        raise DecisionFormatError(f"expected text, got {type(text).__name__}")
    body = text.strip()
    fence = _FENCE.match(body)
    if fence:
        body = fence.group(1)
    if not body:
        raise DecisionFormatError("empty output", text)
    if not strict:
        body = _first_object(body, text)
    elif not body.startswith("{"):
        raise DecisionFormatError("text before the JSON object", text)
    try:
        data, end = json.JSONDecoder().raw_decode(body)
    except json.JSONDecodeError as exc:
        # A generation cut off by max_tokens ends mid-object or mid-string; say so, it is the common case.
        truncated = exc.pos >= len(body.rstrip()) or exc.msg.startswith("Unterminated string")
        reason = "truncated JSON" if truncated else f"invalid JSON: {exc.msg} at char {exc.pos}"
        raise DecisionFormatError(reason, text) from None
    if body[end:].strip():
        raise DecisionFormatError("extra text after the JSON object", text)
    return data


def _first_object(body: str, text: str) -> str:
    start = body.find("{")
    if start < 0:
        raise DecisionFormatError("no JSON object in the output", text)
    depth, in_string, escaped = 0, False, False
    for i, ch in enumerate(body[start:], start):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return body[start: i + 1]
    raise DecisionFormatError("truncated JSON", text)


def _validate(data: Any, text: str) -> MatchDecision:
    def fail(reason: str) -> DecisionFormatError:
        return DecisionFormatError(reason, text)

    if not isinstance(data, dict):
        raise fail(f"expected a JSON object, got {type(data).__name__}")
    missing = [k for k in DECISION_JSON_SCHEMA["required"] if k not in data]
    if missing:
        raise fail(f"missing keys: {', '.join(missing)}")
    extra = sorted(set(data) - set(DECISION_JSON_SCHEMA["properties"]))
    if extra:
        raise fail(f"unknown keys: {', '.join(extra)}")
    label = data["label"]
    if label not in LABELS:
        raise fail(f"label must be 'match' or 'no_match', got {label!r}")
    confidence = data["confidence"]
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)):
        raise fail(f"confidence must be a number, got {type(confidence).__name__}")
    if not 0.0 <= float(confidence) <= 1.0:
        raise fail(f"confidence must be within [0, 1], got {confidence}")
    evidence = data["evidence"]
    if not isinstance(evidence, dict):
        raise fail(f"evidence must be an object, got {type(evidence).__name__}")
    for attribute, verdict in evidence.items():
        if attribute not in ATTRIBUTES:
            raise fail(f"evidence names unknown attribute {attribute!r}")
        if verdict not in VERDICTS:
            raise fail(f"evidence.{attribute} must be one of same/different/unknown, got {verdict!r}")
    noise = data["noise_ignored"]
    if not isinstance(noise, list) or not all(isinstance(n, str) for n in noise):
        raise fail("noise_ignored must be a list of strings")
    rationale = data["rationale"]
    if not isinstance(rationale, str):
        raise fail(f"rationale must be a string, got {type(rationale).__name__}")
    if len(rationale) > MAX_RATIONALE_CHARS:
        raise fail(f"rationale longer than {MAX_RATIONALE_CHARS} characters")
    return MatchDecision(label, float(confidence), dict(evidence), tuple(noise), rationale.strip())


# ----------------------------------------------------------------------------- the short decision
#
# The label phase of the student writes only what a decision needs and a judge can check:
# ``{"label": "no_match", "evidence": {"capacity": "different"}}`` (about 15 tokens, against
# about 90 for the explained decision). Its label comes first, like the full decision's, so
# label mode reads both the same way.


def short_decision_json(label: str, evidence: dict[str, str] | None = None) -> str:
    """The short decision's canonical text: the label and the attributes that were not unknown."""
    if label not in LABELS:
        raise ValueError(f"label must be 'match' or 'no_match', got {label!r}")
    shown = {a: (evidence or {})[a] for a in ATTRIBUTES if (evidence or {}).get(a, "unknown") != "unknown"}
    return json.dumps({"label": label, "evidence": shown}, ensure_ascii=False, separators=(", ", ": "))


def parse_short_decision(text: str, *, strict: bool = True) -> MatchDecision:
    """Parse ``{"label": ..., "evidence": {...}}``; the decision has no rationale and confidence 1."""
    data = _decode_object(text, strict)
    if not isinstance(data, dict) or set(data) != {"label", "evidence"}:
        raise DecisionFormatError("a short decision holds exactly the keys label and evidence", text)
    return _validate({**data, "confidence": 1.0, "noise_ignored": [], "rationale": ""}, text)
