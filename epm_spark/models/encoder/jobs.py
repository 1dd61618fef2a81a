"""The encoder's jobs: ``train-encoder`` (reads the warehouse's tables) and ``evaluate retrieval``.

No Spark: training reads ``products`` and ``labelled_pairs`` with delta-rs into pandas,
evaluation reads a benchmark folder directly.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from epm_spark.config import Settings
from epm_spark.errors import InputError
from epm_spark.models.encoder.evaluate import DEFAULT_KS, evaluate_retrieval
from epm_spark.models.encoder.model import DualEncoder
from epm_spark.models.encoder.train import EncoderTrainer, EncoderTrainingConfig, TrainingResult

__all__ = ["read_training_tables", "train_encoder", "evaluate_retrieval_job"]

log = logging.getLogger(__name__)


def read_training_tables(warehouse: str, benchmarks: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``labelled_pairs`` of the benchmarks (default: all) and the ``products`` rows they name."""
    from epm_spark.io.delta import read_pandas

    pairs = read_pandas(warehouse, "labelled_pairs",
                        filters=[("benchmark", "in", benchmarks)] if benchmarks else None)
    if pairs.empty:
        known = sorted(read_pandas(warehouse, "labelled_pairs", columns=["benchmark"])["benchmark"].unique())
        wanted = f"of benchmark {', '.join(benchmarks)} " if benchmarks else ""
        raise InputError(f"labelled_pairs in {warehouse} holds no pairs {wanted}(benchmarks there: "
                         f"{', '.join(known) or 'none'}); run `epm-spark load-benchmark` first")
    sources = sorted(set(pairs["left_source"]) | set(pairs["right_source"]))
    return read_pandas(warehouse, "products", filters=[("source", "in", sources)]), pairs


def train_encoder(settings: Settings, *, stage: str, benchmarks: list[str] | None = None, init: str | None = None,
                  out: str | None = None, max_steps: int | None = None) -> TrainingResult:
    """Train one stage on the warehouse's labelled pairs and write a model folder."""
    if stage not in ("contrastive", "roar"):
        raise InputError(f"--stage must be contrastive or roar, got {stage!r}")
    products, pairs = read_training_tables(settings.warehouse, benchmarks)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    names = benchmarks or sorted(pairs["benchmark"].unique())
    config = EncoderTrainingConfig(
        stage=stage, output_dir=out or str(Path("models") / "encoder" / f"{stage}-{stamp}"), init=init,
        encoder=settings.encoder, benchmarks=list(names), max_steps=max_steps,
        data_description=f"labelled_pairs and products of warehouse {settings.warehouse}: {', '.join(names)}",
    )
    return EncoderTrainer(config).train(products, pairs)


def evaluate_retrieval_job(settings: Settings, *, benchmark: str, model: str | None = None, k: int = 10,
                           split: str = "test") -> dict[str, Any]:
    """Retrieval metrics of an encoder on a benchmark folder's split."""
    from epm_spark.io.benchmarks import load_benchmark

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
