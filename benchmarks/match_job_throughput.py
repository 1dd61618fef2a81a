"""Pairs per second of the Spark ``match`` job with the cascade versus every tier on every pair.

    python benchmarks/match_job_throughput.py --model models/matcher/cascade-v1 \
        --benchmark ../shared/data/benchmarks/abt_buy [--split valid,test] [--pairs 0] \
        [--baseline-pairs 300] [--master local[2]]

Both decide the same candidate pairs (a benchmark split's pairs, as a blocker would hand
them over) with the same model folder, in the same run:

* baseline: the raw tiers' loop in one process (its per-pair rate, on ``--baseline-pairs`` of them):
  the teacher's evidence, the cross-encoder and the student (label mode) on every pair, the pairs'
  standing among each other, then the full combiner;
* job: ``epm-spark match`` in local Spark: products and candidates read from Delta, the
  cascade in pandas UDFs in two passes (scores, then each listing's rivals and the decisions; the
  student only on its band), decisions written to Delta.

The job's time is its whole wall time once the Spark session is up. Prints one JSON line per
figure; the target is the job at 100 pairs/s or more on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cores, {platform.system()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a cascade folder (train-matcher --stage all)")
    parser.add_argument("--benchmark", required=True, help="benchmark folder whose pairs become candidates")
    parser.add_argument("--split", default="valid,test", help="split(s), comma-separated")
    parser.add_argument("--pairs", type=int, default=0, help="a stratified sample of this many pairs (0: all)")
    parser.add_argument("--baseline-pairs", type=int, default=300,
                        help="pairs the every-tier loop times (it has no fixed cost to spread: its rate is per pair)")
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args(argv)

    import numpy as np
    import pandas as pd

    from epm_spark.config import load_settings
    from epm_spark.io import delta
    from epm_spark.io.benchmarks import load_benchmark
    from epm_spark.io.schemas import CANDIDATES, PRODUCTS
    from epm_spark.models.matcher.cascade.cascade import CE_FEATURE, STUDENT_FEATURE, Cascade
    from epm_spark.models.matcher.cascade.combiner import logit
    from epm_spark.models.matcher.cascade.features import TitleTfidf, pair_features
    from epm_spark.models.matcher.cascade.standing import (
        STANDING_FEATURES, pair_tops, standing_features, standing_score,
    )
    from epm_spark.models.matcher.evaluation import stratified_sample
    from epm_spark.models.matcher.pairs import benchmark_pairs
    from epm_spark.pipeline.catalog.match import match
    from epm_spark.spark import get_spark

    bench = load_benchmark(args.benchmark)
    pairs = pd.concat([benchmark_pairs(bench, s.strip()) for s in args.split.split(",")], ignore_index=True)
    if args.pairs:
        pairs = stratified_sample(pairs, args.pairs, seed=0).reset_index(drop=True)
    looped = stratified_sample(pairs, min(args.baseline_pairs, len(pairs)), seed=0).reset_index(drop=True)

    cascade = Cascade.load(args.model)
    cascade.decide(pairs.head(16))  # warm-up: weights loaded, first batches compiled
    start = time.perf_counter()
    evidence = cascade.teacher.evidence(looped)
    x = pair_features(looped, evidence, cascade.teacher)
    x[TitleTfidf.FEATURE] = cascade.tfidf.cosine(looped)
    x[CE_FEATURE] = cascade.cross_encoder.predict_logits(looped)
    if cascade.uses_standing:
        score = standing_score(np.full(len(looped), 0.5), x[CE_FEATURE].to_numpy(), 0.0)
        x[list(STANDING_FEATURES)] = standing_features(score, pair_tops(looped, score))
    if cascade.full is not None:
        x[STUDENT_FEATURE] = logit(cascade.student.predict_proba(looped))
        cascade.full.predict_proba(x)
    loop_s = time.perf_counter() - start
    loop_rate = len(looped) / loop_s
    print(json.dumps({"figure": "every_tier_on_every_pair_per_s", "value": round(loop_rate, 1), "pairs": len(looped),
                      "seconds": round(loop_s, 2), "machine": machine()}), flush=True)
    del cascade

    products = pd.concat([bench.left, bench.right], ignore_index=True).drop_duplicates(["source", "product_id"])
    products = products.assign(ingested_at=pd.Timestamp.now(tz="UTC"), run_id="bench").reindex(columns=PRODUCTS.columns)
    products["attributes"] = [a if isinstance(a, dict) else {} for a in products["attributes"]]
    candidates = pd.DataFrame({"left_id": pairs["left_id"].astype(str), "right_id": pairs["right_id"].astype(str),
                               "left_source": pairs["left_source"], "right_source": pairs["right_source"],
                               "similarity": np.ones(len(pairs), dtype="float32"),
                               "rank": np.ones(len(pairs), dtype="int32"), "run_id": "bench"})
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(overrides=[f"spark.master={args.master}", "spark.ui_enabled=false",
                                            "match.explain=none", "match.similarity_floor=null"],
                                 warehouse=str(Path(tmp) / "warehouse"))
        delta.write_pandas(settings.warehouse, "products", products, "overwrite")
        delta.write_pandas(settings.warehouse, "candidates", candidates[CANDIDATES.columns], "append", run_id="bench")
        spark = get_spark(settings)
        left, right = pairs["left_source"].iloc[0], pairs["right_source"].iloc[0]
        start = time.perf_counter()
        report = match(spark, settings, left=left, right=right, run_id="bench", model=args.model)
        job_s = time.perf_counter() - start
        job_rate = report.candidates / job_s
        print(json.dumps({"figure": "spark_match_job_cascade_pairs_per_s", "value": round(job_rate, 1),
                          "pairs": report.candidates, "seconds": round(job_s, 2), "decided_by": report.decided_by,
                          "master": args.master, "machine": machine()}), flush=True)
        print(json.dumps({"figure": "job_vs_every_tier_loop", "value": round(job_rate / loop_rate, 3),
                          "target_pairs_per_s": 100, "model": args.model}), flush=True)
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
