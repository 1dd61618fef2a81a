"""What the review page lists, as pure functions of warehouse frames (no I/O, no Flask).

* :func:`pairs_queue`: the pairs a person should decide, most useful first. Pending rationale
  rows come first: the teacher disagrees with the gold label, failed to decide, or the pair has
  no gold label (ordered in that sequence). Then the pairs of the last match run the matcher was
  least sure of: probability within ``margin`` of the run's decision threshold, nearest first.
  A pair that already has a rationale row in any other status (a person decided it, or the
  teacher agreed with gold) is not asked again.
* :func:`decision_threshold`: the threshold a match run decided at, read off its own rows (the
  table keeps probability and label, not the model's threshold).
* :func:`cluster_overview`: the largest and the least certain clusters of the last dedup run,
  with the accepted matches that joined each.
* :func:`price_gaps`: the largest undercuts of the last price-match run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from epm_spark.io.schemas import RATIONALES

__all__ = ["SIDES", "REASONS", "PAGE_BENCHMARK", "PAGE_SPLIT", "PAGE_TEACHER", "pair_key", "decision_threshold",
           "latest_runs", "pairs_queue", "labelled_index", "filed_under", "cluster_overview", "member_edges",
           "price_gaps"]

RATIONALE_KEY = list(RATIONALES.key)
SIDES = ["left_source", "left_id", "right_source", "right_id"]
# Why a pair is in the queue, in the order the queue serves them.
REASONS = {"disagrees": "teacher and gold label disagree", "failed": "the teacher gave no valid decision",
           "unlabelled": "no gold label", "uncertain": "the matcher is unsure"}
# The benchmark and split of a verdict on a nightly pair that no benchmark labels: the train split,
# so the next SFT run learns from it (it is in no benchmark's valid or test split).
PAGE_BENCHMARK, PAGE_SPLIT = "review", "train"
# Nightly pairs have no teacher decision yet; the page asks the offline rule teacher (milliseconds a
# pair, no endpoint), and a verdict writes that decision's row, as `teach` would.
PAGE_TEACHER = "agentic"


def pair_key(left_source: Any, left_id: Any, right_source: Any, right_id: Any) -> tuple[str, str, str, str]:
    """One key for a pair whichever listing is on the left: dedup blocking may store either order."""
    a, b = (str(left_source), str(left_id)), (str(right_source), str(right_id))
    return (*a, *b) if a <= b else (*b, *a)


def _keys(frame: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    return [pair_key(*row) for row in frame[SIDES].itertuples(index=False)]


def decision_threshold(probability: pd.Series, is_match: pd.Series) -> float:
    """The threshold that best reproduces a run's labels from its probabilities (ties: nearest 0.5).

    Explained decisions may overrule the probability, so the fit is the fewest disagreements, not
    a perfect split. No probabilities: 0.5.
    """
    p = probability.to_numpy(dtype=float)
    y = is_match.to_numpy(dtype=bool)
    keep = ~np.isnan(p)
    p, y = p[keep], y[keep]
    if len(p) == 0:
        return 0.5
    order = np.argsort(p, kind="stable")
    p, y = p[order], y[order]
    values = np.unique(p)
    # Candidate t = each distinct probability: label match iff p >= t; plus one above every value.
    cuts = np.append(values, np.nextafter(values[-1], np.inf))
    first = np.searchsorted(p, cuts, side="left")  # rows below t
    matches_below = np.concatenate([[0], np.cumsum(y)])[first]
    no_match_above = (len(y) - y.sum()) - (first - matches_below)
    errors = matches_below + no_match_above
    best = np.flatnonzero(errors == errors.min())
    # Between two neighbouring values any t separates equally; the midpoint is the honest guess.
    lower = np.where(first[best] > 0, p[np.maximum(first[best] - 1, 0)], 0.0)
    upper = np.where(best < len(values), cuts[best], 1.0)
    mids = (lower + np.minimum(upper, 1.0)) / 2
    return float(mids[np.argmin(np.abs(mids - 0.5))])


def latest_runs(frame: pd.DataFrame, by: list[str], time_column: str) -> pd.DataFrame:
    """Rows of the newest ``run_id`` (by ``time_column``) of each ``by`` group."""
    if frame.empty:
        return frame
    times = frame.groupby([*by, "run_id"], dropna=False)[time_column].max().reset_index()
    times = times.sort_values([*by, time_column, "run_id"]).groupby(by, dropna=False).tail(1)
    return frame.merge(times[[*by, "run_id"]], on=[*by, "run_id"])


def _matcher_view(matches: pd.DataFrame) -> pd.DataFrame:
    """One row per pair of the given match rows: probability, label, the run's threshold, distance."""
    if matches.empty:
        return pd.DataFrame(columns=[*SIDES, "pair", "probability", "matcher_label", "decided_by", "threshold",
                                     "distance", "match_run_id"])
    parts = []
    for _, run in matches.groupby(["run_id", "left_source", "right_source"], sort=True):
        scored = run[run["probability"].notna()]
        threshold = decision_threshold(scored["probability"], scored["label"] == "match")
        parts.append(run.assign(threshold=threshold))
    out = pd.concat(parts, ignore_index=True)
    out["distance"] = (out["probability"] - out["threshold"]).abs()
    out["pair"] = _keys(out)
    out = out.rename(columns={"label": "matcher_label", "run_id": "match_run_id"})
    # A within-catalog run may hold both orders of a pair: keep the less sure one.
    out = out.sort_values(["distance"], na_position="last", kind="stable").drop_duplicates("pair")
    return out[[*SIDES, "pair", "probability", "matcher_label", "decided_by", "threshold", "distance",
                "match_run_id"]]


