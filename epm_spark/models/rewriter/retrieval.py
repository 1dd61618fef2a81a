"""The retrieval judge: how well a text, typed as the query, finds the query's graded listings.

A text is embedded by the dual-encoder (as a query), its ``k`` nearest listings come from the
catalog's vector index (:class:`~epm_spark.models.index.VectorIndex`, the blocker's), and the
ranking is scored against the graded listings of the *original* query
(:mod:`epm_spark.models.search.queries`: 3 exact, 2 substitute, 1 complement, 0 irrelevant;
unjudged listings count 0)::

    NDCG@k   = DCG@k / IDCG@k,   DCG@k = sum_{r<=k} grade_r / log2(r + 1)
    recall@k = |relevant in the top k| / |relevant|,  relevant: grade >= relevant_grade

IDCG sorts every judged grade of the query, retrieved or not, so a text that misses a relevant
listing cannot score 1. The retrieval gain of a rewrite is ``NDCG@k(rewrite) - NDCG@k(query)``.
A query without a judged listing of grade > 0 has no ideal ranking: its figures are NaN.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from epm_spark.errors import InputError
from epm_spark.models.rewriter.prompt import normalise_query
from epm_spark.models.search.evaluation import ndcg_at_k

__all__ = ["ndcg_of_ranking", "recall_of_ranking", "grades_by_query", "RetrievalJudge", "context_title",
           "query_model_numbers", "listing_model_numbers", "ModelNumberIndex", "ListingContext"]

log = logging.getLogger(__name__)


def ndcg_of_ranking(retrieved: Sequence[str], grades: Mapping[str, int], k: int = 10) -> float:
    """NDCG@k of a ranked list of product ids against the query's graded listings."""
    top = list(retrieved)[:k]
    top += [None] * (k - len(top))  # fewer listings than k: empty places gain nothing
    missing = [g for pid, g in grades.items() if pid not in set(top)]
    scores = np.r_[np.arange(k, 0, -1, dtype=float), np.full(len(missing), -1.0)]
    gains = np.r_[[float(grades.get(pid, 0)) if pid is not None else 0.0 for pid in top], np.asarray(missing, float)]
    return ndcg_at_k(scores, gains, k)


def recall_of_ranking(retrieved: Sequence[str], grades: Mapping[str, int], k: int = 10,
                      relevant_grade: int = 2) -> float:
    relevant = {pid for pid, g in grades.items() if g >= relevant_grade}
    if not relevant:
        return float("nan")
    return len(relevant & set(list(retrieved)[:k])) / len(relevant)


def grades_by_query(judgments: pd.DataFrame) -> dict[str, dict[str, int]]:
    """``query -> {product_id: grade}`` from ``query, product_id, grade`` rows (queries normalised)."""
    missing = {"query", "product_id", "grade"} - set(judgments.columns)
    if missing:
        raise InputError(f"graded listings lack columns {sorted(missing)}")
    out: dict[str, dict[str, int]] = {}
    for q, pid, g in zip(judgments["query"], judgments["product_id"].astype(str), judgments["grade"]):
        out.setdefault(normalise_query(q, 10_000), {})[pid] = int(g)
    return out


class RetrievalJudge:
    """Scores texts by the retrieval of their query's graded listings through the dual-encoder index.

    ``encoder``: anything with ``encode(texts, batch_size, query=True, show_progress=False)``
    returning unit vectors (a :class:`~epm_spark.models.encoder.model.DualEncoder`);
    ``index``: a :class:`~epm_spark.models.index.VectorIndex` over the catalog's listing vectors.
    Rankings are cached per text: GRPO samples repeat themselves.
    """

    def __init__(self, encoder, index, grades: Mapping[str, Mapping[str, int]], *, k: int = 10,
                 relevant_grade: int = 2, batch_size: int = 64):
        self.encoder, self.index, self.k = encoder, index, k
        self.grades = {normalise_query(q, 10_000): dict(g) for q, g in grades.items()}
        self.relevant_grade, self.batch_size = relevant_grade, batch_size
        self._cache: dict[str, list[str]] = {}

    @classmethod
    def build(cls, encoder, listing_ids: Sequence[str], vectors: np.ndarray, judgments: pd.DataFrame, *,
              index_settings=None, **kwargs) -> RetrievalJudge:
        from epm_spark.models.index import VectorIndex

        index = VectorIndex.build(np.asarray(vectors, dtype=np.float32), np.asarray(listing_ids, dtype=object),
                                  settings=index_settings)
        return cls(encoder, index, grades_by_query(judgments), **kwargs)

    def judged(self, query: str) -> bool:
        return any(g > 0 for g in self.grades.get(normalise_query(query, 10_000), {}).values())

    def retrieve(self, texts: Sequence[str]) -> list[list[str]]:
        """The ``k`` nearest listing ids of each text, nearest first."""
        todo = sorted({t for t in texts if t not in self._cache})
        if todo:
            vectors = self.encoder.encode(todo, self.batch_size, query=True, show_progress=False)
            _, positions = self.index.search(np.asarray(vectors, dtype=np.float32), self.k)
            for text, row in zip(todo, positions):
                self._cache[text] = [str(self.index.ids[p]) for p in row if p >= 0]
        return [self._cache[t] for t in texts]

    def _grades(self, query: str) -> dict[str, int]:
        return self.grades.get(normalise_query(query, 10_000), {})

    def ndcg(self, texts: Sequence[str], queries: Sequence[str]) -> np.ndarray:
        """NDCG@k of each text against the graded listings of the query at the same position."""
        if len(texts) != len(queries):
            raise InputError(f"{len(texts)} texts for {len(queries)} queries")
        rankings = self.retrieve([t if t.strip() else q for t, q in zip(texts, queries)])
        return np.array([ndcg_of_ranking(r, self._grades(q), self.k) if self.judged(q) else np.nan
                         for r, q in zip(rankings, queries)], dtype=float)

    def recall(self, texts: Sequence[str], queries: Sequence[str]) -> np.ndarray:
        rankings = self.retrieve([t if t.strip() else q for t, q in zip(texts, queries)])
        return np.array([recall_of_ranking(r, self._grades(q), self.k, self.relevant_grade)
                         for r, q in zip(rankings, queries)], dtype=float)

    def gain(self, rewrites: Sequence[str], queries: Sequence[str]) -> np.ndarray:
        """NDCG@k(rewrite) - NDCG@k(query); NaN for queries without graded listings."""
        return self.ndcg(rewrites, queries) - self.ndcg(list(queries), queries)


