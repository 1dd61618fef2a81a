"""Chat prompts: the decision prompt (teacher, and the student if it wants the same one) and the judge rubric."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from epm_spark.models.matcher.decision import ATTRIBUTES, MatchDecision
from epm_spark.models.text import listing_text

__all__ = ["DECISION_SYSTEM", "JUDGE_SYSTEM", "decision_messages", "judge_messages", "repair_message",
           "parse_judge_score"]

DECISION_SYSTEM = (
    "You decide whether two e-commerce listings are the same product. Ignore seller noise: promotional "
    "words (free shipping, best price, sale, new, original), platform and shop tags, bundle text (+ case, "
    "with charger). Compare brand, model number, product line, capacity/size, colour, quantity/pack size "
    "and condition. Answer with one JSON object and nothing else:\n"
    '{"label": "match" or "no_match", "confidence": number from 0 to 1, '
    '"evidence": {attribute: "same" | "different" | "unknown"}, '
    '"noise_ignored": [seller noise you ignored], "rationale": "short reason quoting the values compared"}\n'
    f"Attributes: {', '.join(ATTRIBUTES)}. Leave out attributes the listings do not state."
)

JUDGE_SYSTEM = (
    "You grade the reasoning of a product-matching decision. Check every claim in its evidence and "
    "rationale against the two listings: a claim such as \"same capacity\" is wrong when the listings show "
    "1TB and 2TB. Check that the label follows from the claims and that quoted values appear in the "
    "listings. Answer with one JSON object and nothing else: "
    '{"score": number from 0 (wrong or unsupported) to 1 (every claim correct and the label follows), '
    '"reason": "one sentence"}'
)


def decision_messages(left: Mapping[str, Any], right: Mapping[str, Any], *,
                      description_chars: int = 0) -> list[dict[str, str]]:
    """The chat asking for a decision on one pair, listings rendered by :func:`listing_text`."""
    a = listing_text(left, description_chars=description_chars)
    b = listing_text(right, description_chars=description_chars)
    return [{"role": "system", "content": DECISION_SYSTEM},
            {"role": "user", "content": f"Listing A: {a}\nListing B: {b}"}]


def judge_messages(decision: MatchDecision, left: Mapping[str, Any], right: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"role": "system", "content": JUDGE_SYSTEM},
            {"role": "user", "content": f"Listing A: {listing_text(left)}\nListing B: {listing_text(right)}\n"
                                        f"Decision: {decision.to_json()}"}]


def repair_message(reason: str, *, judge: bool = False) -> dict[str, str]:
    """The follow-up turn after an unusable answer: the parser's reason, and the format again."""
    shape = '{"score": ..., "reason": "..."}' if judge else "the decision JSON object described above"
    return {"role": "user", "content": f"Your answer could not be used ({reason}). "
                                       f"Answer again with only {shape}, no other text."}


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


def parse_judge_score(text: str) -> float:
    """The score of a judge answer ``{"score": s, ...}`` with ``s`` in [0, 1]; ``ValueError`` otherwise."""
    body = text.strip()
    fence = _FENCE.match(body)
    if fence:
        body = fence.group(1)
    try:
        data = json.loads(body)
    except ValueError:
        raise ValueError("the answer is not a JSON object") from None
    if not isinstance(data, dict) or "score" not in data:
        raise ValueError('the answer has no "score"')
    score = data["score"]
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0.0 <= float(score) <= 1.0:
        raise ValueError(f"score must be a number in [0, 1], got {score!r}")
    return float(score)
