"""Reward functions for GRPO: plain callables in TRL's reward-function form.

Each is ``f(prompts, completions, **kwargs) -> list[float]``. ``completions`` are
strings, or chat message lists (conversational datasets: the assistant message's
``content``). Dataset columns arrive as keyword arguments, one value per completion:

* ``gold_label``: the gold label as 1/0, True/False or ``"match"``/``"no_match"``;
* ``left``, ``right``: the two listings, as mappings or :func:`~epm_spark.models.matcher.pairs.listing_json`
  text (use :func:`reward_columns` to build them from a pair frame).

Scores (see ``docs/matcher-teacher.md``):

* ``format``: 1 for a decision that passes the strict parser; ``format_lenient_credit``
  (0.5) when it only parses once extra text around the JSON object is ignored;
  ``format_label_credit`` (0.2) for a broken object that still states a readable
  ``"label"``; 0 otherwise.
* ``label``: 1 when the parsed label equals the gold label, 0 when it does not or the
  completion does not parse (strictly, unless ``rewards.label_strict`` is false).
* ``judge``: the configured judge's score in [0, 1] of the parsed decision; 0 when the
  completion does not parse; ``None`` when the judge could not score (TRL ignores it).
* ``combined``: ``w_format * format + w_label * label + w_judge * judge``.

Use them one by one with TRL's ``reward_weights`` (:func:`build_rewards` returns both),
or the single :class:`CombinedReward`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from epm_spark.models.matcher.decision import DecisionFormatError, MatchDecision, parse_decision, parse_short_decision
from epm_spark.models.matcher.supervision.judges import AttributeConsistencyJudge, Judge
from epm_spark.models.matcher.pairs import gold_label, listing, listing_json, parse_listing
from epm_spark.models.matcher.supervision.settings import RewardSettings

__all__ = [
    "completion_text",
    "format_score",
    "format_reward",
    "label_reward",
    "judge_reward",
    "JudgeReward",
    "CombinedReward",
    "combined_reward",
    "RewardFunctions",
    "build_rewards",
    "reward_columns",
]

_DEFAULTS = RewardSettings()
_LABEL_KEY = re.compile(r'"label"\s*:\s*"(match|no_match)"')


def completion_text(completion: Any) -> str:
    """The generated text of one completion: a string, or the last assistant message of a chat."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        return _content(completion.get("content"))
    if isinstance(completion, Sequence):
        messages = [m for m in completion if isinstance(m, Mapping)]
        assistant = [m for m in messages if m.get("role", "assistant") == "assistant"]
        if assistant:
            return _content(assistant[-1].get("content"))
        return ""
    raise TypeError(f"a completion must be text or a list of chat messages, got {type(completion).__name__}")


def _content(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    # Multimodal-style content: a list of parts, {"type": "text", "text": ...}.
    return "".join(p.get("text", "") for p in content if isinstance(p, Mapping))


def _parse(text: str, strict: bool, short: bool = False) -> MatchDecision | None:
    try:
        return (parse_short_decision if short else parse_decision)(text, strict=strict)
    except DecisionFormatError:
        return None


def format_score(text: str, lenient_credit: float = _DEFAULTS.format_lenient_credit,
                 label_credit: float = _DEFAULTS.format_label_credit, short: bool = False) -> float:
    """Format credit of one completion's text (see the module docstring); ``short``: of a short decision."""
    if _parse(text, strict=True, short=short) is not None:
        return 1.0
    if _parse(text, strict=False, short=short) is not None:
        return lenient_credit
    if _LABEL_KEY.search(text):
        return label_credit
    return 0.0


def format_reward(prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **kwargs: Any) -> list[float]:
    """1 for a strictly valid decision, partial credit for near misses, 0 otherwise."""
    return [format_score(completion_text(c)) for c in completions]


def _per_completion(kwargs: Mapping[str, Any], name: str, n: int) -> list[Any]:
    values = kwargs.get(name)
    if values is None:
        raise ValueError(f"this reward needs the dataset column {name!r} (one value per completion); "
                         f"got columns {sorted(k for k in kwargs if not k.startswith('trainer'))}")
    values = list(values)
    if len(values) != n:
        raise ValueError(f"column {name!r} has {len(values)} values for {n} completions")
    return values


def label_reward(prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), *,
                 strict: bool = _DEFAULTS.label_strict, short: bool = False, **kwargs: Any) -> list[float]:
    """1 when the decision's label equals ``gold_label``; 0 when it differs or the output does not parse."""
    golds = _per_completion(kwargs, "gold_label", len(completions))
    out = []
    for completion, gold in zip(completions, golds):
        decision = _parse(completion_text(completion), strict=strict, short=short)
        out.append(float(decision is not None and decision.label == gold_label(gold)))
    return out


