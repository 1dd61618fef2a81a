"""Ranking quality per engagement signal on held-out queries, with paired bootstrap intervals.

For each held-out query, the listings it was shown (its impressions in the log) are
re-ranked by each system. A listing's gain for signal ``s`` is its observed rate, the
events of ``s`` per impression (the simulator's randomised result order makes that an
unbiased estimate of relevance). Per query and signal:

* ``ndcg@10 = DCG@10 / IDCG@10``, ``DCG@10 = sum_{r<=10} gain_r / log2(r + 1)``, the ideal
  order sorting by gain;
* ``mrr``: 1 / rank of the first listing with at least one event of ``s``.

A query with no event of a signal has no ideal ranking for it and is left out of that
signal's figures. Systems: BM25 (``bm25s``, Okapi BM25 with k1 = 1.5, b = 0.75, over the
catalog's listing texts), the zero-shot bi-encoder (cosine of query and listing vectors),
and each ranker (its head for the signal; a single-task model ranks by its one head).
The difference of two systems is the mean over queries of their per-query difference,
with a paired bootstrap 95% interval resampling queries (both systems scored on the same
resample; Efron & Tibshirani, 1993).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from epm_spark.errors import InputError
from epm_spark.models.search.settings import TASKS
from epm_spark.models.search.train import COUNT_COLUMNS

__all__ = ["ndcg_at_k", "reciprocal_rank", "per_query_metrics", "paired_bootstrap_mean", "bm25_scorer",
           "bi_encoder_similarity", "bi_encoder_scorer", "ranker_scorer", "evaluate_systems", "METRICS"]

log = logging.getLogger(__name__)

METRICS = ("ndcg@10", "mrr")
# A system maps (queries, listing texts, product ids) of the pairs to one score array per signal.
Scorer = Callable[[list[str], list[str], list[str]], dict[str, np.ndarray]]


def ndcg_at_k(scores: np.ndarray, gains: np.ndarray, k: int = 10) -> float:
    """NDCG@k with linear gains; ties in ``scores`` keep the given order (a stable sort)."""
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")[:k]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = float((np.asarray(gains, dtype=float)[order] * discounts[:len(order)]).sum())
    ideal = np.sort(np.asarray(gains, dtype=float))[::-1][:k]
    idcg = float((ideal * discounts[:len(ideal)]).sum())
    return dcg / idcg if idcg > 0 else float("nan")


def reciprocal_rank(scores: np.ndarray, relevant: np.ndarray) -> float:
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    hits = np.flatnonzero(np.asarray(relevant, dtype=bool)[order])
    return 1.0 / (hits[0] + 1) if len(hits) else float("nan")


def per_query_metrics(pairs: pd.DataFrame, scores: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """signal -> metric -> one value per query of ``pairs`` (NaN where the query has no event of the signal)."""
    groups = list(pairs.groupby("query", sort=True).indices.values())
    out: dict[str, dict[str, np.ndarray]] = {}
    for signal in TASKS:
        count = pairs[COUNT_COLUMNS[signal]].to_numpy(dtype=float)
        rate = count / pairs["impressions"].to_numpy(dtype=float)
        s = scores[signal]
        out[signal] = {
            "ndcg@10": np.array([ndcg_at_k(s[ix], rate[ix], 10) for ix in groups]),
            "mrr": np.array([reciprocal_rank(s[ix], count[ix] > 0) for ix in groups]),
        }
    return out


def paired_bootstrap_mean(a: np.ndarray, b: np.ndarray, *, resamples: int = 2000, seed: int = 0) -> dict[str, float]:
    """mean(a - b) over the queries both define, with a paired bootstrap 95% interval (resampling queries)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise InputError("paired bootstrap needs the two systems' values on the same queries")
    keep = ~(np.isnan(a) | np.isnan(b))
    d = a[keep] - b[keep]
    if d.size == 0:
        return {"difference": float("nan"), "ci95_low": float("nan"), "ci95_high": float("nan"), "queries": 0,
                "resamples": resamples}
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"difference": float(d.mean()), "ci95_low": float(lo), "ci95_high": float(hi), "queries": int(d.size),
            "resamples": int(resamples)}


