"""The ``matcher.cascade`` settings: the tiers, the band, and the budgets of ``train-matcher --stage all``."""

from __future__ import annotations

from dataclasses import dataclass, field

from epm_spark.errors import ConfigError
from epm_spark.models.matcher.cascade.cross_encoder import CrossEncoderSettings

__all__ = ["CascadeSettings"]


@dataclass
class CascadeSettings:
    """One recipe for every catalog: nothing here is tuned to a benchmark."""

    cross_encoder: CrossEncoderSettings = field(default_factory=CrossEncoderSettings)
    # The teacher tier decides alone where its calibrated P(match) is below `teacher_sure`
    # (no_match) or above 1 - `teacher_sure` (match); the calibration is fitted on the train split.
    teacher_sure: float = 0.01
    # The cross-encoder's tier decides only where, on held-out valid pairs, the cascade with it beat
    # the teacher tier deciding every pair alone (paired bootstrap 95% interval above zero: the
    # test that keeps the student out of its band). Off: it decides whatever valid showed.
    gate_cross_encoder: bool = True
    # The fast combiner also reads each pair's standing among its listings' other candidates
    # (models/matcher/cascade/standing.py). Its features depend on how many of a listing's
    # candidates the scored set holds, so a second fast combiner without them is fitted too, and
    # a scored set whose share of pairs sharing a listing differs from valid's by more than
    # `standing_tolerance` (on either side) is decided by that one, as is a catalog matched
    # against itself (de-duplication), where most listings have no match among their candidates.
    candidate_standing: bool = True
    standing_tolerance: float = 0.25
    # With the standing: whether each listing already has a known match (a labelled match of the
    # train split) besides the pair's other listing, a rival whose outcome is known.
    known_matches: bool = True
    # The student's band: pairs whose fast-tier log-odds lie within `band` of the threshold's.
    band: float = 1.0
    # At most this share of a batch goes to the student, the pairs nearest the threshold first.
    max_student_share: float = 0.05
    # Train and use the student tier (off: teacher + cross-encoder + combiner only).
    student: bool = True
    # The student's SFT: short decisions (label + evidence) on gold-labelled train pairs, and
    # explained decisions (with rationale) on teacher decisions that agree with the gold label.
    label_examples: int = 2000
    explain_examples: int = 200
    positive_share: float = 0.4
    # GRPO's completion budget for short decisions (about 15-30 tokens): a step takes seconds on a CPU.
    short_completion_tokens: int = 48
    # Valid pairs the student scores (per benchmark): its combiner weight and RL-vs-SFT comparison.
    student_valid_pairs: int = 1000
    # Cross-fitting folds and L2 strength (C) of the combiners.
    folds: int = 5
    c: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.teacher_sure < 0.5:
            raise ConfigError(f"cascade.teacher_sure must be in [0, 0.5), got {self.teacher_sure}")
        if self.band < 0:
            raise ConfigError(f"cascade.band must be >= 0, got {self.band}")
        if not 0.0 <= self.max_student_share <= 1.0:
            raise ConfigError(f"cascade.max_student_share must be in [0, 1], got {self.max_student_share}")
        for name in ("label_examples", "student_valid_pairs", "folds", "short_completion_tokens"):
            if getattr(self, name) < (2 if name == "folds" else 1):
                raise ConfigError(f"cascade.{name} must be positive, got {getattr(self, name)}")
        if self.explain_examples < 0:
            raise ConfigError("cascade.explain_examples must be >= 0")
        if not 0.0 < self.positive_share < 1.0:
            raise ConfigError("cascade.positive_share must be in (0, 1)")
        if self.c <= 0:
            raise ConfigError("cascade.c must be > 0")
        if not 0.0 <= self.standing_tolerance <= 1.0:
            raise ConfigError(f"cascade.standing_tolerance must be in [0, 1], got {self.standing_tolerance}")