class JudgeReward:
    """The judge's score of each parsed decision; 0 for output that does not parse."""

    def __init__(self, judge: Judge, *, strict: bool = _DEFAULTS.label_strict, short: bool = False):
        self.judge = judge
        self.strict = strict
        self.short = short
        self.__name__ = "judge_reward"

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (),
                 **kwargs: Any) -> list[float | None]:
        n = len(completions)
        lefts = [parse_listing(v) for v in _per_completion(kwargs, "left", n)]
        rights = [parse_listing(v) for v in _per_completion(kwargs, "right", n)]
        decisions = [_parse(completion_text(c), strict=self.strict, short=self.short) for c in completions]
        valid = [i for i, d in enumerate(decisions) if d is not None]
        out: list[float | None] = [0.0] * n
        if valid:
            scores = self.judge.score([decisions[i] for i in valid], [lefts[i] for i in valid],
                                      [rights[i] for i in valid])
            for i, s in zip(valid, scores, strict=True):
                out[i] = None if s is None else float(s)
        return out


# A ready-made judge reward with the deterministic attribute-consistency judge.
judge_reward = JudgeReward(AttributeConsistencyJudge())


class CombinedReward:
    """``w_format * format + w_label * label + w_judge * judge`` as one reward function.

    A judge that could not score a completion (``None``) contributes 0 here; use the
    separate functions with TRL's ``reward_weights`` to have it ignored instead.
    """

    def __init__(self, settings: RewardSettings | None = None, judge: Judge | None = None):
        self.settings = settings or RewardSettings()
        self.judge_reward = JudgeReward(judge or AttributeConsistencyJudge(), strict=self.settings.label_strict)
        self.__name__ = "combined_reward"

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (),
                 **kwargs: Any) -> list[float]:
        s = self.settings
        texts = [completion_text(c) for c in completions]
        fmt = [format_score(t, s.format_lenient_credit, s.format_label_credit) for t in texts]
        lab = label_reward(prompts, texts, strict=s.label_strict, **kwargs) if s.w_label else [0.0] * len(texts)
        jud = self.judge_reward(prompts, texts, **kwargs) if s.w_judge else [0.0] * len(texts)
        return [s.w_format * f + s.w_label * lb + s.w_judge * (j or 0.0) for f, lb, j in zip(fmt, lab, jud)]


# Ready-made: default weights (0.2 / 0.6 / 0.2) and the attribute-consistency judge.
combined_reward = CombinedReward()


@dataclass(frozen=True)
class RewardFunctions:
    """Reward functions and their weights.

    Ready for ``GRPOTrainer(reward_funcs=funcs, args=GRPOConfig(reward_weights=weights, ...))``.
    """

    funcs: list[Any]
    weights: list[float]
    combined: CombinedReward


def build_rewards(settings: Any = None, judge: Judge | None = None, *, short: bool = False) -> RewardFunctions:
    """The reward functions the ``rewards`` and ``judges`` settings describe.

    ``short``: score short decisions (label and evidence, no rationale) as the label phase writes them.

    ``settings``: the root :class:`~epm_spark.config.Settings` (or ``None`` for defaults).
    ``judge``: overrides the judge the settings name (e.g. a judge already loaded).
    """
    from epm_spark.models.matcher.supervision.judges import build_judge

    rewards = settings.rewards if settings is not None else RewardSettings()
    if judge is None:
        judge = build_judge(settings) if settings is not None else AttributeConsistencyJudge()

    def fmt(prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **kwargs: Any) -> list[float]:
        return [format_score(completion_text(c), rewards.format_lenient_credit, rewards.format_label_credit, short)
                for c in completions]

    def lab(prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **kwargs: Any) -> list[float]:
        return label_reward(prompts, completions, strict=rewards.label_strict, short=short, **kwargs)

    fmt.__name__, lab.__name__ = "format_reward", "label_reward"
    jr = JudgeReward(judge, strict=rewards.label_strict, short=short)
    return RewardFunctions([fmt, lab, jr], [rewards.w_format, rewards.w_label, rewards.w_judge],
                           CombinedReward(rewards, judge))


def reward_columns(pairs: pd.DataFrame) -> pd.DataFrame:
    """The reward functions' dataset columns (``gold_label``, ``left``, ``right``) from a pair frame."""
    out = pd.DataFrame(index=pairs.index)
    rows = pairs.to_dict("records")
    out["gold_label"] = [gold_label(r.get("label")) for r in rows]
    out["left"] = [listing_json(listing(r, "left")) for r in rows]
    out["right"] = [listing_json(listing(r, "right")) for r in rows]
    return out
