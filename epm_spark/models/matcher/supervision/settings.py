"""Settings of the matcher's supervision: teachers (``teacher:``), judges (``judges:``), rewards (``rewards:``).

The student, SFT and RL settings live in the ``matcher:`` section; these three sections
say where its training signal comes from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from epm_spark.errors import ConfigError

__all__ = ["EndpointSettings", "TeacherSettings", "PreferenceJudgeSettings", "JudgeSettings", "RewardSettings"]


@dataclass
class EndpointSettings:
    """An OpenAI-compatible chat endpoint (a vLLM server, a hosted API)."""

    # e.g. http://localhost:8000/v1 (vLLM) or https://api.openai.com/v1; None: no endpoint configured.
    base_url: str | None = None
    model: str | None = None
    # The NAME of the environment variable that holds the key; keys never go into settings files.
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 60.0
    # Requests in flight at once; hosted APIs rate-limit, a local vLLM batches whatever it gets.
    max_concurrency: int = 4
    # Retries of one request after a 429, a 5xx, a timeout or a dropped connection.
    max_retries: int = 4
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    temperature: float = 0.0
    max_tokens: int = 512
    # Ask for {"type": "json_object"} output (vLLM and OpenAI support it).
    json_mode: bool = False
    # Prices per 1000 tokens, for the cost report; 0 for a local server.
    price_prompt_per_1k: float = 0.0
    price_completion_per_1k: float = 0.0
    cache: bool = True
    # Default: $EPM_CACHE/endpoint (see epm_spark.models.weights.cache_dir).
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        for name in ("timeout_s", "backoff_max_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        for name in ("max_retries", "backoff_s", "price_prompt_per_1k", "price_completion_per_1k", "temperature"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https://, got {self.base_url!r}")

    @property
    def configured(self) -> bool:
        return bool(self.base_url and self.model)

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


@dataclass
class TeacherSettings:
    """Which teacher writes rationales (``epm-spark teach``) and how its answers are checked."""

    kind: Literal["agentic", "endpoint"] = "agentic"
    # Parse endpoint answers strictly (one JSON object, optionally fenced); else the first object in the text.
    strict_format: bool = True
    # Times an answer that fails the schema is asked again, with the parser's reason.
    format_retries: int = 1
    endpoint: EndpointSettings = field(default_factory=EndpointSettings)

    def __post_init__(self) -> None:
        if self.format_retries < 0:
            raise ConfigError(f"format_retries must be >= 0, got {self.format_retries}")


@dataclass
class PreferenceJudgeSettings:
    """The learned cross-encoder judge (``epm-spark train-judge``)."""

    # Backbone to fine-tune: packaged:minilm or any Hugging Face encoder folder.
    backbone: str = "packaged:minilm"
    # A trained judge folder to score with (what train-judge wrote); None: not trained yet.
    path: str | None = None
    max_length: int = 256
    epochs: float = 1.0
    batch_size: int = 16
    learning_rate: float = 3e-5
    # Share of listing pairs held out to measure pairwise accuracy.
    holdout: float = 0.2
    # Rejected (corrupted) decisions made from each preferred one.
    corruptions_per_pair: int = 2
    max_pairs: int | None = None
    seed: int = 13

    def __post_init__(self) -> None:
        for name in ("max_length", "batch_size", "corruptions_per_pair"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.epochs <= 0 or self.learning_rate <= 0:
            raise ConfigError("epochs and learning_rate must be > 0")
        if not 0.0 <= self.holdout < 1.0:
            raise ConfigError(f"holdout must be in [0, 1), got {self.holdout}")


@dataclass
class JudgeSettings:
    """Which judge scores rationales for the judge reward."""

    kind: Literal["attribute", "preference", "endpoint"] = "attribute"
    # Attribute judge: share of the score from verified claims (the rest: label follows from the claims).
    claim_weight: float = 0.7
    preference: PreferenceJudgeSettings = field(default_factory=PreferenceJudgeSettings)
    # The endpoint judge's endpoint; left without base_url it uses teacher.endpoint.
    endpoint: EndpointSettings = field(default_factory=EndpointSettings)

    def __post_init__(self) -> None:
        if not 0.0 <= self.claim_weight <= 1.0:
            raise ConfigError(f"claim_weight must be in [0, 1], got {self.claim_weight}")


@dataclass
class RewardSettings:
    """GRPO reward = w_format * format + w_label * label + w_judge * judge."""

    w_format: float = 0.2
    w_label: float = 0.6
    w_judge: float = 0.2
    # Format credit for output that is valid only once extra text around the JSON is ignored,
    # and for a broken object that still states a readable label.
    format_lenient_credit: float = 0.5
    format_label_credit: float = 0.2
    # Label reward only for strictly valid output (True) or also for lenient parses (False).
    label_strict: bool = True

    def __post_init__(self) -> None:
        weights = (self.w_format, self.w_label, self.w_judge)
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(f"reward weights must be >= 0 with a positive sum, got {weights}")
        for name in ("format_lenient_credit", "format_label_credit"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