def bm25_scorer(catalog_texts: Sequence[str], catalog_ids: Sequence[str]) -> Scorer:
    """Okapi BM25 (``bm25s``), statistics over the whole catalog; one score for every signal."""
    import bm25s

    retriever = bm25s.BM25(k1=1.5, b=0.75)
    retriever.index(bm25s.tokenize(list(catalog_texts), stopwords="en", show_progress=False), show_progress=False)
    position = {pid: i for i, pid in enumerate(catalog_ids)}

    def score(queries: list[str], texts: list[str], ids: list[str]) -> dict[str, np.ndarray]:
        out = np.zeros(len(queries))
        cache: dict[str, np.ndarray] = {}
        for i, (q, pid) in enumerate(zip(queries, ids)):
            if q not in cache:
                tokens = bm25s.tokenize([q], stopwords="en", return_ids=False, show_progress=False)[0]
                cache[q] = retriever.get_scores(tokens) if tokens else np.zeros(len(position))
            out[i] = cache[q][position[pid]]
        return {s: out for s in TASKS}

    return score


Similarity = Callable[[Sequence[str], Sequence[str]], np.ndarray]


def bi_encoder_similarity(encoder, listing_texts: dict[str, str]) -> Similarity:
    """(queries, product ids) -> cosine of the dual-encoder's query and listing vectors, each text encoded once.

    ``listing_texts``: product id -> the listing as the encoder renders it (its own text options).
    The same number the ``rank`` job reads from the FAISS search, and the ranker's similarity feature."""

    def similarity(queries: Sequence[str], ids: Sequence[str]) -> np.ndarray:
        unique_q = sorted(set(queries))
        qv = dict(zip(unique_q, encoder.encode(unique_q, show_progress=False, query=True)))
        unique_p = sorted(set(ids))
        pv = dict(zip(unique_p, encoder.encode([listing_texts[p] for p in unique_p], show_progress=False)))
        return np.array([float(qv[q] @ pv[p]) for q, p in zip(queries, ids)], dtype=np.float32)

    return similarity


def bi_encoder_scorer(similarity: Similarity) -> Scorer:
    """The zero-shot bi-encoder: its cosine for every signal (no engagement seen)."""

    def score(queries: list[str], texts: list[str], ids: list[str]) -> dict[str, np.ndarray]:
        out = similarity(queries, ids)
        return {s: out for s in TASKS}

    return score


def ranker_scorer(model, batch_size: int = 64, similarity: Similarity | None = None) -> Scorer:
    """A ranker's head per signal; a model without that head ranks by its blended score.

    ``similarity``: the retrieval cosine, for a ranker whose heads read it."""

    def score(queries: list[str], texts: list[str], ids: list[str]) -> dict[str, np.ndarray]:
        sims = similarity(queries, ids) if model.reads_similarity and similarity is not None else None
        frame = model.score(queries, texts, sims, batch_size=batch_size)
        return {s: (frame[f"p_{s}"] if frame[f"p_{s}"].notna().all() else frame["score"]).to_numpy(dtype=float)
                for s in TASKS}

    return score


def evaluate_systems(pairs: pd.DataFrame, systems: dict[str, Scorer], reference: str, *,
                     resamples: int = 2000) -> dict:
    """Every system's mean metrics per signal, and ``reference`` minus each other system with intervals."""
    if pairs.empty:
        raise InputError("no held-out (query, listing) pairs to evaluate")
    if reference not in systems:
        raise InputError(f"reference system {reference!r} is not among {sorted(systems)}")
    pairs = pairs.sort_values(["query", "product_id"]).reset_index(drop=True)
    queries, texts, ids = pairs["query"].tolist(), pairs["text"].tolist(), pairs["product_id"].tolist()
    per_query, seconds = {}, {}
    for name, scorer in systems.items():
        start = time.monotonic()
        per_query[name] = per_query_metrics(pairs, scorer(queries, texts, ids))
        seconds[name] = round(time.monotonic() - start, 1)
        log.info("evaluate ranking: scored %s in %.1f s", name, seconds[name])
    ref = per_query[reference]
    report = {
        "pairs": len(pairs), "queries": int(pairs["query"].nunique()),
        "queries_with_events": {s: int((~np.isnan(ref[s]["ndcg@10"])).sum()) for s in TASKS},
        "systems": {name: {s: {m: float(np.nanmean(v[s][m])) for m in METRICS} for s in TASKS}
                    for name, v in per_query.items()},
        "reference": reference,
        "differences": {name: {s: {m: paired_bootstrap_mean(ref[s][m], v[s][m], resamples=resamples) for m in METRICS}
                               for s in TASKS}
                        for name, v in per_query.items() if name != reference},
        "seconds": seconds,
    }
    return report