def context_title(listing: Mapping[str, object]) -> str:
    """A listing as the rewriter's prompt shows it: brand (when the title lacks it) and the title without
    seller noise, lower case."""
    from epm_spark.models.attributes import extract

    attrs = extract(listing)
    title = (attrs.clean_title or attrs.title).lower()
    brand = (attrs.brand or "").lower()
    return f"{brand} {title}" if brand and brand not in title else title


def query_model_numbers(query: str) -> tuple[str, ...]:
    """The model numbers a query names, normalised (``ps-lx350h`` and ``PSLX350H`` -> ``PSLX350H``), in the
    order typed."""
    from epm_spark.models.attributes import extract

    return extract(normalise_query(query, 10_000)).model_numbers


def listing_model_numbers(listing: Mapping[str, object]) -> tuple[str, ...]:
    """The model numbers of a ``products`` row, normalised as :func:`query_model_numbers`'s."""
    from epm_spark.models.attributes import extract

    return extract(listing).model_numbers


# Listings kept per model number: a code carried by more is a product family, not one product.
LISTINGS_PER_CODE = 8


class ModelNumberIndex:
    """Model number -> the catalog's listings carrying it (at most ``per_code``, lowest product id first).

    The dual-encoder reads a bare code such as ``010-00715-30`` as noise and its nearest listings
    rarely carry it; an exact lookup finds the listing whose brand and product words the rewrite needs.
    """

    def __init__(self, by_code: Mapping[str, Sequence[str]]):
        self.by_code = {c: list(ids) for c, ids in by_code.items()}

    @classmethod
    def from_listings(cls, listings: pd.DataFrame, per_code: int = LISTINGS_PER_CODE) -> ModelNumberIndex:
        by_code: dict[str, list[str]] = {}
        for row in listings.to_dict("records"):
            for code in listing_model_numbers(row):
                by_code.setdefault(code, []).append(str(row["product_id"]))
        return cls({c: sorted(set(ids))[:per_code] for c, ids in by_code.items()})

    def lookup(self, query: str) -> list[str]:
        """Listings carrying the query's model numbers: the first code's, then the next code's."""
        out: list[str] = []
        for code in query_model_numbers(query):
            out += [p for p in self.by_code.get(code, ()) if p not in out]
        return out


class ListingContext:
    """Queries -> the titles of the listings the prompt's ``catalog:`` line shows: up to ``codes``
    listings carrying a model number the query names, then its nearest listings, ``n`` in all.

    ``retriever``: anything with ``retrieve(texts) -> [[product id, ...], ...]`` (a
    :class:`RetrievalJudge`); ``listings``: product id -> its ``products`` row, made a
    :func:`context_title` when first shown (a catalog of millions is not read in full);
    ``index``: the catalog's :class:`ModelNumberIndex` (needed when ``codes`` > 0).
    """

    def __init__(self, retriever, listings: Mapping[str, Mapping[str, object]], n: int, *, codes: int = 0,
                 index: ModelNumberIndex | None = None):
        if codes > 0 and index is None:
            raise InputError("a listing context that leads with model-number listings needs the catalog's index")
        self.retriever, self.listings, self.n, self.index = retriever, listings, n, index
        self.codes = min(codes, n)
        self._titles: dict[str, str] = {}

    @classmethod
    def from_listings(cls, retriever, listings: pd.DataFrame, n: int, *, codes: int = 0) -> ListingContext:
        return cls(retriever, dict(zip(listings["product_id"].astype(str), listings.to_dict("records"))), n,
                   codes=codes, index=ModelNumberIndex.from_listings(listings) if codes > 0 else None)

    def with_listings(self, n: int, codes: int = 0) -> ListingContext:
        """The same retrieval, index and titles, showing ``n`` listings, ``codes`` of them by model number."""
        index = self.index
        if codes > 0 and index is None:
            index = ModelNumberIndex.from_listings(pd.DataFrame(list(self.listings.values())))
        other = ListingContext(self.retriever, self.listings, n, codes=codes, index=index)
        other._titles = self._titles
        return other

    def title(self, product_id: str) -> str:
        if product_id not in self._titles:
            self._titles[product_id] = context_title(self.listings[product_id])
        return self._titles[product_id]

    def __call__(self, queries: Sequence[str]) -> list[list[str]]:
        if self.n <= 0:
            return [[] for _ in queries]
        ranked = self.retriever.retrieve([normalise_query(q, 10_000) for q in queries])
        out = []
        for query, nearest in zip(queries, ranked):
            first = self.index.lookup(query)[: self.codes] if self.codes > 0 else []
            ids = first + [p for p in nearest if p not in first]
            out.append([self.title(p) for p in ids if p in self.listings][: self.n])
        return out
