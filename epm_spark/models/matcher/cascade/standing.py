"""A pair's standing among the other candidates of its two listings.

Blocking gives each listing a handful of candidates, and a listing usually has one true match
among them (two catalogs that are each free of duplicates can match one-to-one at most).
Scored alone, a pair cannot know that a rival candidate of the same listing scores higher;
these features tell the combiner, which learns from the valid pairs how much that matters on
a catalog (a catalog with several offers per product learns a small weight). Per pair and
side (the left listing's candidates, then the right listing's):

* ``<side>_gap``: ``s - max s'`` over the listing's *other* candidates, clipped to [-12, 12],
  0 when it has none;
* ``<side>_alone``: the listing has no other candidate;
* ``<side>_best``: it has others, and this pair scores at least as high as all of them;

where ``s`` is the pair's *standing score*: the cross-encoder's logit, or +-12 where the
teacher tier was sure (its decision stands against every rival). A listing is identified by
(source, id) whichever side it is on, so a de-duplication run's listing counts the candidates
it appears in on either side.

Spark jobs compute each listing's count and two best scores with a group-by
(:func:`listing_tops` is the pandas equivalent) and pass them to :func:`standing_features`.

The weights learned on valid only carry over to a scored set that holds a listing's candidates
the way the valid pairs do: a valid split where 15% of pairs share their listing with another
pair teaches that ``alone`` is normal, and a night's blocking candidates, where nearly every
listing has several, then read as all suspicious. :func:`shared_shares` measures this, without
labels, on both sets, and :func:`standing_transfers` says whether they are alike. Likewise
weights learned on pairs of two catalogs (:func:`same_source` false) do not carry over to one
catalog against itself, where most listings have no duplicate at all, nor the other way round:
the cascade applies them to pairs of the kind valid held (a WDC Products file is one pool of
offers, so its valid pairs are of the second kind).

**Known matches.** Some rivals are not candidates of the scored set but matches already known:
the labelled matches of the train split the cascade learned from (a nightly pair a reviewer
accepted is filed there too, and counts from the next training on). Per pair and side:

* ``<side>_known``: the listing has a known match other than this pair's other listing.

A listing of two duplicate-free catalogs with a known match has no second one, so the combiner
learns from valid how much a known rival lowers the odds (a catalog with several offers per
product, a small weight; valid pairs that never touch a known match, none at all). They are
standing features, read only where the standing is.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["KNOWN_FEATURES", "STANDING_FEATURES", "SURE_LOGIT", "TOP_COLUMNS", "known_features", "known_partners",
           "listing_key", "listing_tops", "pair_tops", "same_source", "shared_shares", "standing_features",
           "standing_score", "standing_transfers"]

STANDING_FEATURES: tuple[str, ...] = ("left_gap", "right_gap", "left_alone", "right_alone", "left_best",
                                      "right_best")
KNOWN_FEATURES: tuple[str, ...] = ("left_known", "right_known")
SURE_LOGIT = 12.0
# The columns that carry one side's listing tops from a Spark job to the model: count, best, second best.
TOP_COLUMNS = ("candidates", "top1", "top2")


def standing_score(p_teacher: np.ndarray, ce_logit: np.ndarray, sure: float) -> np.ndarray:
    """The cross-encoder's logit, or +-:data:`SURE_LOGIT` where the teacher tier decided the pair."""
    p = np.asarray(p_teacher, dtype=float)
    by_teacher = (p < sure) | (p > 1 - sure)
    ce = np.clip(np.asarray(ce_logit, dtype=float), -SURE_LOGIT, SURE_LOGIT)
    return np.where(by_teacher, np.where(p >= 0.5, SURE_LOGIT, -SURE_LOGIT), ce)


def listing_key(pairs: pd.DataFrame, side: str) -> pd.Series:
    """One listing's identity, (source, id), as text; a frame without sources uses the side's name."""
    source = pairs[f"{side}_source"].astype(str) if f"{side}_source" in pairs else pd.Series(side, index=pairs.index)
    return source + "\x1f" + pairs[f"{side}_id"].astype(str)


