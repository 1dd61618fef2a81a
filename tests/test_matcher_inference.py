"""Label and explain modes, threshold tuning, model folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_student import TOY_PAIRS, listing, pair_rows, tiny_student  # noqa: F401

from epm_spark.errors import InputError
from epm_spark.models.matcher.decision import MatchDecision
from epm_spark.models.matcher.evaluation import MatchingEvaluator, matching_metrics, stratified_sample, tune_threshold
from epm_spark.models.matcher.student.inference import Matcher
from epm_spark.models.matcher.model_folder import MatcherCard, read_card, write_card
from epm_spark.models.versions import next_version
from epm_spark.models.matcher.settings import InferenceSettings

VALID = MatchDecision("match", 0.9, {"brand": "same"}, (), "Same.").to_json()


@pytest.fixture
def matcher(tiny_student):
    return Matcher.load(str(tiny_student), InferenceSettings(batch_size=3, explain_batch_size=2, max_new_tokens=16))


def _manual_probability(matcher, prompt: str) -> tuple[float, float]:
    ids, t_match, t_no = matcher.labels.split(prompt)
    with torch.no_grad():
        logp = matcher.model(torch.tensor([ids], device=matcher.device)).logits[0, -1].float().log_softmax(-1)
    return torch.sigmoid(logp[t_match] - logp[t_no]).item(), (logp[t_match].exp() + logp[t_no].exp()).item()


def test_label_mode_matches_a_manual_forward_pass(matcher):
    # Different title lengths force left padding inside a batch and a shared system prefix.
    pairs = pair_rows(TOY_PAIRS + [(listing("x"), listing("Samsung 870 EVO 1TB SATA SSD " * 3), 0)])
    prompts = matcher.prompter.render_frame(pairs)
    probs, mass = matcher.label_probabilities(prompts)
    for i, prompt in enumerate(prompts):
        p, m = _manual_probability(matcher, prompt)
        assert probs[i] == pytest.approx(p, abs=1e-5)
        assert mass[i] == pytest.approx(m, rel=1e-4)
    assert np.all((probs > 0) & (probs < 1))
    assert np.all((mass > 0) & (mass <= 1)), "two token probabilities cannot sum above 1"
    assert len(set(np.round(probs, 6))) > 1, "different pairs must get different probabilities"


def test_label_mode_without_a_shared_prefix_gives_the_same_answer(matcher):
    pairs = pair_rows(TOY_PAIRS)
    cached = matcher.predict_proba(pairs)
    matcher.MIN_PREFIX = 10**9  # no prefix cache
    # Half precision (the default on a GPU) sums the prefix and the rest in another order.
    atol = 1e-5 if next(matcher.model.parameters()).dtype == torch.float32 else 5e-3
    assert np.allclose(matcher.predict_proba(pairs), cached, atol=atol)


def test_predict_labels_applies_the_threshold(matcher):
    pairs = pair_rows(TOY_PAIRS)
    probs = matcher.predict_proba(pairs)
    middle = float(np.sort(probs)[1] + np.sort(probs)[2]) / 2
    labels = matcher.predict_labels(pairs, threshold=middle)
    assert labels.dtype == np.int8 and labels.sum() == 2
    assert np.array_equal(labels, (probs >= middle).astype(np.int8))


def test_explain_parses_valid_output_and_records_failures_after_one_retry(matcher, monkeypatch):
    calls = []
    answers = iter([
        # first attempt: valid, chatty, cut off at the budget
        ([VALID, "Sure! " + VALID, '{"label": "match", "confid'], [12, 14, 16]),
        # retry of the cut-off one with twice the budget: still cut off
        (['{"label": "match", "confidence": 0.9, '], [32]),
        # sampled retry of the chatty one: now valid
        ([VALID], [21]),
    ])

    def fake_generate(prompts, *, max_new_tokens, sample=False, show_progress=False):
        calls.append((len(prompts), max_new_tokens, sample))
        return next(answers)

    monkeypatch.setattr(matcher, "generate", fake_generate)
    results = matcher.explain(pair_rows(TOY_PAIRS[:3]))
    assert calls == [(3, 16, False), (1, 32, False), (1, 16, True)]
    ok, chatty, cut = results
    assert ok.format_valid and ok.label == "match" and ok.decision.evidence == {"brand": "same"}
    assert ok.attempts == 1 and ok.tokens_generated == 12
    assert chatty.format_valid and chatty.attempts == 2 and chatty.tokens_generated == 14 + 21
    assert not cut.format_valid and cut.label is None and cut.decision is None
    assert cut.failure == "truncated JSON" and cut.tokens_generated == 16 + 32
    assert all(0 < r.probability < 1 for r in results)


def test_explain_with_a_random_model_reports_format_failures(matcher):
    results = matcher.explain(pair_rows(TOY_PAIRS[:2]))
    for r in results:
        assert r.attempts == 2 and not r.format_valid and r.failure
        assert 0 < r.tokens_generated <= 16 + 32


def test_threshold_tuning_maximises_f1():
    probs = np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.2])
    gold = np.array([1, 1, 0, 1, 0, 0])
    threshold, f1 = tune_threshold(probs, gold)
    assert 0.3 < threshold < 0.6
    assert f1 == pytest.approx(matching_metrics(probs >= threshold, gold)["f1"]) == pytest.approx(6 / 7)
    # ties stay on one side of the threshold
    threshold, _ = tune_threshold(np.array([0.5, 0.5, 0.5, 0.1]), np.array([1, 0, 1, 0]))
    assert 0.1 < threshold < 0.5
    with pytest.raises(InputError, match="positive"):
        tune_threshold(probs, np.zeros(6))


def test_matching_metrics_count_errors():
    m = matching_metrics(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (1, 1, 1, 1)
    assert m["precision"] == m["recall"] == m["f1"] == 0.5
    with pytest.raises(InputError):
        matching_metrics(np.array([1]), np.array([1, 0]))


def test_stratified_sample_keeps_label_shares():
    import pandas as pd

    frame = pd.DataFrame({"label": [1] * 20 + [0] * 80, "i": range(100)})
    sample = stratified_sample(frame, 10)
    assert len(sample) == 10 and sample["label"].sum() == 2
    assert len(stratified_sample(frame, None)) == 100
    assert len(stratified_sample(frame, 7)) == 7 and stratified_sample(frame, 7)["label"].sum() == 1


def test_evaluator_reports_quality_and_speed(matcher):
    pairs = pair_rows(TOY_PAIRS)
    report = MatchingEvaluator(pairs, mode="label", threshold=0.0, name="toy")(matcher)
    assert report["recall"] == 1.0 and report["precision"] == 0.5 and report["pairs"] == 4
    assert report["pairs_per_s"] > 0 and report["format_valid_rate"] == 1.0
    explained = MatchingEvaluator(pairs[:2], mode="explain", threshold=0.5)(matcher)
    assert explained["format_valid_rate"] == 0.0 and explained["tp"] == 0
    assert explained["tokens_generated_per_pair"] > 0


def test_card_round_trip_and_versions(tmp_path):
    card = MatcherCard(stage="sft", base="packaged:smollm2", adapters=["adapters/0-sft"],
                       thresholds={"default": 0.4, "abt_buy": 0.7})
    write_card(tmp_path, card)
    back = read_card(tmp_path)
    assert back == card
    assert back.threshold("abt_buy") == 0.7 and back.threshold("other") == 0.4
    assert next_version(tmp_path / "models", "sft").name == "sft-v1"
    assert next_version(tmp_path / "models", "sft").name == "sft-v2"
    assert next_version(tmp_path / "models", "rl").name == "rl-v1"
    (tmp_path / "matcher.json").write_text(json.dumps({"format": 1, "stage": "sft", "base": "x", "extra": 1}))
    with pytest.raises(InputError, match="unknown card keys"):
        read_card(tmp_path)
    with pytest.raises(InputError, match="not a matcher model folder"):
        read_card(tmp_path / "models")
