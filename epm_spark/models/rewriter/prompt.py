"""The rewriter's prompt and the one reading of an answer that SFT, GRPO, inference and the teachers share.

    <|im_start|>system
    Rewrite the shopper's search query in the catalog's words: ... Reply with the query only.<|im_end|>
    <|im_start|>user
    smasung 870 evo 1 tb
    catalog: wd scorpio red nas wd10jfcx 1tb | samsung 860 evo mz-76e1t0b/am 1 tb solid state drive | ...<|im_end|>
    <|im_start|>assistant
    samsung 870 evo 1tb<|im_end|>

The ``catalog:`` line holds the short titles of the query's nearest listings (the dual-encoder's,
``prompt.context_listings`` of them): pseudo-relevance feedback (Rocchio, 1971; Lavrenko & Croft,
2001) in the prompt. A small student cannot know that ``010-00718-40`` is a Garmin GPS for a
product it never saw; it can learn to copy the brand and product words a matching listing shows.
About 95 prompt tokens and a dozen completion tokens with SmolLM2's tokenizer: short enough that
a GRPO step of 16 samples takes seconds on a CPU.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from epm_spark.models.rewriter.settings import RewritePromptSettings, RewriteRewardSettings

__all__ = ["normalise_query", "rewrite_messages", "render_prompt", "clean_rewrite", "format_score", "words"]

# Labels a chatty model puts before its answer ("Rewritten query: ...").
_LABEL = re.compile(r"^\s*(?:(?:the\s+)?(?:rewritten|rewrite|improved|new|better|search)\s*(?:query|search)?|query|"
                    r"answer|output)\s*[:=-]\s*", re.I)
_QUOTES = "\"'`“”‘’«»"


def normalise_query(query: Any, max_chars: int = 120) -> str:
    """Lower case, single spaces, at most ``max_chars`` characters (cut at a word)."""
    text = " ".join(str(query or "").lower().split())
    if len(text) > max_chars:
        text = text[:max_chars].rsplit(" ", 1)[0]
    return text


def words(text: str) -> list[str]:
    return text.split()


def rewrite_messages(query: str, settings: RewritePromptSettings | None = None,
                     context: Sequence[str] = ()) -> list[dict[str, str]]:
    """The chat messages of one query; ``context``: titles of its nearest listings, nearest first (the
    first ``settings.context_listings`` are shown)."""
    settings = settings or RewritePromptSettings()
    user = normalise_query(query, settings.max_query_chars)
    shown = [t for t in (normalise_query(c, settings.context_chars) for c in list(context)[:settings.context_listings])
             if t]
    if shown:
        user += "\ncatalog: " + " | ".join(t.replace("|", " ") for t in shown)
    return [{"role": "system", "content": settings.system}, {"role": "user", "content": user}]


def render_prompt(tokenizer, query: str, settings: RewritePromptSettings | None = None,
                  context: Sequence[str] = ()) -> str:
    """The prompt text, ending where the assistant's answer begins."""
    return tokenizer.apply_chat_template(rewrite_messages(query, settings, context), tokenize=False,
                                         add_generation_prompt=True)


def _strip(text: str) -> str:
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = _LABEL.sub("", line).strip().lstrip(_QUOTES)
    while line and (line[-1] in ".!;, " or (line[-1] in _QUOTES and not line[-2:-1].isdigit())):
        line = line[:-1]  # a quote after a digit is an inch mark: 15.6" stays
    return " ".join(line.lower().split())


def clean_rewrite(text: str) -> str:
    """The query in an answer: its first non-empty line without a label, quotes or end punctuation, lower
    case; ``""`` when nothing is left."""
    return _strip(text or "")


def format_score(text: str, query: str, settings: RewriteRewardSettings | None = None) -> float:
    """Format and length credit of one answer, in [0, 1].

    1 for a bare one-line query; 0.5 when it only reads as one once a label, quotes or further
    lines are cut; 0 when nothing is left or it repeats itself. Times a length factor: 1 up to
    ``max_words`` words and ``max_added_words`` more than the query, falling linearly to 0 at
    twice either limit.
    """
    s = settings or RewriteRewardSettings()
    cleaned = clean_rewrite(text)
    if not cleaned:
        return 0.0
    raw = " ".join((text or "").lower().split())
    credit = 1.0 if raw == cleaned else 0.5
    ws = cleaned.split()
    if len(ws) >= 4 and len(set(ws)) <= len(ws) / 2:
        return 0.0  # "samsung samsung samsung ...": a degenerate loop, not a query
    n, added = len(ws), len(ws) - len(normalise_query(query).split())
    over = max((n - s.max_words) / s.max_words, (added - s.max_added_words) / max(s.max_added_words, 1), 0.0)
    return credit * max(0.0, 1.0 - over)
