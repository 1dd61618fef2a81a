"""The rewriting verbs end to end through `epm-spark`: generate-search-log, embed, teach-rewrites,
train-rewriter, rewrite, evaluate rewriting. Tiny random models, a tiny benchmark folder, local Spark."""

import json

import numpy as np
import pandas as pd
import pytest
from tiny_student import tiny_student  # noqa: F401

from encoder_tiny import save_tiny
from epm_spark.cli import main
from epm_spark.config import load_settings
from epm_spark.io import delta
from search_tiny import tiny_benchmark


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    return str(save_tiny(tmp_path_factory.mktemp("rewrite") / "encoder"))


@pytest.fixture
def base(warehouse, tiny_encoder, tiny_student, tmp_path):
    sets = [f"encoder.backbone={tiny_encoder}", f"rewriter.student={tiny_student}",
            f"rewriter.models_dir={tmp_path / 'models'}", "rewriter.bootstrap_resamples=50",
            "search_log.queries.min_frequency=30", "search_log.queries.max_frequency=60",
            # The tiny tokenizer spells the system prompt in bytes: long examples, tiny budgets.
            "rewriter.sft.max_length=512", "rewriter.sft.batch_size=2", "rewriter.rl.prompts_per_step=2",
            "rewriter.rl.num_generations=2", "rewriter.rl.max_completion_length=16",
            "rewriter.inference.max_new_tokens=8"]
    return ["--warehouse", warehouse, *[a for s in sets for a in ("--set", s)]]


