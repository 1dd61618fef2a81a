"""The student's prompt: a system message and one user message holding both listings.

Rendered with the tokenizer's own chat template and the generation prompt, so the text is
exactly what the student sees in SFT, RL and inference alike; the completion that follows
is :meth:`MatchDecision.to_json`. Kept compact (about 150 tokens for a pair of titles)
because label mode pays every prompt token once per pair.

    <|im_start|>system
    Decide if listings A and B are the same product. ...<|im_end|>
    <|im_start|>user
    A: Samsung 870 EVO 1TB SATA SSD | brand: Samsung
    B: SAMSUNG 870 EVO 2TB 2.5" SSD MZ-77E2T0 free shipping<|im_end|>
    <|im_start|>assistant
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from epm_spark.models.matcher.decision import MATCH, NO_MATCH
from epm_spark.errors import InputError
from epm_spark.models.matcher.pairs import listing
from epm_spark.models.matcher.settings import PromptSettings
from epm_spark.models.text import listing_text

__all__ = ["DECISION_PREFIX", "PairPrompter", "LabelTokens", "encode", "check_pair_frame", "chat_completion",
           "chat_training_example"]

# The decision JSON starts with its label (MatchDecision.to_json's fixed key order), so the
# label is the first thing the student commits to, right after this prefix.
DECISION_PREFIX = '{"label": "'


def check_pair_frame(pairs: pd.DataFrame) -> None:
    missing = [c for c in ("left_title", "right_title") if c not in pairs.columns]
    if missing:
        raise InputError(f"the pair frame lacks {', '.join(missing)}; it needs each listing's products "
                         "columns with a left_/right_ prefix (see epm_spark.models.matcher.pairs)")


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of rendered chat text. The template already wrote every special token it wants,
    so the tokenizer must not add its own (a second BOS on Llama-style tokenizers)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class LabelTokens:
    """Where the label value begins in a tokenized prompt + completion, and the first token of each label.

    Tokenizers merge across boundaries differently, so the split point is found, not assumed:
    ``prompt + '{"label": "match'`` and ``prompt + '{"label": "no_match'`` are tokenized the way
    SFT tokenizes prompt + completion (as one string), and they part at the label's first token.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def split(self, prompt: str) -> tuple[list[int], int, int]:
        """(ids up to the label, first token id of ``match``, first token id of ``no_match``)."""
        ids = {label: encode(self.tokenizer, prompt + DECISION_PREFIX + label) for label in (MATCH, NO_MATCH)}
        a, b = ids[MATCH], ids[NO_MATCH]
        k = 0
        while k < min(len(a), len(b)) and a[k] == b[k]:
            k += 1
        if k >= min(len(a), len(b)):
            raise ValueError("the tokenizer does not tell the labels apart")  # impossible for real tokenizers
        return a[:k], a[k], b[k]


class PairPrompter:
    """Builds chat prompts for pairs with one tokenizer and one :class:`PromptSettings`."""

    def __init__(self, tokenizer, settings: PromptSettings | None = None):
        self.tokenizer = tokenizer
        self.settings = settings or PromptSettings()

    def listing(self, listing: Mapping[str, Any]) -> str:
        s = self.settings
        text = listing_text(listing, description_chars=s.description_chars, with_price=s.with_price)
        ids = encode(self.tokenizer, text)
        if len(ids) <= s.max_listing_tokens:
            return text
        return self.tokenizer.decode(ids[: s.max_listing_tokens]).rstrip() + " …"

    @property
    def label_system(self) -> str:
        """The system message of label mode: ``label_system`` when set, else the one system message."""
        return self.settings.label_system or self.settings.system

    def messages(self, left: Mapping[str, Any], right: Mapping[str, Any],
                 system: str | None = None) -> list[dict[str, str]]:
        user = f"A: {self.listing(left)}\nB: {self.listing(right)}"
        return [{"role": "system", "content": system or self.settings.system}, {"role": "user", "content": user}]

    def render(self, left: Mapping[str, Any], right: Mapping[str, Any], system: str | None = None) -> str:
        """The prompt text, ending where the assistant's answer begins."""
        return self.tokenizer.apply_chat_template(self.messages(left, right, system), tokenize=False,
                                                  add_generation_prompt=True)

    def render_frame(self, pairs: pd.DataFrame, system: str | None = None) -> list[str]:
        """One prompt per row of a pair frame (``left_*`` / ``right_*`` columns)."""
        check_pair_frame(pairs)
        return [self.render(listing(row, "left"), listing(row, "right"), system) for row in pairs.to_dict("records")]

    def completion(self, messages: list[dict[str, str]], prompt: str, answer: str) -> str:
        """The text after ``prompt`` when the assistant answers ``answer`` (see :func:`chat_completion`)."""
        return chat_completion(self.tokenizer, messages, prompt, answer)

    def training_example(self, left: Mapping[str, Any], right: Mapping[str, Any], answer: str,
                         system: str | None = None) -> dict[str, Any]:
        """Token ids of prompt + completion and the mask of completion tokens (see :func:`chat_training_example`)."""
        return chat_training_example(self.tokenizer, self.messages(left, right, system), answer)


def chat_completion(tokenizer, messages: list[dict[str, str]], prompt: str, answer: str) -> str:
    """The text after ``prompt`` when the assistant answers ``answer``: the answer plus the
    template's end-of-turn marker, which teaches the student where to stop."""
    full = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": answer}], tokenize=False)
    if full.startswith(prompt):
        return full[len(prompt):]
    # Templates that rewrite earlier turns once an answer follows (rare): end with EOS.
    return answer + (tokenizer.eos_token or "")


def chat_training_example(tokenizer, messages: list[dict[str, str]], answer: str) -> dict[str, Any]:
    """Token ids of a chat prompt + the assistant's ``answer``, and the mask of answer tokens (the SFT loss mask).

    Tokenized as one string, like inference sees it; the completion starts where the
    prompt's own tokens stop being a prefix (a merge across the boundary moves it left).
    """
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = encode(tokenizer, prompt)
    ids = encode(tokenizer, prompt + chat_completion(tokenizer, messages, prompt, answer))
    k = 0
    while k < min(len(ids), len(prompt_ids)) and ids[k] == prompt_ids[k]:
        k += 1
    return {"input_ids": ids, "completion_mask": [0] * k + [1] * (len(ids) - k), "prompt": prompt}
