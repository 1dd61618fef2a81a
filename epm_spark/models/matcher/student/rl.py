"""Reinforcement learning of the student with GRPO (EPM-RL stage 2).

GRPO (Shao et al., DeepSeekMath, 2024) samples G completions per prompt, scores each with
the reward, and uses the group-normalised reward as the advantage of every token::

    r_i = w_format * format_i + w_label * label_i + w_judge * judge_i
    A_i = (r_i - mean(r_1..r_G)) / std(r_1..r_G)
    L   = - sum_i sum_t min(rho_it A_i, clip(rho_it, 1 - eps, 1 + eps) A_i) / sum_i |o_i|   (+ beta KL)

with rho the probability ratio to the sampling policy. TRL's ``GRPOTrainer`` runs it with a
fresh peft LoRA adapter on top of the SFT model (its adapters merged into the base, so the
reference policy, when ``beta > 0``, is the SFT model). The reward functions are the plain
callables of :mod:`epm_spark.models.matcher.supervision.rewards`, weighted by TRL's ``reward_weights``.

Prompts: GRPO learns nothing from a prompt whose G samples all score the same (zero
advantage), and on a CPU every step counts. So a pool of training pairs is first scored by
the SFT model in label mode, and ``hard_share`` of the prompts are the pairs whose group is
most likely to disagree on the label, ``1 - q^G - (1 - q)^G`` with q = P(gold label): the
uncertain ones. The rest are drawn at random, so easy pairs still anchor the format.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from epm_spark.errors import InputError
from epm_spark.models.matcher.evaluation import stratified_sample
from epm_spark.models.matcher.model_folder import MatcherCard
from epm_spark.models.matcher.pairs import listing
from epm_spark.models.matcher.student.prompt import PairPrompter, check_pair_frame
from epm_spark.models.matcher.supervision.rewards import reward_columns
from epm_spark.models.matcher.settings import InferenceSettings, RLSettings
from epm_spark.models.matcher.student.training import finish_model_folder, rl_metrics, run_grpo, starting_point, use_bf16

__all__ = ["select_prompts", "rl_dataset", "train_rl"]

log = logging.getLogger(__name__)


def select_prompts(pairs: pd.DataFrame, p_match: np.ndarray, n: int, *, hard_share: float, generations: int,
                   seed: int = 0) -> pd.DataFrame:
    """``n`` RL prompts from scored pairs: ``hard_share`` of them where a group of samples is most likely
    to disagree, the rest at random. Adds ``p_match`` and ``informative`` columns."""
    gold = pairs["label"].to_numpy().astype(bool)
    q = np.where(gold, p_match, 1.0 - p_match)
    informative = 1.0 - q ** generations - (1.0 - q) ** generations
    scored = pairs.assign(p_match=p_match, informative=informative).reset_index(drop=True)
    n = min(n, len(scored))
    n_hard = int(round(n * hard_share))
    rng = np.random.default_rng(seed)
    # A little noise breaks ties among equally informative pairs without favouring row order.
    hard = np.argsort(-(informative + rng.uniform(0, 1e-6, len(scored))), kind="stable")[:n_hard]
    rest = np.setdiff1d(np.arange(len(scored)), hard)
    easy = rng.choice(rest, size=min(n - n_hard, len(rest)), replace=False)
    chosen = np.concatenate([hard, easy])
    return scored.iloc[rng.permutation(chosen)].reset_index(drop=True)


def rl_dataset(pairs: pd.DataFrame, prompter: PairPrompter, system: str | None = None):
    """A ``datasets.Dataset`` of chat prompts plus the reward functions' columns (gold_label, left, right).

    Prompts stay chat messages: TRL renders them with the tokenizer's template, the same text
    :meth:`PairPrompter.render` gives, without a second BOS a plain-text prompt could get.
    """
    from datasets import Dataset

    check_pair_frame(pairs)
    if "label" not in pairs:
        raise InputError("RL pairs need a gold 'label' column for the label reward")
    rows = pairs.to_dict("records")
    columns = reward_columns(pairs)
    return Dataset.from_dict({
        "prompt": [prompter.messages(listing(r, "left"), listing(r, "right"), system) for r in rows],
        **{c: columns[c].tolist() for c in columns.columns},
    })


def train_rl(pairs: pd.DataFrame, init: str, out: str | Path, *, reward_funcs: Sequence[Callable],
             reward_weights: Sequence[float], settings: RLSettings | None = None,
             inference: InferenceSettings | None = None, valid: pd.DataFrame | None = None,
             data_info: dict[str, Any] | None = None) -> MatcherCard:
    """GRPO from the model folder ``init`` (the SFT model) on training ``pairs`` with gold labels."""
    from epm_spark.models.matcher.student.inference import Matcher

    settings = settings or RLSettings()
    inference = inference or InferenceSettings()
    if len(reward_funcs) != len(reward_weights):
        raise InputError(f"{len(reward_funcs)} reward functions but {len(reward_weights)} weights")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    start = starting_point(init, bf16=use_bf16(settings.bf16))
    prompter = PairPrompter(start.tokenizer, start.prompt)

    wanted = settings.max_steps * settings.prompts_per_step
    by = ["benchmark", "label"] if "benchmark" in pairs else "label"
    pool = stratified_sample(pairs, settings.pool, seed=settings.seed, by=by)
    scorer = Matcher(start.model, start.tokenizer, prompt=start.prompt, settings=inference)
    p_match = scorer.predict_proba(pool, show_progress=True)
    chosen = select_prompts(pool, p_match, wanted, hard_share=settings.hard_share,
                            generations=settings.num_generations, seed=settings.seed)
    scoring_seconds = time.monotonic() - started
    # The short decision is the label phase's task: its prompts carry the label system message.
    dataset = rl_dataset(chosen, prompter, prompter.label_system if settings.short_decision else None)

    trainer, result, progress_log, resume = run_grpo(start, dataset, out, settings, reward_funcs=reward_funcs,
                                                     reward_weights=reward_weights)
    history = progress_log.history
    training = {
        "stage": "rl", "init": str(init), "prompts": len(dataset), "pool": len(pool),
        "hard_prompts": int(round(len(chosen) * settings.hard_share)),
        "mean_informative": float(chosen["informative"].mean()),
        "label_counts": chosen["label"].value_counts().to_dict(),
        "benchmarks": chosen["benchmark"].value_counts().to_dict() if "benchmark" in chosen else None,
        "steps": result.global_step, "hyper_parameters": asdict(settings),
        "reward_functions": [getattr(f, "__name__", type(f).__name__) for f in reward_funcs],
        "reward_weights": list(reward_weights), "device": str(start.model.device), "resumed_from": resume,
        "data": data_info or {},
    }
    metrics = {"train_seconds": round(time.monotonic() - started, 1),
               "pool_scoring_seconds": round(scoring_seconds, 1), **rl_metrics(history)}
    return finish_model_folder(out, stage="rl", start=start, trained_model=trainer.model,
                               tokenizer=start.tokenizer, valid=valid, inference=inference, training=training,
                               metrics=metrics, save_merged=settings.save_merged)

