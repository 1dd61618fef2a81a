"""``epm-spark match``: a decision for every candidate pair.

1. **floor**: a pair whose blocking similarity is under ``match.similarity_floor`` is
   decided ``no_match`` without a model.
2. A **cascade folder** (``train-matcher --stage all``) decides every other pair through its
   tiers (teacher, cross-encoder, student; see :mod:`epm_spark.models.matcher.cascade.cascade`);
   a cascade that reads the pairs' standing runs in two passes: the cheap tiers score every
   pair, a group-by over the run finds each listing's best scores (its rivals,
   :mod:`epm_spark.models.matcher.cascade.standing`), then the combiners and the student decide;
   with ``--explain band`` the student writes the structured decision of its band's pairs, the
   cascade's label standing. Every row carries the teacher's evidence and rationale unless the
   student explained it.
3. A **student folder** (``--stage sft`` / ``rl``): **label**, the student's P(match) from one
   forward pass against the model's tuned threshold; **explain**, pairs whose P(match) is
   within ``match.uncertainty_margin`` of the threshold (or all pairs, ``--explain all``) get the
   full structured decision generated, and its label wins.

4. **review**: a pair a person decided (an accepted or corrected row of ``rationales``, from the
   review page or ``review import``) takes the person's label whatever the model said, with
   probability 1 or 0 and ``decided_by = review``, so dedup and price-match follow it.

``match.max_explain_per_batch`` caps the explanations per batch, nearest the threshold first.
A generation that fails the schema is retried once (by the matcher) and then recorded with
``format_valid = false`` and its raw text. The models run in Spark pandas UDFs, loaded once per
Python worker on the task's GPU (or the CPU). No pair is ever dropped: the job checks
``matches == candidates`` for the run before it commits.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from epm_spark.config import Settings
from epm_spark.errors import InputError, worker_errors
from epm_spark.io import delta
from epm_spark.io.schemas import MATCHES, check_partition_value
from epm_spark.progress import spark_progress

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["MatchReport", "match", "resolve_matcher_model"]

log = logging.getLogger(__name__)

# One matcher per (model, device) per Python worker.
_MATCHERS: dict[tuple[str, str], Any] = {}

_LISTING = ("title", "brand", "category", "description", "price", "currency", "attributes")


@dataclass
class MatchReport:
    left: str
    right: str
    run_id: str
    model: str
    candidates: int
    decided_by: dict[str, int] = field(default_factory=dict)
    matches: int = 0
    format_failures: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        by = ", ".join(f"{k} {v:,}" for k, v in sorted(self.decided_by.items()))
        return (f"match {self.left} -> {self.right} (run {self.run_id}, {self.seconds:.1f} s) with {self.model}\n"
                f"  candidates: {self.candidates:,}  decided by: {by}\n"
                f"  matches: {self.matches:,}  format failures: {self.format_failures:,}")


def resolve_matcher_model(settings: Settings, model: str | None) -> str:
    """The matcher a job decides with: ``model``, else ``match.model``; a cascade or matcher folder,
    or a bare student. A name that is none of these fails here, before any table is read."""
    from epm_spark.models.matcher.cascade.cascade import is_cascade
    from epm_spark.models.matcher.model_folder import is_model_folder
    from epm_spark.models.matcher.student.model import check_student

    chosen = model or settings.match.model
    if not chosen:
        raise InputError("no matcher model: pass --model DIR (a folder written by `epm-spark train-matcher`) or set "
                         "match.model; `make demo` trains and caches one")
    if not (is_cascade(chosen) or is_model_folder(chosen)):
        check_student(chosen)
    return chosen


def _matcher(model: str, device: str, inference):
    key = (model, device)
    if key not in _MATCHERS:
        import dataclasses

        import transformers

        from epm_spark.models.matcher.cascade.cascade import Cascade, is_cascade
        from epm_spark.models.matcher.student.inference import Matcher

        transformers.utils.logging.disable_progress_bar()
        log.info("loading matcher %s on %s", model, device)
        load = Cascade.load if is_cascade(model) else Matcher.load
        _MATCHERS[key] = load(model, dataclasses.replace(inference, device=device))
    return _MATCHERS[key]


def _cascade_decisions(matcher, pdf: pd.DataFrame, shares: dict[str, float] | None = None) -> pd.DataFrame:
    """The cascade's decisions for one batch, with the teacher's evidence as each row's structured
    decision; a batch from :func:`_with_listing_tops` carries its scores and listing tops, and
    ``shares`` are the whole run's shared-listing shares."""
    from epm_spark.models.matcher.cascade.cascade import CE_FEATURE
    from epm_spark.models.matcher.cascade.standing import TOP_COLUMNS
    from epm_spark.models.matcher.decision import MATCH, MatchDecision

    pdf = pdf.reset_index(drop=True)
    scores = tops = None
    if "standing_score" in pdf:
        scores = pdf[["p_teacher", CE_FEATURE, "standing_score"]]
        tops = {side: pd.DataFrame({c: pdf[f"{side}_{c}"].to_numpy() for c in TOP_COLUMNS})
                for side in ("left", "right")}
    d = matcher.decide(pdf, scores=scores, tops=tops, shares=shares)
    confidence = [p if label == MATCH else 1.0 - p for p, label in zip(d["probability"], d["label"])]
    decisions = [MatchDecision(label, round(float(c), 4), evidence, tuple(noise), rationale).to_json()
                 for label, c, evidence, noise, rationale in zip(d["label"], confidence, d["evidence"],
                                                                 d["noise_ignored"], d["rationale"])]
    return d.assign(confidence=confidence, decision_json=decisions)


