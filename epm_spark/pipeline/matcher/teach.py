"""The teach job: thin functions between the warehouse tables and the matcher's supervision logic.

Tables are read and written with :func:`epm_spark.io.delta.read_pandas` /
:func:`~epm_spark.io.delta.write_pandas` (delta-rs on the driver, no Spark): the
frames are small (one row per labelled pair).

* :func:`teach`: ``labelled_pairs`` + ``products`` -> teacher -> ``rationales``
  (each benchmark's partition is replaced by the merged rows; reviews survive re-runs).
* :func:`load_sft_training_set`: verified or agreeing decisions with both listings, for SFT.
* :func:`evaluate_teacher`: a teacher against gold labels of a benchmark folder, no warehouse.
* :func:`train_judge`: the learned preference judge from verified/agreeing decisions.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from epm_spark.errors import InputError, TableNotFoundError
from epm_spark.models.matcher.pairs import benchmark_pairs, join_listings
from epm_spark.models.matcher.supervision.review import merge_rationales, rationale_rows, sft_training_set
from epm_spark.models.matcher.supervision.teacher import agreement, build_teacher

__all__ = ["TeachReport", "teach", "read_rationales", "load_sft_training_set", "evaluate_teacher",
           "labelled_pair_frame", "train_judge", "select_split"]

log = logging.getLogger(__name__)


def select_split(rows: pd.DataFrame, split: str | None) -> pd.DataFrame:
    """Rows of ``split``; a benchmark without that split name uses its alias (WDC: train -> train_medium)."""
    if split is None:
        return rows
    from epm_spark.io.benchmarks import SPLIT_ALIASES

    alias = SPLIT_ALIASES["pairs"].get(split)
    has_split = rows.loc[rows["split"] == split, "benchmark"].unique()
    chosen = rows[(rows["split"] == split) | ((rows["split"] == alias) & ~rows["benchmark"].isin(has_split))]
    if chosen.empty:
        raise InputError(f"no rows in split {split!r}; splits: {', '.join(sorted(rows['split'].unique()))}")
    return chosen


def labelled_pair_frame(warehouse: str, *, benchmark: str | None = None, split: str | None = "train",
                        limit: int | None = None) -> pd.DataFrame:
    """``labelled_pairs`` rows (one benchmark, one split) joined with both listings from ``products``."""
    from epm_spark.io.delta import read_pandas, table_exists

    for table in ("labelled_pairs", "products"):
        if not table_exists(warehouse, table):
            raise TableNotFoundError(f"the warehouse {warehouse} has no {table} table; "
                                     "load one with `epm-spark load-benchmark` or `epm-spark ingest`")
    filters = [("benchmark", "=", benchmark)] if benchmark else None
    pairs = read_pandas(warehouse, "labelled_pairs", filters=filters)
    if pairs.empty:
        raise InputError(f"labelled_pairs has no rows for benchmark {benchmark!r}" if benchmark
                         else "labelled_pairs is empty")
    pairs = select_split(pairs, split)
    if limit is not None:
        pairs = pairs.head(limit)
    sources = sorted(set(pairs["left_source"]) | set(pairs["right_source"]))
    products = read_pandas(warehouse, "products", filters=[("source", "in", sources)])
    return join_listings(pairs.reset_index(drop=True), products)


@dataclass
class TeachReport:
    teacher: str
    pairs: int
    seconds: float
    agreement: dict[str, Any]
    usage: dict[str, Any] = field(default_factory=dict)
    benchmarks: list[str] = field(default_factory=list)

    def summary(self) -> str:
        a = self.agreement
        text = (f"teach: {self.pairs} pairs by {self.teacher} in {self.seconds:.1f} s; agrees with gold: "
                f"precision {a['precision']:.3f} recall {a['recall']:.3f} F1 {a['f1']:.3f}; "
                f"{a['to_review']} pairs to review ({a['failures']} without a valid decision)")
        if self.usage:
            u = self.usage
            text += (f"; endpoint: {u['requests']} requests, {u['cache_hits']} cached, "
                     f"{u['prompt_tokens']}+{u['completion_tokens']} tokens, cost {u['cost']:.4f}")
        return text

    def as_dict(self) -> dict[str, Any]:
        return {"teacher": self.teacher, "pairs": self.pairs, "seconds": round(self.seconds, 2),
                **self.agreement, "usage": self.usage, "benchmarks": self.benchmarks}


def teach(settings: Any, *, benchmark: str | None = None, split: str | None = "train", kind: str | None = None,
          limit: int | None = None, run_id: str) -> TeachReport:
    """Run a teacher over labelled pairs and merge its decisions into ``rationales``."""
    from epm_spark.io.delta import read_pandas, table_exists, write_pandas

    frame = labelled_pair_frame(settings.warehouse, benchmark=benchmark, split=split, limit=limit)
    results, report = _run_teacher(settings, kind, frame)
    rows = rationale_rows(frame, results, run_id=run_id)
    for name, new in rows.groupby("benchmark", sort=True):
        existing = None
        if table_exists(settings.warehouse, "rationales"):
            existing = read_pandas(settings.warehouse, "rationales", filters=[("benchmark", "=", name)])
        merged = merge_rationales(existing, new)
        write_pandas(settings.warehouse, "rationales", merged, mode="replace", partition={"benchmark": name},
                     run_id=run_id, job="teach")
    report.benchmarks = sorted(rows["benchmark"].unique())
    return report


def _run_teacher(settings: Any, kind: str | None, frame: pd.DataFrame) -> tuple[list, TeachReport]:
    teacher = build_teacher(kind or settings.teacher.kind, settings.teacher)
    start = time.perf_counter()
    results = teacher.decide(frame)
    seconds = time.perf_counter() - start
    endpoint = getattr(teacher, "endpoint", None)
    return results, TeachReport(teacher.name, len(frame), seconds, agreement(results, frame["label"]).as_dict(),
                                endpoint.usage.as_dict() if endpoint is not None else {})


def read_rationales(warehouse: str, benchmark: str | None) -> pd.DataFrame:
    """``rationales`` rows (one benchmark, or all)."""
    from epm_spark.io.delta import read_pandas, table_exists

    if not table_exists(warehouse, "rationales"):
        raise TableNotFoundError(f"the warehouse {warehouse} has no rationales table; run `epm-spark teach` first")
    return read_pandas(warehouse, "rationales", filters=[("benchmark", "=", benchmark)] if benchmark else None)


def load_sft_training_set(settings: Any, *, benchmark: str | None = None, split: str | None = None,
                          include_auto_agreed: bool = True) -> pd.DataFrame:
    """Verified or agreeing decisions from ``rationales`` with both listings joined from ``products``."""
    from epm_spark.io.delta import read_pandas

    rationales = read_rationales(settings.warehouse, benchmark)
    if split is not None:
        rationales = select_split(rationales, split)
    sources = sorted(set(rationales["left_source"]) | set(rationales["right_source"]))
    products = read_pandas(settings.warehouse, "products", filters=[("source", "in", sources)])
    return sft_training_set(rationales, products, include_auto_agreed=include_auto_agreed)


def evaluate_teacher(settings: Any, benchmark_dir: str | Path, *, split: str = "train", kind: str | None = None,
                     limit: int | None = None) -> dict[str, Any]:
    """A teacher's agreement with the gold labels of a benchmark folder (no warehouse needed)."""
    from epm_spark.io.benchmarks import load_benchmark

    bench = load_benchmark(benchmark_dir)
    frame = benchmark_pairs(bench, split)
    if limit is not None:
        frame = frame.head(limit)
    _, report = _run_teacher(settings, kind, frame)
    report.benchmarks = [bench.name]
    return {"benchmark": bench.name, "split": split,
            "pairs_per_s": round(len(frame) / max(report.seconds, 1e-9), 1), **report.as_dict()}


