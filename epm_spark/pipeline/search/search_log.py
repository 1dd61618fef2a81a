"""``epm-spark generate-search-log``: shopper queries and simulated engagement on real listing titles.

The embedded default has no engagement log (none can be installed offline), so this job
makes one: the listings of benchmark folders (or of a ``products`` source) become the
search catalog, :func:`~epm_spark.models.search.queries.make_queries` writes shopper-style
queries with graded listings, and the click model
(:mod:`~epm_spark.models.search.clicks`) plays their sessions. Tables written, each
replacing this run's partition: ``products`` (the catalog's source, from benchmarks only),
``search_queries``, ``query_judgments`` and ``search_events``. Numpy on the driver: a
million events take seconds.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import pandas as pd

from epm_spark.config import Settings
from epm_spark.errors import InputError
from epm_spark.io import delta
from epm_spark.io.prices import Price
from epm_spark.io.schemas import check_partition_value

__all__ = ["SearchLogReport", "generate_search_log"]

log = logging.getLogger(__name__)


@dataclass
class SearchLogReport:
    source: str
    listings: int
    queries: int
    judged: int
    events: int
    sessions: int
    rates: dict[str, float]
    splits: dict[str, int]
    run_id: str
    seconds: float

    def summary(self) -> str:
        r = self.rates
        return (f"generate-search-log: {self.queries:,} queries over {self.listings:,} listings of {self.source} "
                f"({self.seconds:.1f} s)\n"
                f"  judged (query, listing) pairs: {self.judged:,}   queries per split: {self.splits}\n"
                f"  {self.sessions:,} sessions, {self.events:,} impressions: click {r['click']:.2%}, "
                f"cart {r['cart']:.2%}, purchase {r['purchase']:.3%} of impressions")


def generate_search_log(settings: Settings, *, run_id: str, benchmarks: list[str] | None = None,
                        from_source: str | None = None, queries: int | None = None,
                        seed: int | None = None) -> SearchLogReport:
    """Write the catalog, queries, judgments and events of one simulated search log."""
    from epm_spark.models.search.catalog import catalog_from_benchmarks, catalog_from_products
    from epm_spark.models.search.clicks import simulate_sessions
    from epm_spark.models.search.queries import make_queries

    start = time.monotonic()
    check_partition_value("run_id", run_id)
    cfg = settings.search_log
    wh = settings.warehouse
    qsettings = cfg.queries
    if queries is not None or seed is not None:
        qsettings = dataclasses.replace(qsettings, **{k: v for k, v in (("queries", queries), ("seed", seed))
                                                       if v is not None})
    now = pd.Timestamp.now(tz="UTC")
    if from_source:
        check_partition_value("source", from_source)
        if not delta.table_exists(wh, "products"):
            raise InputError("the warehouse has no products table; ingest a catalog first")
        products = delta.read_pandas(wh, "products", filters=[("source", "=", from_source)])
        if products.empty:
            raise InputError(f"products has no listings of source {from_source!r}")
        clusters = None
        if delta.table_exists(wh, "clusters"):
            c = delta.read_pandas(wh, "clusters", columns=["product_id", "source", "cluster_id", "run_id"],
                                  filters=[("source", "=", from_source)])
            if not c.empty:
                clusters = c[c["run_id"] == c["run_id"].max()]
        catalog = catalog_from_products(products, clusters)
        source = from_source
    else:
        folders = benchmarks or cfg.benchmarks
        if not folders:
            raise InputError("name benchmark folders (--benchmark DIR) or a products source (--from-source NAME)")
        source = cfg.source
        check_partition_value("source", source)
        catalog = catalog_from_benchmarks(folders, source=source)
    query_set = make_queries(catalog, qsettings)
    prices = {pid: Price(amount, currency if isinstance(currency, str) else None)
              for pid, amount, currency in zip(catalog.products["product_id"], catalog.products["price"],
                                               catalog.products["currency"])
              if amount is not None and not pd.isna(amount)}
    events = simulate_sessions(query_set.queries, query_set.judgments, prices, cfg.clicks)

    if not from_source:
        products = catalog.products.assign(ingested_at=now, run_id=run_id)
        delta.write_pandas(wh, "products", products, "replace", partition={"source": source}, run_id=run_id,
                           job="generate-search-log")
    delta.write_pandas(wh, "search_queries", query_set.queries.assign(run_id=run_id), "replace",
                       partition={"run_id": run_id}, run_id=run_id, job="generate-search-log")
    delta.write_pandas(wh, "query_judgments", query_set.judgments.assign(run_id=run_id), "replace",
                       partition={"run_id": run_id}, run_id=run_id, job="generate-search-log")
    delta.write_pandas(wh, "search_events", events.assign(run_id=run_id), "replace", partition={"run_id": run_id},
                       run_id=run_id, job="generate-search-log")
    rates = {"click": float(events["clicked"].mean()), "cart": float(events["added_to_cart"].mean()),
             "purchase": float(events["purchased"].mean())}
    report = SearchLogReport(source, len(catalog.products), len(query_set.queries), len(query_set.judgments),
                             len(events), int(events["session_id"].nunique()), rates,
                             {k: int(v) for k, v in query_set.queries["split"].value_counts().items()}, run_id,
                             time.monotonic() - start)
    log.info("%s", report.summary())
    return report
