"""``epm-spark evaluate blocking``: pair completeness and reduction ratio, through the Spark jobs.

The benchmark split's listings go into a scratch warehouse as two sources (one for a pairs-layout
benchmark, whose sides are one pool of offers: blocked against itself, as de-duplication), then
the real ``embed`` and ``block`` jobs run on them, and the candidates are scored against the
split's true matches:

* pair completeness@k: share of true matches among the candidates of rank <= k;
* reduction ratio@k: 1 - candidates / (left listings x right listings; n (n - 1) / 2 for one pool).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd

from epm_spark.config import Settings
from epm_spark.io import delta
from epm_spark.io.benchmarks import Benchmark, load_benchmark, unique_listings

__all__ = ["evaluate_blocking", "scratch_benchmark", "embed_and_block", "pair_ids"]

log = logging.getLogger(__name__)


def pair_ids(pairs: Iterable[tuple[Any, Any]], dedup: bool) -> list[tuple[str, str]]:
    """(left id, right id) per pair; unordered (smaller id first, as ``block`` writes them) in a
    de-duplication set, where a true pair may be listed either way round."""
    pairs = ((str(a), str(b)) for a, b in pairs)
    return [(min(a, b), max(a, b)) for a, b in pairs] if dedup else list(pairs)


@contextmanager
def scratch_benchmark(settings: Settings, bench: Benchmark, left: pd.DataFrame, right: pd.DataFrame, *,
                      keep: str | None = None) -> Iterator[Settings]:
    """Settings pointing at a scratch warehouse whose ``products`` hold these listings (removed after)."""
    scratch = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="epm-eval-"))
    local = dataclasses.replace(settings, warehouse=str(scratch / "warehouse"),
                                block=dataclasses.replace(settings.block, index_dir=str(scratch / "indexes")))
    try:
        now = pd.Timestamp.now(tz="UTC")
        # A pairs-layout benchmark's two sides are one source: its listings are written once.
        listings = unique_listings(left, right)
        delta.write_pandas(local.warehouse, "products", listings.assign(ingested_at=now, run_id="eval"), "replace",
                           partition={"source": sorted(set(listings["source"]))})
        yield local
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)


def embed_and_block(spark, local: Settings, bench: Benchmark, *, k: int, model: str | None,
                    timings: dict[str, float]):
    """Run the real embed and block jobs on the scratch warehouse's two sources; their reports."""
    from epm_spark.pipeline.catalog.block import block
    from epm_spark.pipeline.catalog.embed import embed

    t = time.monotonic()
    sources = list(dict.fromkeys([bench.left_source, bench.right_source]))
    embedded = embed(spark, local, sources=sources, run_id="eval", model=model)
    timings["embed_s"] = round(time.monotonic() - t, 2)
    t = time.monotonic()
    blocked = block(spark, local, left=bench.left_source, right=bench.right_source, k=k, run_id="eval")
    timings["block_s"] = round(time.monotonic() - t, 2)
    return embedded, blocked


def evaluate_blocking(spark, settings: Settings, *, benchmark: str, ks: list[int], split: str = "test",
                      model: str | None = None, keep: str | None = None) -> dict[str, Any]:
    bench = load_benchmark(benchmark)
    pairs = bench.split_pairs(split)
    left, right = bench.corpus(split)
    dedup = bench.one_pool
    positives = pairs[pairs.label == 1]
    truth = set(pair_ids(zip(positives.left_id, positives.right_id), dedup))
    timings: dict[str, float] = {}
    with scratch_benchmark(settings, bench, left, right, keep=keep) as local:
        report, blocked = embed_and_block(spark, local, bench, k=max(ks), model=model, timings=timings)
        cands = delta.read_pandas(local.warehouse, "candidates", columns=["left_id", "right_id", "rank"])
    if dedup:
        # One pool of offers blocked against itself: every unordered pair of its listings.
        n = len(set(left["product_id"]) | set(right["product_id"]))
        all_pairs = n * (n - 1) // 2
    else:
        all_pairs = len(left) * len(right)
    result: dict[str, Any] = {
        "benchmark": bench.name, "split": bench.resolve_split(split), "model_version": report.model_version,
        "left_listings": len(left), "right_listings": len(right), "true_matches": len(truth),
        "index_kind": blocked.index_kind, **timings,
    }
    for k in sorted(ks):
        top = cands[cands["rank"] <= k]
        found = len(truth & set(pair_ids(zip(top.left_id, top.right_id), dedup)))
        result[f"pair_completeness@{k}"] = round(found / len(truth), 4) if truth else None
        result[f"reduction_ratio@{k}"] = round(1 - len(top) / all_pairs, 4)
        result[f"candidates@{k}"] = len(top)
    log.info("blocking on %s/%s: %s", bench.name, split, result)
    return result
