"""The fast tier: a small cross-encoder that reads both listings at once.

``[CLS] listing A [SEP] listing B [SEP]`` through a BERT-style encoder (the packaged
all-MiniLM-L6-v2 by default) and a two-way classification head, fine-tuned on the gold
pairs of the train split with cross-entropy. Full attention across the two listings is
what a bi-encoder lacks (Humeau et al., 2020, "Poly-encoders", https://arxiv.org/abs/1905.01969;
Li et al., 2021, "Ditto", https://arxiv.org/abs/2004.00584, the matcher it follows):

    z = W h_[CLS](A, B) + b,      P(match) = softmax(z)_1,      logit = z_1 - z_0

Training uses transformers' ``Trainer`` (checkpoints, resume, bf16 autocast where it beats float32);
the side order is swapped for half of the training pairs, so the model does not learn which
catalog a listing came from. The model layer only: frames in, a model folder out.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from epm_spark.errors import ConfigError, InputError
from epm_spark.models.matcher.pairs import listing
from epm_spark.models.precision import bf16_autocast_faster
from epm_spark.models.text import listing_text
from epm_spark.progress import progress

__all__ = ["CrossEncoderSettings", "CrossEncoder", "train_cross_encoder", "pair_texts"]

log = logging.getLogger(__name__)


@dataclass
class CrossEncoderSettings:
    """The fast tier's model and training budget (``matcher.cascade.cross_encoder``)."""

    base: str = "packaged:minilm"  # or any Hugging Face encoder folder (BERT, RoBERTa, DeBERTa, ...)
    # Both listings together; titles carry the decision, 128 word pieces hold two of them.
    max_length: int = 128
    description_chars: int = 0
    # Prices tell a bundle or an accessory from the product itself (Ditto serialises them too).
    with_price: bool = False
    epochs: float = 6.0
    batch_size: int = 16
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    # Autocast to bf16 where that beats float32: CUDA with bf16, or a CPU with AMX (precision.py).
    bf16: bool = True
    save_steps: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_length < 16:
            raise ConfigError(f"cross_encoder.max_length must be >= 16, got {self.max_length}")
        if self.epochs <= 0 or self.batch_size <= 0 or self.learning_rate <= 0:
            raise ConfigError("cross_encoder epochs, batch_size and learning_rate must be > 0")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError("cross_encoder.warmup_ratio must be in [0, 1)")


def pair_texts(pairs: pd.DataFrame, settings: CrossEncoderSettings) -> tuple[list[str], list[str]]:
    """Each pair's two listings as text, the way the matcher renders listings everywhere."""
    rows = pairs.to_dict("records")

    def text(row, side):
        return listing_text(listing(row, side), description_chars=settings.description_chars,
                            with_price=settings.with_price)

    left = [text(r, "left") for r in rows]
    right = [text(r, "right") for r in rows]
    return left, right


class CrossEncoder:
    """A fine-tuned cross-encoder: ``predict_logits(pairs)`` -> log-odds of a match per pair."""

    def __init__(self, model, tokenizer, settings: CrossEncoderSettings, device: torch.device):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.settings = settings
        self.device = device
        self.autocast = settings.bf16 and bf16_autocast_faster(device)

    @classmethod
    def load(cls, folder: str | Path, settings: CrossEncoderSettings | None = None,
             device: str = "auto") -> CrossEncoder:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from epm_spark.models.encoder.model import resolve_backbone
        from epm_spark.models.precision import resolve_device

        path = resolve_backbone(folder)
        dev = resolve_device(device)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(path)
        return cls(model.to(dev), tokenizer, settings or CrossEncoderSettings(), dev)

    def _batch(self, left: list[str], right: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(left, right, truncation="longest_first", max_length=self.settings.max_length,
                             padding=True, return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items()}

    @torch.inference_mode()
    def predict_logits(self, pairs: pd.DataFrame, *, batch_size: int = 32, show_progress: bool = False) -> np.ndarray:
        left, right = pair_texts(pairs, self.settings)
        # Similar lengths batch together: less padding, the same answers.
        order = np.argsort([len(a) + len(b) for a, b in zip(left, right)], kind="stable")
        out = np.empty(len(order), dtype=np.float64)
        starts = range(0, len(order), batch_size)
        if show_progress:
            starts = progress(starts, total=math.ceil(len(order) / batch_size), desc="cross-encoder", unit="batch")
        for s in starts:
            idx = order[s:s + batch_size]
            batch = self._batch([left[i] for i in idx], [right[i] for i in idx])
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                logits = self.model(**batch).logits.float()
            out[idx] = (logits[:, 1] - logits[:, 0]).cpu().numpy()
        return out

    def save(self, folder: str | Path) -> None:
        self.model.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)


