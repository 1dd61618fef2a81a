"""The rewriter's rewards, retrieval judge, cache rule and agentic teacher on hand-written cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from rewrite_tiny import GRADES, products, tiny_judge

from epm_spark.models.rewriter.cache import decide
from epm_spark.models.rewriter.prompt import clean_rewrite, format_score
from epm_spark.models.rewriter.retrieval import ndcg_of_ranking, recall_of_ranking
from epm_spark.models.rewriter.rewards import RetrievalGainReward, build_rewrite_rewards, drift, drift_reward, format_reward
from epm_spark.models.rewriter.settings import RewriterSettings, RewriteRewardSettings
from epm_spark.models.rewriter.teacher import AgenticRewriter, CatalogVocabulary, normalise_units


def test_ndcg_of_a_ranking_by_hand():
    grades = {"a": 3, "b": 2, "c": 1}
    ideal = 3 + 2 / math.log2(3) + 1 / 2
    assert ndcg_of_ranking(["a", "b", "c"], grades, 3) == pytest.approx(1.0)
    assert ndcg_of_ranking(["b", "x", "a"], grades, 3) == pytest.approx((2 + 3 / 2) / ideal)
    # A relevant listing never retrieved still counts in the ideal: the ranking cannot reach 1.
    assert ndcg_of_ranking(["a", "b"], grades, 3) == pytest.approx((3 + 2 / math.log2(3)) / ideal)
    assert math.isnan(ndcg_of_ranking(["a"], {"a": 0}, 3))
    assert recall_of_ranking(["a", "c", "x"], grades, 3, relevant_grade=2) == 0.5


def test_dropping_the_model_number_is_penalised():
    query = "sony pslx350h turntable"
    kept, dropped = "sony ps-lx350h belt drive turntable", "sony turntable"
    assert drift(query, kept).lost == () and drift(query, dropped).lost == ("model:PSLX350H",)
    assert drift_reward(None, [kept, dropped], query=[query, query]) == [0.0, -0.5]
    rewards = build_rewrite_rewards(RewriteRewardSettings(), tiny_judge())
    per_function = [f(None, [kept, dropped], query=[query, query]) for f in rewards.funcs]
    total = [sum(w * scores[i] for w, scores in zip(rewards.weights, per_function)) for i in range(2)]
    assert total[1] < total[0] - 0.4, per_function  # the drift term costs the dropped code w_drift * 1/2


def test_fixing_a_brand_typo_gains():
    query = "smasung ssd 1tb"
    judge = tiny_judge()
    fixed, worse = "samsung ssd 1tb", "crucial ssd 1tb"
    gain = RetrievalGainReward(judge)(None, [fixed, worse, query], query=[query] * 3)
    assert gain[0] > 0 > gain[1], gain  # the typo finds the Crucial SSD first; the brand finds both Samsungs
    assert gain[2] == 0.0
    assert drift(query, fixed).share == 0.0  # the typo was no brand to keep; the size is kept
    rewards = build_rewrite_rewards(RewriteRewardSettings(), judge)
    total = [sum(w * f(None, [c], query=[query])[0] for f, w in zip(rewards.funcs, rewards.weights))
             for c in (fixed, query)]
    assert total[0] > total[1]


def test_sizes_survive_a_change_of_unit_and_brands_must_stay():
    assert drift("samsung 1tb ssd", "samsung 1000gb ssd").lost == ()
    assert drift("samsung 1tb ssd", "samsung 2tb ssd").lost == ("size:1 TB",)
    assert drift("samsung 1tb", "lg 1tb").lost == ("brand:samsung",)
    assert drift("ssd", "anything").protected == ()


def test_format_and_length():
    q = "sony turntable"
    assert format_score("sony belt drive turntable", q) == 1.0
    assert format_score('Rewritten query: "Sony turntable".', q) == 0.5
    assert clean_rewrite('Rewritten query: "Sony turntable".') == "sony turntable"
    assert format_score("", q) == 0.0 and format_score("sony sony sony sony", q) == 0.0
    long = " ".join(f"w{i}" for i in range(18))
    assert 0.0 < format_score(long, q, RewriteRewardSettings(max_words=12, max_added_words=20)) < 1.0
    assert format_reward(None, ["sony turntable", ""], query=[q, q]) == [1.0, 0.0]
    assert clean_rewrite('dell 15.6"') == 'dell 15.6"'  # an inch mark is no quote


def test_cache_keeps_the_query_unless_the_rewrite_is_no_worse():
    frame = pd.DataFrame({
        "query": ["a b", "c d", "e f", "g h", "i j", "k l"],
        "candidate": ["a b c", "", "e f g", "g h x", "i j k", "k l"],
        "ndcg_original": [0.5, 0.5, 0.8, np.nan, 0.2, 0.3],
        "ndcg_rewrite": [0.7, 0.5, 0.6, np.nan, 0.9, 0.3],
        "drift": [0.0, 0.0, 0.0, 0.0, 0.5, 0.0], "format_score": [1.0, 0.0, 1.0, 1.0, 1.0, 1.0]})
    out = decide(frame, RewriterSettings())
    assert out["reason"].tolist() == [None, "empty", "worse", None, "drift", "unchanged"]
    assert out["rewrite"].tolist() == ["a b c", "c d", "e f", "g h x", "i j", "k l"]
    assert out["retrieval_gain"].iloc[0] == pytest.approx(0.2) and np.isnan(out["retrieval_gain"].iloc[3])
    strict = decide(frame, RewriterSettings(unjudged="keep_original", min_gain=0.25))
    assert strict["reason"].tolist()[:4] == ["worse", "empty", "worse", "unjudged"]


@pytest.fixture(scope="module")
def teacher():
    return AgenticRewriter(CatalogVocabulary.from_listings(products().to_dict("records")))


def test_agentic_teacher_fixes_spelling_units_brand_and_category(teacher):
    text, steps = teacher.rewrite_one("cheap smasung 870 evo 1 tb")
    assert text == "samsung 870 evo 1tb", steps
    assert any(s.startswith("spelling: smasung -> samsung") for s in steps)
    assert any(s.startswith("noise") for s in steps) and any(s.startswith("units") for s in steps)
    text, steps = teacher.rewrite_one("ps-lx350h")
    assert text.startswith("sony ps-lx350h") and "turntable" in text.split(), (text, steps)
    assert "brand: sony (from model number)" in steps
    # Deterministic, and every query of the table gets an answer.
    results = teacher.rewrite(list(GRADES))
    assert [r.rewrite for r in results] == [r.rewrite for r in teacher.rewrite(list(GRADES))]
    assert all(r.ok and r.teacher == "agentic" for r in results)
    assert normalise_units('macbook 13" 512 GB') == "macbook 13 inch 512gb"


def test_teacher_rewrites_gain_on_the_hand_written_queries(teacher):
    judge = tiny_judge()
    queries = list(GRADES)
    rewrites = [r.rewrite for r in teacher.rewrite(queries)]
    gains = judge.gain(rewrites, queries)
    assert (gains >= 0).all() and gains.sum() > 0, dict(zip(rewrites, gains))
