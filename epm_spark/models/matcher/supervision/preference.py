"""The learned preference judge: a cross-encoder reward model over (pair, decision).

Input: the two listings as text (first segment) and a decision JSON (second segment);
output: one logit ``r``, reported as the score ``sigmoid(r)`` in [0, 1].

Training data are preference pairs built from decisions known to be good (verified by a
person, or agreeing with gold: :func:`~epm_spark.models.matcher.supervision.review.sft_training_set`).
Each preferred decision is paired with corrupted versions of itself
(:func:`corrupt_decision`): the label flipped, an attribute claim contradicted
("same capacity" where it was "different"), quoted values swapped for values in
neither listing, or the reasoning dropped. The model is trained with the pairwise
Bradley-Terry loss (Bradley & Terry 1952; as the reward model of Ouyang et al. 2022,
InstructGPT)::

    loss = -log sigmoid(r(pair, preferred) - r(pair, rejected))

through TRL's ``RewardTrainer`` (which implements exactly this loss, with an optional
``center_rewards_coefficient * mean(r^2)`` term that keeps rewards near 0, Eisenstein
et al. 2023), on pre-tokenised text pairs so the encoder sees listings and decision
as two segments. Bradley-Terry fixes only differences of ``r``; the centring term keeps
``sigmoid(r)`` usable as a [0, 1] score.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from epm_spark.errors import EnvironmentProblem, InputError
from epm_spark.models.matcher.decision import MATCH, NO_MATCH, MatchDecision, parse_decision
from epm_spark.models.matcher.pairs import listing
from epm_spark.models.matcher.supervision.settings import PreferenceJudgeSettings
from epm_spark.models.text import listing_text

__all__ = [
    "CORRUPTIONS",
    "corrupt_decision",
    "preference_pairs",
    "PreferenceJudge",
    "PreferenceReport",
    "train_preference_judge",
    "pair_text",
    "agreeing_decisions",
]

log = logging.getLogger(__name__)

CORRUPTIONS = ("flipped_label", "contradicted_claim", "swapped_values", "unsupported")
JUDGE_META = "judge.json"


def pair_text(left: Mapping[str, Any], right: Mapping[str, Any]) -> str:
    return f"A: {listing_text(left)} B: {listing_text(right)}"


# ----------------------------------------------------------------------------- corruptions


def _swap_claim(rationale: str, attribute: str, verdict: str) -> str:
    """Rewrite the rationale's phrase for ``attribute`` to claim the opposite verdict."""
    name = attribute.replace("_", " ")
    src, dst = ("Same", "Different") if verdict == "same" else ("Different", "Same")
    pattern = re.compile(rf"\b{src} {name}\b", re.I)
    if pattern.search(rationale):
        return pattern.sub(f"{dst} {name}", rationale, count=1)
    return f"{dst} {name}. {rationale}"


