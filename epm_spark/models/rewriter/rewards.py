"""Reward functions of the rewriter's GRPO: plain callables in TRL's form, weighted in settings.

Each is ``f(prompts, completions, *, query, **kwargs) -> list[float | None]``; ``query`` is the
dataset column holding each completion's original query. With ``r`` the cleaned rewrite of a
completion and ``q`` its query (``docs/rewriter.md`` has the worked cases):

* ``retrieval_gain``: ``NDCG@10(r) - NDCG@10(q)`` through the dual-encoder index, against the
  graded listings of ``q`` (:class:`~epm_spark.models.rewriter.retrieval.RetrievalJudge`);
  in [-1, 1], ``None`` for a query without graded listings (TRL then leaves it out).
* ``drift``: ``-lost / protected``: the share of the query's brands, model numbers and
  capacities/sizes (the attribute extractor's) that the rewrite no longer carries; 0 when the
  query has none. A brand counts as kept when the rewrite names it; a model number when its
  normalised form (``PS-LX350H`` = ``pslx350h``) is in the rewrite's; a size when the rewrite
  holds the same size in any unit (``1 TB`` = ``1000 GB``).
* ``format``: :func:`~epm_spark.models.rewriter.prompt.format_score`, one clean line of
  sensible length, in [0, 1].
* ``judge`` (optional): an endpoint LLM's score in [0, 1] of whether the rewrite keeps the
  shopper's intent and finds it better; ``None`` when it could not score.

    reward = w_retrieval * retrieval_gain + w_drift * drift + w_format * format + w_judge * judge
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from epm_spark.models.attributes import extract, normalise_model_number
from epm_spark.models.matcher.supervision.rewards import completion_text
from epm_spark.models.rewriter.prompt import clean_rewrite, format_score, normalise_query
from epm_spark.models.rewriter.settings import RewriteRewardSettings

__all__ = ["Drift", "drift", "drift_reward", "FormatReward", "format_reward", "RetrievalGainReward",
           "EndpointRewriteJudge", "JudgeRewriteReward", "RewriteRewards", "build_rewrite_rewards", "REWRITE_JUDGE_SYSTEM"]

log = logging.getLogger(__name__)

REWRITE_JUDGE_SYSTEM = (
    "You judge rewrites of e-commerce search queries. A good rewrite keeps everything the shopper asked for "
    "(brand, model number, size, product type), fixes typos and spells it the way product listings do, and "
    "adds nothing the shopper did not mean. Answer with one JSON object and nothing else: "
    '{"score": number from 0 (worse or changes the intent) to 1 (keeps the intent and would find it better), '
    '"reason": "one sentence"}'
)


@dataclass(frozen=True)
class Drift:
    """The query's protected attributes (``brand:``, ``model:``, ``size:`` entries) the rewrite lost."""

    protected: tuple[str, ...]
    lost: tuple[str, ...]

    @property
    def share(self) -> float:
        return len(self.lost) / len(self.protected) if self.protected else 0.0

    @property
    def drifted(self) -> bool:
        return bool(self.lost)


def drift(query: str, rewrite: str) -> Drift:
    """Which of the query's brands, model numbers and sizes the rewrite no longer carries."""
    q, r = extract(normalise_query(query, 10_000)), extract(clean_rewrite(rewrite) or "")
    protected, lost = [], []
    r_words = set(r.title.lower().split())
    for brand in sorted(q.brand_mentions):
        protected.append(f"brand:{brand}")
        if brand not in r.brand_mentions and not set(brand.split()) <= r_words:
            lost.append(f"brand:{brand}")
    r_compact = normalise_model_number(r.title)
    for code in q.model_numbers:
        protected.append(f"model:{code}")
        if code not in r_compact:
            lost.append(f"model:{code}")
    for m in q.measures:
        protected.append(f"size:{m.text}")
        if not any(m.same_as(o) for o in r.measures):
            lost.append(f"size:{m.text}")
    return Drift(tuple(protected), tuple(lost))


def _queries(kwargs: dict[str, Any], n: int) -> list[str]:
    queries = kwargs.get("query")
    if queries is None:
        raise ValueError("rewrite rewards need the dataset column 'query' (the original query of each completion)")
    queries = list(queries)
    if len(queries) != n:
        raise ValueError(f"column 'query' has {len(queries)} values for {n} completions")
    return queries