class _PairDataset(torch.utils.data.Dataset):
    def __init__(self, encodings: dict[str, list[list[int]]], labels: np.ndarray):
        self.encodings, self.labels = encodings, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {k: v[i] for k, v in self.encodings.items()}
        item["labels"] = int(self.labels[i])
        return item


def train_cross_encoder(train: pd.DataFrame, out: str | Path, settings: CrossEncoderSettings | None = None,
                        *, max_steps: int | None = None) -> dict[str, Any]:
    """Fine-tune on ``train`` (a pair frame with 0/1 ``label``) into ``out``; resumes from its checkpoints.

    Returns what the card records: sizes, steps, loss history and seconds.
    """
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from epm_spark.models.matcher.student.training import LogProgress, checkpoint_to_resume, quiet

    settings = settings or CrossEncoderSettings()
    if train.empty or "label" not in train:
        raise InputError("the cross-encoder needs labelled train pairs (a `label` column of 0/1)")
    labels = train["label"].astype(int).to_numpy()
    if labels.min() == labels.max():
        raise InputError("the cross-encoder's train pairs hold only one class; it needs matches and non-matches")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    encoder = CrossEncoder.load(settings.base, settings, device="auto")
    left, right = pair_texts(train, settings)
    swap = np.random.default_rng(settings.seed).random(len(left)) < 0.5
    first = [b if s else a for a, b, s in zip(left, right, swap)]
    second = [a if s else b for a, b, s in zip(left, right, swap)]
    enc = encoder.tokenizer(first, second, truncation="longest_first", max_length=settings.max_length)
    data = _PairDataset({k: enc[k] for k in enc.keys()}, labels)
    on_cpu = encoder.device.type == "cpu"
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"), per_device_train_batch_size=settings.batch_size,
        num_train_epochs=settings.epochs, max_steps=max_steps or -1, learning_rate=settings.learning_rate,
        warmup_steps=settings.warmup_ratio, weight_decay=settings.weight_decay, lr_scheduler_type="linear",
        bf16=encoder.autocast, use_cpu=on_cpu, save_strategy="steps",
        save_steps=settings.save_steps, save_total_limit=1, logging_steps=20, report_to=[],
        seed=settings.seed, dataloader_num_workers=0, disable_tqdm=True,
    )
    encoder.model.train()
    trainer = Trainer(model=encoder.model, args=args, train_dataset=data,
                      data_collator=DataCollatorWithPadding(encoder.tokenizer), callbacks=[LogProgress("cross-encoder")])
    quiet(trainer)
    resume = checkpoint_to_resume(out)
    if resume:
        log.info("cross-encoder: resuming from %s", resume)
    result = trainer.train(resume_from_checkpoint=resume)
    encoder.model.eval()
    encoder.save(out / "model")
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"settings": asdict(settings), "train_pairs": len(train), "train_matches": int(labels.sum()),
            "steps": int(result.global_step), "loss_history": [round(x, 4) for x in losses],
            "seconds": round(time.monotonic() - start, 1), "bf16": bool(args.bf16)}