def _other_number(match: re.Match[str], rng: random.Random) -> str:
    digits = match.group(0)
    value = int(digits)
    choices = [v for v in (value * 2, value + 1, max(1, value // 2), value + 7) if v != value]
    return str(rng.choice(choices)).zfill(len(digits))


def corrupt_decision(decision: MatchDecision, kind: str, rng: random.Random) -> MatchDecision | None:
    """A worse version of ``decision`` by one kind of corruption, or ``None`` where it cannot apply.

    * ``flipped_label``: the other label, reasoning unchanged (the label no longer follows).
    * ``contradicted_claim``: one attribute's verdict reversed in evidence and in the rationale.
    * ``swapped_values``: the numbers in the rationale's quoted values changed
      (1 TB -> 2 TB, MZ-77E1T0B -> MZ-77E2T0B), so they are in neither listing.
    * ``unsupported``: evidence emptied and the rationale replaced by a bare assertion.
    """
    d = decision.to_dict()
    if kind == "flipped_label":
        d["label"] = NO_MATCH if decision.label == MATCH else MATCH
    elif kind == "contradicted_claim":
        known = [(a, v) for a, v in decision.evidence.items() if v in ("same", "different")]
        if not known:
            return None
        attribute, verdict = rng.choice(known)
        d["evidence"][attribute] = "different" if verdict == "same" else "same"
        d["rationale"] = _swap_claim(decision.rationale, attribute, verdict)
    elif kind == "swapped_values":
        quoted = re.findall(r"\(([^()]*\d[^()]*)\)", decision.rationale)
        if not quoted:
            return None
        target = rng.choice(quoted)
        changed = re.sub(r"\d+", lambda m: _other_number(m, rng), target)
        d["rationale"] = decision.rationale.replace(f"({target})", f"({changed})", 1)
    elif kind == "unsupported":
        if not decision.evidence and len(decision.rationale) < 40:
            return None
        d["evidence"] = {}
        d["rationale"] = "Same product." if decision.label == MATCH else "Not the same product."
    else:
        raise ValueError(f"unknown corruption {kind!r}; corruptions: {', '.join(CORRUPTIONS)}")
    corrupted = MatchDecision.from_dict(d)
    return None if corrupted == decision else corrupted


def preference_pairs(preferred: pd.DataFrame, *, per_pair: int = 2, seed: int = 13) -> pd.DataFrame:
    """Preferred-vs-corrupted decision pairs from a frame with listings and ``decision_json``.

    One row per (listing pair, corruption): ``group`` (the listing pair, for held-out
    splits), ``pair_text``, ``chosen``, ``rejected`` (decision JSON) and ``kind``.
    """
    if "decision_json" not in preferred:
        raise InputError("preferred decisions need a decision_json column (see sft_training_set)")
    rng = random.Random(seed)
    rows = []
    for group, row in enumerate(preferred.to_dict("records")):
        decision = parse_decision(row["decision_json"])
        text = pair_text(listing(row, "left"), listing(row, "right"))
        kinds = list(CORRUPTIONS)
        rng.shuffle(kinds)
        made = 0
        for kind in kinds:
            if made >= per_pair:
                break
            bad = corrupt_decision(decision, kind, rng)
            if bad is None:
                continue
            rows.append({"group": group, "pair_text": text, "chosen": decision.to_json(), "rejected": bad.to_json(),
                         "kind": kind})
            made += 1
    return pd.DataFrame(rows, columns=["group", "pair_text", "chosen", "rejected", "kind"])


# ----------------------------------------------------------------------------- the judge


class PreferenceJudge:
    """A sequence-classification encoder with one output: the reward of (pair text, decision JSON)."""

    name = "preference"

    def __init__(self, model: Any, tokenizer: Any, *, max_length: int = 256, meta: dict[str, Any] | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.meta = meta or {}

    @staticmethod
    def _folder(backbone: str | Path) -> Path:
        from epm_spark.models.weights import PACKAGED_ENCODER, packaged_encoder_dir

        folder = packaged_encoder_dir() if str(backbone) == PACKAGED_ENCODER else Path(backbone)
        if not folder.is_dir():
            raise EnvironmentProblem(f"judge backbone {backbone} is not a model folder")
        return folder

    @classmethod
    def from_backbone(cls, backbone: str | Path, *, max_length: int = 256) -> PreferenceJudge:
        """A fresh judge on an encoder (``packaged:minilm`` or a Hugging Face folder); its head is untrained."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from epm_spark.models.weights import offline

        offline()
        folder = cls._folder(backbone)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1, use_safetensors=True,
                                                                   trust_remote_code=False)
        return cls(model, tokenizer, max_length=max_length, meta={"backbone": str(backbone)})

    @classmethod
    def load(cls, path: str | Path) -> PreferenceJudge:
        """A judge saved by :meth:`save` (what ``epm-spark train-judge`` writes)."""
        path = Path(path)
        if not (path / JUDGE_META).exists():
            raise EnvironmentProblem(f"{path} is not a trained judge folder (no {JUDGE_META}); "
                                     "train one with `epm-spark train-judge`")
        meta = json.loads((path / JUDGE_META).read_text())
        judge = cls.from_backbone(path, max_length=int(meta.get("max_length", 256)))
        judge.meta = meta
        return judge

    def save(self, path: str | Path, **meta: Any) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        self.meta = {**self.meta, **meta, "max_length": self.max_length, "kind": "preference-judge"}
        (path / JUDGE_META).write_text(json.dumps(self.meta, indent=2, sort_keys=True, default=str))
        return path

    def encode(self, pair_texts: Sequence[str], decision_texts: Sequence[str]) -> list[list[int]]:
        """Token ids of (pair, decision) as two segments; the listings are cut first when too long."""
        ids = []
        for a, b in zip(pair_texts, decision_texts, strict=True):
            try:
                enc = self.tokenizer(a, b, truncation="only_first", max_length=self.max_length)
            except Exception:  # noqa: BLE001 - fast tokenizers raise when the decision alone is too long
                enc = self.tokenizer(a, b, truncation="longest_first", max_length=self.max_length)
            ids.append(enc["input_ids"])
        return ids

    def rewards(self, pair_texts: Sequence[str], decision_texts: Sequence[str], batch_size: int = 64) -> list[float]:
        """The raw rewards ``r`` (logits)."""
        import torch

        ids = self.encode(pair_texts, decision_texts)
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id or 0
        was_training = self.model.training
        self.model.eval()
        out: list[float] = []
        try:
            with torch.inference_mode():
                for start in range(0, len(ids), batch_size):
                    chunk = ids[start: start + batch_size]
                    width = max(len(x) for x in chunk)
                    input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                    mask = torch.zeros((len(chunk), width), dtype=torch.long)
                    for i, x in enumerate(chunk):
                        input_ids[i, : len(x)] = torch.tensor(x)
                        mask[i, : len(x)] = 1
                    # Same inputs as RewardTrainer gives in training: ids and mask, no segment ids.
                    logits = self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
                    out.extend(logits[:, 0].float().cpu().tolist())
        finally:
            self.model.train(was_training)
        return out

    def score(self, decisions: Sequence[MatchDecision], lefts: Sequence[Mapping[str, Any]],
              rights: Sequence[Mapping[str, Any]]) -> list[float | None]:
        texts = [pair_text(left, right) for left, right in zip(lefts, rights, strict=True)]
        return [1.0 / (1.0 + math.exp(-r)) for r in self.rewards(texts, [d.to_json() for d in decisions])]

    def pairwise_accuracy(self, pairs: pd.DataFrame) -> dict[str, float]:
        """Share of preference pairs where the preferred decision gets the higher reward, overall and per kind."""
        if pairs.empty:
            return {"overall": float("nan")}
        texts = list(pairs["pair_text"])
        chosen = self.rewards(texts, list(pairs["chosen"]))
        rejected = self.rewards(texts, list(pairs["rejected"]))
        wins = pd.Series([c > r for c, r in zip(chosen, rejected)], index=pairs.index)
        out = {"overall": round(float(wins.mean()), 4)}
        for kind, idx in pairs.groupby("kind").groups.items():
            out[str(kind)] = round(float(wins[idx].mean()), 4)
        return out


# ----------------------------------------------------------------------------- training


@dataclass
class PreferenceReport:
    """What :func:`train_preference_judge` did and how well the judge ranks held-out pairs."""

    preferred: int
    train_pairs: int
    holdout_pairs: int
    steps: int
    seconds: float
    accuracy_before: dict[str, float] = field(default_factory=dict)
    accuracy_after: dict[str, float] = field(default_factory=dict)
    path: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (f"train-judge: {self.train_pairs} preference pairs from {self.preferred} preferred decisions, "
                f"{self.steps} steps in {self.seconds:.0f} s; held-out pairwise accuracy "
                f"{self.accuracy_before.get('overall', float('nan')):.3f} -> "
                f"{self.accuracy_after.get('overall', float('nan')):.3f} on {self.holdout_pairs} pairs; "
                f"saved to {self.path}")


def _log_lines():
    from transformers import TrainerCallback

    class LogLines(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            log.info("judge step %d/%d: %s", state.global_step, state.max_steps,
                     {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in (logs or {}).items()})

    return LogLines()


def _split_groups(pairs: pd.DataFrame, holdout: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    groups = sorted(pairs["group"].unique())
    random.Random(seed).shuffle(groups)
    n_hold = int(round(len(groups) * holdout))
    held = set(groups[:n_hold])
    mask = pairs["group"].isin(held)
    return pairs[~mask].reset_index(drop=True), pairs[mask].reset_index(drop=True)


def train_preference_judge(preferred: pd.DataFrame, settings: PreferenceJudgeSettings, out: str | Path | None, *,
                           judge: PreferenceJudge | None = None, max_steps: int | None = None,
                           logging_steps: int = 50) -> tuple[PreferenceJudge, PreferenceReport]:
    """Fine-tune a preference judge on preferred decisions and their corruptions; save it to ``out``.

    ``preferred``: a pair frame with ``decision_json`` (e.g. :func:`sft_training_set` with
    products). A share ``settings.holdout`` of listing pairs is held out (never trained
    on) to measure pairwise accuracy before and after training.
    """
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback, ProgressCallback
    from trl import RewardConfig, RewardTrainer

    if settings.max_pairs is not None:
        preferred = preferred.sample(n=min(settings.max_pairs, len(preferred)), random_state=settings.seed)
    pairs = preference_pairs(preferred.reset_index(drop=True), per_pair=settings.corruptions_per_pair,
                             seed=settings.seed)
    if pairs.empty:
        raise InputError("no preference pairs: the preferred decisions could not be corrupted (empty input?)")
    train, held = _split_groups(pairs, settings.holdout, settings.seed)
    judge = judge or PreferenceJudge.from_backbone(settings.backbone, max_length=settings.max_length)
    use_cuda = torch.cuda.is_available()
    judge.model.to("cuda" if use_cuda else "cpu")
    before = judge.pairwise_accuracy(held) if len(held) else {}
    dataset = Dataset.from_dict({
        "chosen_ids": judge.encode(train["pair_text"], train["chosen"]),
        "rejected_ids": judge.encode(train["pair_text"], train["rejected"]),
    })
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="epm-judge-") as scratch:
        args = RewardConfig(
            output_dir=scratch, per_device_train_batch_size=settings.batch_size,
            num_train_epochs=settings.epochs, max_steps=max_steps if max_steps is not None else -1,
            learning_rate=settings.learning_rate, seed=settings.seed, report_to=[], save_strategy="no",
            logging_steps=logging_steps, max_length=None, center_rewards_coefficient=0.01,
            bf16=use_cuda and torch.cuda.is_bf16_supported(), use_cpu=not use_cuda,
            dataloader_num_workers=0, disable_tqdm=True,
        )
        trainer = RewardTrainer(model=judge.model, args=args, train_dataset=dataset, processing_class=judge.tokenizer)
        # Trainer prints its logs to stdout; a job's stdout is its report (--json), so log them instead.
        for callback in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(callback)
        trainer.add_callback(_log_lines())
        result = trainer.train()
    seconds = time.perf_counter() - start
    after = judge.pairwise_accuracy(held) if len(held) else {}
    report = PreferenceReport(len(preferred), len(train), len(held), int(result.global_step), seconds, before, after)
    if out is not None:
        report.path = str(judge.save(out, settings=asdict(settings), training=report.as_dict()))
    return judge, report


def agreeing_decisions(frame: pd.DataFrame, decisions: Sequence[MatchDecision | None]) -> pd.DataFrame:
    """Rows of a labelled pair frame whose decision agrees with gold, with ``decision_json`` (preferred data)."""
    from epm_spark.models.matcher.pairs import gold_label

    keep = [i for i, (gold, d) in enumerate(zip(frame["label"], decisions))
            if d is not None and gold_label(gold) == d.label]
    out = frame.iloc[keep].copy()
    out["decision_json"] = [decisions[i].to_json() for i in keep]
    return out.reset_index(drop=True)
