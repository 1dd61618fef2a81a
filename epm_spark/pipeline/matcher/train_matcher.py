"""``epm-spark train-matcher``: the whole cascade, or the student's SFT and RL stages alone.

* ``--stage all``: every tier of the default matcher into one folder (see
  :mod:`epm_spark.models.matcher.cascade.train`): the teacher's decisions on the train split
  (written to ``rationales`` first when the benchmark has none), the cross-encoder, the
  student's SFT and RL, and the combiners fitted on the valid split. Re-running it (same
  ``--out``, or none) continues from the first unfinished tier.
* ``--stage sft``: the SFT training set (verified or agreeing teacher decisions from
  ``rationales``, both listings from ``products``) of the train split -> LoRA SFT.
* ``--stage rl``: the gold-labelled train pairs of ``labelled_pairs`` -> GRPO from the SFT
  model (``--init``, default: the newest ``sft-v<N>`` under ``matcher.models_dir``).

Both tune the decision thresholds on the valid split and write a versioned model folder
(``<matcher.models_dir>/<stage>-v<N>`` unless ``--out``). Tables are read with delta-rs
on the driver (no Spark): one row per labelled pair is small.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from epm_spark.config import Settings
from epm_spark.errors import InputError
from epm_spark.models.matcher.model_folder import is_model_folder
from epm_spark.models.versions import latest_model, next_version, unfinished_or_next

__all__ = ["train_matcher"]

log = logging.getLogger(__name__)


def _per_benchmark(load, benchmarks: list[str] | None) -> pd.DataFrame:
    frames = [load(b) for b in (benchmarks or [None])]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _table_versions(warehouse: str, tables: tuple[str, ...]) -> dict[str, Any]:
    from epm_spark.io.delta import table_version

    return {t: table_version(warehouse, t) for t in tables}


def train_matcher(settings: Settings, *, stage: str, benchmarks: list[str] | None = None, init: str | None = None,
                  out: str | None = None, max_steps: int | None = None, max_examples: int | None = None):
    """Run one training stage; returns the model folder's card and its path."""
    from dataclasses import replace

    from epm_spark.pipeline.matcher.teach import labelled_pair_frame, load_sft_training_set

    m = settings.matcher
    if stage not in ("all", "sft", "rl"):
        raise InputError(f"stage must be all, sft or rl, got {stage!r}")
    warehouse = settings.warehouse
    valid = _per_benchmark(lambda b: labelled_pair_frame(warehouse, benchmark=b, split="valid"), benchmarks)
    if stage == "all":
        return _train_cascade(settings, benchmarks, valid, out=out, max_steps=max_steps)
    if stage == "sft":
        train = _per_benchmark(lambda b: load_sft_training_set(settings, benchmark=b, split="train"), benchmarks)
        if train.empty:
            raise InputError("the SFT training set is empty: run `epm-spark teach` (and review) first")
        sft = replace(m.sft, max_steps=max_steps or m.sft.max_steps,
                      max_examples=max_examples if max_examples is not None else m.sft.max_examples)
        folder = Path(out) if out else next_version(m.models_dir, "sft")
        info = {"tables": _table_versions(warehouse, ("rationales", "products", "labelled_pairs")),
                "statuses": train["status"].value_counts().to_dict() if "status" in train else None,
                "benchmarks_requested": benchmarks}
        from epm_spark.models.matcher.student.sft import train_sft

        card = train_sft(train, folder, student=m.student, settings=sft, prompt=m.prompt, inference=m.inference,
                         valid=valid, init=init, data_info=info)
        return card, folder

    from epm_spark.models.matcher.supervision.rewards import build_rewards
    from epm_spark.models.matcher.student.rl import train_rl

    start = init or latest_model(m.models_dir, "sft", is_model_folder)
    if start is None:
        raise InputError(f"no SFT model under {m.models_dir}; train one with --stage sft or give --init")
    train = _per_benchmark(lambda b: labelled_pair_frame(warehouse, benchmark=b, split="train"), benchmarks)
    rl = replace(m.rl, max_steps=max_steps or m.rl.max_steps,
                 pool=max_examples if max_examples is not None else m.rl.pool)
    rewards = build_rewards(settings)
    folder = Path(out) if out else next_version(m.models_dir, "rl")
    info = {"tables": _table_versions(warehouse, ("labelled_pairs", "products")), "benchmarks_requested": benchmarks,
            "judge": settings.judges.kind}
    card = train_rl(train, str(start), folder, reward_funcs=rewards.funcs, reward_weights=rewards.weights,
                    settings=rl, inference=m.inference, valid=valid, data_info=info)
    return card, folder


def _train_cascade(settings: Settings, benchmarks: list[str] | None, valid: pd.DataFrame, *, out: str | None,
                   max_steps: int | None):
    from epm_spark.io.delta import table_exists
    from epm_spark.models.matcher.cascade.train import train_cascade
    from epm_spark.pipeline.matcher.teach import labelled_pair_frame, load_sft_training_set, teach
    from epm_spark.models.matcher.supervision.rewards import build_rewards

    warehouse = settings.warehouse
    train = _per_benchmark(lambda b: labelled_pair_frame(warehouse, benchmark=b, split="train"), benchmarks)
    explained = None
    if settings.matcher.cascade.student and settings.matcher.cascade.explain_examples:
        for b in sorted(train["benchmark"].unique()):
            if not _has_rationales(warehouse, b):
                log.info("no teacher decisions for %s yet: running the teacher on its train split", b)
                teach(settings, benchmark=b, split="train", run_id=f"train-matcher-{b}")
        explained = _per_benchmark(lambda b: load_sft_training_set(settings, benchmark=b, split="train"), benchmarks)
    folder = Path(out) if out else unfinished_or_next(settings.matcher.models_dir, "cascade", is_model_folder)
    rewards = build_rewards(settings, short=True)
    info = {"tables": _table_versions(warehouse, tuple(t for t in ("labelled_pairs", "products", "rationales")
                                                        if table_exists(warehouse, t))),
            "benchmarks_requested": benchmarks, "judge": settings.judges.kind}
    card = train_cascade(train, valid, folder, matcher=settings.matcher, explained=explained,
                         reward_funcs=rewards.funcs, reward_weights=rewards.weights, data_info=info,
                         max_steps=max_steps)
    return card, folder


def _has_rationales(warehouse: str, benchmark: str) -> bool:
    from epm_spark.io.delta import read_pandas, table_exists

    if not table_exists(warehouse, "rationales"):
        return False
    return not read_pandas(warehouse, "rationales", columns=["benchmark"],
                           filters=[("benchmark", "=", benchmark)]).empty
