"""The offline agentic teacher on hand-written hard pairs, and teacher agreement with gold."""

from __future__ import annotations

import pandas as pd
import pytest
from matcher_pairs import HARD_PAIRS, hard_pair_frame

from epm_spark.errors import ConfigError, InputError
from epm_spark.models.matcher.decision import MATCH, NO_MATCH, parse_decision
from epm_spark.models.matcher.supervision.judges import rationale_claims
from epm_spark.models.matcher.pairs import gold_label, join_listings, listing, listing_json, parse_listing
from epm_spark.models.matcher.supervision.teacher import (
    AgenticTeacher, DecisionRules, Teacher, TeacherResult, agreement, build_teacher,
)


@pytest.fixture(scope="module")
def decided():
    frame = hard_pair_frame()
    return frame, AgenticTeacher().decide(frame)


def by_name(decided, name):
    frame, results = decided
    return results[frame.index[frame["name"] == name][0]]


def test_agentic_teacher_is_a_teacher_and_answers_every_pair_in_order(decided):
    frame, results = decided
    assert isinstance(AgenticTeacher(), Teacher)
    assert len(results) == len(frame)
    assert all(r.ok and r.teacher == "agentic" and r.failure is None for r in results)
    # The raw answer is exactly the JSON a student is trained to produce, and it parses strictly.
    assert all(parse_decision(r.raw) == r.decision for r in results)


@pytest.mark.parametrize("name, label", [(n, MATCH if y else NO_MATCH) for n, _, _, y in HARD_PAIRS])
def test_agentic_teacher_labels_hard_pairs(decided, name, label):
    assert by_name(decided, name).label == label


def test_capacity_difference_is_the_stated_reason(decided):
    decision = by_name(decided, "capacity_1tb_vs_2tb").decision
    assert decision.verdict("capacity") == "different"
    assert "Different capacity (1 TB vs 2 TB)" in decision.rationale
    assert decision.rationale.endswith("Not the same product.")


def test_equal_capacity_in_other_units_is_explained(decided):
    decision = by_name(decided, "capacity_1tb_vs_1000gb").decision
    assert decision.verdict("capacity") == "same"
    assert "1 TB = 1000 GB" in decision.rationale


def test_seller_noise_is_reported_not_used(decided):
    promo = by_name(decided, "promo_noise").decision
    assert {"FREE SHIPPING", "Best Price", "TechDeals Shop"} <= set(promo.noise_ignored)
    assert "shipping" not in promo.rationale.lower()
    bundle = by_name(decided, "bundle_text").decision
    assert "+ Case with Charger" in bundle.noise_ignored and bundle.verdict("colour") == "same"


def test_near_miss_and_variants_are_named(decided):
    near = by_name(decided, "model_near_miss").decision
    assert "DSC-W120 vs DSC-W150, a near miss" in near.rationale
    assert by_name(decided, "colour_variant").decision.verdict("colour") == "different"
    assert by_name(decided, "multipack").decision.verdict("quantity") == "different"


def test_rationale_claims_match_evidence(decided):
    """Every claim the rationale makes in words agrees with the evidence field."""
    _, results = decided
    for r in results:
        for claim in rationale_claims(r.decision.rationale):
            assert r.decision.verdict(claim.attribute) == claim.verdict, (r.decision.rationale, claim)


def test_confidence_grows_with_evidence(decided):
    strong = by_name(decided, "wdc_quoting").decision
    weak = by_name(decided, "multipack").decision
    assert 0.5 < weak.confidence < strong.confidence <= 1.0


def test_trace_shows_each_step():
    teacher = AgenticTeacher()
    _, left, right, _ = HARD_PAIRS[0]
    trace = teacher.trace(left, right)
    assert teacher.steps == ("strip_noise", "extract_attributes", "compare", "decide")
    assert "FREE SHIPPING" in trace.noise[0]
    assert trace.left.brand == "samsung"
    assert trace.score == pytest.approx(sum(trace.contributions.values()) + teacher.rules.bias)
    assert trace.decision.label == MATCH


def test_decision_rules_change_the_decision():
    frame = hard_pair_frame()
    eager = AgenticTeacher(DecisionRules(bias=10.0)).decide(frame)
    assert all(r.label == MATCH for r in eager)


def test_teacher_reads_listings_from_a_joined_pair_frame():
    products = pd.DataFrame([
        {"product_id": "1", "source": "ours", "title": "Samsung 870 EVO 1TB", "brand": None, "attributes": {}},
        {"product_id": "2", "source": "theirs", "title": "Samsung 870 EVO 2TB", "brand": "Samsung",
         "attributes": [("colour", "black")]},
    ])
    pairs = pd.DataFrame([{"left_id": "1", "right_id": "2", "left_source": "ours", "right_source": "theirs",
                           "label": 0}])
    frame = join_listings(pairs, products)
    assert frame.loc[0, "right_brand"] == "Samsung"
    assert listing(frame.iloc[0], "right")["attributes"] == {"colour": "black"}
    [result] = AgenticTeacher().decide(frame)
    assert result.label == NO_MATCH


def test_join_listings_names_a_missing_listing():
    products = pd.DataFrame([{"product_id": "1", "source": "ours", "title": "x"}])
    pairs = pd.DataFrame([{"left_id": "1", "right_id": "9", "left_source": "ours", "right_source": "ours"}])
    with pytest.raises(InputError, match="right listing .* id '9'"):
        join_listings(pairs, products)


def test_listing_json_round_trip():
    item = {"product_id": "1", "source": "s", "title": "t", "brand": None, "price": float("nan"),
            "attributes": {"colour": "red"}}
    back = parse_listing(listing_json(item))
    assert back == {"product_id": "1", "source": "s", "title": "t", "attributes": {"colour": "red"}}
    assert parse_listing("plain title") == {"title": "plain title"}


@pytest.mark.parametrize("value, label", [(1, MATCH), (0, NO_MATCH), (True, MATCH), ("match", MATCH),
                                          ("no_match", NO_MATCH), ("0", NO_MATCH), (None, None)])
def test_gold_label_forms(value, label):
    assert gold_label(value) == label


def test_gold_label_rejects_other_values():
    with pytest.raises(ValueError, match="not match/no_match/1/0"):
        gold_label(2)


def test_agreement_counts_and_review():
    results = [TeacherResult("t", parse_decision(
        '{"label": "%s", "confidence": 1, "evidence": {}, "noise_ignored": [], "rationale": ""}' % lab))
        for lab in ("match", "match", "no_match", "no_match")]
    results.append(TeacherResult("t", None, failure="format: truncated JSON"))
    agree = agreement(results, [1, 0, 1, 0, 1])
    assert (agree.tp, agree.fp, agree.fn, agree.tn, agree.failures) == (1, 1, 1, 1, 1)
    assert agree.to_review == 3  # two disagreements and one failure
    assert agree.precision == 0.5 and agree.recall == 0.5 and agree.f1 == 0.5


def test_build_teacher():
    assert isinstance(build_teacher("agentic"), AgenticTeacher)
    with pytest.raises(ConfigError, match="unknown teacher"):
        build_teacher("oracle")
