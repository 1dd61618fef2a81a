"""A search catalog: real listings with the product cluster each belongs to and its look-alikes.

The search-log simulator needs to know which listings are the same product (a shopper who
wants one is as happy with any offer of it) and which look alike but are not (the benchmark's
non-matches, chosen by their authors to be confusable). Benchmarks have both:

* WDC Products offers carry a ``cluster_id``; pairs flagged ``is_hard_negative`` are look-alikes.
* DeepMatcher tables: clusters are the connected components of the label-1 pairs; label-0 pairs
  (blocked candidates) are look-alikes.

Any ``products`` frame works too: each listing is then its own cluster, with no look-alikes.
Pure pandas, no Spark.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from epm_spark.errors import InputError
from epm_spark.io.benchmarks import PRODUCT_COLUMNS, load_benchmark

__all__ = ["SearchCatalog", "catalog_from_benchmarks", "catalog_from_products"]

log = logging.getLogger(__name__)


@dataclass
class SearchCatalog:
    """Listings (``products`` columns, ``source`` set to the catalog's source) with clusters and look-alikes."""

    products: pd.DataFrame
    cluster: dict[str, str]
    lookalikes: dict[str, set[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.products.empty:
            raise InputError("the search catalog holds no listings")
        ids = self.products["product_id"]
        if ids.duplicated().any():
            raise InputError(f"the search catalog repeats product ids, e.g. {ids[ids.duplicated()].iloc[0]!r}")

    def members(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = defaultdict(list)
        for pid in self.products["product_id"]:
            out[self.cluster.get(pid, pid)].append(pid)
        return out


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def catalog_from_benchmarks(folders: Iterable[str | Path], source: str = "catalog") -> SearchCatalog:
    """Every listing of the benchmark folders, ids prefixed with the benchmark name (ids stay unique)."""
    frames, cluster, lookalikes = [], {}, defaultdict(set)
    for folder in folders:
        bench = load_benchmark(folder)
        name = bench.name
        # WDC Products offers keep one id on both sides; DeepMatcher tables number each side alone.
        shared_ids = bench.layout == "pairs"
        prefix = {"left": f"{name}:" if shared_ids else f"{name}:a", "right": f"{name}:" if shared_ids else f"{name}:b"}
        for side, frame in (("left", bench.left), ("right", bench.right)):
            f = frame.copy()
            f["product_id"] = prefix[side] + f["product_id"].astype(str)
            frames.append(f)
        uf = _UnionFind()
        pairs = bench.pairs
        lid = prefix["left"] + pairs["left_id"].astype(str)
        rid = prefix["right"] + pairs["right_id"].astype(str)
        for a, b, label, hard, lc, rc in zip(lid, rid, pairs["label"], pairs["is_hard_negative"],
                                             pairs["left_cluster_id"], pairs["right_cluster_id"]):
            if bench.layout == "pairs":
                for pid, c in ((a, lc), (b, rc)):
                    if c is not None and not pd.isna(c):
                        uf.union(pid, f"{name}:cluster:{c}")
            if int(label) == 1:
                uf.union(a, b)
            elif bench.layout == "tables" or bool(hard):
                lookalikes[a].add(b)
                lookalikes[b].add(a)
        for f in frames[-2:]:
            for pid in f["product_id"]:
                cluster[pid] = f"{name}:{uf.find(pid)}"
    products = pd.concat(frames, ignore_index=True).drop_duplicates("product_id").reset_index(drop=True)
    products["source"] = source
    products = products[products["title"].notna()].reset_index(drop=True)
    log.info("search catalog %s: %d listings in %d product clusters", source, len(products),
             len(set(cluster.get(p, p) for p in products["product_id"])))
    return SearchCatalog(products[PRODUCT_COLUMNS], cluster, dict(lookalikes))


def catalog_from_products(products: pd.DataFrame, clusters: pd.DataFrame | None = None) -> SearchCatalog:
    """A ``products`` frame as a catalog; ``clusters`` (``product_id, cluster_id``, e.g. from dedup) groups offers."""
    missing = {"product_id", "title"} - set(products.columns)
    if missing:
        raise InputError(f"products lack columns {sorted(missing)}")
    products = products.copy()
    for col in PRODUCT_COLUMNS:
        if col not in products:
            products[col] = None
    cluster = {} if clusters is None else dict(zip(clusters["product_id"].astype(str), clusters["cluster_id"].astype(str)))
    return SearchCatalog(products[PRODUCT_COLUMNS].reset_index(drop=True), cluster, {})