def test_teach_train_rewrite_and_evaluate(spark, base, warehouse, tmp_path, capsys):
    bench = tiny_benchmark(tmp_path / "tiny_bench", n=42)
    assert main([*base, "generate-search-log", "--benchmark", str(bench), "--queries", "30", "--run-id", "sim"]) == 0
    assert main([*base, "embed", "--source", "catalog", "--run-id", "r1"]) == 0
    queries = delta.read_pandas(warehouse, "search_queries")
    capsys.readouterr()

    assert main([*base, "teach-rewrites", "--run-id", "t1", "--json"]) == 0
    taught = json.loads(capsys.readouterr().out)
    examples = delta.read_pandas(warehouse, "rewrite_examples")
    assert taught["queries"] == len(examples) == queries["query"].nunique() and taught["teacher"] == "agentic"
    assert set(examples["split"]) <= {"train", "valid", "test"} and examples["rewrite"].notna().all()
    assert taught["changed"] == int((examples["rewrite"] != examples["query"]).sum()) > 0

    assert main([*base, "train-rewriter", "--stage", "all", "--max-steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "train-rewriter distill:" in out and "train-rewriter rl:" in out
    models = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert models == ["distill-v1", "rl-v1"]

    rewrite = [*base, "rewrite", "--queries", "search_queries", "--run-id", "r1"]
    assert main(rewrite) == 0
    assert "emitted" in capsys.readouterr().out
    rows = delta.read_pandas(warehouse, "query_rewrites").sort_values("query").reset_index(drop=True)
    assert len(rows) == queries["query"].nunique() and not rows["query"].duplicated().any()
    assert rows["model_version"].str.startswith("rl-v1-").all()
    kept = rows[~rows["emitted"]]
    assert (kept["rewrite"] == kept["query"]).all() and kept["reason"].notna().all()
    judged = rows[rows["ndcg_original"].notna()]
    assert len(judged) > 0 and (judged["retrieval_gain"] == judged["ndcg_rewrite"] - judged["ndcg_original"]).all()
    emitted = judged[judged["emitted"]]
    assert (emitted["ndcg_rewrite"] >= emitted["ndcg_original"]).all(), "a rewrite worse than its query was emitted"
    worse = judged[judged["ndcg_rewrite"] < judged["ndcg_original"]]
    assert (~worse["emitted"]).all()

    # The job's retrieval judge (Spark, sharded index) agrees with the model layer's (one in-memory index).
    from epm_spark.pipeline.search.train_rewriter import build_retrieval_judge

    settings = load_settings(overrides=[a for a in base[2:] if a != "--set"], warehouse=warehouse)
    judge = build_retrieval_judge(settings)
    searched = [c if c.strip() else q for c, q in zip(judged["candidate"], judged["query"])]
    assert np.allclose(judge.ndcg(searched, judged["query"].tolist()), judged["ndcg_rewrite"], atol=1e-6)

    assert main(rewrite) == 0  # the same run again replaces its partition with the same rows
    again = delta.read_pandas(warehouse, "query_rewrites").sort_values("query").reset_index(drop=True)
    cols = [c for c in rows.columns if c != "rewritten_at"]
    pd.testing.assert_frame_equal(rows[cols], again[cols])

    # Bad input: one line naming the table or column; the cache keeps its rows.
    capsys.readouterr()
    for table, says in (("nope", "the warehouse has no table 'nope'"), ("products", "table 'products' has no query column")):
        assert main([*base, "rewrite", "--queries", table, "--run-id", "r1"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and says in err, err
    assert len(delta.read_pandas(warehouse, "query_rewrites")) == len(rows)

    assert main([*base, "evaluate", "rewriting", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["systems"]) == {"original", "teacher", "distill", "rl"}
    assert report["systems"]["original"]["changed_rate"] == 0.0 and report["systems"]["original"]["drift_rate"] == 0.0
    d = report["differences"]["rl - original"]["ndcg@10"]
    assert d["ci95_low"] <= d["difference"] <= d["ci95_high"] and "rl - distill" in report["differences"]
    test_queries = set(queries.loc[queries["split"] == "test", "query"])
    assert report["queries"] <= len(test_queries)

    assert main([*base, "runs", "--json"]) == 0
    attempts = json.loads(capsys.readouterr().out)
    jobs = {a["job"]: a for a in attempts if a["status"] == "succeeded"}
    assert {"teach-rewrites", "train-rewriter", "rewrite"} <= set(jobs)
    failed = [a["error"] for a in attempts if a["status"] == "failed"]
    assert sorted(failed) == ["table 'products' has no query column; its columns: " + ", ".join(
        delta.read_pandas(warehouse, "products").columns), "the warehouse has no table 'nope'"]
    assert jobs["rewrite"]["rows_written"]["query_rewrites"] == len(rows)
    assert jobs["rewrite"]["model_versions"]["rewriter"].startswith("rl-v1-")
    assert set(jobs["train-rewriter"]["model_versions"]) == {"rewriter_distill", "rewriter_rl"}

    # The job's prompt context (Spark: a model-number join, the sharded index) is the one the student
    # was trained and evaluated with (the model layer's ListingContext).
    from pyspark.sql import functions as F

    from epm_spark.models.rewriter.prompt import normalise_query
    from epm_spark.pipeline.search.query_search import catalog_index, nearest_listings
    from epm_spark.pipeline.search.rewrite import _listing_context
    from epm_spark.pipeline.search.train_rewriter import build_listing_context

    asked = sorted({normalise_query(q, 10_000) for q in queries["query"]} | {"x005z", "x012z x013z", "nothing here"})
    originals = (spark.createDataFrame(pd.DataFrame({"query": asked})).withColumn("text", F.col("query"))
                 .withColumn("left_id", F.concat_ws("|", F.lit("original"), "query")))
    built, _, encoder_model = catalog_index(spark, settings, "catalog")
    nearest = nearest_listings(spark, settings, originals, built, encoder_model, settings.rewriter.rewards.k)
    rw = settings.rewriter.prompt
    in_spark = _listing_context(spark, settings, "catalog", originals, nearest, rw.context_listings,
                                rw.code_listings).toPandas()
    in_python = build_listing_context(settings, judge)
    expected = dict(zip(asked, in_python(asked)))
    assert {q: list(c) for q, c in zip(in_spark["query"], in_spark["context"])} == expected
    assert rw.code_listings > 0 and expected["x005z"][0].endswith("x005z")
    # Both listings of the first code named (the benchmark's two tables), before the second code's.
    assert [t[-5:] for t in expected["x012z x013z"][:2]] == ["x012z", "x012z"]


def test_bad_input_is_one_line_naming_it(spark, base, warehouse, tmp_path, capsys):
    bench = tiny_benchmark(tmp_path / "tiny_bench", n=14)
    assert main([*base, "generate-search-log", "--benchmark", str(bench), "--queries", "5", "--run-id", "sim"]) == 0
    capsys.readouterr()
    assert main([*base, "teach-rewrites", "--queries", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no table 'nope'" in err
    assert main([*base, "teach-rewrites", "--queries", "products"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "table 'products' has no query column" in err
    assert main([*base, "train-rewriter", "--stage", "distill"]) == 2
    assert "no table 'rewrite_examples'" in capsys.readouterr().err
    assert main([*base, "train-rewriter", "--stage", "rl"]) == 2
    assert "no distilled rewriter" in capsys.readouterr().err
    assert main([*base, "rewrite", "--queries", "search_queries", "--model", str(tmp_path), "--run-id", "x"]) == 2
    assert "is not a rewriter model folder" in capsys.readouterr().err
