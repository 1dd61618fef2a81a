"""Distill (LoRA SFT on teacher rewrites), then GRPO on simulated feedback: the rewriter's two stages.

Both run the matcher student's trainers (:func:`~epm_spark.models.matcher.student.training.run_sft`,
:func:`~epm_spark.models.matcher.student.training.run_grpo`) on this task's data:

* **distill**: one example per (query, teacher rewrite): the chat prompt of
  :func:`~epm_spark.models.rewriter.prompt.rewrite_messages` (the query and, when the prompt
  shows them, its nearest listings' titles) and the rewrite as the answer,
  loss on the answer tokens only::

      L = - sum_{t in rewrite} log p(y_t | prompt, y_<t) / |rewrite tokens|

* **rl**: GRPO from the distilled model with a fresh adapter; G samples per query, each
  scored by the weighted reward callables of :mod:`epm_spark.models.rewriter.rewards`,
  advantage ``(r_i - mean(r)) / std(r)`` within the query's group. Prompts come from a pool
  of training queries: ``hard_share`` of them where the original query does not already
  retrieve its listings perfectly (NDCG@10 < 1), where rewrites can differ in gain.

Each stage writes a versioned rewriter folder (:mod:`epm_spark.models.rewriter.model`).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from epm_spark.errors import InputError
from epm_spark.models.matcher.student.training import (
    rl_metrics, run_grpo, run_sft, save_adapters, starting_point, use_bf16,
)
from epm_spark.models.rewriter.model import (
    RewriterCard, adapter_digest, card_prompt, is_rewriter_folder, load_rewriter_model, write_rewriter_card,
)
from epm_spark.models.rewriter.prompt import clean_rewrite, normalise_query, rewrite_messages
from epm_spark.models.rewriter.settings import RewritePromptSettings, RewriteRLSettings, RewriteSFTSettings

__all__ = ["distill_examples", "train_distill", "select_rl_queries", "train_rewriter_rl"]

log = logging.getLogger(__name__)


# Queries -> the titles of each one's nearest listings (a ListingContext), for prompts that show them.
Context = Callable[[Sequence[str]], list[list[str]]]


def _contexts(queries: Sequence[str], prompt: RewritePromptSettings, context: Context | None) -> list[list[str]]:
    if prompt.context_listings <= 0:
        return [[] for _ in queries]
    if context is None:
        raise InputError("the rewriter prompt shows the nearest listings (rewriter.prompt.context_listings > 0) "
                         "but no listing context was given")
    # The model's own prompt decides the catalog line: an RL run from a distilled folder shows what SFT showed.
    with_listings = getattr(context, "with_listings", None)
    if with_listings is not None:
        context = with_listings(prompt.context_listings, prompt.code_listings)
    return context(list(queries))


def distill_examples(frame: pd.DataFrame, tokenizer, prompt: RewritePromptSettings, max_length: int | None = None,
                     context: Context | None = None):
    """A tokenized ``datasets.Dataset`` (input_ids, completion_mask) from ``query, rewrite`` rows."""
    from datasets import Dataset

    from epm_spark.models.matcher.student.prompt import chat_training_example

    missing = {"query", "rewrite"} - set(frame.columns)
    if missing:
        raise InputError(f"distill examples lack columns {sorted(missing)}")
    rows = []
    contexts = _contexts(frame["query"].tolist(), prompt, context)
    for query, rewrite, shown in zip(frame["query"], frame["rewrite"], contexts):
        answer = clean_rewrite(rewrite if isinstance(rewrite, str) else "")
        if not answer:
            continue  # a teacher failure teaches nothing
        example = chat_training_example(tokenizer, rewrite_messages(query, prompt, shown), answer)
        if max_length and len(example["input_ids"]) > max_length:
            continue  # cut, it would teach a rewrite without its end
        rows.append({"input_ids": example["input_ids"], "completion_mask": example["completion_mask"]})
    if not rows:
        raise InputError(f"no distill example (of {len(frame)} rows) has a rewrite that fits in {max_length} tokens")
    if len(rows) < len(frame):
        log.warning("%d of %d teacher rewrites are empty or longer than %s tokens and were left out",
                    len(frame) - len(rows), len(frame), max_length)
    return Dataset.from_list(rows)


def _finish(folder: Path, *, stage: str, start, trainer, training: dict[str, Any], metrics: dict[str, Any],
            save_merged: bool) -> RewriterCard:
    adapters, merged, _ = save_adapters(folder, stage=stage, start=start, trained_model=trainer.model,
                                        tokenizer=start.tokenizer, save_merged=save_merged)
    card = RewriterCard(stage=stage, base=start.base, adapters=adapters, merged=merged, prompt=asdict(start.prompt),
                        model_version=f"{folder.name}-{adapter_digest(folder, adapters)}", parent=start.parent,
                        training=training, metrics=metrics)
    write_rewriter_card(folder, card)
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    log.info("rewriter %s written to %s (%s)", stage, folder, card.model_version)
    return card


def _start(init: str, prompt: RewritePromptSettings | None, bf16: bool):
    # A fresh student takes ``prompt``; a rewriter folder keeps the prompt its card records.
    return starting_point(init, prompt or RewritePromptSettings(), bf16=bf16, load=load_rewriter_model,
                          prompt_type=card_prompt)


def train_distill(examples: pd.DataFrame, out: str | Path, *, student: str = "packaged:smollm2",
                  settings: RewriteSFTSettings | None = None, prompt: RewritePromptSettings | None = None,
                  init: str | None = None, data_info: dict[str, Any] | None = None,
                  context: Context | None = None) -> RewriterCard:
    """LoRA SFT of ``student`` (or of the rewriter folder ``init``) on ``query, rewrite`` rows; ``context``
    gives each query's nearest listing titles when the prompt shows them."""
    settings = settings or RewriteSFTSettings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    start = _start(init or student, prompt, use_bf16(settings.bf16))
    frame = examples
    if settings.max_examples is not None and len(frame) > settings.max_examples:
        frame = frame.sample(n=settings.max_examples, random_state=settings.seed)
    frame = frame.sample(frac=1.0, random_state=settings.seed).reset_index(drop=True)
    dataset = distill_examples(frame, start.tokenizer, start.prompt, settings.max_length, context)
    trainer, result, progress_log, resume = run_sft(start, dataset, out, settings, finished=is_rewriter_folder)
    training = {"stage": "distill", "init": init or student, "examples": len(dataset),
                "tokens": int(sum(len(x) for x in dataset["input_ids"])), "steps": result.global_step,
                "hyper_parameters": asdict(settings), "device": str(start.model.device), "resumed_from": resume,
                "data": data_info or {}}
    metrics = {"train_loss": result.training_loss, "train_seconds": round(time.monotonic() - started, 1),
               "loss_history": [h["loss"] for h in progress_log.history if "loss" in h]}
    return _finish(out, stage="distill", start=start, trainer=trainer, training=training, metrics=metrics,
                   save_merged=settings.save_merged)


