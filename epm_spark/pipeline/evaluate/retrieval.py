"""``epm-spark evaluate retrieval``: recall, MRR and NDCG of an encoder on a benchmark folder's split.

No Spark and no warehouse: the benchmark's listings are embedded in memory and searched exactly
(:mod:`epm_spark.models.encoder.evaluate`).
"""

from __future__ import annotations

import time
from typing import Any

from epm_spark.config import Settings
from epm_spark.errors import InputError
from epm_spark.io.benchmarks import load_benchmark
from epm_spark.models.encoder.evaluate import DEFAULT_KS, evaluate_retrieval
from epm_spark.models.encoder.model import DualEncoder

__all__ = ["evaluate_retrieval_job"]


def evaluate_retrieval_job(settings: Settings, *, benchmark: str, model: str | None = None, k: int = 10,
                           split: str = "test") -> dict[str, Any]:
    """Retrieval metrics of an encoder on a benchmark folder's split."""
    if k <= 0:
        raise InputError(f"--k must be > 0, got {k}")
    bench = load_benchmark(benchmark)
    encoder = DualEncoder.from_settings(settings.encoder, backbone=model)
    started = time.monotonic()
    metrics = evaluate_retrieval(encoder, bench, split, ks=sorted(set(DEFAULT_KS) | {k}),
                                 batch_size=settings.encoder.batch_size)
    metrics.update(k=k, model=model or settings.encoder.backbone, seconds=round(time.monotonic() - started, 1),
                   device=str(encoder.device))
    return metrics
