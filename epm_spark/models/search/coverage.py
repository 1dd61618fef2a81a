"""How much of a query a listing's text covers: the lexical features the ranker's heads read.

Per (query, listing text), both in [0, 1]:

* ``word_coverage``: the share of the query's distinct words found among the listing's words;
* ``trigram_coverage``: the share of the query's distinct character trigrams (words joined
  by single spaces, padded with one at each end) found among the listing's, which survives a
  typo ("sonny" keeps most of "sony"'s trigrams) and a model code written another way.

Term overlap is the oldest relevance feature of learning to rank (the LETOR feature sets,
Qin et al., 2010, https://doi.org/10.1007/s10791-009-9123-y, start from it). Unlike BM25 these need
no statistics of the catalog, so the ranker computes them itself wherever it scores a pair:
in training, in ``evaluate ranking`` and inside the ``rank`` job's UDFs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

__all__ = ["COVERAGE_FEATURES", "query_coverage"]

COVERAGE_FEATURES = ("word_coverage", "trigram_coverage")

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def _terms(text: str) -> tuple[frozenset[str], frozenset[str]]:
    words = _WORD.findall(str(text or "").lower())
    if not words:
        return frozenset(), frozenset()
    padded = " " + " ".join(words) + " "
    return frozenset(words), frozenset(padded[i:i + 3] for i in range(len(padded) - 2))


def query_coverage(queries: Sequence[str], texts: Sequence[str]) -> np.ndarray:
    """``(n, 2)`` float32: :data:`COVERAGE_FEATURES` of each (query, text); 0 for a query without words."""
    if len(queries) != len(texts):
        raise ValueError(f"{len(queries)} queries for {len(texts)} texts")
    out = np.zeros((len(queries), len(COVERAGE_FEATURES)), dtype=np.float32)
    seen: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
    for i, (query, text) in enumerate(zip(queries, texts)):
        if query not in seen:
            seen[query] = _terms(query)
        q_words, q_grams = seen[query]
        if not q_words:
            continue
        words, grams = _terms(text)
        out[i, 0] = len(q_words & words) / len(q_words)
        out[i, 1] = len(q_grams & grams) / len(q_grams)
    return out
