"""Which rewrites go into the rewrite cache: the no-regret rule of the ``rewrite`` job.

A candidate rewrite is emitted only when it changes the query, keeps the query's brands, model
numbers and sizes (no drift) and, for a query with graded listings, its NDCG@10 gain is at least
``rewriter.min_gain`` (0: never worse than the query on the retrieval judge). Otherwise the row
keeps the query itself as the rewrite and says why (``reason``): search then runs what the
shopper typed, so a cache lookup never makes a query worse. Queries without graded listings
follow ``rewriter.unjudged``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from epm_spark.models.rewriter.settings import RewriterSettings

__all__ = ["decide", "REASONS"]

REASONS = ("empty", "unchanged", "drift", "worse", "unjudged")


def decide(frame: pd.DataFrame, settings: RewriterSettings) -> pd.DataFrame:
    """Add ``retrieval_gain, reward, reason, emitted, rewrite`` to rows of ``query, candidate,
    ndcg_original, ndcg_rewrite, drift, format_score``."""
    w = settings.rewards
    out = frame.copy()
    original = out["ndcg_original"].astype(float)
    candidate_ndcg = out["ndcg_rewrite"].astype(float)
    gain = candidate_ndcg - original
    judged = original.notna()
    empty = out["candidate"].fillna("").str.strip() == ""
    unchanged = ~empty & (out["candidate"] == out["query"])
    drifted = out["drift"].astype(float) > 0
    worse = judged & ~(gain >= settings.min_gain - 1e-12)
    unjudged = ~judged & (settings.unjudged == "keep_original")
    reason = np.select([empty, unchanged, drifted, worse, unjudged], list(REASONS), default="")
    out["retrieval_gain"] = gain.where(judged)
    out["reward"] = (w.w_retrieval * gain.fillna(0.0) - w.w_drift * out["drift"].astype(float)
                     + w.w_format * out["format_score"].astype(float))
    out["reason"] = pd.Series(reason, index=out.index).replace("", None)
    out["emitted"] = out["reason"].isna()
    out["rewrite"] = out["candidate"].where(out["emitted"], out["query"])
    return out