def pairs_queue(rationales: pd.DataFrame | None, matches: pd.DataFrame | None, labelled: pd.DataFrame | None,
                *, margin: float) -> pd.DataFrame:
    """The pairs queue, ordered: one row per pair with its rationale key, ``reason`` and matcher columns.

    ``rationales``: the table (any statuses); ``matches``: rows of the last match run of each
    catalog pairing; ``labelled``: ``labelled_pairs`` (benchmark, split, sides, label), used to file a
    nightly pair under its benchmark and split when a benchmark labels it. ``exists`` says whether
    the pair already has its rationale row (otherwise the verdict creates it).
    """
    columns = [*RATIONALE_KEY, "reason", "exists", "gold", "probability", "matcher_label", "decided_by",
               "threshold", "distance", "match_run_id"]
    matcher = _matcher_view(matches if matches is not None else pd.DataFrame())
    by_pair = {m["pair"]: m for m in matcher.to_dict("records")}
    rows: list[dict[str, Any]] = []
    asked: set[tuple[str, str, str, str]] = set()
    if rationales is not None and not rationales.empty:
        asked = set(_keys(rationales))
        pending = rationales[rationales["review_status"] == "pending"]
        for r in pending.to_dict("records"):
            key = pair_key(*(r[c] for c in SIDES))
            if _blank(r["teacher_decision"]):
                reason = "failed"
            elif r["agrees_with_gold"] is False or r["agrees_with_gold"] is np.False_:
                reason = "disagrees"
            else:
                reason = "unlabelled"
            m = by_pair.get(key, {})
            rows.append({**{c: r[c] for c in RATIONALE_KEY}, "reason": reason, "exists": True,
                         "gold": _gold(r["label"]), **_matcher_fields(m)})
    labels = labelled_index(labelled)
    uncertain = matcher[matcher["distance"] <= margin + 1e-12]
    for m in uncertain.to_dict("records"):
        if m["pair"] in asked:
            continue
        asked.add(m["pair"])
        rows.append({**filed_under([m[c] for c in SIDES], labels), "reason": "uncertain", "exists": False,
                     **_matcher_fields(m)})
    queue = pd.DataFrame(rows, columns=columns)
    if queue.empty:
        return queue
    queue["_group"] = queue["reason"].map({r: i for i, r in enumerate(REASONS)})
    queue = queue.sort_values(["_group", "distance", *RATIONALE_KEY], na_position="last", kind="stable")
    return queue.drop(columns="_group").reset_index(drop=True)


def _matcher_fields(m: dict[str, Any]) -> dict[str, Any]:
    return {c: m.get(c) for c in ("probability", "matcher_label", "decided_by", "threshold", "distance",
                                  "match_run_id")}


def labelled_index(labelled: pd.DataFrame | None) -> dict[tuple, dict[str, Any]]:
    """``labelled_pairs`` rows by :func:`pair_key`, as the rationale fields a verdict on the pair gets."""
    if labelled is None or labelled.empty:
        return {}
    out: dict[tuple, dict[str, Any]] = {}
    # The first benchmark (by name) wins when several label the pair: a stable, visible rule.
    for r in labelled.sort_values(["benchmark", "split"]).to_dict("records"):
        out.setdefault(pair_key(*(r[c] for c in SIDES)),
                       {"benchmark": r["benchmark"], "split": r["split"], **{c: str(r[c]) for c in SIDES},
                        "teacher": PAGE_TEACHER, "gold": _gold(r["label"])})
    return out