def _decision_columns(explanation) -> dict[str, Any]:
    d = explanation.decision
    if d is None:
        return {"confidence": None, "evidence": None, "noise_ignored": None, "rationale": None,
                "format_valid": False, "decision_json": explanation.text}
    return {"confidence": float(d.confidence), "evidence": dict(d.evidence), "noise_ignored": list(d.noise_ignored),
            "rationale": d.rationale, "format_valid": True, "decision_json": d.to_json()}


_SIDES = ["left_source", "left_id", "right_source", "right_id"]


def _with_listing_tops(pairs, score_batches):
    """The cascade's first pass: the cheap tiers' scores of every pair, and each side's listing tops.

    ``score_batches`` (a mapInPandas function) adds ``p_teacher``, ``cross_encoder_logit`` and
    ``standing_score``; a group-by over both sides then gives every listing (source, id) its
    candidate count and two best standing scores, joined back as ``<side>_candidates``,
    ``<side>_top1``, ``<side>_top2``. Returns (the joined pairs, the persisted first pass to unpersist,
    the run's share of pairs per side whose listing has another candidate).
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, StructField, StructType
    from pyspark.storagelevel import StorageLevel

    from epm_spark.models.matcher.cascade.cascade import CE_FEATURE

    schema = StructType([*pairs.schema.fields, *(StructField(c, DoubleType()) for c in
                                                 ("p_teacher", CE_FEATURE, "standing_score"))])
    # Persisted: the cross-encoder runs once; the group-by and the join read the same scores.
    scored = pairs.mapInPandas(score_batches, schema).persist(StorageLevel.MEMORY_AND_DISK)

    def key(side):
        return F.concat_ws("\x1f", F.col(f"{side}_source").cast("string"), F.col(f"{side}_id").cast("string"))

    ranked = (scored.select(key("left").alias("key"), "standing_score")
              .unionByName(scored.select(key("right").alias("key"), "standing_score"))
              .groupBy("key").agg(F.count(F.lit(1)).cast("double").alias("candidates"),
                                  F.sort_array(F.collect_list("standing_score"), asc=False).alias("_best")))
    out = scored
    for side in ("left", "right"):
        tops = ranked.select(F.col("key").alias(f"_{side}_key"), F.col("candidates").alias(f"{side}_candidates"),
                             F.element_at("_best", 1).alias(f"{side}_top1"),
                             F.when(F.size("_best") > 1, F.element_at("_best", 2)).alias(f"{side}_top2"))
        out = out.withColumn(f"_{side}_key", key(side)).join(tops, f"_{side}_key", "left").drop(f"_{side}_key")
    # Over the whole run, so every batch decides with the same combiner.
    row = out.agg(*(F.avg((F.col(f"{side}_candidates") > 1).cast("double")).alias(side)
                    for side in ("left", "right"))).first()
    shares = {side: float(row[side] or 0.0) for side in ("left", "right")}
    return out, scored, shares


def reviewed_pairs(warehouse: str, left: str, right: str) -> pd.DataFrame:
    """People's verdicts on pairs of ``left`` x ``right`` in this orientation (a row of either order
    counts): the sides, ``review_label`` and ``review_decision``; the newest verdict per pair."""
    from epm_spark.models.matcher.decision import parse_decision

    columns = [*_SIDES, "review_label", "review_decision"]
    if not delta.table_exists(warehouse, "rationales"):
        return pd.DataFrame(columns=columns)
    rows = delta.read_pandas(warehouse, "rationales", columns=[*_SIDES, "verified_decision", "updated_at"],
                             filters=[("review_status", "in", ["accepted", "corrected"])])
    rows = rows[rows["verified_decision"].notna()]
    flipped = rows.rename(columns={"left_source": "right_source", "left_id": "right_id",
                                   "right_source": "left_source", "right_id": "left_id"})
    both = pd.concat([rows, flipped[rows.columns]], ignore_index=True)
    both = both[(both["left_source"] == left) & (both["right_source"] == right)]
    if both.empty:
        return pd.DataFrame(columns=columns)
    both = both.sort_values("updated_at").drop_duplicates(_SIDES, keep="last")
    both["review_label"] = [parse_decision(d).label for d in both["verified_decision"]]
    both = both.rename(columns={"verified_decision": "review_decision"})
    return both[columns].astype(str).reset_index(drop=True)


def _with_reviews(scored, reviewed):
    """``scored`` with a person's label on every pair of ``reviewed``."""
    from pyspark.sql import functions as F

    joined = scored.join(F.broadcast(reviewed), _SIDES, "left")
    person = F.col("review_label").isNotNull()
    # A person is sure: probability 1 or 0 keeps dedup's and price-match's min_probability with them.
    override = {"label": F.col("review_label"), "probability": (F.col("review_label") == "match").cast("double"),
                "decided_by": F.lit("review"), "decision_json": F.col("review_decision")}
    return joined.select(*[F.when(person, override[c]).otherwise(F.col(c)).alias(c) if c in override else F.col(c)
                           for c in MATCHES.columns])


