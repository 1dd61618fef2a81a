"""``epm-spark teach-rewrites`` and ``epm-spark train-rewriter``: the rewriter's data and its two stages.

* ``teach-rewrites``: the queries of a warehouse table (``search_queries`` by default, what
  ``generate-search-log`` writes; any table with a ``query`` column) rewritten by the teacher
  (``rewriter.teacher``: agentic over the catalog's vocabulary, or the chat endpoint) into
  ``rewrite_examples``, replacing this run's partition.
* ``train-rewriter --stage distill``: LoRA SFT of ``rewriter.student`` on the train split's
  teacher rewrites (the newest teach-rewrites run unless ``--examples-run-id``).
* ``train-rewriter --stage rl``: GRPO from the newest ``distill-v<N>`` (or ``--init``) on train
  queries with graded listings (``query_judgments``), rewarded through the retrieval judge.
* ``--stage all``: both, the RL stage starting from the distilled folder just written.

Tables are read with delta-rs on the driver (no Spark): queries and judgments are small. The
retrieval judge searches the catalog source's listing vectors: those of ``embeddings`` when the
``embed`` job wrote them with the same encoder for every listing, else encoded here.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from epm_spark.config import Settings
from epm_spark.errors import InputError
from epm_spark.io import delta
from epm_spark.io.schemas import check_partition_value

__all__ = ["read_queries", "read_judgments", "catalog_listings", "build_retrieval_judge", "build_listing_context",
           "teach_rewrites",
           "train_rewriter", "latest_rewriter", "TeachRewritesReport", "newest_examples"]

log = logging.getLogger(__name__)


def _table(settings: Settings, table: str, needs: tuple[str, ...], hint: str) -> pd.DataFrame:
    if not delta.table_exists(settings.warehouse, table):
        raise InputError(f"the warehouse has no table {table!r}; {hint}")
    frame = delta.read_pandas(settings.warehouse, table)
    missing = [c for c in needs if c not in frame.columns]
    if missing:
        raise InputError(f"table {table!r} has no {', '.join(missing)} column; its columns: {', '.join(frame.columns)}")
    return frame


def read_queries(settings: Settings, table: str | None = None, split: str | None = None) -> pd.DataFrame:
    """``query, frequency, split``: distinct normalised queries of ``table``; ``split`` from its column
    or, where it has none, from the query's hash (:func:`~epm_spark.models.search.queries.query_split`)."""
    from epm_spark.models.rewriter.prompt import normalise_query
    from epm_spark.models.search.queries import query_split

    table = table or settings.rewriter.queries_table
    frame = _table(settings, table, ("query",), "run generate-search-log (or bring a table with a query column)")
    qs = settings.search_log.queries
    out = pd.DataFrame({"query": [normalise_query(q, 10_000) for q in frame["query"]]})
    out["frequency"] = pd.to_numeric(frame["frequency"], errors="coerce") if "frequency" in frame else np.nan
    out = out[out["query"] != ""]
    out = (out.groupby("query", as_index=False)["frequency"].max()
           if not out.empty else out.assign(frequency=pd.Series(dtype=float)))
    given = dict(zip(frame["query"].map(lambda q: normalise_query(q, 10_000)), frame["split"])) \
        if "split" in frame else {}
    out["split"] = [given.get(q) or query_split(q, qs.valid_share, qs.test_share) for q in out["query"]]
    if split is not None:
        out = out[out["split"] == split]
    return out.sort_values("query").reset_index(drop=True)


def read_judgments(settings: Settings) -> pd.DataFrame:
    """``query, product_id, grade`` of every query with graded listings (the newest grade of a pair)."""
    from epm_spark.models.rewriter.prompt import normalise_query

    table = settings.rewriter.judgments_table
    frame = _table(settings, table, ("query", "product_id", "grade"), "run generate-search-log first")
    frame = frame.assign(query=[normalise_query(q, 10_000) for q in frame["query"]],
                         product_id=frame["product_id"].astype(str))
    return frame.drop_duplicates(["query", "product_id"], keep="last")[["query", "product_id", "grade"]]


