"""Supervised fine-tuning of the student on teacher decisions (EPM-RL stage 1).

LoRA (peft) on every linear layer, trained with TRL's ``SFTTrainer`` (:func:`~epm_spark.models.matcher.student.training.run_sft`) on prompt + completion
token ids where the loss covers the completion only::

    L = - sum_{t in completion} log p(y_t | prompt, y_<t) / |completion tokens|

The completion is the decision's canonical JSON (:meth:`MatchDecision.to_json`) and the
chat template's end-of-turn marker. Examples are tokenized here, not by TRL, with the same
:class:`PairPrompter` that inference uses, so the student is trained on exactly the token
sequence it later sees (no second BOS, no different merge at the prompt boundary).
bf16 and gradient checkpointing switch on when a GPU is present; ``accelerate launch``
spreads the same run over several GPUs. Checkpoints land in ``<folder>/checkpoints`` and an
interrupted run resumes from the newest one when started again with the same ``out`` folder.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from epm_spark.errors import InputError
from epm_spark.models.matcher.decision import DecisionFormatError, parse_decision, parse_short_decision
from epm_spark.models.matcher.model_folder import MatcherCard
from epm_spark.models.matcher.pairs import listing
from epm_spark.models.matcher.student.prompt import PairPrompter, check_pair_frame
from epm_spark.models.matcher.settings import InferenceSettings, PromptSettings, SFTSettings
from epm_spark.models.matcher.student.training import (
    balanced_sample,
    finish_model_folder,
    run_sft,
    starting_point,
    use_bf16,
)

__all__ = ["sft_examples", "train_sft"]

log = logging.getLogger(__name__)


def sft_examples(frame: pd.DataFrame, prompter: PairPrompter, max_length: int | None = None):
    """A tokenized ``datasets.Dataset`` (input_ids, completion_mask) from a frame of (pair, decision) rows.

    ``frame`` is a pair frame (``left_*`` / ``right_*`` listing columns) with a ``decision_json``
    column holding the decision to learn (what :func:`~epm_spark.models.matcher.supervision.review.sft_training_set`
    returns: verified or agreeing teacher decisions). A row whose ``short_json`` holds a short
    decision is a label-phase example instead: the label system message and the short answer. Every decision must pass the strict parser:
    a malformed one is an error, since training on it would teach the format failure.
    """
    from datasets import Dataset

    check_pair_frame(frame)
    if "decision_json" not in frame.columns and "short_json" not in frame.columns:
        raise InputError("SFT examples need a 'decision_json' column with the decision to learn "
                         "(or 'short_json' with a short decision, for the label phase)")
    rows = []
    for i, row in enumerate(frame.to_dict("records")):
        short = row.get("short_json")
        try:
            if isinstance(short, str):
                answer, system = short, prompter.label_system
                parse_short_decision(short, strict=True)
            else:
                answer, system = parse_decision(row["decision_json"], strict=True).to_json(), None
        except DecisionFormatError as exc:
            raise InputError(f"SFT example {i}: the decision is not valid ({exc.reason})") from None
        example = prompter.training_example(listing(row, "left"), listing(row, "right"), answer, system)
        if max_length and len(example["input_ids"]) > max_length:
            # Cutting would drop the decision's end and its stop marker: teach truncation. Skip instead.
            continue
        rows.append({"input_ids": example["input_ids"], "completion_mask": example["completion_mask"]})
    if not rows:
        raise InputError(f"no SFT example fits in max_length={max_length} tokens")
    if len(rows) < len(frame):
        log.warning("%d of %d SFT examples are longer than %s tokens and were left out",
                    len(frame) - len(rows), len(frame), max_length)
    return Dataset.from_list(rows)


def train_sft(frame: pd.DataFrame, out: str | Path, *, student: str = "packaged:smollm2",
              settings: SFTSettings | None = None, prompt: PromptSettings | None = None,
              inference: InferenceSettings | None = None, valid: pd.DataFrame | None = None,
              init: str | None = None, data_info: dict[str, Any] | None = None) -> MatcherCard:
    """Train a LoRA adapter on ``frame`` and write a matcher model folder at ``out``.

    ``init`` (default ``student``) may be a matcher folder to continue from. ``valid`` (a
    pair frame with gold ``label`` and ``benchmark``) tunes the decision thresholds.
    """
    settings = settings or SFTSettings()
    inference = inference or InferenceSettings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    start = starting_point(init or student, prompt, bf16=use_bf16(settings.bf16))
    prompter = PairPrompter(start.tokenizer, start.prompt)
    if "label" in frame:
        frame = balanced_sample(frame, settings.max_examples, settings.positive_share, seed=settings.seed)
    dataset = sft_examples(frame, prompter, settings.max_length)
    trainer, result, progress_log, resume = run_sft(start, dataset, out, settings)
    train_seconds = time.monotonic() - started
    training = {
        "stage": "sft", "init": init or student, "examples": len(dataset),
        "label_counts": frame["label"].value_counts().to_dict() if "label" in frame else None,
        "benchmarks": frame["benchmark"].value_counts().to_dict() if "benchmark" in frame else None,
        "tokens": int(sum(len(x) for x in dataset["input_ids"])),
        "steps": result.global_step, "hyper_parameters": asdict(settings), "device": str(start.model.device),
        "resumed_from": resume, "data": data_info or {},
    }
    metrics = {"train_loss": result.training_loss, "train_seconds": round(train_seconds, 1),
               "loss_history": [h["loss"] for h in progress_log.history if "loss" in h]}
    return finish_model_folder(out, stage="sft", start=start, trained_model=trainer.model,
                               tokenizer=start.tokenizer, valid=valid, inference=inference, training=training,
                               metrics=metrics, save_merged=settings.save_merged)