def drift_reward(prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **kwargs: Any) -> list[float]:
    """Minus the share of the query's brands, model numbers and sizes the rewrite lost."""
    queries = _queries(kwargs, len(completions))
    return [-drift(q, completion_text(c)).share for q, c in zip(queries, completions)]


class FormatReward:
    """One clean line of sensible length (:func:`format_score`)."""

    def __init__(self, settings: RewriteRewardSettings | None = None):
        self.settings = settings or RewriteRewardSettings()
        self.__name__ = "format_reward"

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (),
                 **kwargs: Any) -> list[float]:
        queries = _queries(kwargs, len(completions))
        return [format_score(completion_text(c), q, self.settings) for q, c in zip(queries, completions)]


format_reward = FormatReward()


class RetrievalGainReward:
    """``NDCG@k(rewrite) - NDCG@k(query)`` through the retrieval judge's index."""

    def __init__(self, judge):
        self.judge = judge
        self.__name__ = "retrieval_gain"

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (),
                 **kwargs: Any) -> list[float | None]:
        queries = _queries(kwargs, len(completions))
        gains = self.judge.gain([clean_rewrite(completion_text(c)) for c in completions], queries)
        return [None if np.isnan(g) else float(g) for g in gains]


class EndpointRewriteJudge:
    """An LLM endpoint scores rewrites (the paper's simulated shopper): ``{"score": s, "reason": ...}``,
    through :class:`~epm_spark.models.matcher.supervision.endpoint.ChatEndpoint` (cache, retries,
    accounting); an unreadable answer is asked again once, then scores ``None``."""

    def __init__(self, endpoint: Any, *, format_retries: int = 1):
        self.endpoint = endpoint
        self.format_retries = format_retries
        self.failures = 0

    def score(self, queries: Sequence[str], rewrites: Sequence[str]) -> list[float | None]:
        from epm_spark.models.matcher.supervision.prompts import parse_judge_score, repair_message

        conversations = [[{"role": "system", "content": REWRITE_JUDGE_SYSTEM},
                          {"role": "user", "content": f"Query: {q}\nRewrite: {r}"}] for q, r in zip(queries, rewrites)]
        answers = self.endpoint.complete_parsed(conversations, parse_judge_score,
                                                lambda reason: repair_message(reason, judge=True),
                                                format_retries=self.format_retries, desc="rewrite judge")
        scores = [a.value for a in answers]
        self.failures += sum(s is None for s in scores)
        return scores


class JudgeRewriteReward:
    """The endpoint judge's score of each rewrite; 0 for an empty one."""

    def __init__(self, judge: EndpointRewriteJudge):
        self.judge = judge
        self.__name__ = "judge_reward"

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (),
                 **kwargs: Any) -> list[float | None]:
        queries = _queries(kwargs, len(completions))
        rewrites = [clean_rewrite(completion_text(c)) for c in completions]
        keep = [i for i, r in enumerate(rewrites) if r]
        out: list[float | None] = [0.0] * len(rewrites)
        for i, s in zip(keep, self.judge.score([queries[i] for i in keep], [rewrites[i] for i in keep])):
            out[i] = s
        return out


@dataclass(frozen=True)
class RewriteRewards:
    """Reward functions and their weights, for ``run_grpo(reward_funcs=..., reward_weights=...)``."""

    funcs: list[Any]
    weights: list[float]


def build_rewrite_rewards(settings: RewriteRewardSettings, retrieval_judge, endpoint_judge=None) -> RewriteRewards:
    """The weighted reward functions of ``rewriter.rewards``; a zero weight leaves its function out (a
    judge that is never used costs no requests)."""
    funcs: list[Any] = [RetrievalGainReward(retrieval_judge), drift_reward, FormatReward(settings)]
    weights = [settings.w_retrieval, settings.w_drift, settings.w_format]
    if settings.w_judge > 0:
        if endpoint_judge is None:
            raise ValueError("rewriter.rewards.w_judge > 0 needs an endpoint judge (teacher.endpoint or judges.endpoint)")
        funcs.append(JudgeRewriteReward(endpoint_judge))
        weights.append(settings.w_judge)
    keep = [i for i, w in enumerate(weights) if w > 0]
    return RewriteRewards([funcs[i] for i in keep], [weights[i] for i in keep])