def same_source(pairs: pd.DataFrame) -> np.ndarray:
    """Per pair, whether both listings come from one source (a catalog, or a pool of offers, against itself)."""
    if {"left_source", "right_source"} <= set(pairs.columns):
        return (pairs["left_source"].astype(str) == pairs["right_source"].astype(str)).to_numpy()
    return np.zeros(len(pairs), dtype=bool)


def listing_tops(keys: pd.Series, score: np.ndarray) -> pd.DataFrame:
    """Per listing key: how many candidates it has, and its best and second-best standing scores."""
    frame = pd.DataFrame({"key": keys.to_numpy(), "score": np.asarray(score, dtype=float)})
    frame = frame.sort_values(["key", "score"], ascending=[True, False], kind="stable")
    rank = frame.groupby("key", sort=False).cumcount()
    tops = frame.groupby("key", sort=False)["score"].agg(candidates="size", top1="max").astype(float)
    tops["top2"] = frame.loc[rank.to_numpy() == 1].set_index("key")["score"]
    return tops


def pair_tops(pairs: pd.DataFrame, score: np.ndarray) -> dict[str, pd.DataFrame]:
    """Each pair's left and right listing tops over the pairs of this frame (the whole candidate set)."""
    left, right = listing_key(pairs, "left"), listing_key(pairs, "right")
    tops = listing_tops(pd.concat([left, right], ignore_index=True), np.concatenate([score, score]))
    return {side: tops.reindex(keys.to_numpy()).reset_index(drop=True) for side, keys in (("left", left),
                                                                                          ("right", right))}


def standing_features(score: np.ndarray, tops: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """:data:`STANDING_FEATURES` from each pair's score and its two listings' tops (``candidates``,
    ``top1``, ``top2`` per side, as :func:`pair_tops` or a Spark group-by gives them)."""
    s = np.asarray(score, dtype=float)
    out = {}
    for side in ("left", "right"):
        t = tops[side]
        others = t["candidates"].to_numpy(dtype=float) - 1
        top1, top2 = t["top1"].to_numpy(dtype=float), t["top2"].to_numpy(dtype=float)
        has = others > 0
        # The best rival: the second best when this pair is the best, else the best.
        rival = np.where(s >= top1, top2, top1)
        out[f"{side}_gap"] = np.where(has, np.clip(s - np.nan_to_num(rival), -SURE_LOGIT, SURE_LOGIT), 0.0)
        out[f"{side}_alone"] = (~has).astype(float)
        out[f"{side}_best"] = (has & (s >= top1)).astype(float)
    return pd.DataFrame(out, columns=list(STANDING_FEATURES))


def shared_shares(tops: dict[str, pd.DataFrame]) -> dict[str, float]:
    """Per side, the share of pairs whose listing has another candidate in the set (from each pair's tops)."""
    return {side: float((t["candidates"].to_numpy(dtype=float) > 1).mean()) if len(t) else 0.0
            for side, t in tops.items()}


def standing_transfers(valid: dict[str, float], scored: dict[str, float], tolerance: float) -> bool:
    """Whether standing weights learned on ``valid`` apply to ``scored``: on each side the shares of
    pairs that share their listing differ by at most ``tolerance``."""
    return all(abs(valid[side] - scored[side]) <= tolerance for side in valid)


def known_partners(matches: pd.DataFrame) -> dict[str, list[str]]:
    """Listing key -> the keys of its known matches, from labelled pairs (rows with label 1 count)."""
    positive = matches[matches["label"].astype(int) == 1]
    left, right = listing_key(positive, "left").tolist(), listing_key(positive, "right").tolist()
    partners: dict[str, set[str]] = {}
    for a, b in zip(left + right, right + left):
        partners.setdefault(a, set()).add(b)
    return {k: sorted(v) for k, v in partners.items()}


def known_features(pairs: pd.DataFrame, partners: dict[str, list[str]]) -> pd.DataFrame:
    """:data:`KNOWN_FEATURES`: whether each side's listing has a known match besides the pair's other listing."""
    keys = {side: listing_key(pairs, side).tolist() for side in ("left", "right")}
    out = {}
    for side, other in (("left", "right"), ("right", "left")):
        out[f"{side}_known"] = np.array([float(any(q != o for q in partners.get(k, ())))
                                         for k, o in zip(keys[side], keys[other])])
    return pd.DataFrame(out, columns=list(KNOWN_FEATURES), index=pairs.index)