def filed_under(sides: list[Any], labels: dict[tuple, dict[str, Any]]) -> dict[str, Any]:
    """The rationale key (and gold label) a verdict on a pair without a rationale row is written under:
    its benchmark's, in that benchmark's orientation, when a benchmark labels it (a verdict on a test
    pair stays in test, out of SFT); else the page's own benchmark, train split."""
    found = labels.get(pair_key(*sides))
    if found is not None:
        return dict(found)
    return {"benchmark": PAGE_BENCHMARK, "split": PAGE_SPLIT, **{c: str(v) for c, v in zip(SIDES, sides)},
            "teacher": PAGE_TEACHER, "gold": None}


def _gold(value: Any) -> str | None:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return "match" if int(value) == 1 else "no_match"


def _blank(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)) or value == ""


def cluster_overview(clusters: pd.DataFrame, matches: pd.DataFrame, *, per_kind: int) -> list[dict[str, Any]]:
    """The ``per_kind`` largest and ``per_kind`` least certain clusters (two listings or more).

    ``clusters``: the rows of one dedup run of one source; ``matches``: that run's match rows of the
    source against itself. A cluster's certainty is its weakest accepted match (a chain is only as
    sure as its weakest link); a cluster joined by no scored match is least certain of all.
    Each entry: cluster_id, source, run_id, size, flagged, weakest, kinds, members, edges.
    """
    multi = clusters[clusters["cluster_size"] >= 2]
    if multi.empty:
        return []
    accepted = matches[matches["label"] == "match"] if not matches.empty else matches
    member_of = dict(zip(multi["product_id"].astype(str), multi["cluster_id"]))
    edges: dict[str, list[dict[str, Any]]] = {}
    for e in accepted.to_dict("records"):
        a, b = member_of.get(str(e["left_id"])), member_of.get(str(e["right_id"]))
        if a is not None and a == b:
            edges.setdefault(a, []).append(e)
    summary = []
    for cid, members in multi.groupby("cluster_id", sort=True):
        probs = [e["probability"] for e in edges.get(cid, []) if not _blank(e["probability"])]
        summary.append({"cluster_id": cid, "size": int(members["cluster_size"].iloc[0]),
                        "flagged": bool(members["flagged"].fillna(False).any()),
                        "weakest": min(probs) if probs else None})
    largest = sorted(summary, key=lambda s: (-s["size"], s["cluster_id"]))[:per_kind]
    least = sorted(summary, key=lambda s: (s["weakest"] if s["weakest"] is not None else -1.0,
                                           s["cluster_id"]))[:per_kind]
    chosen: dict[str, dict[str, Any]] = {}
    for kind, picked in (("largest", largest), ("least certain", least)):
        for s in picked:
            chosen.setdefault(s["cluster_id"], {**s, "kinds": []})["kinds"].append(kind)
    out = []
    for cid, s in chosen.items():
        members = multi[multi["cluster_id"] == cid]
        out.append({**s, "source": members["source"].iloc[0], "run_id": members["run_id"].iloc[0],
                    "members": sorted(members["product_id"].astype(str)),
                    "edges": sorted(edges.get(cid, []), key=lambda e: (str(e["left_id"]), str(e["right_id"])))})
    # Flagged (oversized) clusters first, then the largest, then the least certain.
    return sorted(out, key=lambda c: (not c["flagged"], -c["size"], c["weakest"] if c["weakest"] is not None
                                      else -1.0, c["cluster_id"]))


def member_edges(cluster: dict[str, Any], product_id: str) -> list[dict[str, Any]]:
    """The accepted matches that joined ``product_id`` to the rest of its cluster."""
    return [e for e in cluster["edges"] if product_id in (str(e["left_id"]), str(e["right_id"]))]


def price_gaps(comparisons: pd.DataFrame, *, limit: int) -> pd.DataFrame:
    """The ``limit`` largest undercuts (most negative percent first), implausible ones included:
    a wrong match behind a scary gap is what a reviewer should see."""
    gaps = comparisons[comparisons["percent"].notna() & (comparisons["percent"] < 0)]
    return gaps.sort_values(["percent", "our_id", "competitor_source", "competitor_id"]).head(limit) \
        .reset_index(drop=True)