def catalog_listings(settings: Settings, source: str | None = None) -> pd.DataFrame:
    source = source or settings.rewriter.source
    check_partition_value("source", source)
    if not delta.table_exists(settings.warehouse, "products"):
        raise InputError("the warehouse has no products table; run generate-search-log or ingest a catalog first")
    products = delta.read_pandas(settings.warehouse, "products", filters=[("source", "=", source)])
    if products.empty:
        raise InputError(f"products has no listings of source {source!r} (rewriter.source)")
    return products


def _listing_vectors(settings: Settings, encoder, products: pd.DataFrame, source: str) -> tuple[list[str], np.ndarray]:
    """The embed job's vectors when they cover every listing with this encoder, else encoded now."""
    ids = products["product_id"].astype(str).tolist()
    if delta.table_exists(settings.warehouse, "embeddings"):
        emb = delta.read_pandas(settings.warehouse, "embeddings", columns=["product_id", "model_version", "embedding"],
                                filters=[("source", "=", source)])
        emb = emb[emb["model_version"] == encoder.model_version].drop_duplicates("product_id")
        if set(ids) <= set(emb["product_id"]):
            by_id = dict(zip(emb["product_id"], emb["embedding"]))
            log.info("retrieval judge: %d listing vectors of %s from embeddings", len(ids), source)
            return ids, np.stack([np.asarray(by_id[i], dtype=np.float32) for i in ids])
    log.info("retrieval judge: encoding %d listings of %s (run `epm-spark embed --source %s` to reuse vectors)",
             len(ids), source, source)
    return ids, encoder.encode_listings(products, settings.encoder.batch_size)


def build_retrieval_judge(settings: Settings, *, encoder: str | None = None, judgments: pd.DataFrame | None = None):
    """The retrieval judge over the catalog source (``rewriter.source``) with ``query_judgments``."""
    from epm_spark.models.encoder.model import DualEncoder
    from epm_spark.models.rewriter.retrieval import RetrievalJudge

    enc, rw = settings.encoder, settings.rewriter
    model = DualEncoder.load(encoder or enc.backbone, device=enc.device, dtype=enc.dtype, pooling=enc.pooling,
                             max_length=enc.max_length, query_instruction=enc.query_instruction, text=enc.text)
    products = catalog_listings(settings)
    ids, vectors = _listing_vectors(settings, model, products, rw.source)
    judgments = read_judgments(settings) if judgments is None else judgments
    return RetrievalJudge.build(model, ids, vectors, judgments, index_settings=settings.block.index,
                                k=rw.rewards.k, relevant_grade=rw.rewards.relevant_grade,
                                batch_size=enc.batch_size)


def build_listing_context(settings: Settings, judge):
    """The listing titles the student's prompt shows: those carrying the query's model number, then its
    nearest listings (through ``judge``'s index)."""
    from epm_spark.models.rewriter.retrieval import ListingContext

    prompt = settings.rewriter.prompt
    return ListingContext.from_listings(judge, catalog_listings(settings), prompt.context_listings,
                                        codes=prompt.code_listings)


def build_teacher(settings: Settings, kind: str | None = None):
    from epm_spark.models.rewriter.teacher import CatalogVocabulary, build_rewrite_teacher

    kind = kind or settings.rewriter.teacher
    vocabulary = None
    if kind == "agentic":
        vocabulary = CatalogVocabulary.from_listings(catalog_listings(settings).to_dict("records"), show_progress=True)
    return build_rewrite_teacher(kind, vocabulary=vocabulary, settings=settings.teacher)


