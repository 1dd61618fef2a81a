"""A trained matcher on disk: a versioned folder with a JSON card.

::

    models/matcher/sft-v3/
      matcher.json            the card: base student, adapters in order, prompt, thresholds,
                              training data and sizes, hyper-parameters, metrics, timings
      adapters/sft/           peft LoRA adapter (adapter_config.json, adapter_model.safetensors)
      adapters/rl/            (RL stage) a second adapter trained on top of the merged SFT one
      tokenizer/              the tokenizer with its chat template
      merged/                 (optional) base + adapters merged into plain safetensors weights

An RL folder copies the SFT adapter it started from, so each folder loads on its own.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from epm_spark import __version__
from epm_spark.errors import InputError

__all__ = ["CARD_FILE", "MatcherCard", "read_card", "write_card", "is_model_folder"]

CARD_FILE = "matcher.json"
CARD_FORMAT = 1


@dataclass
class MatcherCard:
    """What a model folder holds and how it was made."""

    stage: str  # "sft" or "rl"
    base: str  # the student setting it was trained from (packaged:smollm2 or a folder/id)
    adapters: list[str] = field(default_factory=list)  # folder-relative, applied in order
    merged: str | None = None  # folder-relative merged weights, when saved
    prompt: dict[str, Any] = field(default_factory=dict)  # PromptSettings as a mapping
    # Decision thresholds on P(match): "default" and one per benchmark tuned on its validation split.
    thresholds: dict[str, float] = field(default_factory=lambda: {"default": 0.5})
    parent: str | None = None  # the model folder this one started from
    training: dict[str, Any] = field(default_factory=dict)  # data, sizes, hyper-parameters
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    epm_spark_version: str = __version__
    format: int = CARD_FORMAT

    def threshold(self, benchmark: str | None = None) -> float:
        if benchmark is not None and benchmark in self.thresholds:
            return float(self.thresholds[benchmark])
        return float(self.thresholds.get("default", 0.5))


def is_model_folder(path: str | os.PathLike[str], name: str = CARD_FILE) -> bool:
    return (Path(path) / name).is_file()


def read_card(folder: str | os.PathLike[str], cls: type = MatcherCard, name: str = CARD_FILE):
    """The card ``name`` of a model folder as ``cls`` (a card dataclass with a ``format`` field)."""
    path = Path(folder) / name
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{folder} is not a {name.split('.')[0]} model folder (no {name})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from None
    expected = cls.__dataclass_fields__["format"].default
    if data.get("format") != expected:
        raise InputError(f"{path}: card format {data.get('format')!r} is not {expected}")
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"{path}: unknown card keys {unknown}")
    return cls(**data)


def write_card(folder: str | os.PathLike[str], card: Any, name: str = CARD_FILE) -> Path:
    """Write the card atomically (a reader sees the old card or the new one, never half)."""
    path = Path(folder) / name
    tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(card), indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