def select_rl_queries(queries: Sequence[str], original_ndcg: np.ndarray, n: int, *, hard_share: float,
                      seed: int = 0) -> pd.DataFrame:
    """``n`` RL prompts (``query, original_ndcg, hard``): ``hard_share`` of them queries whose original
    NDCG@10 is below 1, the rest any judged query; queries without graded listings are left out."""
    frame = pd.DataFrame({"query": list(queries), "original_ndcg": np.asarray(original_ndcg, dtype=float)})
    frame = frame[frame["original_ndcg"].notna()].drop_duplicates("query").reset_index(drop=True)
    if frame.empty:
        raise InputError("no RL query has graded listings; the retrieval reward needs query_judgments")
    rng = np.random.default_rng(seed)
    hard = frame.index[frame["original_ndcg"] < 1.0 - 1e-9].to_numpy()
    n = min(n, len(frame))
    chosen = rng.permutation(hard)[: int(round(n * hard_share))]
    rest = np.setdiff1d(frame.index.to_numpy(), chosen)
    chosen = np.concatenate([chosen, rng.permutation(rest)[: n - len(chosen)]])
    out = frame.iloc[rng.permutation(chosen)].reset_index(drop=True)
    return out.assign(hard=out["original_ndcg"] < 1.0 - 1e-9)


def train_rewriter_rl(queries: Sequence[str], init: str, out: str | Path, *, judge,
                      reward_funcs: Sequence[Callable], reward_weights: Sequence[float],
                      settings: RewriteRLSettings | None = None,
                      data_info: dict[str, Any] | None = None, context: Context | None = None) -> RewriterCard:
    """GRPO from the rewriter folder ``init`` (the distilled model) on training ``queries``.

    ``judge``: the :class:`~epm_spark.models.rewriter.retrieval.RetrievalJudge` that picks the
    prompts (and, inside ``reward_funcs``, scores the samples); ``context``: as for :func:`train_distill`.
    """
    from datasets import Dataset

    settings = settings or RewriteRLSettings()
    if len(reward_funcs) != len(reward_weights):
        raise InputError(f"{len(reward_funcs)} reward functions but {len(reward_weights)} weights")
    if not is_rewriter_folder(init):
        raise InputError(f"{init} is not a rewriter folder; RL starts from a distilled one (--stage distill)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    start = _start(init, None, use_bf16(settings.bf16))
    rng = np.random.default_rng(settings.seed)
    pool = sorted({normalise_query(q, start.prompt.max_query_chars) for q in queries})
    if settings.pool is not None and len(pool) > settings.pool:
        pool = sorted(rng.choice(pool, size=settings.pool, replace=False).tolist())
    chosen = select_rl_queries(pool, judge.ndcg(pool, pool), settings.max_steps * settings.prompts_per_step,
                               hard_share=settings.hard_share, seed=settings.seed)
    shown = _contexts(chosen["query"].tolist(), start.prompt, context)
    dataset = Dataset.from_dict({"prompt": [rewrite_messages(q, start.prompt, c)
                                            for q, c in zip(chosen["query"], shown)],
                                 "query": chosen["query"].tolist()})
    pool_seconds = time.monotonic() - started
    trainer, result, progress_log, resume = run_grpo(start, dataset, out, settings, reward_funcs=reward_funcs,
                                                     reward_weights=reward_weights, finished=is_rewriter_folder)
    training = {"stage": "rl", "init": str(init), "prompts": len(dataset), "pool": len(pool),
                "hard_prompts": int(chosen["hard"].sum()), "mean_original_ndcg": float(chosen["original_ndcg"].mean()),
                "steps": result.global_step, "hyper_parameters": asdict(settings),
                "reward_functions": [getattr(f, "__name__", type(f).__name__) for f in reward_funcs],
                "reward_weights": list(reward_weights), "device": str(start.model.device), "resumed_from": resume,
                "data": data_info or {}}
    metrics = {"train_seconds": round(time.monotonic() - started, 1), "pool_seconds": round(pool_seconds, 1),
               **rl_metrics(progress_log.history)}
    return _finish(out, stage="rl", start=start, trainer=trainer, training=training, metrics=metrics,
                   save_merged=settings.save_merged)
