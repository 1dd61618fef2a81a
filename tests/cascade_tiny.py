"""Tiny tiers for the cascade tests: a random BERT cross-encoder base and labelled pairs in two splits."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from matcher_pairs import hard_pair_frame


def build_tiny_cross_encoder(folder: Path) -> Path:
    from encoder_tiny import tiny_bert

    model, tokenizer = tiny_bert()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def split_pairs(copies: dict[str, int]) -> pd.DataFrame:
    """The hard pairs repeated under fresh ids: ``{"train": 3, "valid": 2}`` -> 30 train and 20 valid pairs."""
    base = hard_pair_frame()
    frames = []
    for split, n in copies.items():
        for k in range(n):
            frames.append(base.assign(split=split, left_id=base["left_id"] + f"-{split}{k}",
                                      right_id=base["right_id"] + f"-{split}{k}"))
    return pd.concat(frames, ignore_index=True)


def tiny_cascade_settings(settings, student: Path, cross_encoder: Path, **cascade):
    """``settings`` with the tiny tiers and budgets of a few optimizer steps."""
    from dataclasses import replace

    m = settings.matcher
    c = replace(m.cascade, cross_encoder=replace(m.cascade.cross_encoder, base=str(cross_encoder), max_length=48,
                                                 batch_size=8, save_steps=1),
                label_examples=16, explain_examples=4, student_valid_pairs=20, folds=2,
                # The tiny tiers prove nothing on 20 valid pairs: every tier decides, so the tests reach each.
                **{"gate_cross_encoder": False, **cascade})
    matcher = replace(m, student=str(student), cascade=c,
                      sft=replace(m.sft, batch_size=4, gradient_accumulation=1, logging_steps=1, save_steps=1),
                      rl=replace(m.rl, prompts_per_step=1, num_generations=2, max_completion_length=16,
                                 logging_steps=1, save_steps=1, pool=8),
                      inference=replace(m.inference, batch_size=8, max_new_tokens=32))
    return replace(settings, matcher=matcher)
