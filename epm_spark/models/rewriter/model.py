"""A trained rewriter on disk, and the :class:`Rewriter` that runs one.

::

    models/rewriter/rl-v1/
      rewriter.json     the card: stage, base student, adapters in order, prompt, model_version,
                        teacher and data, hyper-parameters, metrics, timings
      adapters/0-0-distill  the distilled adapter (copied, so the folder loads on its own)
      adapters/1-rl     the GRPO adapter trained on top of the merged SFT one
      tokenizer/

The layout is the matcher's student folder (:mod:`epm_spark.models.matcher.model_folder`) with
its own card, loaded by the same :func:`~epm_spark.models.matcher.student.inference.load_adapted_student`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from epm_spark import __version__
from epm_spark.errors import InputError
from epm_spark.models.matcher.model_folder import is_model_folder, read_card, write_card
from epm_spark.models.rewriter.prompt import clean_rewrite, normalise_query, render_prompt
from epm_spark.models.rewriter.settings import RewriteInferenceSettings, RewritePromptSettings

__all__ = ["CARD_FILE", "RewriterCard", "card_prompt", "is_rewriter_folder", "read_rewriter_card", "write_rewriter_card",
           "load_rewriter_model", "Rewriter", "adapter_digest"]

log = logging.getLogger(__name__)

CARD_FILE = "rewriter.json"


@dataclass
class RewriterCard:
    """What a rewriter folder holds and how it was made."""

    stage: str  # "distill" or "rl"
    base: str  # the student setting it was trained from
    adapters: list[str] = field(default_factory=list)
    merged: str | None = None
    prompt: dict[str, Any] = field(default_factory=dict)  # RewritePromptSettings as a mapping
    # <folder name>-<hash of the adapters>: what query_rewrites rows name.
    model_version: str = ""
    parent: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    epm_spark_version: str = __version__
    format: int = 1


def is_rewriter_folder(path: str | Path) -> bool:
    return is_model_folder(path, CARD_FILE)


def read_rewriter_card(folder: str | Path) -> RewriterCard:
    return read_card(folder, RewriterCard, CARD_FILE)


def write_rewriter_card(folder: str | Path, card: RewriterCard) -> Path:
    return write_card(folder, card, CARD_FILE)


def card_prompt(**fields: Any) -> RewritePromptSettings:
    """The prompt a rewriter card records. A card written before prompts showed listings has no
    ``context_listings``: it saw the query alone; one written before they led with the listings
    carrying the query's model number has no ``code_listings``."""
    return RewritePromptSettings(**{"context_listings": 0, "code_listings": 0, **fields})


def adapter_digest(folder: Path, adapters: list[str]) -> str:
    """Short hash of the adapters' weights, in order: two trainings never share a model_version."""
    digest = hashlib.sha256()
    for adapter in adapters:
        for file in sorted((folder / adapter).glob("*.safetensors")):
            digest.update(file.read_bytes())
    return digest.hexdigest()[:10]


def load_rewriter_model(path: str, *, device: str | torch.device = "auto", dtype: str = "auto"):
    """(model, tokenizer, card or None) for a rewriter folder, or a bare student (zero-shot)."""
    from epm_spark.models.matcher.student.inference import load_student_folder

    return load_student_folder(path, is_rewriter_folder, read_rewriter_card, device=device, dtype=dtype)


class Rewriter:
    """A student LLM that rewrites search queries; greedy, batched, answers read by :func:`clean_rewrite`."""

    def __init__(self, model, tokenizer, *, prompt: RewritePromptSettings | None = None,
                 settings: RewriteInferenceSettings | None = None, card: RewriterCard | None = None,
                 name: str = "zero-shot"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        self.prompt = prompt or RewritePromptSettings()
        self.settings = settings or RewriteInferenceSettings()
        self.card = card
        self.model_version = card.model_version if card else name
        self.seconds = 0.0  # generation time so far (evaluate rewriting reports ms per query)

    @classmethod
    def load(cls, path: str, settings: RewriteInferenceSettings | None = None) -> Rewriter:
        settings = settings or RewriteInferenceSettings()
        model, tokenizer, card = load_rewriter_model(path, device=settings.device, dtype=settings.dtype)
        prompt = card_prompt(**card.prompt) if card else RewritePromptSettings()
        return cls(model, tokenizer, prompt=prompt, settings=settings, card=card,
                   name=f"zero-shot:{Path(path).name or path}")

    @property
    def reads_context(self) -> bool:
        """Whether its prompt shows the query's nearest listings (``rewrite`` then needs ``contexts``)."""
        return self.prompt.context_listings > 0

    def rewrite(self, queries: list[str], contexts: list[list[str]] | None = None, *,
                show_progress: bool = False) -> list[str]:
        """One rewrite per query, ``""`` where the answer held none. ``contexts``: each query's nearest
        listing titles (:class:`~epm_spark.models.rewriter.retrieval.ListingContext`), for a rewriter
        trained with them."""
        from epm_spark.models.matcher.student.inference import generate_texts

        if not queries:
            return []
        if self.reads_context and contexts is None:
            raise InputError(f"rewriter {self.model_version} was trained with the nearest listings in its prompt "
                             "(prompt.context_listings); give each query's listing titles")
        if contexts is not None and len(contexts) != len(queries):
            raise InputError(f"{len(contexts)} listing contexts for {len(queries)} queries")
        start = time.perf_counter()
        contexts = contexts if self.reads_context else [[] for _ in queries]
        prompts = [render_prompt(self.tokenizer, normalise_query(q, self.prompt.max_query_chars), self.prompt, c)
                   for q, c in zip(queries, contexts)]
        texts, _ = generate_texts(self.model, self.tokenizer, prompts, max_new_tokens=self.settings.max_new_tokens,
                                  batch_size=self.settings.batch_size, show_progress=show_progress,
                                  desc="rewriting")
        self.seconds += time.perf_counter() - start
        return [clean_rewrite(t) for t in texts]
