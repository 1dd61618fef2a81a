"""``epm-spark train-matcher``: the student's SFT and RL stages on the warehouse's tables.

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
import re
from pathlib import Path
from typing import Any

import pandas as pd

from epm_spark.config import Settings
from epm_spark.errors import InputError

__all__ = ["train_matcher", "latest_model"]

log = logging.getLogger(__name__)


def latest_model(root: str | Path, stage: str) -> Path | None:
    """The finished ``<stage>-v<N>`` folder with the highest N under ``root``, if any."""
    from epm_spark.models.matcher.model_folder import is_model_folder

    root = Path(root)
    pattern = re.compile(rf"^{re.escape(stage)}-v(\d+)$")
    found = [(int(m.group(1)), p) for p in root.glob(f"{stage}-v*") if (m := pattern.match(p.name))
             and is_model_folder(p)]
    return max(found)[1] if found else None


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

    from epm_spark.models.matcher.jobs import labelled_pair_frame, load_sft_training_set
    from epm_spark.models.matcher.model_folder import next_version

    m = settings.matcher
    if stage not in ("sft", "rl"):
        raise InputError(f"stage must be sft or rl, got {stage!r}")
    warehouse = settings.warehouse
    valid = _per_benchmark(lambda b: labelled_pair_frame(warehouse, benchmark=b, split="valid"), benchmarks)
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
        from epm_spark.models.matcher.sft import train_sft

        card = train_sft(train, folder, student=m.student, settings=sft, prompt=m.prompt, inference=m.inference,
                         valid=valid, init=init, data_info=info)
        return card, folder

    from epm_spark.models.matcher.rewards import build_rewards
    from epm_spark.models.matcher.rl import train_rl

    start = init or latest_model(m.models_dir, "sft")
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
