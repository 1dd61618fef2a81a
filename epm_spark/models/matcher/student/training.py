"""What the SFT and RL stages share: the starting model, the trainers, progress lines, the model folder.

A stage starts from a student (``packaged:smollm2``, a model folder) or from a student model
folder (a matcher's, a rewriter's): that folder's adapters are merged into the base weights and
a fresh LoRA adapter is trained on top, so the result is ``base + adapters[0] + ... + new adapter``,
applied in order at load time (:func:`epm_spark.models.matcher.student.inference.load_adapted_student`).

:func:`run_sft` and :func:`run_grpo` run TRL's trainers on any tokenized prompt/completion set
or prompt set with reward callables; the matcher (:mod:`.sft`, :mod:`.rl`) and the query
rewriter (:mod:`epm_spark.models.rewriter.training`) each build their own data and model card
around them.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import torch
from transformers import TrainerCallback

from epm_spark.models.matcher.evaluation import stratified_sample, thresholds_by_group
from epm_spark.models.matcher.model_folder import MatcherCard, is_model_folder, write_card
from epm_spark.models.matcher.settings import InferenceSettings, LoraSettings, PromptSettings
from epm_spark.models.precision import bf16_autocast_faster, resolve_device

__all__ = ["StartingPoint", "starting_point", "balanced_sample", "lora_config", "LogProgress", "finish_model_folder",
           "tune_thresholds", "use_bf16", "checkpoint_to_resume", "quiet", "run_sft", "run_grpo", "save_adapters",
           "rl_metrics"]

log = logging.getLogger(__name__)


@dataclass
class StartingPoint:
    """The model a stage trains, and where it came from."""

    model: Any
    tokenizer: Any
    base: str  # the student setting to record in the card
    prompt: PromptSettings
    adapters: list[Path] = field(default_factory=list)  # earlier adapters, already merged into `model`
    parent: str | None = None


def use_bf16(wanted: bool) -> bool:
    """bf16 mixed precision where it beats float32 on the training device (a GPU with bf16, a CPU with AMX)."""
    return bool(wanted and bf16_autocast_faster(resolve_device("auto")))


def starting_point(init: str, prompt: Any = None, *, bf16: bool = False, load: Callable | None = None,
                   prompt_type: type = PromptSettings) -> StartingPoint:
    """Load ``init`` (a student or a student model folder) with earlier adapters merged, ready for a new adapter.

    ``load`` (default: the matcher's loader) returns ``(model, tokenizer, card or None)``; a card
    names its ``base``, ``adapters`` and ``prompt`` (a mapping of ``prompt_type``'s fields).
    With ``bf16`` the weights are bf16 on a GPU; on a CPU they stay float32 and the Trainer's
    bf16 autocast does the matmuls in bf16 (pure-bf16 weights lose LoRA updates to rounding).
    """
    if load is None:
        from epm_spark.models.matcher.student.inference import load_matcher_model as load

    gpu_bf16 = bf16 and resolve_device("auto").type == "cuda"
    model, tokenizer, card = load(init, dtype="bfloat16" if gpu_bf16 else "float32")
    if card is None:
        return StartingPoint(model, tokenizer, init, prompt or prompt_type())
    folder = Path(init)
    # A model keeps the prompt it was trained with; a different one would be out of distribution.
    return StartingPoint(model, tokenizer, card.base, prompt_type(**card.prompt),
                         [folder / a for a in card.adapters], parent=str(folder.resolve()))


def balanced_sample(frame: pd.DataFrame, n: int | None, positive_share: float | None,
                    seed: int = 0) -> pd.DataFrame:
    """At most ``n`` rows, the same number per benchmark, ``positive_share`` of them matches.

    A benchmark short of matches (or non-matches) gives what it has. ``n`` None keeps every
    row; ``positive_share`` None keeps each benchmark's own share of matches.
    """
    if n is None or len(frame) <= n:
        return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    groups = list(frame.groupby("benchmark", sort=True)) if "benchmark" in frame else [("all", frame)]
    per = n // len(groups)
    parts = []
    for _, group in groups:
        if positive_share is None:
            parts.append(stratified_sample(group, per, seed=seed))
            continue
        positives, negatives = group[group["label"] == 1], group[group["label"] != 1]
        k = min(len(positives), round(per * positive_share))
        parts.append(positives.sample(n=k, random_state=seed))
        parts.append(negatives.sample(n=min(len(negatives), per - k), random_state=seed))
    return pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def lora_config(settings: LoraSettings, model=None):
    """peft's LoraConfig; with ``top_layers``, only the model's top layers get adapters."""
    from peft import LoraConfig

    targets: str | list[str] = settings.target_modules
    if targets == ["all-linear"]:
        targets = "all-linear"
    layers = None
    if settings.top_layers is not None:
        n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
        if n is None:
            raise ValueError("lora top_layers needs a model whose config names num_hidden_layers")
        layers = list(range(max(0, n - settings.top_layers), n))
        if targets == "all-linear":
            # peft takes a layer subset only with named modules: every linear layer's name but the head's.
            targets = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                              if isinstance(module, torch.nn.Linear) and ".layers." in name})
    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=targets, task_type="CAUSAL_LM", layers_to_transform=layers,
                      layers_pattern="layers" if layers is not None else None)


class LogProgress(TrainerCallback):
    """One log line per logging step (step/total, loss, rate, ETA): readable in a log file, unlike a bar."""

    def __init__(self, stage: str):
        self.stage = stage
        self.start = time.monotonic()
        self.history: list[dict[str, Any]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        self.history.append({"step": state.global_step, **logs})
        elapsed = time.monotonic() - self.start
        done = max(state.global_step, 1)
        eta = elapsed / done * max(state.max_steps - state.global_step, 0)
        # Learning rates are 1e-5-ish: four decimals would print 0.0.
        shown = {k: (f"{v:.2e}" if k == "learning_rate" else round(v, 4)) if isinstance(v, float) else v
                 for k, v in logs.items()
                 if k in ("loss", "learning_rate", "reward", "reward_std", "grad_norm", "entropy",
                          "completions/mean_length") or k.startswith("rewards/")}
        log.info("%s step %d/%d %s elapsed %.0fs eta %.0fs", self.stage, state.global_step, state.max_steps,
                 " ".join(f"{k}={v}" for k, v in shown.items()), elapsed, eta)


def quiet(trainer) -> None:
    """Drop the Trainer's printed log dicts: :class:`LogProgress` logs them, and stdout stays the command's."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


def checkpoint_to_resume(folder: Path, finished: Callable[[Path], bool] = is_model_folder) -> str | None:
    """The newest Trainer checkpoint in ``folder/checkpoints`` of an unfinished run, if any."""
    checkpoints = sorted((folder / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    if checkpoints and not finished(folder):
        return str(checkpoints[-1])
    return None


def run_sft(start: StartingPoint, dataset, out: Path, settings, *, group_by_length: bool = True,
            finished: Callable[[Path], bool] = is_model_folder):
    """LoRA SFT of ``start.model`` on a tokenized dataset (``input_ids``, ``completion_mask``), loss on
    the completion only; checkpoints in ``out/checkpoints``, resumed when an unfinished run left some.

    Returns (trainer, train result, progress log, checkpoint resumed from).
    """
    from trl import SFTConfig, SFTTrainer

    bf16 = use_bf16(settings.bf16)
    gpu = start.model.device.type == "cuda"
    start.tokenizer.padding_side = "right"
    args = SFTConfig(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation,
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        warmup_steps=settings.warmup_ratio,  # a float below 1 is a share of the steps
        lr_scheduler_type="cosine",
        # Short and long examples in one batch would pad the short ones to the long: batches of
        # similar lengths waste no compute on padding.
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        logging_steps=settings.logging_steps,
        save_steps=settings.save_steps,
        save_total_limit=2,
        bf16=bf16,
        gradient_checkpointing=settings.gradient_checkpointing and gpu,
        completion_only_loss=True,
        max_length=settings.max_length,
        seed=settings.seed,
        report_to=[],
        disable_tqdm=True,
        use_cpu=not gpu,
        dataloader_num_workers=0,
    )
    progress_log = LogProgress("sft")
    trainer = SFTTrainer(model=start.model, args=args, train_dataset=dataset, processing_class=start.tokenizer,
                         peft_config=lora_config(settings.lora, start.model), callbacks=[progress_log])
    quiet(trainer)
    resume = checkpoint_to_resume(out, finished)
    if resume:
        log.info("resuming SFT from %s", resume)
    return trainer, trainer.train(resume_from_checkpoint=resume), progress_log, resume


def run_grpo(start: StartingPoint, dataset, out: Path, settings, *, reward_funcs: Sequence[Callable],
             reward_weights: Sequence[float], finished: Callable[[Path], bool] = is_model_folder):
    """GRPO of a fresh LoRA adapter on ``start.model`` over a prompt dataset (``prompt`` chat messages plus
    the reward functions' columns), ``reward_funcs`` weighted by ``reward_weights``.

    Returns (trainer, train result, progress log, checkpoint resumed from).
    """
    from trl import GRPOConfig, GRPOTrainer

    bf16 = use_bf16(settings.bf16)
    gpu = start.model.device.type == "cuda"
    start.model.train()
    args = GRPOConfig(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=settings.prompts_per_step * settings.num_generations,
        gradient_accumulation_steps=1,
        num_generations=settings.num_generations,
        max_completion_length=settings.max_completion_length,
        temperature=settings.temperature,
        beta=settings.beta,
        loss_type=settings.loss_type,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=min(5, settings.max_steps // 10),
        max_steps=settings.max_steps,
        reward_weights=list(reward_weights),
        logging_steps=settings.logging_steps,
        save_steps=settings.save_steps,
        save_total_limit=2,
        bf16=bf16,
        gradient_checkpointing=settings.gradient_checkpointing and gpu,
        seed=settings.seed,
        report_to=[],
        disable_tqdm=True,
        use_cpu=not gpu,
        dataloader_num_workers=0,
        shuffle_dataset=False,  # the caller already chose and shuffled the prompts, with its own seed
    )
    progress_log = LogProgress("rl")
    trainer = GRPOTrainer(model=start.model, reward_funcs=list(reward_funcs), args=args, train_dataset=dataset,
                          processing_class=start.tokenizer, peft_config=lora_config(settings.lora, start.model),
                          callbacks=[progress_log])
    quiet(trainer)
    resume = checkpoint_to_resume(out, finished)
    if resume:
        log.info("resuming RL from %s", resume)
    return trainer, trainer.train(resume_from_checkpoint=resume), progress_log, resume


def rl_metrics(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Reward, per-function reward and completion length at the start and the end of a GRPO run."""
    def mean(values: list[float]) -> float | None:
        return float(sum(values) / len(values)) if values else None

    rewards = [h["reward"] for h in history if "reward" in h]
    metrics: dict[str, Any] = {
        "reward_history": rewards, "reward_first_10": mean(rewards[:10]), "reward_last_10": mean(rewards[-10:]),
        "completion_length_last_10": mean([h["completions/mean_length"] for h in history
                                           if "completions/mean_length" in h][-10:]),
    }
    for key in {k for h in history for k in h if k.startswith("rewards/") and k.endswith("/mean")}:
        values = [h[key] for h in history if key in h]
        metrics[f"{key}_first_10"], metrics[f"{key}_last_10"] = mean(values[:10]), mean(values[-10:])
    return metrics


def tune_thresholds(matcher, valid: pd.DataFrame | None, per_benchmark: int) -> tuple[dict[str, float], dict]:
    """Thresholds maximising validation F1: one per benchmark, and ``default`` over all of them pooled."""
    if valid is None or valid.empty or not valid["label"].astype(bool).any():
        return {"default": 0.5}, {}
    groups = valid.groupby("benchmark") if "benchmark" in valid else [("all", valid)]
    samples = [stratified_sample(group, per_benchmark, seed=0).assign(_group=str(name)) for name, group in groups]
    sample = pd.concat(samples, ignore_index=True)
    probs = matcher.predict_proba(sample, show_progress=True)
    thresholds, f1s = thresholds_by_group(probs, sample["label"].to_numpy(), sample["_group"].to_numpy())
    metrics: dict[str, Any] = {f"valid_f1/{g}": f for g, f in f1s.items()}
    metrics.update({f"valid_pairs/{g}": int(n) for g, n in sample["_group"].value_counts().items() if g in thresholds})
    return thresholds, metrics


def save_adapters(folder: Path, *, stage: str, start: StartingPoint, trained_model, tokenizer,
                  save_merged: bool) -> tuple[list[str], str | None, Any]:
    """Copy the start's adapters, save the new one, the tokenizer and (optionally) merged weights into
    ``folder``; returns (adapters in order, merged folder or None, the merged model)."""
    adapters = []
    for i, src in enumerate(start.adapters):
        name = f"adapters/{i}-{src.name}"
        shutil.copytree(src, folder / name, dirs_exist_ok=True)
        adapters.append(name)
    name = f"adapters/{len(adapters)}-{stage}"
    trained_model.save_pretrained(str(folder / name))
    adapters.append(name)
    tokenizer.save_pretrained(str(folder / "tokenizer"))
    merged_model = trained_model.merge_and_unload()
    merged = None
    if save_merged:
        merged_model.save_pretrained(str(folder / "merged"), safe_serialization=True)
        tokenizer.save_pretrained(str(folder / "merged"))
        merged = "merged"
    return adapters, merged, merged_model


def finish_model_folder(folder: Path, *, stage: str, start: StartingPoint, trained_model, tokenizer,
                        valid: pd.DataFrame | None, inference: InferenceSettings, training: dict[str, Any],
                        metrics: dict[str, Any], save_merged: bool) -> MatcherCard:
    """Write adapters, tokenizer, optional merged weights, tuned thresholds and the card."""
    from epm_spark.models.matcher.student.inference import Matcher

    adapters, merged, merged_model = save_adapters(folder, stage=stage, start=start, trained_model=trained_model,
                                                   tokenizer=tokenizer, save_merged=save_merged)
    tune_start = time.monotonic()
    matcher = Matcher(merged_model, tokenizer, prompt=start.prompt, settings=inference)
    thresholds, valid_metrics = tune_thresholds(matcher, valid, inference.validation_pairs)
    metrics = {**metrics, **valid_metrics, "threshold_tuning_s": round(time.monotonic() - tune_start, 1)}
    card = MatcherCard(stage=stage, base=start.base, adapters=adapters, merged=merged, prompt=asdict(start.prompt),
                       thresholds=thresholds, parent=start.parent, training=training, metrics=metrics)
    write_card(folder, card)
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    log.info("%s model written to %s (thresholds %s)", stage, folder, thresholds)
    return card
