"""Train every tier of the cascade into one model folder, resumably.

::

    models/matcher/cascade-v1/
      matcher.json          the card (stage "cascade"): data, budgets, timings, validation figures
      cascade.json          combiners (plain numbers), thresholds, band, tier settings
      cross_encoder/model/  the fast tier (a Hugging Face sequence-classification folder)
      student-sft/          the student after SFT (a matcher folder of its own)
      student-rl/           the student after GRPO from student-sft: the tier the cascade runs
      known_matches.json    each listing's labelled matches of the train split (standing features)
      scores/               validation scores of each finished tier (what a resumed run reuses)

Order: teacher calibration (train split) -> cross-encoder (train) -> student SFT (train) ->
student RL (train, the pairs SFT gets wrong or is unsure of) -> validation scores of every
tier -> combiners and thresholds (valid, cross-fitted; the optional standing features are
computed over the whole valid split, as a night's job computes them over its run, and the
known matches are the train split's). Each step leaves a finished folder or file before the
next starts; run the same command again after a kill and it continues from the first
unfinished step. The model layer only: frames in, a folder
out.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from epm_spark.errors import InputError
from epm_spark.models.encoder.model import resolve_backbone
from epm_spark.models.matcher.cascade.cascade import CASCADE_FILE, CE_FEATURE, KNOWN_FILE, STUDENT_FEATURE, TFIDF_FILE
from epm_spark.models.matcher.cascade.combiner import Combiner, fit_combiner, logit, sigmoid
from epm_spark.models.matcher.cascade.cross_encoder import CrossEncoder, train_cross_encoder
from epm_spark.models.matcher.cascade.features import TEACHER_FEATURES, TitleTfidf, pair_features
from epm_spark.models.matcher.cascade.settings import CascadeSettings
from epm_spark.models.matcher.cascade.standing import (
    KNOWN_FEATURES, STANDING_FEATURES, known_features, known_partners, pair_tops, same_source, shared_shares,
    standing_features, standing_score,
)
from epm_spark.models.matcher.decision import short_decision_json
from epm_spark.models.matcher.evaluation import (
    matching_metrics, paired_bootstrap_f1, stratified_sample, thresholds_by_group, tune_threshold,
)
from epm_spark.models.matcher.model_folder import MatcherCard, is_model_folder, read_card, write_card
from epm_spark.models.matcher.settings import SHORT_SYSTEM, MatcherSettings
from epm_spark.models.matcher.supervision.teacher import AgenticTeacher, agreement
from epm_spark.models.matcher.student.model import check_student
from epm_spark.models.matcher.student.training import balanced_sample

__all__ = ["train_cascade", "short_decision_examples"]

log = logging.getLogger(__name__)


def short_decision_examples(pairs: pd.DataFrame, evidence: list) -> pd.DataFrame:
    """Label-phase SFT rows: each gold-labelled pair with its short decision (gold label, teacher evidence)."""
    labels = np.where(pairs["label"].astype(int).to_numpy() == 1, "match", "no_match")
    return pairs.assign(short_json=[short_decision_json(lab, e.verdicts) for lab, e in zip(labels, evidence)])


def _write_json(path: Path, data: Any, indent: int | None = None) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=indent, default=float) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _save_array(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
    np.save(tmp, values)
    os.replace(tmp, path)


def _cached(path: Path, compute: Callable[[], np.ndarray]) -> np.ndarray:
    if path.is_file():
        log.info("cascade: reusing %s", path)
        return np.load(path)
    values = np.asarray(compute(), dtype=float)
    _save_array(path, values)
    return values


def train_cascade(train: pd.DataFrame, valid: pd.DataFrame, out: str | Path, *, matcher: MatcherSettings,
                  explained: pd.DataFrame | None = None, reward_funcs: Sequence[Callable] = (),
                  reward_weights: Sequence[float] = (), data_info: dict[str, Any] | None = None,
                  max_steps: int | None = None) -> MatcherCard:
    """Train the cascade on ``train`` (gold pairs), fit its combiners on ``valid``; write ``out``.

    ``explained``: teacher decisions that agree with the gold label (pair frame + ``decision_json``),
    the student's explained-decision examples. ``reward_funcs``/``reward_weights``: the GRPO rewards
    for short decisions. ``max_steps`` caps every training stage (tests and the demo's budget).
    """
    settings: CascadeSettings = matcher.cascade
    for name, frame in (("train", train), ("valid", valid)):
        if frame.empty or "label" not in frame or frame["label"].nunique() < 2:
            raise InputError(f"the cascade needs {name} pairs with both matches and non-matches")
    # A mistyped model fails now, not after the tiers before it have trained.
    resolve_backbone(settings.cross_encoder.base)
    if settings.student:
        check_student(matcher.student)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    started = time.monotonic()
    train = train.reset_index(drop=True)
    valid = valid.reset_index(drop=True)
    y_train, y_valid = train["label"].astype(int).to_numpy(), valid["label"].astype(int).to_numpy()
    groups = (valid["benchmark"] if "benchmark" in valid else pd.Series("all", index=valid.index)).astype(str).to_numpy()

    # 1. The teacher tier: its evidence as features, calibrated on the train split.
    teacher = AgenticTeacher()
    train_evidence, valid_evidence = teacher.evidence(train), teacher.evidence(valid)
    x_train, x_valid = pair_features(train, train_evidence, teacher), pair_features(valid, valid_evidence, teacher)
    teacher_tier, _ = fit_combiner(x_train, y_train, folds=settings.folds, c=settings.c, seed=settings.seed)
    p_teacher = teacher_tier.predict_proba(x_valid)
    tfidf = TitleTfidf.fit(train)
    _write_json(out / TFIDF_FILE, tfidf.to_dict())
    x_valid[TitleTfidf.FEATURE] = tfidf.cosine(valid)
    fast_features = [*TEACHER_FEATURES, TitleTfidf.FEATURE, CE_FEATURE]
    timings["teacher"] = round(time.monotonic() - started, 1)

    # 2. The fast tier: the cross-encoder on the train split, its logits on valid.
    t = time.monotonic()
    ce_dir = out / "cross_encoder"
    ce_info_file = ce_dir / "training.json"
    if not (ce_dir / "model" / "config.json").is_file():
        info = train_cross_encoder(train, ce_dir, settings.cross_encoder, max_steps=max_steps)
        ce_info_file.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    ce_info = json.loads(ce_info_file.read_text(encoding="utf-8")) if ce_info_file.is_file() else {}
    cross_encoder = CrossEncoder.load(ce_dir / "model", settings.cross_encoder, device=matcher.inference.device)
    x_valid[CE_FEATURE] = _cached(out / "scores" / "valid_cross_encoder.npy",
                                  lambda: cross_encoder.predict_logits(valid, show_progress=True))
    plain_features = list(fast_features)
    standing: dict[str, Any] | None = None
    if settings.candidate_standing:
        # As the cascade sees them: the teacher's sure pairs stand at +-12 against their rivals.
        s = standing_score(p_teacher, x_valid[CE_FEATURE].to_numpy(), settings.teacher_sure)
        tops = pair_tops(valid, s)
        x_valid[list(STANDING_FEATURES)] = standing_features(s, tops)
        fast_features += STANDING_FEATURES
        standing = {"shared": shared_shares(tops), "tolerance": settings.standing_tolerance,
                    "same_source": bool(same_source(valid).mean() > 0.5)}
        if settings.known_matches:
            partners = known_partners(train)
            _write_json(out / KNOWN_FILE, partners)
            x_valid[list(KNOWN_FEATURES)] = known_features(valid, partners)
            fast_features += KNOWN_FEATURES
            standing["known_matches"] = {"listings": len(partners),
                                         "valid_share": {f: float(x_valid[f].mean()) for f in KNOWN_FEATURES}}
    timings["cross_encoder"] = round(time.monotonic() - t, 1)

    # 3. The student: SFT on short and explained decisions, then GRPO on short decisions.
    student_report: dict[str, Any] = {}
    sample = np.array([], dtype=int)
    if settings.student:
        t = time.monotonic()
        student_report, sample, p_student = _train_student(
            train, train_evidence, valid, out, matcher, explained, reward_funcs, reward_weights, max_steps)
        x_valid.loc[sample, STUDENT_FEATURE] = logit(p_student)
        timings["student"] = round(time.monotonic() - t, 1)

    # 4. Combiners on valid, cross-fitted: thresholds from held-out probabilities.
    fast, oof_fast = fit_combiner(x_valid[fast_features], y_valid, folds=settings.folds, c=settings.c,
                                  seed=settings.seed)
    combiners = {"teacher": teacher_tier.to_dict(), "fast": fast.to_dict()}
    thresholds = {"fast": thresholds_by_group(oof_fast, y_valid, groups)[0]}
    if standing is not None:
        # For a scored set that holds listings' candidates unlike valid does (standing_transfers).
        plain, oof_plain = fit_combiner(x_valid[plain_features], y_valid, folds=settings.folds, c=settings.c,
                                        seed=settings.seed)
        combiners["fast_plain"] = plain.to_dict()
        thresholds["fast_plain"] = thresholds_by_group(oof_plain, y_valid, groups)[0]
    ce_p = sigmoid(x_valid[CE_FEATURE].to_numpy())
    thresholds["cross_encoder"] = thresholds_by_group(ce_p, y_valid, groups)[0]
    if len(sample):
        # The student's combiner reads no standing: it decides the band whichever fast combiner did.
        full, oof_full = fit_combiner(x_valid.loc[sample, [*plain_features, STUDENT_FEATURE]],
                                      y_valid[sample], folds=settings.folds, c=settings.c, seed=settings.seed)
        combiners["full"] = full.to_dict()
        thresholds["full"] = thresholds_by_group(oof_full, y_valid[sample], groups[sample])[0]
        band_report = _band_check(oof_fast[sample], oof_full, y_valid[sample], thresholds, settings.band)
    else:
        band_report = {"student_decides": False}
    sure = (p_teacher < settings.teacher_sure) | (p_teacher > 1 - settings.teacher_sure)
    # The gate asks whether the cross-encoder helps, so the combiner it judges reads no known
    # matches (nor does the teacher tier): a night whose listings have none must not rest on them.
    gate_features = [f for f in fast_features if f not in KNOWN_FEATURES]
    if len(gate_features) < len(fast_features):
        _, oof_gate = fit_combiner(x_valid[gate_features], y_valid, folds=settings.folds, c=settings.c,
                                   seed=settings.seed)
        gate_threshold = thresholds_by_group(oof_gate, y_valid, groups)[0]["default"]
    else:
        oof_gate, gate_threshold = oof_fast, thresholds["fast"]["default"]
    fast_check = _fast_tier_check(p_teacher, sure, oof_gate, y_valid, groups, gate_threshold,
                                  settings.gate_cross_encoder)
    fast_check["features"] = gate_features
    thresholds["teacher"] = fast_check.pop("teacher_thresholds")
    teacher_valid = agreement(teacher.results(valid_evidence), y_valid).as_dict()
    validation = {
        "teacher_rules": teacher_valid,
        "teacher_tier": {"share_decided": float(sure.mean()),
                         "errors": int(((p_teacher[sure] >= 0.5) != y_valid[sure].astype(bool)).sum())},
        "cross_encoder_alone": matching_metrics(ce_p >= thresholds["cross_encoder"]["default"], y_valid),
        "fast_combiner_held_out": fast.held_out,
        "fast_plain_combiner_held_out": combiners.get("fast_plain", {}).get("held_out"),
        "full_combiner_held_out": combiners.get("full", {}).get("held_out"),
        "band": band_report,
        "fast_tier": fast_check,
        "weights": {"fast": fast.contributions(),
                    "full": Combiner.from_dict(combiners["full"]).contributions() if "full" in combiners else None},
    }
    spec = {
        "format": 1, "teacher_sure": settings.teacher_sure, "band": settings.band,
        "max_student_share": settings.max_student_share, "combiners": combiners, "thresholds": thresholds,
        "cross_encoder": {"path": "cross_encoder/model", "settings": asdict(settings.cross_encoder)},
        "student": student_report.get("used"), "cross_encoder_decides": fast_check["cross_encoder_decides"],
        # The student's band lies around the fast tier's threshold: no fast tier, no band.
        "student_decides": band_report["student_decides"] and fast_check["cross_encoder_decides"],
        "standing": standing,
    }
    _write_json(out / CASCADE_FILE, spec, indent=2)
    timings["total_this_run"] = round(time.monotonic() - started, 1)
    card = MatcherCard(
        stage="cascade", base=matcher.student, prompt={}, thresholds=thresholds["fast"],
        training={"train_pairs": len(train), "train_matches": int(y_train.sum()), "valid_pairs": len(valid),
                  "valid_matches": int(y_valid.sum()), "settings": asdict(settings), "cross_encoder": ce_info,
                  "student": student_report, "data": data_info or {}},
        metrics={"validation": validation, "seconds": timings},
    )
    write_card(out, card)
    log.info("cascade: wrote %s (held-out valid F1 %.3f)", out, fast.held_out["f1"])
    return card


def _fast_tier_check(p_teacher: np.ndarray, sure: np.ndarray, p_fast: np.ndarray, gold: np.ndarray,
                     groups: np.ndarray, fast_threshold: float, gate: bool) -> dict:
    """Whether the cross-encoder's tier decides valid better than the teacher tier alone.

    The cascade as it decides valid (the teacher's sure pairs, a fast combiner's out-of-fold
    probabilities for the rest, fitted without known matches) against the teacher tier deciding
    every pair at its F1-best threshold. As for the student's band, a tier must be shown to help
    (paired bootstrap 95% interval above zero) before it overrules a calibrated one: where the
    teacher's evidence already settles a catalog's pairs, a cross-encoder that adds nothing
    measurable only adds the variance of its own training run.
    """
    with_ce = np.where(sure, p_teacher >= 0.5, p_fast >= fast_threshold)
    teacher_thresholds = thresholds_by_group(p_teacher, gold, groups)[0]
    gain = paired_bootstrap_f1(with_ce, p_teacher >= teacher_thresholds["default"], gold)
    decides = gain["ci95_low"] > 0 or not gate
    return {"teacher_thresholds": teacher_thresholds, "fast_minus_teacher": gain, "cross_encoder_decides": bool(decides)}


def _band_check(p_fast: np.ndarray, p_full: np.ndarray, gold: np.ndarray, thresholds: dict, band: float) -> dict:
    """Whether the student's log-odds improve the decisions in the band, on held-out probabilities.

    The student decides its band only where the full combiner was more accurate there than the
    fast one with a paired bootstrap 95% interval above zero: a band of a few dozen valid pairs
    is noisy, and a tier that is not shown to help must not overrule a calibrated one. Otherwise
    the band keeps the fast tier's decision and the student explains only.
    """
    t_fast, t_full = thresholds["fast"]["default"], thresholds["full"]["default"]
    in_band = np.abs(logit(p_fast) - logit(np.array(t_fast))) <= band
    if not in_band.any():
        return {"pairs": 0, "student_decides": False}
    y = gold[in_band].astype(bool)
    fast, full = p_fast[in_band] >= t_fast, p_full[in_band] >= t_full
    gain = paired_bootstrap_f1(full, fast, y, metric="accuracy")
    return {"pairs": int(in_band.sum()), "fast_accuracy": round(float((fast == y).mean()), 4),
            "full_accuracy": round(float((full == y).mean()), 4), "full_minus_fast": gain,
            "student_decides": gain["ci95_low"] > 0}


def _train_student(train, train_evidence, valid, out: Path, matcher: MatcherSettings, explained, reward_funcs,
                   reward_weights, max_steps):
    """SFT then RL; both scored on the same valid sample. Returns (report, sample rows, P(match) of RL)."""
    from epm_spark.models.matcher.student.inference import Matcher
    from epm_spark.models.matcher.student.rl import train_rl
    from epm_spark.models.matcher.student.sft import train_sft

    s = matcher.cascade
    prompt = replace(matcher.prompt, label_system=matcher.prompt.label_system or SHORT_SYSTEM)
    sft_dir, rl_dir = out / "student-sft", out / "student-rl"
    if not is_model_folder(sft_dir):
        label_rows = balanced_sample(short_decision_examples(train, train_evidence), s.label_examples,
                                     s.positive_share, seed=s.seed)
        frames = [label_rows.drop(columns=["decision_json"], errors="ignore")]
        if explained is not None and not explained.empty and s.explain_examples:
            frames.append(balanced_sample(explained, s.explain_examples, s.positive_share, seed=s.seed)
                          .drop(columns=["short_json"], errors="ignore"))
        frame = pd.concat(frames, ignore_index=True).sample(frac=1.0, random_state=s.seed).reset_index(drop=True)
        sft = replace(matcher.sft, max_examples=None, max_steps=max_steps or matcher.sft.max_steps)
        train_sft(frame, sft_dir, student=matcher.student, settings=sft, prompt=prompt,
                  inference=matcher.inference, valid=None)
    if not is_model_folder(rl_dir):
        if not reward_funcs:
            raise InputError("the student's RL stage needs reward functions (build_rewards(settings, short=True))")
        rl = replace(matcher.rl, short_decision=True, max_steps=max_steps or matcher.rl.max_steps,
                     max_completion_length=min(matcher.rl.max_completion_length, s.short_completion_tokens))
        train_rl(train, str(sft_dir), rl_dir, reward_funcs=reward_funcs, reward_weights=reward_weights,
                 settings=rl, inference=matcher.inference, valid=None)
    groups = valid.groupby("benchmark") if "benchmark" in valid else [("all", valid)]
    sample = np.sort(np.concatenate([stratified_sample(g.assign(_row=g.index), s.student_valid_pairs, seed=0,
                                                       by="label")["_row"].to_numpy() for _, g in groups]))
    pairs = valid.iloc[sample]
    gold = valid["label"].astype(int).to_numpy()[sample]
    report: dict[str, Any] = {"valid_pairs_scored": int(len(sample)), "used": "student-rl"}
    probs = {}
    for name, folder in (("sft", sft_dir), ("rl", rl_dir)):
        def score(folder=folder):
            return Matcher.load(str(folder), matcher.inference).predict_proba(pairs, show_progress=True)
        probs[name] = _cached(out / "scores" / f"valid_student_{name}.npy", score)
        threshold, f1 = tune_threshold(probs[name], gold)
        card = read_card(folder)
        if card.thresholds.get("default") != threshold:
            card.thresholds = {"default": threshold}
            card.metrics["valid_f1_at_threshold"] = f1
            write_card(folder, card)
        report[name] = {"threshold": threshold, "valid_f1": f1,
                        "seconds": card.metrics.get("train_seconds"), "examples": card.training.get("examples"),
                        "steps": card.training.get("steps")}
    predicted = {k: probs[k] >= report[k]["threshold"] for k in probs}
    report["rl_minus_sft"] = paired_bootstrap_f1(predicted["rl"], predicted["sft"], gold)
    return report, sample, probs["rl"]
