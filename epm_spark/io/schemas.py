"""Every table of the warehouse, declared once.

A :class:`TableSpec` holds the Arrow schema (the source of truth: delta-rs and the
Parquet writers take it as is), the partition columns and the key. The Spark
schema is derived from it, so a column is never declared twice.

This module imports no Spark at import time: the model layer may read it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pyarrow as pa

__all__ = [
    "TableSpec",
    "TABLES",
    "PRODUCTS",
    "PRODUCTS_QUARANTINE",
    "LABELLED_PAIRS",
    "EMBEDDINGS",
    "CANDIDATES",
    "MATCHES",
    "CLUSTERS",
    "CLUSTER_CHANGES",
    "PRICE_COMPARISONS",
    "RATIONALES",
    "REVIEW_STATUSES",
    "SEARCH_EVENTS",
    "SEARCH_EVENTS_QUARANTINE",
    "SEARCH_QUERIES",
    "QUERY_JUDGMENTS",
    "SEARCH_SCORES",
    "REWRITE_EXAMPLES",
    "QUERY_REWRITES",
    "JOB_RUNS",
    "JOB_STATUSES",
    "spec",
    "to_spark_schema",
    "check_partition_value",
]

TS = pa.timestamp("us", tz="UTC")

# Partition values become folder names; keeping them to a safe alphabet means no
# escaping rules differ between delta-rs, delta-spark and Spark's path discovery.
_PARTITION_VALUE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


@dataclass(frozen=True)
class TableSpec:
    name: str
    schema: pa.Schema
    partition_by: tuple[str, ...] = ()
    key: tuple[str, ...] = ()
    # Columns that may never be null; the writer fails the job (before its commit) if one is.
    required: tuple[str, ...] = ()
    description: str = ""
    columns_doc: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def columns(self) -> list[str]:
        return self.schema.names

    def spark_schema(self):
        return to_spark_schema(self.schema)


def _table(name, columns, *, partition_by=(), key=(), required=(), description=""):
    """Declare a table from ``(name, arrow type, doc)`` triples."""
    schema = pa.schema([pa.field(col, typ) for col, typ, _ in columns])
    docs = {col: doc for col, _, doc in columns}
    for col in (*partition_by, *key, *required):
        if col not in docs:
            raise ValueError(f"table {name}: unknown column {col!r}")
    return TableSpec(name, schema, tuple(partition_by), tuple(key), tuple(required), description, docs)


PRODUCTS = _table(
    "products",
    [
        ("product_id", pa.string(), "the listing's id within its source"),
        ("source", pa.string(), "the catalog the listing comes from (ours, a competitor, a benchmark side)"),
        ("title", pa.string(), "title as the seller wrote it, noise included"),
        ("brand", pa.string(), "brand or manufacturer"),
        ("category", pa.string(), "category path or name"),
        ("description", pa.string(), "free text"),
        ("price", pa.float64(), "parsed price"),
        ("currency", pa.string(), "ISO 4217 code of price"),
        ("price_raw", pa.string(), "price as read, before parsing"),
        ("attributes", pa.map_(pa.string(), pa.string()), "every other column of the input row"),
        ("ingested_at", TS, "when the run read the row"),
        ("run_id", pa.string(), "the run that wrote the row"),
    ],
    partition_by=("source",),
    key=("source", "product_id"),
    required=("product_id", "source", "title"),
    description="One row per listing; each ingest replaces its source's rows.",
)

PRODUCTS_QUARANTINE = _table(
    "products_quarantine",
    [
        ("source", pa.string(), "the catalog the row came from"),
        ("source_file", pa.string(), "the file the row came from"),
        ("row_number", pa.int64(), "1-based row (line, for CSV/JSON) within source_file"),
        ("product_id", pa.string(), "the id, where the row had one"),
        ("reason", pa.string(), "why the row was rejected"),
        ("raw", pa.string(), "the raw row, as JSON"),
        ("ingested_at", TS, "when the run read the row"),
        ("run_id", pa.string(), "the run that rejected the row"),
    ],
    partition_by=("source",),
    required=("source", "reason", "raw"),
    description="Rows an ingest rejected, with the reason; replaced per source like products.",
)

LABELLED_PAIRS = _table(
    "labelled_pairs",
    [
        ("benchmark", pa.string(), "benchmark name"),
        ("left_id", pa.string(), "product_id on the left source"),
        ("right_id", pa.string(), "product_id on the right source"),
        ("left_source", pa.string(), "source of left_id"),
        ("right_source", pa.string(), "source of right_id"),
        ("label", pa.int32(), "1 = same product"),
        ("split", pa.string(), "train, valid, test, ..."),
        ("left_cluster_id", pa.string(), "product cluster of the left offer, where given"),
        ("right_cluster_id", pa.string(), "product cluster of the right offer, where given"),
        ("is_hard_negative", pa.bool_(), "a non-match chosen to look alike, where given"),
    ],
    partition_by=("benchmark",),
    key=("benchmark", "split", "left_id", "right_id"),
    required=("benchmark", "left_id", "right_id", "label", "split"),
    description="Gold pairs from benchmarks or synthetic catalogs.",
)

EMBEDDINGS = _table(
    "embeddings",
    [
        ("product_id", pa.string(), "listing id"),
        ("source", pa.string(), "listing source"),
        ("model_version", pa.string(), "the encoder that produced the vector"),
        ("content_hash", pa.string(), "hash of the text that was embedded"),
        ("embedding", pa.list_(pa.float32()), "L2-normalised vector"),
        ("embedded_at", TS, "when the vector was computed"),
        ("run_id", pa.string(), "the run that computed the vector"),
    ],
    partition_by=("source",),
    key=("source", "product_id"),
    required=("product_id", "source", "model_version", "content_hash", "embedding"),
    description="One vector per listing and encoder; nightly runs re-embed only what changed.",
)

CANDIDATES = _table(
    "candidates",
    [
        ("left_id", pa.string(), "query listing"),
        ("right_id", pa.string(), "retrieved listing"),
        ("left_source", pa.string(), "source of left_id"),
        ("right_source", pa.string(), "source of right_id"),
        ("similarity", pa.float32(), "inner product of the two embeddings"),
        ("rank", pa.int32(), "1 = nearest"),
        ("run_id", pa.string(), "the blocking run"),
    ],
    partition_by=("run_id", "left_source", "right_source"),
    key=("run_id", "left_source", "left_id", "right_source", "right_id"),
    required=("left_id", "right_id", "left_source", "right_source", "similarity", "rank", "run_id"),
    description="Pairs the blocker lets through to the matcher.",
)

MATCHES = _table(
    "matches",
    [
        ("left_id", pa.string(), "left listing"),
        ("right_id", pa.string(), "right listing"),
        ("left_source", pa.string(), "source of left_id"),
        ("right_source", pa.string(), "source of right_id"),
        ("label", pa.string(), "match or no_match"),
        ("probability", pa.float64(), "probability of match"),
        ("decided_by", pa.string(), "floor; a cascade: teacher, cross_encoder or student; a student folder: label or "
                                    "explain; review: a person's verdict in rationales"),
        ("confidence", pa.float64(), "the decision's own confidence (explain mode)"),
        ("evidence", pa.map_(pa.string(), pa.string()), "per attribute: same, different, unknown"),
        ("noise_ignored", pa.list_(pa.string()), "seller noise the model discarded"),
        ("rationale", pa.string(), "short explanation (explain mode)"),
        ("format_valid", pa.bool_(), "false when a generated decision failed the schema"),
        ("decision_json", pa.string(), "the raw structured decision"),
        ("similarity", pa.float32(), "blocking similarity"),
        ("model_version", pa.string(), "matcher version"),
        ("scored_at", TS, "when the pair was scored"),
        ("run_id", pa.string(), "the matching run"),
    ],
    partition_by=("run_id", "left_source", "right_source"),
    key=("run_id", "left_source", "left_id", "right_source", "right_id"),
    required=("left_id", "right_id", "left_source", "right_source", "label", "decided_by", "run_id"),
    description="One decision per candidate pair.",
)

CLUSTERS = _table(
    "clusters",
    [
        ("cluster_id", pa.string(), "stable product cluster id"),
        ("product_id", pa.string(), "member listing"),
        ("source", pa.string(), "member's source"),
        ("cluster_size", pa.int32(), "members in the cluster"),
        ("flagged", pa.bool_(), "cluster above the size limit: review, do not trust"),
        ("clustered_at", TS, "when the run computed the clusters"),
        ("run_id", pa.string(), "the run that computed the clusters"),
    ],
    partition_by=("run_id", "source"),
    key=("run_id", "source", "product_id"),
    required=("cluster_id", "product_id", "source", "run_id"),
    description="Connected components over accepted matches, ids stable across runs.",
)

CLUSTER_CHANGES = _table(
    "cluster_changes",
    [
        ("cluster_id", pa.string(), "cluster id in this run (the removed cluster's id for removed)"),
        ("source", pa.string(), "the catalog de-duplicated"),
        ("change", pa.string(), "created, merged, split, updated, unchanged or removed"),
        ("previous_cluster_ids", pa.list_(pa.string()), "clusters of the previous run its members were in"),
        ("cluster_size", pa.int32(), "members in this run (0 for removed)"),
        ("previous_size", pa.int32(), "members of the cluster with this id in the previous run"),
        ("run_id", pa.string(), "the run"),
        ("previous_run_id", pa.string(), "the run compared against"),
    ],
    partition_by=("run_id", "source"),
    required=("cluster_id", "source", "change", "run_id"),
    description="What happened to each cluster since the previous run.",
)

PRICE_COMPARISONS = _table(
    "price_comparisons",
    [
        ("our_id", pa.string(), "our listing"),
        ("our_source", pa.string(), "our catalog"),
        ("competitor_id", pa.string(), "their listing"),
        ("competitor_source", pa.string(), "their catalog"),
        ("our_title", pa.string(), "our title"),
        ("competitor_title", pa.string(), "their title"),
        ("our_price", pa.float64(), "our price in the reporting currency"),
        ("competitor_price", pa.float64(), "their price in the reporting currency"),
        ("competitor_price_original", pa.float64(), "their price as listed"),
        ("competitor_currency", pa.string(), "their currency"),
        ("currency", pa.string(), "the reporting currency"),
        ("difference", pa.float64(), "competitor_price - our_price"),
        ("percent", pa.float64(), "difference / our_price * 100"),
        ("implausible", pa.bool_(), "competitor price outside price_match.min_ratio..max_ratio of ours: "
                                    "check the match, not an undercut"),
        ("match_probability", pa.float64(), "how sure the matcher is"),
        ("rationale", pa.string(), "why the matcher said match"),
        ("run_id", pa.string(), "the run"),
    ],
    partition_by=("run_id", "our_source"),
    required=("our_id", "our_source", "competitor_id", "run_id"),
    description="Our listings against matched competitor listings, currencies normalised.",
)

REVIEW_STATUSES = ("pending", "accepted", "rejected", "corrected", "auto_agreed")

RATIONALES = _table(
    "rationales",
    [
        ("benchmark", pa.string(), "benchmark (or catalog pairing) the pair comes from"),
        ("split", pa.string(), "labelled_pairs split"),
        ("left_source", pa.string(), "source of left_id"),
        ("left_id", pa.string(), "left listing"),
        ("right_source", pa.string(), "source of right_id"),
        ("right_id", pa.string(), "right listing"),
        ("label", pa.int32(), "gold label, 1 = same product (null when unlabelled)"),
        ("teacher", pa.string(), "the teacher that wrote the decision, e.g. agentic or endpoint:<model>"),
        ("teacher_label", pa.string(), "match or no_match; null when the teacher gave no valid decision"),
        ("teacher_decision", pa.string(), "the teacher's decision JSON (schema of matcher/decision.py)"),
        ("failure_reason", pa.string(), "why the teacher gave no valid decision (request or format failure)"),
        ("prompt_tokens", pa.int64(), "prompt tokens billed for this pair (endpoint teachers)"),
        ("completion_tokens", pa.int64(), "completion tokens billed for this pair (endpoint teachers)"),
        ("agrees_with_gold", pa.bool_(), "teacher_label equals the gold label; null when either is missing"),
        ("review_status", pa.string(), "pending, accepted, rejected, corrected or auto_agreed"),
        ("verified_decision", pa.string(), "the decision a reviewer accepted or corrected (JSON)"),
        ("reviewer_note", pa.string(), "free text from the reviewer"),
        ("run_id", pa.string(), "the teach run (or review import) that last changed the row; "
                                 "review:<reviewer> for a verdict from the review page"),
        ("updated_at", TS, "when the row last changed"),
    ],
    partition_by=("benchmark",),
    key=("benchmark", "split", "left_source", "left_id", "right_source", "right_id", "teacher"),
    required=("benchmark", "split", "left_source", "left_id", "right_source", "right_id", "teacher",
              "review_status", "run_id"),
    description="Teacher decisions with rationales per labelled pair, and their human review.",
)

JOB_STATUSES = ("running", "succeeded", "failed")

JOB_RUNS = _table(
    "job_runs",
    [
        ("run_id", pa.string(), "the run the job belongs to (a nightly run shares one across its steps)"),
        ("attempt_id", pa.string(), "one execution of the job; re-running the same command is a new attempt"),
        ("job", pa.string(), "the verb, e.g. ingest, match, nightly"),
        ("step", pa.string(), "the nightly step this attempt ran, e.g. ingest:ours (null outside nightly)"),
        ("arguments", pa.string(), "the job's arguments as JSON"),
        ("started_at", TS, "when the attempt started"),
        ("finished_at", TS, "when it ended; null while running or when it was killed"),
        ("status", pa.string(), "running, succeeded or failed"),
        ("error", pa.string(), "the one-line error of a failed attempt"),
        ("rows_read", pa.map_(pa.string(), pa.int64()), "rows the job read, per input (table or file)"),
        ("rows_written", pa.map_(pa.string(), pa.int64()), "rows the job committed, per table"),
        ("table_versions", pa.map_(pa.string(), pa.int64()), "the Delta version each commit created, per table"),
        ("model_versions", pa.map_(pa.string(), pa.string()), "models used, e.g. encoder, matcher"),
        ("stage_seconds", pa.map_(pa.string(), pa.float64()), "seconds per stage (per step for nightly)"),
        ("host", pa.string(), "machine the attempt ran on"),
        ("pid", pa.int64(), "process id on that host"),
        ("version", pa.string(), "epm-spark version"),
    ],
    partition_by=("run_id",),
    key=("run_id", "attempt_id"),
    required=("run_id", "attempt_id", "job", "started_at", "status", "host"),
    description="One row per job attempt: what ran, when, rows in and out, versions, status.",
)

SEARCH_EVENTS = _table(
    "search_events",
    [
        ("session_id", pa.string(), "one search: a query typed and its result page"),
        ("query", pa.string(), "what the shopper typed"),
        ("product_id", pa.string(), "the listing shown"),
        ("position", pa.int32(), "1-based place on the result page"),
        ("impressed", pa.bool_(), "the listing was shown"),
        ("clicked", pa.bool_(), "the shopper opened it"),
        ("added_to_cart", pa.bool_(), "the shopper put it in the cart"),
        ("purchased", pa.bool_(), "the shopper bought it"),
        ("event_time", TS, "when the result page was shown"),
        ("run_id", pa.string(), "the ingest (or simulation) run that wrote the row"),
    ],
    partition_by=("run_id",),
    key=("run_id", "session_id", "product_id"),
    required=("session_id", "query", "product_id", "impressed", "clicked", "added_to_cart", "purchased", "run_id"),
    description="Search engagement, one row per listing shown; each ingest run replaces its own partition.",
)

SEARCH_EVENTS_QUARANTINE = _table(
    "search_events_quarantine",
    [
        ("source_file", pa.string(), "the file the row came from"),
        ("row_number", pa.int64(), "1-based row (line, for CSV/JSON) within source_file"),
        ("session_id", pa.string(), "the session, where the row had one"),
        ("product_id", pa.string(), "the listing, where the row had one"),
        ("reason", pa.string(), "why the row was rejected"),
        ("raw", pa.string(), "the raw row, as JSON"),
        ("ingested_at", TS, "when the run read the row"),
        ("run_id", pa.string(), "the run that rejected the row"),
    ],
    partition_by=("run_id",),
    required=("reason", "raw", "run_id"),
    description="Event rows an ingest-events run rejected, with the reason.",
)

SEARCH_QUERIES = _table(
    "search_queries",
    [
        ("query", pa.string(), "the query text"),
        ("frequency", pa.int64(), "sessions with this query"),
        ("split", pa.string(), "train, valid or test (a hash of the query: stable across runs)"),
        ("style", pa.string(), "simulated queries: model, brand_line, short_title or category"),
        ("source_product_id", pa.string(), "simulated queries: the listing the shopper had in mind"),
        ("cluster_id", pa.string(), "simulated queries: that listing's product cluster"),
        ("run_id", pa.string(), "the run that wrote the row"),
    ],
    partition_by=("run_id",),
    key=("run_id", "query"),
    required=("query", "frequency", "split", "run_id"),
    description="Queries with their frequency; the simulator also says which product each was typed for.",
)

QUERY_JUDGMENTS = _table(
    "query_judgments",
    [
        ("query", pa.string(), "the query text"),
        ("product_id", pa.string(), "a judged listing"),
        ("relation", pa.string(), "exact, substitute, complement or irrelevant"),
        ("grade", pa.int32(), "3 exact, 2 substitute, 1 complement, 0 irrelevant"),
        ("run_id", pa.string(), "the run that wrote the row"),
    ],
    partition_by=("run_id",),
    key=("run_id", "query", "product_id"),
    required=("query", "product_id", "relation", "grade", "run_id"),
    description="Graded (query, listing) relevance of the simulated queries.",
)

SEARCH_SCORES = _table(
    "search_scores",
    [
        ("query", pa.string(), "the query"),
        ("product_id", pa.string(), "a candidate listing"),
        ("source", pa.string(), "the catalog searched"),
        ("similarity", pa.float32(), "dual-encoder cosine of query and listing (the retrieval score)"),
        ("p_click", pa.float64(), "P(click | shown), the click head"),
        ("p_cart", pa.float64(), "P(add to cart | shown), the cart head"),
        ("p_purchase", pa.float64(), "P(purchase | shown), the purchase head"),
        ("score", pa.float64(), "the blended score (ranker.blend weights of the heads)"),
        ("rank", pa.int32(), "1 = best by score within the query"),
        ("model_version", pa.string(), "the ranker"),
        ("scored_at", TS, "when the pair was scored"),
        ("run_id", pa.string(), "the ranking run"),
    ],
    partition_by=("run_id", "source"),
    key=("run_id", "source", "query", "product_id"),
    required=("query", "product_id", "source", "score", "rank", "model_version", "run_id"),
    description="Ranker scores of each query's k retrieved candidates.",
)

REWRITE_EXAMPLES = _table(
    "rewrite_examples",
    [
        ("query", pa.string(), "the query as typed (lower case, single spaces)"),
        ("rewrite", pa.string(), "the teacher's rewrite; null when it gave none"),
        ("teacher", pa.string(), "agentic, or endpoint:<model>"),
        ("split", pa.string(), "train, valid or test (a hash of the query: stable across runs)"),
        ("frequency", pa.int64(), "sessions with this query, where the queries table says"),
        ("steps", pa.list_(pa.string()), "the agentic teacher's steps that changed the query"),
        ("failure_reason", pa.string(), "why the teacher gave no rewrite (request or format failure)"),
        ("prompt_tokens", pa.int64(), "prompt tokens billed for this query (endpoint teachers)"),
        ("completion_tokens", pa.int64(), "completion tokens billed for this query (endpoint teachers)"),
        ("created_at", TS, "when the teacher wrote it"),
        ("run_id", pa.string(), "the teach-rewrites run"),
    ],
    partition_by=("run_id",),
    key=("run_id", "teacher", "query"),
    required=("query", "teacher", "split", "run_id"),
    description="Teacher rewrites of queries, what train-rewriter distills; each run replaces its own partition.",
)

QUERY_REWRITES = _table(
    "query_rewrites",
    [
        ("query", pa.string(), "the query as typed (lower case, single spaces)"),
        ("rewrite", pa.string(), "what search should run: the student's rewrite when emitted, else the query"),
        ("candidate", pa.string(), "the student's rewrite, emitted or not"),
        ("emitted", pa.bool_(), "the rewrite passed the retrieval judge and the drift check"),
        ("reason", pa.string(), "why a candidate was not emitted: worse, drift, empty, unchanged or unjudged"),
        ("frequency", pa.int64(), "sessions with this query, where the queries table says"),
        ("ndcg_original", pa.float64(), "NDCG@10 of the query's graded listings when the query searches"),
        ("ndcg_rewrite", pa.float64(), "NDCG@10 when the candidate searches"),
        ("retrieval_gain", pa.float64(), "ndcg_rewrite - ndcg_original (null: the query has no graded listings)"),
        ("drift", pa.float64(), "share of the query's brands, model numbers, sizes the candidate lost"),
        ("format_score", pa.float64(), "format and length credit of the candidate, 0 to 1"),
        ("reward", pa.float64(), "the candidate's weighted reward (rewriter.rewards weights)"),
        ("model_version", pa.string(), "the rewriter"),
        ("encoder_version", pa.string(), "the dual-encoder of the retrieval judge"),
        ("source", pa.string(), "the catalog searched"),
        ("rewritten_at", TS, "when the query was rewritten"),
        ("run_id", pa.string(), "the rewrite run"),
    ],
    partition_by=("run_id",),
    key=("run_id", "query"),
    required=("query", "rewrite", "emitted", "model_version", "run_id"),
    description="The rewrite cache: one row per query, the rewrite to search with (or the query kept).",
)


TABLES: dict[str, TableSpec] = {
    t.name: t
    for t in (
        PRODUCTS,
        PRODUCTS_QUARANTINE,
        LABELLED_PAIRS,
        EMBEDDINGS,
        CANDIDATES,
        MATCHES,
        CLUSTERS,
        CLUSTER_CHANGES,
        PRICE_COMPARISONS,
        RATIONALES,
        SEARCH_EVENTS,
        SEARCH_EVENTS_QUARANTINE,
        SEARCH_QUERIES,
        QUERY_JUDGMENTS,
        SEARCH_SCORES,
        REWRITE_EXAMPLES,
        QUERY_REWRITES,
        JOB_RUNS,
    )
}


def spec(name: str) -> TableSpec:
    from epm_spark.errors import InputError

    try:
        return TABLES[name]
    except KeyError:
        raise InputError(f"no table named {name!r}; tables: {', '.join(TABLES)}") from None


def check_partition_value(column: str, value: object) -> str:
    """Return ``value`` as a partition value or raise an error naming the column."""
    from epm_spark.errors import InputError

    text = str(value)
    if not _PARTITION_VALUE.match(text):
        raise InputError(
            f"{column} {text!r} is not allowed: use 1-128 letters, digits, '_', '-' or '.'"
        )
    return text


def to_spark_schema(schema: pa.Schema):
    """The Spark ``StructType`` equivalent of an Arrow schema."""
    from pyspark.sql import types as T

    def convert(typ: pa.DataType):
        if pa.types.is_string(typ) or pa.types.is_large_string(typ):
            return T.StringType()
        if pa.types.is_int64(typ):
            return T.LongType()
        if pa.types.is_int32(typ):
            return T.IntegerType()
        if pa.types.is_float64(typ):
            return T.DoubleType()
        if pa.types.is_float32(typ):
            return T.FloatType()
        if pa.types.is_boolean(typ):
            return T.BooleanType()
        if pa.types.is_timestamp(typ):
            return T.TimestampType()
        if pa.types.is_date32(typ):
            return T.DateType()
        if pa.types.is_map(typ):
            return T.MapType(convert(typ.key_type), convert(typ.item_type), True)
        if pa.types.is_list(typ) or pa.types.is_large_list(typ):
            return T.ArrayType(convert(typ.value_type), True)
        raise TypeError(f"no Spark type for Arrow type {typ}")

    return T.StructType([T.StructField(f.name, convert(f.type), True) for f in schema])
