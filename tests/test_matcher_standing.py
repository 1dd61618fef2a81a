"""A pair's standing among its listings' other candidates (models/matcher/cascade/standing.py)."""

import numpy as np
import pandas as pd
import pytest

from epm_spark.models.matcher.cascade.standing import (
    KNOWN_FEATURES, STANDING_FEATURES, SURE_LOGIT, known_features, known_partners, pair_tops, shared_shares,
    standing_features, standing_score, standing_transfers,
)


def _pairs(rows):
    return pd.DataFrame(rows, columns=["left_source", "left_id", "right_source", "right_id"])


def test_the_best_candidate_of_a_listing_leads_its_rivals_by_the_gap():
    # Listing a has three candidates; x and y one each, z two.
    pairs = _pairs([("L", "a", "R", "x"), ("L", "a", "R", "y"), ("L", "a", "R", "z"), ("L", "b", "R", "z")])
    score = np.array([3.0, 1.0, -2.0, 0.5])
    f = standing_features(score, pair_tops(pairs, score))
    assert list(f.columns) == list(STANDING_FEATURES)
    assert f["left_gap"].tolist() == [2.0, -2.0, -5.0, 0.0]
    assert f["left_best"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert f["left_alone"].tolist() == [0.0, 0.0, 0.0, 1.0]
    # z: (a, z) scores -2 against (b, z)'s 0.5
    assert f["right_gap"].tolist() == [0.0, 0.0, -2.5, 2.5]
    assert f["right_alone"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert f["right_best"].tolist() == [0.0, 0.0, 0.0, 1.0]


def test_tied_leaders_are_both_best_with_no_gap():
    pairs = _pairs([("L", "a", "R", "x"), ("L", "a", "R", "y")])
    score = np.array([1.5, 1.5])
    f = standing_features(score, pair_tops(pairs, score))
    assert f["left_best"].tolist() == [1.0, 1.0] and f["left_gap"].tolist() == [0.0, 0.0]


def test_a_listing_is_one_listing_on_either_side_and_ids_are_per_source():
    # De-duplication within one catalog: listing c is the right side of one pair and the left of another.
    pairs = _pairs([("S", "a", "S", "c"), ("S", "c", "S", "d"), ("T", "c", "S", "e")])
    score = np.array([2.0, -1.0, 0.0])
    f = standing_features(score, pair_tops(pairs, score))
    assert f["right_gap"][0] == 3.0 and f["left_gap"][1] == -3.0
    # (T, c) is another shop's listing with the same id: alone
    assert f["left_alone"][2] == 1.0


def test_sure_teacher_decisions_stand_at_the_clip():
    s = standing_score(np.array([0.001, 0.5, 0.999]), np.array([np.nan, 40.0, np.nan]), sure=0.01)
    assert s.tolist() == [-SURE_LOGIT, SURE_LOGIT, SURE_LOGIT]
    pairs = _pairs([("L", "a", "R", "x"), ("L", "a", "R", "y")])
    f = standing_features(np.array([SURE_LOGIT, -SURE_LOGIT]), pair_tops(pairs, np.array([SURE_LOGIT, -SURE_LOGIT])))
    assert f["left_gap"].tolist() == [SURE_LOGIT, -SURE_LOGIT]  # clipped, not 24


@pytest.mark.parametrize("n", [1, 7])
def test_tops_from_a_group_by_give_the_same_features(n):
    # A Spark job hands in per-side (candidates, top1, top2) from its own group-by; the features must match.
    rng = np.random.default_rng(n)
    pairs = _pairs([("L", f"l{rng.integers(3)}", "R", f"r{rng.integers(3)}") for _ in range(n)])
    score = rng.normal(size=n)
    tops = pair_tops(pairs, score)
    by_hand = {}
    for side in ("left", "right"):
        key = pairs[f"{side}_id"]
        rows = []
        for k in key:
            s = sorted((score[j] for j in range(n) if key[j] == k), reverse=True)
            rows.append((float(len(s)), s[0], s[1] if len(s) > 1 else np.nan))
        by_hand[side] = pd.DataFrame(rows, columns=["candidates", "top1", "top2"])
        pd.testing.assert_frame_equal(tops[side], by_hand[side], check_names=False)
    pd.testing.assert_frame_equal(standing_features(score, tops), standing_features(score, by_hand))


def test_shared_shares_count_pairs_whose_listing_has_rivals_and_guard_a_different_set():
    # a has two candidates, b and c one each; on the right z has two, x and w one each.
    pairs = _pairs([("L", "a", "R", "x"), ("L", "a", "R", "z"), ("L", "b", "R", "z"), ("L", "c", "R", "w")])
    shares = shared_shares(pair_tops(pairs, np.zeros(4)))
    assert shares == {"left": 0.5, "right": 0.5}
    assert standing_transfers({"left": 0.6, "right": 0.4}, shares, tolerance=0.1)
    # A valid split of lone pairs does not teach what a night of candidate sets looks like.
    assert not standing_transfers({"left": 0.15, "right": 0.5}, shares, tolerance=0.25)
    assert not standing_transfers({"left": 0.5, "right": 0.9}, shares, tolerance=0.25)


def test_a_known_match_besides_the_pair_is_a_rival_and_the_pair_itself_is_not():
    labelled = pd.DataFrame({"left_source": ["L", "L", "L"], "left_id": ["a", "b", "c"],
                             "right_source": ["R", "R", "R"], "right_id": ["x", "y", "z"], "label": [1, 1, 0]})
    partners = known_partners(labelled)
    # Non-matches teach nothing here: c and z have no known match.
    assert set(partners) == {"L\x1fa", "R\x1fx", "L\x1fb", "R\x1fy"}
    pairs = _pairs([("L", "a", "R", "x"),   # the known match itself
                    ("L", "a", "R", "y"),   # a is matched to x, y to b: both sides have a rival
                    ("L", "a", "R", "z"),   # only a has one
                    ("L", "c", "R", "z"),   # neither
                    ("T", "a", "R", "z")])  # another shop's listing a: ids are per source
    f = known_features(pairs, partners)
    assert list(f.columns) == list(KNOWN_FEATURES)
    assert f["left_known"].tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]
    assert f["right_known"].tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]
    assert known_features(pairs, {}).to_numpy().sum() == 0