def train_judge(settings: Any, *, out: str | Path, benchmark: str | None = None, split: str | None = "train",
                from_benchmarks: list[str] | None = None, limit: int | None = None, max_steps: int | None = None):
    """Train the preference judge on preferred decisions and save it to ``out``.

    Preferred decisions come from ``rationales`` (the SFT training set: verified or
    agreeing with gold), or, with ``from_benchmarks``, from the agentic teacher's
    decisions that agree with gold on those benchmark folders' ``split``.
    """
    from epm_spark.models.matcher.supervision.preference import agreeing_decisions, train_preference_judge
    from epm_spark.models.matcher.supervision.teacher import AgenticTeacher

    if from_benchmarks:
        from epm_spark.io.benchmarks import load_benchmark

        frames = []
        for folder in from_benchmarks:
            frame = benchmark_pairs(load_benchmark(folder), split or "train")
            frame = frame.head(limit) if limit is not None else frame
            frames.append(agreeing_decisions(frame, [r.decision for r in AgenticTeacher().decide(frame)]))
        preferred = pd.concat(frames, ignore_index=True)
    else:
        preferred = load_sft_training_set(settings, benchmark=benchmark, split=split)
        preferred = preferred.head(limit) if limit is not None else preferred
    if preferred.empty:
        raise InputError("no preferred decisions to train the judge on")
    _, report = train_preference_judge(preferred, settings.judges.preference, out, max_steps=max_steps)
    return report