@dataclass
class TeachRewritesReport:
    queries_table: str
    teacher: str
    queries: int
    rewritten: int
    changed: int
    failures: dict[str, int]
    splits: dict[str, int]
    usage: dict[str, Any]
    run_id: str
    seconds: float
    examples: list[dict[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        failed = sum(self.failures.values())
        lines = [f"teach-rewrites: {self.rewritten:,} of {self.queries:,} queries of {self.queries_table} rewritten by "
                 f"{self.teacher} ({self.changed:,} changed, {failed:,} without a rewrite) in {self.seconds:.1f} s",
                 f"  queries per split: {self.splits}   run {self.run_id} -> rewrite_examples"]
        if self.usage:
            lines.append(f"  endpoint: {self.usage}")
        lines += [f"  {e['query']!r} -> {e['rewrite']!r}" for e in self.examples]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def teach_rewrites(settings: Settings, *, run_id: str, queries_table: str | None = None, split: str | None = None,
                   limit: int | None = None, teacher: str | None = None) -> TeachRewritesReport:
    """Rewrite the queries of ``queries_table`` with the teacher into ``rewrite_examples``."""
    start = time.monotonic()
    check_partition_value("run_id", run_id)
    table = queries_table or settings.rewriter.queries_table
    queries = read_queries(settings, table, split)
    if limit is not None:
        queries = queries.sort_values(["frequency", "query"], ascending=[False, True], na_position="last").head(limit)
    if queries.empty:
        raise InputError(f"table {table!r} holds no queries" + (f" of split {split!r}" if split else ""))
    model = build_teacher(settings, teacher)
    results = model.rewrite(queries["query"].tolist())
    now = pd.Timestamp.now(tz="UTC")
    rows = pd.DataFrame({
        "query": [r.query for r in results], "rewrite": [r.rewrite for r in results],
        "teacher": [r.teacher for r in results], "split": queries["split"].to_numpy(),
        "frequency": queries["frequency"].astype("Int64").to_numpy(),
        "steps": [list(r.steps) for r in results], "failure_reason": [r.failure for r in results],
        "prompt_tokens": [r.prompt_tokens for r in results], "completion_tokens": [r.completion_tokens for r in results],
        "created_at": now, "run_id": run_id})
    delta.write_pandas(settings.warehouse, "rewrite_examples", rows, "replace", partition={"run_id": run_id},
                       run_id=run_id, job="teach-rewrites")
    ok = rows[rows["rewrite"].notna()]
    failures = rows["failure_reason"].dropna().str.split(":").str[0].value_counts().to_dict()
    usage = model.endpoint.usage.as_dict() if hasattr(model, "endpoint") else {}
    changed = ok[ok["rewrite"] != ok["query"]]
    return TeachRewritesReport(table, model.name, len(rows), len(ok), len(changed),
                               {str(k): int(v) for k, v in failures.items()},
                               {str(k): int(v) for k, v in rows["split"].value_counts().items()}, usage, run_id,
                               time.monotonic() - start,
                               [{"query": q, "rewrite": r} for q, r in zip(changed["query"][:5], changed["rewrite"][:5])])


def newest_examples(settings: Settings, run_id: str | None = None) -> tuple[pd.DataFrame, str]:
    """The rewrite_examples of ``run_id`` (default: the newest teach-rewrites run) and that run id."""
    frame = _table(settings, "rewrite_examples", ("query", "rewrite", "split", "run_id"),
                   "run `epm-spark teach-rewrites` first")
    if frame.empty:
        raise InputError("rewrite_examples is empty; run `epm-spark teach-rewrites` first")
    if run_id is None:
        run_id = str(frame.sort_values("created_at")["run_id"].iloc[-1])
    frame = frame[frame["run_id"] == run_id]
    if frame.empty:
        raise InputError(f"rewrite_examples has no rows of run {run_id!r}")
    return frame.reset_index(drop=True), run_id


def latest_rewriter(root: str | Path, stage: str) -> Path | None:
    """The finished ``<stage>-v<N>`` rewriter folder with the highest N under ``root``, if any."""
    from epm_spark.models.rewriter.model import is_rewriter_folder
    from epm_spark.models.versions import latest_model

    return latest_model(root, stage, is_rewriter_folder)


def _folder(root: str, stage: str, out: str | None) -> Path:
    """``out``, else the unfinished folder a killed run left (its checkpoints resume), else a new version."""
    from epm_spark.models.rewriter.model import is_rewriter_folder
    from epm_spark.models.versions import unfinished_or_next

    return Path(out) if out else unfinished_or_next(root, stage, is_rewriter_folder)


def train_rewriter(settings: Settings, *, stage: str, init: str | None = None, out: str | None = None,
                   max_steps: int | None = None, max_examples: int | None = None,
                   examples_run_id: str | None = None, encoder: str | None = None) -> list[tuple[Any, Path]]:
    """Run ``distill``, ``rl`` or ``all``; returns (card, folder) of each stage run."""
    from dataclasses import replace

    rw = settings.rewriter
    if stage not in ("distill", "rl", "all"):
        raise InputError(f"stage must be distill, rl or all, got {stage!r}")
    if out and stage == "all":
        raise InputError("--out names one folder; --stage all writes two (give rewriter.models_dir instead)")
    done = []
    judgments = judge = context = None
    if stage in ("rl", "all") or rw.prompt.context_listings > 0:
        judgments = read_judgments(settings)
        judge = build_retrieval_judge(settings, encoder=encoder, judgments=judgments)
        context = build_listing_context(settings, judge) if rw.prompt.context_listings > 0 else None
    if stage in ("distill", "all"):
        from epm_spark.models.rewriter.training import train_distill

        examples, run = newest_examples(settings, examples_run_id)
        train = examples[(examples["split"] == "train") & examples["rewrite"].notna()]
        if train.empty:
            raise InputError(f"rewrite_examples of run {run!r} hold no train-split rewrite")
        sft = replace(rw.sft, max_steps=max_steps or rw.sft.max_steps,
                      max_examples=max_examples if max_examples is not None else rw.sft.max_examples)
        folder = _folder(rw.models_dir, "distill", out if stage == "distill" else None)
        info = {"examples_run_id": run, "teachers": train["teacher"].value_counts().to_dict(),
                "rewrite_examples_version": delta.table_version(settings.warehouse, "rewrite_examples")}
        card = train_distill(train[["query", "rewrite"]], folder, student=rw.student, settings=sft, prompt=rw.prompt,
                             init=init if stage == "distill" else None, data_info=info, context=context)
        done.append((card, folder))
        init = str(folder)
    if stage in ("rl", "all"):
        from epm_spark.models.rewriter.rewards import EndpointRewriteJudge, build_rewrite_rewards
        from epm_spark.models.rewriter.training import train_rewriter_rl

        start = init or latest_rewriter(rw.models_dir, "distill")
        if start is None:
            raise InputError(f"no distilled rewriter under {rw.models_dir}; run --stage distill first or give --init")
        queries = read_queries(settings, split="train")
        queries = queries[queries["query"].isin(set(judgments["query"]))]
        if queries.empty:
            raise InputError(f"no train query of {rw.queries_table} has graded listings in {rw.judgments_table}")
        endpoint_judge = None
        if rw.rewards.w_judge > 0:
            from epm_spark.models.matcher.supervision.endpoint import ChatEndpoint

            endpoint = settings.judges.endpoint if settings.judges.endpoint.configured else settings.teacher.endpoint
            endpoint_judge = EndpointRewriteJudge(ChatEndpoint(endpoint))
        rewards = build_rewrite_rewards(rw.rewards, judge, endpoint_judge)
        rl = replace(rw.rl, max_steps=max_steps or rw.rl.max_steps,
                     pool=max_examples if max_examples is not None else rw.rl.pool)
        folder = _folder(rw.models_dir, "rl", out if stage == "rl" else None)
        info = {"queries": len(queries), "encoder": judge.encoder.model_version, "source": rw.source,
                "tables": {t: delta.table_version(settings.warehouse, t) for t in (rw.queries_table,
                                                                                  rw.judgments_table, "products")}}
        card = train_rewriter_rl(queries["query"].tolist(), str(start), folder, judge=judge,
                                 reward_funcs=rewards.funcs, reward_weights=rewards.weights, settings=rl,
                                 data_info=info, context=context)
        done.append((card, folder))
    return done
