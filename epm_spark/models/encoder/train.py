"""Training of the dual-encoder: stage 1 (contrastive) or stage 2 (ROAR), one dataclass configures it.

    config = EncoderTrainingConfig(stage="contrastive", output_dir="models/encoder/abt")
    result = EncoderTrainer(config).train(products, labelled_pairs)
    result.model_dir  # safetensors, tokenizer, configs and model_card.json

Runs under accelerate: CPU here, one or many GPUs on a cluster (``accelerate launch``),
mixed precision on GPUs. Each epoch ends with retrieval on the validation split of every
benchmark trained on and a checkpoint; a re-run with the same ``output_dir`` resumes
after the last finished epoch. The model folder written at the end holds the best epoch
by validation (or the starting model when no epoch beat it, which the card says).
In-batch negatives are per device: with N processes each step sees N smaller batches.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from epm_spark.errors import ConfigError, InputError
from epm_spark.models.encoder.config import EncoderSettings
from epm_spark.models.encoder.data import (
    TRAIN_SPLITS, ContrastiveExample, GradedQuery, Key, benchmarks_from_tables, contrastive_examples,
    graded_queries, known_duplicates, right_keys, sample_random_negatives,
)
from epm_spark.models.encoder.evaluate import evaluate_retrieval
from epm_spark.models.encoder.losses import MaskedContrastiveLoss, RoarLoss
from epm_spark.models.encoder.model import DualEncoder
from epm_spark.progress import progress

__all__ = ["EncoderTrainingConfig", "EncoderTrainer", "TrainingResult"]

log = logging.getLogger(__name__)

STATE_FILE = "state.json"


@dataclass
class EncoderTrainingConfig:
    """Everything one training run needs besides its data."""

    stage: Literal["contrastive", "roar"] = "contrastive"
    # The model folder written at the end; checkpoints go to its checkpoints/ sub-folder.
    output_dir: str = "models/encoder/contrastive"
    # Starting weights (a folder or packaged:minilm); default: encoder.backbone. Stage 2 starts from stage 1.
    init: str | None = None
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    # Benchmarks (the `benchmark` column of labelled_pairs) to train on; empty: all of them.
    benchmarks: list[str] = field(default_factory=list)
    train_splits: list[str] = field(default_factory=lambda: list(TRAIN_SPLITS))
    # Validation split name as Benchmark.split_pairs takes it (valid -> valid_medium on WDC Products).
    valid_split: str = "valid"
    # Validation metric, averaged over benchmarks, that picks the best epoch.
    select_metric: str = "mrr"
    # Evaluate the starting model too, so training that only hurts keeps the start.
    evaluate_start: bool = True
    # Stop after this many optimizer steps in all (smoke runs, tests); None: the full epochs.
    # The epoch it cuts short counts as finished.
    max_steps: int | None = None
    # no | fp16 | bf16 | auto (bf16 where the GPU has it, fp16 on other GPUs, none on CPU).
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    resume: bool = True
    keep_checkpoints: bool = False
    # Free text for the card: where the data came from.
    data_description: str = ""

    def __post_init__(self) -> None:
        if self.stage not in ("contrastive", "roar"):
            raise ConfigError(f"stage must be contrastive or roar, got {self.stage!r}")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ConfigError(f"max_steps must be > 0, got {self.max_steps}")

    @property
    def stage_settings(self):
        return self.encoder.contrastive if self.stage == "contrastive" else self.encoder.roar


@dataclass
class TrainingResult:
    model_dir: Path
    model_version: str
    best_epoch: int
    history: list[dict[str, Any]]


class EncoderTrainer:
    """Trains a :class:`DualEncoder` on warehouse rows (``products`` + ``labelled_pairs`` frames)."""

    def __init__(self, config: EncoderTrainingConfig) -> None:
        self.config = config
        self.out = Path(config.output_dir)
        self.checkpoints = self.out / "checkpoints"

    # ------------------------------------------------------------------ public

    def train(self, products: pd.DataFrame, pairs: pd.DataFrame) -> TrainingResult:
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState
        from transformers import get_linear_schedule_with_warmup

        cfg, stage = self.config, self.config.stage_settings
        benches = benchmarks_from_tables(products, pairs, cfg.benchmarks or None)
        pairs = pd.concat([b.pairs for b in benches], ignore_index=True)
        init = cfg.init or cfg.encoder.backbone
        encoder = DualEncoder.from_settings(cfg.encoder, backbone=init, for_training=True)
        init_version = encoder.model_version
        texts = dict(zip(zip(products["source"].astype(str), products["product_id"].astype(str)),
                         encoder.listing_texts(products)))
        duplicates = known_duplicates(pairs, cfg.train_splits)
        pool = right_keys(pairs, cfg.train_splits)
        if cfg.stage == "contrastive":
            items: list[Any] = contrastive_examples(pairs, cfg.train_splits)
        else:
            items = [q for q in graded_queries(pairs, cfg.train_splits)
                     if len(q.groups) >= 2 or stage.random_negatives > 0]
            if stage.queries_with_matches_only and items:
                top = max(max(q.groups) for q in items)
                items = [q for q in items if max(q.groups) == top]
        missing = {k for k in self._keys_of(items) if k not in texts}
        if missing:
            raise InputError(f"{len(missing)} listings named by labelled_pairs are not in products, "
                             f"e.g. {sorted(missing)[:3]}")

        # A Trainer that ran earlier in this process (the matcher's cross-encoder, in bf16) leaves
        # accelerate's process-wide state behind, and accelerate refuses another precision after
        # it; transformers' Trainer resets it the same way before each run.
        AcceleratorState._reset_state()
        accelerator = Accelerator(mixed_precision=self._mixed_precision(),
                                  cpu=cfg.encoder.device == "cpu")
        encoder.to(accelerator.device)
        torch.manual_seed(stage.seed)
        per_process = len(items) // accelerator.num_processes
        steps_per_epoch = max(1, math.ceil(per_process / stage.batch_size))
        total_steps = steps_per_epoch * stage.epochs
        # max_steps stops early but keeps the schedule of the full plan, so a later run
        # without it resumes the very same plan.
        stop_at = min(total_steps, cfg.max_steps or total_steps)
        params = [p for p in encoder.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=stage.lr, weight_decay=stage.weight_decay)
        scheduler = get_linear_schedule_with_warmup(optimizer, int(stage.warmup_ratio * total_steps), total_steps)
        model, optimizer, scheduler = accelerator.prepare(encoder, optimizer, scheduler)
        loss_fn = (MaskedContrastiveLoss(stage.temperature, stage.margin, stage.mask_labelled_negatives)
                   if cfg.stage == "contrastive" else RoarLoss(stage.temperature, stage.margins))

        state = self._load_state(accelerator) if cfg.resume else None
        history: list[dict[str, Any]] = state["history"] if state else []
        best = state["best"] if state else None
        done_steps = state["steps"] if state else 0
        first_epoch = state["epochs"] + 1 if state else 1
        if state is None and cfg.evaluate_start:
            metrics = self._start_metrics_from_card(init, benches) or self._validate(accelerator, encoder, benches)
            history.append({"epoch": 0, "steps": 0, "valid": metrics})
            best = {"epoch": 0, "score": metrics[cfg.select_metric], "model": init}
            log.info("start: validation %s = %.4f", cfg.select_metric, best["score"])

        for epoch in range(first_epoch, stage.epochs + 1):
            if done_steps >= stop_at:
                break
            started = time.monotonic()
            rng = np.random.default_rng(stage.seed + epoch)
            if cfg.stage == "contrastive":
                epoch_items = self._with_mined_negatives(encoder, items, texts, pool, duplicates, stage)
            else:
                epoch_items = self._with_random_negatives(items, pool, duplicates, stage, rng)
            batches = self._batches(len(epoch_items), stage.batch_size, rng, accelerator)
            model.train()
            losses, masked = [], []
            bar = progress(batches, desc=f"{cfg.stage} epoch {epoch}/{stage.epochs}", unit="step")
            for batch in bar:
                if done_steps >= stop_at:
                    break
                chosen = [epoch_items[i] for i in batch]
                if cfg.stage == "contrastive":
                    loss = self._contrastive_loss(model, encoder, chosen, texts, duplicates, loss_fn, stage.symmetric)
                    masked.append(loss_fn.last_masked_fraction)
                else:
                    loss = self._roar_loss(model, encoder, chosen, texts, loss_fn)
                accelerator.backward(loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                done_steps += 1
                losses.append(float(loss.detach()))
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
            model.eval()
            encoder.weights_changed()
            metrics = self._validate(accelerator, encoder, benches)
            record = {"epoch": epoch, "steps": done_steps, "train_loss": float(np.mean(losses)) if losses else None,
                      "seconds": round(time.monotonic() - started, 1), "valid": metrics}
            if masked:
                record["masked_negative_fraction"] = float(np.mean(masked))
            history.append(record)
            log.info("epoch %d: loss %.4f, validation %s = %.4f", epoch, record["train_loss"] or float("nan"),
                     cfg.select_metric, metrics[cfg.select_metric])
            if best is None or metrics[cfg.select_metric] > best["score"]:
                best = {"epoch": epoch, "score": metrics[cfg.select_metric],
                        "model": str(self.checkpoints / "best")}
                if accelerator.is_main_process:
                    accelerator.unwrap_model(model).save(self.checkpoints / "best")
            self._save_state(accelerator, epoch, done_steps, history, best)

        accelerator.wait_for_everyone()
        return self._finish(accelerator, encoder, best, history, init, init_version, benches, items)

    # ------------------------------------------------------------------ steps

    @staticmethod
    def _keys_of(items: list[Any]) -> set[Key]:
        keys: set[Key] = set()
        for item in items:
            if isinstance(item, ContrastiveExample):
                keys.update([item.anchor, item.positive, *item.negatives])
            else:
                keys.add(item.query)
                for group in item.groups.values():
                    keys.update(group)
        return keys

    def _mixed_precision(self) -> str:
        wanted = self.config.mixed_precision
        if wanted != "auto":
            return wanted
        if self.config.encoder.device == "cpu" or not torch.cuda.is_available():
            return "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"

    @staticmethod
    def _batches(n: int, batch_size: int, rng: np.random.Generator, accelerator: Any) -> list[list[int]]:
        """This process's batches of a seeded permutation; every process gets as many."""
        order = rng.permutation(n)
        per = len(order) // accelerator.num_processes
        mine = order[accelerator.process_index * per:(accelerator.process_index + 1) * per]
        return [mine[i:i + batch_size].tolist() for i in range(0, len(mine), batch_size)]

    def _with_mined_negatives(self, encoder: DualEncoder, examples: list[ContrastiveExample],
                              texts: dict[Key, str], pool: list[Key], duplicates: dict[Key, set[Key]],
                              stage: Any) -> list[tuple[ContrastiveExample, list[Key], int]]:
        """Each example with ``hard_negatives`` negatives: half labelled (verified), half mined.

        Mined negatives are the current model's nearest non-duplicates of the anchor, the
        confusions retrieval actually makes; labelled ones fill in where mining finds too
        few and vice versa. Returns (example, negatives, how many of them are labelled).
        """
        wanted = stage.hard_negatives
        mined: dict[Key, list[Key]] = {}
        if wanted and stage.mine_top_k and pool:
            anchors = sorted({e.anchor for e in examples})
            a = encoder.encode([texts[k] for k in anchors], query=True)
            c = encoder.encode([texts[k] for k in pool])
            top = min(stage.mine_top_k, len(pool))
            nearest = torch.topk(torch.from_numpy(a) @ torch.from_numpy(c).T, top, dim=1).indices.numpy()
            for anchor, row in zip(anchors, nearest):
                skip = duplicates.get(anchor, set())
                mined[anchor] = [pool[j] for j in row if pool[j] not in skip and pool[j] != anchor]
        out = []
        for e in examples:
            candidates = [k for k in mined.get(e.anchor, []) if k not in e.negatives and k != e.positive]
            n_labelled = min(len(e.negatives), max(wanted - len(candidates), math.ceil(wanted / 2)))
            labelled = e.negatives[:n_labelled]
            out.append((e, labelled + candidates[: wanted - n_labelled], n_labelled))
        return out

    @staticmethod
    def _with_random_negatives(queries: list[GradedQuery], pool: list[Key], duplicates: dict[Key, set[Key]],
                               stage: Any, rng: np.random.Generator) -> list[GradedQuery]:
        capped = []
        for q in queries:
            groups = {}
            for grade, members in q.groups.items():
                limit = stage.max_matches if grade == max(q.groups) else stage.hard_negatives
                chosen = [members[i] for i in sorted(rng.permutation(len(members))[:limit])] if limit else []
                if chosen:
                    groups[grade] = chosen
            capped.append(GradedQuery(q.query, groups))
        with_random = sample_random_negatives(capped, pool, stage.random_negatives, duplicates, rng)
        return [q for q in with_random if len(q.groups) >= 2]

    @staticmethod
    def _contrastive_loss(model: Any, encoder: DualEncoder, chosen: list[tuple[ContrastiveExample, list[Key], int]],
                          texts: dict[Key, str], duplicates: dict[Key, set[Key]], loss_fn: MaskedContrastiveLoss,
                          symmetric: bool) -> torch.Tensor:
        anchors = [e.anchor for e, _, _ in chosen]
        positives = [e.positive for e, _, _ in chosen]
        candidates = list(positives)
        labelled: list[set[Key]] = []
        for e, negatives, n_labelled in chosen:
            candidates.extend(negatives)
            labelled.append(set(e.negatives))
        a = encoder.embed([texts[k] for k in anchors], query=True, forward=model)
        c = encoder.embed([texts[k] for k in candidates], forward=model)
        b, n = len(anchors), len(candidates)
        duplicate = torch.zeros((b, n), dtype=torch.bool)
        verified = torch.zeros((b, n), dtype=torch.bool)
        for i, anchor in enumerate(anchors):
            same = duplicates.get(anchor, set()) | {positives[i]}
            for j, cand in enumerate(candidates):
                duplicate[i, j] = cand in same
                verified[i, j] = cand in labelled[i]
        device = a.device
        loss = loss_fn(a, c, None, duplicate.to(device), verified.to(device))
        if not symmetric:
            return loss
        # Right -> left: each positive retrieves its anchor among the batch's anchors.
        reverse_dup = torch.zeros((b, b), dtype=torch.bool)
        for i, positive in enumerate(positives):
            for j, anchor in enumerate(anchors):
                reverse_dup[i, j] = anchor == anchors[i] or positive in duplicates.get(anchor, set())
        masked_fraction = loss_fn.last_masked_fraction
        reverse = loss_fn(c[:b], a, None, reverse_dup.to(device))
        loss_fn.last_masked_fraction = (masked_fraction + loss_fn.last_masked_fraction) / 2
        return (loss + reverse) / 2

    @staticmethod
    def _roar_loss(model: Any, encoder: DualEncoder, chosen: list[GradedQuery], texts: dict[Key, str],
                   loss_fn: RoarLoss) -> torch.Tensor:
        flat: list[Key] = []
        grades: list[list[int]] = []
        for q in chosen:
            row = []
            for grade, members in q.groups.items():
                flat.extend(members)
                row.extend([grade] * len(members))
            grades.append(row)
        q_vec = encoder.embed([texts[q.query] for q in chosen], query=True, forward=model)
        c_vec = encoder.embed([texts[k] for k in flat], forward=model)
        width = max(len(r) for r in grades)
        scores = torch.zeros((len(chosen), width), device=q_vec.device)
        grade_t = torch.full((len(chosen), width), -1, dtype=torch.long, device=q_vec.device)
        start = 0
        for i, row in enumerate(grades):
            scores[i, : len(row)] = c_vec[start:start + len(row)] @ q_vec[i]
            grade_t[i, : len(row)] = torch.tensor(row, device=q_vec.device)
            start += len(row)
        return loss_fn(scores, grade_t)

    # ------------------------------------------------------------------ evaluation, state, output

    def _validate(self, accelerator: Any, encoder: DualEncoder, benches: list) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        if accelerator.is_main_process:
            per = {b.name: evaluate_retrieval(encoder, b, self.config.valid_split) for b in benches}
            for key in ("recall@1", "recall@10", "mrr"):
                metrics[key] = float(np.mean([m[key] for m in per.values()]))
            metrics["per_benchmark"] = {name: {k: v for k, v in m.items() if k in
                                               ("recall@1", "recall@10", "recall@50", "mrr", "ndcg@10", "queries")}
                                        for name, m in per.items()}
        payload = [metrics]
        if accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(payload)
        return payload[0]

    def _start_metrics_from_card(self, init: str, benches: list) -> dict[str, Any] | None:
        """The start model's validation metrics from its own card, when it was validated on the same data.

        Stage 2 starts from stage 1's folder, whose card already holds these numbers: the
        same weights on the same split give the same result, so they are not recomputed.
        """
        card_file = Path(init) / "model_card.json"
        if not card_file.exists():
            return None
        card = json.loads(card_file.read_text(encoding="utf-8"))
        data = card.get("data", {})
        if sorted(data.get("benchmarks", [])) != sorted(b.name for b in benches) \
                or data.get("valid_split") != self.config.valid_split:
            return None
        best = [h for h in card.get("history", []) if h.get("epoch") == card.get("best_epoch")]
        if not best or self.config.select_metric not in best[0].get("valid", {}):
            return None
        log.info("start: validation metrics of %s taken from its model card", init)
        return {**best[0]["valid"], "from_card": str(card_file)}

    def _load_state(self, accelerator: Any) -> dict[str, Any] | None:
        file = self.checkpoints / STATE_FILE
        if not file.exists():
            return None
        state = json.loads(file.read_text(encoding="utf-8"))
        accelerator.load_state(str(self.checkpoints / f"epoch-{state['epochs']}"))
        log.info("resuming after epoch %d (%d steps) from %s", state["epochs"], state["steps"], self.checkpoints)
        return state

    def _save_state(self, accelerator: Any, epoch: int, steps: int, history: list, best: dict | None) -> None:
        folder = self.checkpoints / f"epoch-{epoch}"
        accelerator.save_state(str(folder))
        if accelerator.is_main_process:
            state = {"epochs": epoch, "steps": steps, "history": history, "best": best}
            tmp = self.checkpoints / (STATE_FILE + ".tmp")
            tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
            tmp.replace(self.checkpoints / STATE_FILE)
            for old in self.checkpoints.glob("epoch-*"):
                if old != folder:
                    shutil.rmtree(old, ignore_errors=True)

    def _finish(self, accelerator: Any, encoder: DualEncoder, best: dict | None, history: list, init: str,
                init_version: str, benches: list, items: list) -> TrainingResult:
        cfg = self.config
        if best is None:
            raise InputError("training ran no epoch (epochs already done and evaluate_start off)")
        settings = cfg.encoder
        # A folder saved by training keeps its own options; these only apply to the start model.
        final = DualEncoder.load(best["model"], device="cpu", dtype="float32", pooling=settings.pooling,
                                 max_length=settings.max_length, query_instruction=settings.query_instruction,
                                 text=settings.text)
        card = {
            "stage": cfg.stage,
            "init": init,
            "init_version": init_version,
            "best_epoch": best["epoch"],
            "select_metric": cfg.select_metric,
            "best_valid_score": best["score"],
            "kept_start_model": best["epoch"] == 0,
            "history": history,
            "data": {
                "description": cfg.data_description,
                "benchmarks": [b.name for b in benches],
                "train_splits": cfg.train_splits,
                "valid_split": cfg.valid_split,
                "examples" if cfg.stage == "contrastive" else "queries": len(items),
            },
            "hyper_parameters": dataclasses.asdict(cfg),
            "processes": accelerator.num_processes,
            "mixed_precision": self._mixed_precision(),
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if accelerator.is_main_process:
            final.save(self.out, card)
            if not cfg.keep_checkpoints:
                shutil.rmtree(self.checkpoints, ignore_errors=True)
        accelerator.wait_for_everyone()
        log.info("wrote %s (%s), best epoch %d", self.out, final.model_version, best["epoch"])
        return TrainingResult(self.out, final.model_version, best["epoch"], history)
