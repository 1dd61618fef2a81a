"""``epm-spark evaluate matching``: a matcher's quality on a benchmark folder's labelled pairs.

Reads the benchmark folder directly (no warehouse, no Spark): the pairs of one split joined
with their listings, then the matcher in ``label`` or ``explain`` mode. The threshold is the
model's stored one for this benchmark, a given number, or tuned here on the benchmark's
validation split (``tune``; what a zero-shot student needs, as it has no stored threshold).
"""

from __future__ import annotations

import logging
import os
import platform
from typing import Any

from epm_spark.config import Settings
from epm_spark.errors import InputError

__all__ = ["evaluate_matching", "machine"]

log = logging.getLogger(__name__)


def machine() -> dict[str, Any]:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "gpu": gpu, "torch": torch.__version__}


def evaluate_matching(settings: Settings, *, benchmark: str, split: str = "test", model: str | None = None,
                      mode: str = "label", limit: int | None = None, threshold: str = "model",
                      name: str | None = None, ablation: bool = False) -> dict[str, Any]:
    """Metrics of the matcher ``model`` (default: the configured student, zero-shot) on ``split``.

    A cascade folder (``train-matcher --stage all``) is scored as a cascade; ``ablation`` adds
    each of its tiers alone on the same pairs.
    """
    from epm_spark.io.benchmarks import load_benchmark
    from epm_spark.models.matcher.cascade.cascade import is_cascade
    from epm_spark.models.matcher.evaluation import MatchingEvaluator, stratified_sample, tune_threshold
    from epm_spark.models.matcher.student.inference import Matcher
    from epm_spark.models.matcher.pairs import benchmark_pairs

    bench = load_benchmark(benchmark, name=name)
    pairs = stratified_sample(benchmark_pairs(bench, split), limit, seed=0)
    if model and is_cascade(model):
        from epm_spark.pipeline.evaluate.cascade import evaluate_cascade

        if threshold != "model":
            raise InputError("a cascade decides at the thresholds it tuned on valid; --threshold applies to a "
                             "student model folder only")
        report = evaluate_cascade(settings, bench=bench, pairs=pairs, model=model, ablation=ablation, mode=mode)
        report.update(split=bench.resolve_split(split), machine=machine())
        return report
    if ablation:
        raise InputError(f"--ablation needs a cascade model folder (train-matcher --stage all); {model} is not one")
    matcher = Matcher.load(model or settings.matcher.student, settings.matcher.inference)
    tuned: dict[str, Any] = {}
    if threshold == "model":
        value = matcher.threshold(bench.name)
        source = "model" if matcher.card else "default 0.5 (no model card)"
    elif threshold == "tune":
        valid = stratified_sample(benchmark_pairs(bench, "valid"), settings.matcher.inference.validation_pairs)
        value, valid_f1 = tune_threshold(matcher.predict_proba(valid, show_progress=True), valid["label"].to_numpy())
        source = f"tuned on {len(valid)} {bench.resolve_split('valid')} pairs"
        tuned = {"valid_f1_at_threshold": valid_f1, "valid_pairs": len(valid)}
    else:
        try:
            value = float(threshold)
        except ValueError:
            raise InputError(f"--threshold must be model, tune or a number, got {threshold!r}") from None
        source = "given"
    evaluator = MatchingEvaluator(pairs, mode=mode, threshold=value, name=bench.name)
    report = evaluator(matcher)
    report.update(split=bench.resolve_split(split), model=model or settings.matcher.student,
                  threshold_source=source, machine=machine(), **tuned)
    return report