def match(spark: SparkSession, settings: Settings, *, left: str, right: str | None = None, run_id: str,
          candidates_run_id: str | None = None, model: str | None = None, explain: str | None = None) -> MatchReport:
    """Decide every candidate pair of ``left`` x ``right`` in ``candidates_run_id`` (default ``run_id``)."""
    from pyspark.sql import functions as F
    from pyspark.storagelevel import StorageLevel

    from epm_spark.models.matcher.cascade.cascade import uses_standing
    from epm_spark.pipeline.catalog.block import limit_threads
    from epm_spark.pipeline.catalog.embed import task_device

    start = time.monotonic()
    cfg, wh, engine = settings.match, settings.warehouse, settings.delta.engine
    right = right or left
    for s in {left, right}:
        check_partition_value("source", s)
    check_partition_value("run_id", run_id)
    candidates_run_id = candidates_run_id or run_id
    explain = explain or cfg.explain
    if explain not in ("band", "all", "none"):
        raise InputError(f"--explain must be band, all or none, got {explain!r}")
    model = resolve_matcher_model(settings, model)

    candidates = (delta.read(spark, wh, "candidates", engine=engine)
                  .filter((F.col("run_id") == candidates_run_id) & (F.col("left_source") == left)
                          & (F.col("right_source") == right))
                  .drop("run_id"))
    n_candidates = candidates.count()
    if n_candidates == 0:
        raise InputError(f"candidates holds no pairs of {left} -> {right} for run {candidates_run_id!r}; run "
                         f"`epm-spark block --left {left}" + (f" --right {right}" if right != left else "")
                         + "` first")
    products = delta.read(spark, wh, "products", engine=engine)
    pairs = candidates
    for side in ("left", "right"):
        listing = products.select(F.col("source").alias(f"{side}_source"), F.col("product_id").alias(f"{side}_id"),
                                  *[F.col(c).alias(f"{side}_{c}") for c in _LISTING])
        pairs = pairs.join(listing, [f"{side}_source", f"{side}_id"], "left")

    floor = cfg.similarity_floor
    margin, cap = cfg.uncertainty_margin, cfg.max_explain_per_batch
    threshold_override = cfg.threshold
    inference = settings.matcher.inference
    scored_at = pd.Timestamp.now(tz="UTC")
    # Set by the first pass of a cascade that reads standing, before `decide` is shipped.
    run_shares: dict[str, float] | None = None

    def loaded():
        limit_threads()
        return _matcher(model, task_device(inference.device), inference)

    def score(batches):
        matcher = None
        for pdf in batches:
            if matcher is None:
                matcher = loaded()
            pdf = pdf.reset_index(drop=True)
            yield pd.concat([pdf, matcher.score(pdf)], axis=1)

    def decide(batches):
        matcher = None
        for pdf in batches:
            if matcher is None:
                matcher = loaded()
            threshold = matcher.threshold() if threshold_override is None else threshold_override
            version = f"{Path(model).name}@{matcher.card.created}" if matcher.card else model
            pdf = pdf.reset_index(drop=True)
            keys = {"left_id": pdf["left_id"], "right_id": pdf["right_id"], "left_source": pdf["left_source"],
                    "right_source": pdf["right_source"]}
            tail = {"similarity": pdf["similarity"], "model_version": version, "scored_at": scored_at,
                    "run_id": run_id}
            cascade = hasattr(matcher, "decide")
            if cascade:
                d = _cascade_decisions(matcher, pdf, run_shares)
                probs = d["probability"].to_numpy(dtype=float)
                out = pd.DataFrame({**keys, **{c: d[c] for c in ("label", "probability", "decided_by", "confidence",
                                                                 "evidence", "noise_ignored", "rationale")},
                                    "format_valid": True, "decision_json": d["decision_json"], **tail})
                # The student explains what it decided: the band, not the pairs the cheap tiers were sure of.
                band = [i for i, in_band in enumerate(d["in_band"]) if in_band]
            else:
                probs = matcher.predict_proba(pdf)
                labels = ["match" if p >= threshold else "no_match" for p in probs]
                out = pd.DataFrame({**keys, "label": labels, "probability": probs.astype(float), "decided_by": "label",
                                    "confidence": None, "evidence": None, "noise_ignored": None, "rationale": None,
                                    "format_valid": True, "decision_json": None, **tail})
                band = [i for i, p in enumerate(probs) if abs(p - threshold) <= margin]
            chosen = list(range(len(pdf))) if explain == "all" else band if explain == "band" else []
            if cap is not None and len(chosen) > cap:
                chosen = sorted(sorted(chosen, key=lambda i: abs(probs[i] - threshold))[:cap])
            if chosen:
                for i, e in zip(chosen, matcher.explain(pdf.iloc[chosen].reset_index(drop=True))):
                    cols = _decision_columns(e)
                    for name, value in cols.items():
                        out.at[out.index[i], name] = value
                    # A cascade's label is its calibrated decision; the explanation is its rationale.
                    if not cascade:
                        out.at[out.index[i], "decided_by"] = "explain"
                        if e.format_valid:
                            out.at[out.index[i], "label"] = e.label
            yield out[MATCHES.columns]

    schema = MATCHES.spark_schema()
    by_model = pairs if floor is None else pairs.filter(F.col("similarity") >= floor)
    # A night's candidates are often one or two files: spread them so every task slot runs a model.
    slots = spark.sparkContext.defaultParallelism
    if by_model.rdd.getNumPartitions() < slots:
        by_model = by_model.repartition(slots)
    first_pass = None
    if uses_standing(model):
        by_model, first_pass, run_shares = _with_listing_tops(by_model, score)
        log.info("match: pairs sharing their listing with another candidate: left %.2f, right %.2f",
                 run_shares["left"], run_shares["right"])
    scored = by_model.mapInPandas(decide, schema)
    if floor is not None:
        floored = pairs.filter(F.col("similarity") < floor).select(
            "left_id", "right_id", "left_source", "right_source", F.lit("no_match").alias("label"),
            F.lit(None).cast("double").alias("probability"), F.lit("floor").alias("decided_by"),
            F.lit(None).cast("double").alias("confidence"), F.lit(None).cast("map<string,string>").alias("evidence"),
            F.lit(None).cast("array<string>").alias("noise_ignored"), F.lit(None).cast("string").alias("rationale"),
            F.lit(True).alias("format_valid"), F.lit(None).cast("string").alias("decision_json"), "similarity",
            F.lit(None).cast("string").alias("model_version"), F.lit(scored_at).alias("scored_at"),
            F.lit(run_id).alias("run_id"))
        scored = scored.unionByName(floored)
    reviewed = reviewed_pairs(wh, left, right)
    if not reviewed.empty:
        scored = _with_reviews(scored, spark.createDataFrame(reviewed))
    # Persisted: the model runs once; counting and writing read the same decisions.
    decisions = scored.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        with spark_progress(spark, f"match {left} -> {right}"), worker_errors():
            n_decisions = decisions.count()
            if n_decisions != n_candidates:
                raise RuntimeError(f"match produced {n_decisions} decisions for {n_candidates} candidates; "
                                   "nothing was written")
            delta.write(decisions, wh, "matches", "replace",
                        partition={"run_id": run_id, "left_source": left, "right_source": right},
                        run_id=run_id, job="match", engine=engine, max_rows_per_file=settings.delta.max_rows_per_file)
            stats = decisions.groupBy("decided_by").agg(
                F.count(F.lit(1)).alias("n"), F.sum((F.col("label") == "match").cast("int")).alias("matches"),
                F.sum((~F.col("format_valid")).cast("int")).alias("failures")).collect()
    finally:
        decisions.unpersist()
        if first_pass is not None:
            first_pass.unpersist()
    report = MatchReport(left, right, run_id, model, n_candidates, seconds=time.monotonic() - start)
    for r in stats:
        report.decided_by[r["decided_by"]] = r["n"]
        report.matches += int(r["matches"] or 0)
        report.format_failures += int(r["failures"] or 0)
    log.info("%s", report.summary().replace("\n", ";"))
    return report
