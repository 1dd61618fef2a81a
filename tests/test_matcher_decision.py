"""The decision schema parser: the contract between teacher, student and judges."""

from __future__ import annotations

import json

import pytest

from epm_spark.models.matcher.decision import (
    MAX_RATIONALE_CHARS, DecisionFormatError, MatchDecision, parse_decision,
)

VALID = {
    "label": "no_match",
    "confidence": 0.9,
    "evidence": {"brand": "same", "capacity": "different"},
    "noise_ignored": ["free shipping"],
    "rationale": "Same brand, but 1 TB vs 2 TB.",
}


def text(**changes) -> str:
    data = {**VALID, **changes}
    return json.dumps({k: v for k, v in data.items() if v is not ...})


def reason(raw: str, strict: bool = True) -> str:
    with pytest.raises(DecisionFormatError) as info:
        parse_decision(raw, strict=strict)
    return info.value.reason


def test_valid_decision_round_trips_through_to_json():
    decision = parse_decision(text())
    assert decision.label == "no_match" and not decision.is_match
    assert decision.confidence == pytest.approx(0.9)
    assert decision.verdict("capacity") == "different"
    assert decision.verdict("colour") == "unknown"  # left out means unknown
    assert decision.noise_ignored == ("free shipping",)
    assert parse_decision(decision.to_json()) == decision


def test_to_json_keeps_schema_order_of_attributes():
    decision = MatchDecision("match", 0.5, {"condition": "same", "brand": "same"}, (), "x")
    assert list(json.loads(decision.to_json())["evidence"]) == ["brand", "condition"]


@pytest.mark.parametrize("fence", ["```json\n{}\n```", "```\n{}\n```", "  ```json {} ```  "])
def test_markdown_fences_are_accepted_in_strict_mode(fence):
    assert parse_decision(fence.replace("{}", text())).label == "no_match"


def test_truncated_output_is_named_truncated():
    raw = text()
    assert reason(raw[: len(raw) // 2]) == "truncated JSON"
    assert reason(raw[:-1], strict=False) == "truncated JSON"


def test_text_before_or_after_the_object_fails_strict_but_passes_lenient():
    chatty = f"Sure! Here is my answer: {text()} Hope that helps."
    assert reason(chatty) == "text before the JSON object"
    assert reason(text() + " trailing") == "extra text after the JSON object"
    assert parse_decision(chatty, strict=False).label == "no_match"


def test_lenient_mode_still_validates_the_object():
    assert reason(f"Answer: {text(label='yes')}", strict=False).startswith("label must be")
    assert reason("no json here", strict=False) == "no JSON object in the output"


def test_lenient_mode_is_not_fooled_by_braces_inside_strings():
    rationale = "brace } inside { text"
    decision = parse_decision(f"prefix {text(rationale=rationale)} suffix", strict=False)
    assert decision.rationale == rationale


@pytest.mark.parametrize("changes, expected", [
    ({"label": "maybe"}, "label must be 'match' or 'no_match'"),
    ({"confidence": "high"}, "confidence must be a number"),
    ({"confidence": True}, "confidence must be a number"),
    ({"confidence": 1.5}, "confidence must be within [0, 1]"),
    ({"evidence": ["brand"]}, "evidence must be an object"),
    ({"evidence": {"price": "same"}}, "evidence names unknown attribute 'price'"),
    ({"evidence": {"brand": "yes"}}, "evidence.brand must be one of same/different/unknown"),
    ({"noise_ignored": "free shipping"}, "noise_ignored must be a list of strings"),
    ({"noise_ignored": [1]}, "noise_ignored must be a list of strings"),
    ({"rationale": 3}, "rationale must be a string"),
    ({"rationale": "x" * (MAX_RATIONALE_CHARS + 1)}, "rationale longer than"),
    ({"rationale": ...}, "missing keys: rationale"),
    ({"extra": 1}, "unknown keys: extra"),
])
def test_wrong_types_and_values_are_rejected_with_a_reason(changes, expected):
    assert reason(text(**changes)).startswith(expected)


@pytest.mark.parametrize("raw, expected", [
    ("", "empty output"),
    ("   ", "empty output"),
    ("[1, 2]", "text before the JSON object"),
    ('{"label": "match",}', "invalid JSON"),
])
def test_empty_and_non_object_output(raw, expected):
    assert reason(raw).startswith(expected)


def test_non_text_input_is_a_format_error():
    with pytest.raises(DecisionFormatError, match="expected text"):
        parse_decision(None)  # type: ignore[arg-type]


def test_error_keeps_the_offending_text():
    with pytest.raises(DecisionFormatError) as info:
        parse_decision("oops")
    assert info.value.text == "oops"


def test_from_dict_validates_like_the_parser():
    assert MatchDecision.from_dict(VALID).label == "no_match"
    with pytest.raises(DecisionFormatError):
        MatchDecision.from_dict({**VALID, "label": "same"})
