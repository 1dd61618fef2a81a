"""``epm-spark train-encoder``: one stage of the dual-encoder from the warehouse's labelled pairs.

No Spark: ``products`` and ``labelled_pairs`` are read with delta-rs into pandas on the driver
(one row per labelled pair is small), and the Spark-free trainer of
:mod:`epm_spark.models.encoder.train` writes the model folder.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from epm_spark.config import Settings
from epm_spark.errors import InputError
from epm_spark.io.delta import read_pandas
from epm_spark.models.encoder.train import EncoderTrainer, EncoderTrainingConfig, TrainingResult

__all__ = ["read_training_tables", "train_encoder"]


def read_training_tables(warehouse: str, benchmarks: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``labelled_pairs`` of the benchmarks (default: all) and the ``products`` rows they name."""
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
