"""The search verbs end to end through `epm-spark`: generate-search-log, ingest-events, train-ranker, embed,
rank, evaluate ranking. Tiny random models, a tiny benchmark folder, local Spark."""

import json
import shutil

import pandas as pd
import pytest

from encoder_tiny import save_tiny
from epm_spark.cli import main
from epm_spark.io import delta
from search_tiny import tiny_benchmark


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return str(save_tiny(tmp_path_factory.mktemp("search") / "tiny"))


@pytest.fixture
def base(warehouse, tiny_model, tmp_path):
    return ["--warehouse", warehouse, "--set", f"encoder.backbone={tiny_model}",
            "--set", f"ranker.backbone={tiny_model}", "--set", f"ranker.models_dir={tmp_path / 'models'}",
            "--set", "ranker.bootstrap_resamples=50", "--set", "search_log.queries.min_frequency=30",
            "--set", "search_log.queries.max_frequency=60"]


def test_simulate_train_rank_and_evaluate(spark, base, warehouse, tmp_path, capsys):
    bench = tiny_benchmark(tmp_path / "tiny_bench", n=42)
    assert main([*base, "generate-search-log", "--benchmark", str(bench), "--queries", "30", "--run-id", "sim"]) == 0
    out = capsys.readouterr().out
    assert "impressions: click" in out
    queries = delta.read_pandas(warehouse, "search_queries")
    events = delta.read_pandas(warehouse, "search_events")
    assert len(queries) > 10 and set(events["query"]) <= set(queries["query"])
    sessions = events.groupby("query")["session_id"].nunique().to_dict()
    assert sessions == queries.set_index("query")["frequency"].to_dict()

    for extra in ([], ["--tasks", "purchase"]):
        assert main([*base, "train-ranker", "--max-steps", "2", "--max-queries", "20", *extra]) == 0
    models = sorted((tmp_path / "models").iterdir())
    assert [m.name for m in models] == ["multi_task-v1", "purchase_only-v1"]

    assert main([*base, "embed", "--source", "catalog", "--run-id", "r1"]) == 0
    rank = [*base, "rank", "--queries", "search_queries", "--k", "5", "--model", str(models[0]), "--run-id", "r1"]
    assert main(rank) == 0
    scores = delta.read_pandas(warehouse, "search_scores").sort_values(["query", "rank"]).reset_index(drop=True)
    assert len(scores) == 5 * len(queries) and not scores.duplicated(["query", "product_id"]).any()
    assert set(scores["query"]) == set(queries["query"])
    assert all(r == [1, 2, 3, 4, 5] for r in scores.groupby("query")["rank"].apply(list))
    assert scores[["p_click", "p_cart", "p_purchase", "score"]].notna().all().all()
    assert (scores.groupby("query")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()
    assert main(rank) == 0
    again = delta.read_pandas(warehouse, "search_scores").sort_values(["query", "rank"]).reset_index(drop=True)
    cols = [c for c in scores.columns if c != "scored_at"]
    pd.testing.assert_frame_equal(scores[cols], again[cols], check_exact=False, atol=1e-6)

    # The heads read the retrieval cosine: a ranker trained under another dual-encoder is refused.
    card = json.loads((models[0] / "ranker.json").read_text())
    assert {card["similarity_encoder"]} == set(delta.read_pandas(warehouse, "embeddings")["model_version"])
    other = tmp_path / "other-encoder-ranker"
    shutil.copytree(models[0], other)
    (other / "ranker.json").write_text(json.dumps({**card, "similarity_encoder": "another-encoder-0000"}))
    capsys.readouterr()
    assert main([*rank[:rank.index("--model") + 1], str(other), "--run-id", "r2"]) == 2
    assert "reads the retrieval similarity of another-encoder-0000" in capsys.readouterr().err
    assert not (delta.read_pandas(warehouse, "search_scores")["run_id"] == "r2").any()

    capsys.readouterr()
    assert main([*base, "evaluate", "ranking", "--model", str(models[0]), "--model", str(models[1]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["systems"]) == {"bm25", "zero_shot_bi_encoder", "multi_task", "purchase_only"}
    assert report["reference"] == "multi_task" and set(report["differences"]) == {"bm25", "zero_shot_bi_encoder",
                                                                                  "purchase_only"}
    d = report["differences"]["bm25"]["click"]["ndcg@10"]
    assert d["ci95_low"] <= d["difference"] <= d["ci95_high"]
    test_queries = set(queries.loc[queries["split"] == "test", "query"])
    assert report["queries"] == len(test_queries & set(events["query"]))


def test_rank_refuses_a_folder_that_is_no_ranker(spark, base, tmp_path, capsys):
    assert main([*base, "rank", "--queries", "products", "--model", str(tmp_path), "--run-id", "r"]) == 2
    assert "not a ranker folder" in capsys.readouterr().err


def test_mistyped_models_are_refused_before_any_table_is_read(base, tmp_path, capsys):
    # The warehouse has no search_events yet: each model is checked before it is read.
    assert main([*base, "evaluate", "ranking", "--model", str(tmp_path)]) == 2
    assert "not a ranker folder" in capsys.readouterr().err
    ranker = tmp_path / "ranker"
    ranker.mkdir()
    (ranker / "ranker.json").write_text("{}")
    assert main([*base, "evaluate", "ranking", "--model", str(ranker)]) == 2
    assert "card format None" in capsys.readouterr().err
    assert main([*base, "train-ranker", "--set", f"ranker.backbone={tmp_path / 'no-encoder'}"]) == 2
    assert "no-encoder' is neither packaged:minilm nor a model folder" in capsys.readouterr().err
    assert main([*base, "--set", f"encoder.backbone={tmp_path / 'no-bi-encoder'}", "train-ranker"]) == 2
    assert "no-bi-encoder' is neither" in capsys.readouterr().err
    assert not list((tmp_path / "models").glob("*"))


EVENTS = """session_id,query,product_id,position,clicked,added_to_cart,purchased,event_time
s1,sony speaker,tiny_bench:a0,1,true,true,true,2026-11-01T10:00:00
s1,sony speaker,tiny_bench:a1,2,false,false,false,2026-11-01T10:00:00
s2,canon camera,tiny_bench:a3,1,1,0,0,2026-11-02 11:00
s2,canon camera,nope-42,2,0,0,0,2026-11-02 11:00
s3,apple tablet,tiny_bench:a2,1,maybe,false,false,2026-11-03
s3,apple tablet,tiny_bench:a4,2,false,false,true,2026-11-03
s4,,tiny_bench:a5,1,false,false,false,2026-11-03
s5,bose phone,tiny_bench:a5,0,false,false,false,2026-11-03
s6,bose phone,tiny_bench:a6,3,true,false,false,yesterday-ish
s7,sony laptop,tiny_bench:a7,1,true,true,false,2026-11-04
s7,sony laptop,tiny_bench:a8,2,true,false,false,2026-11-04
s7,sony laptop,tiny_bench:a9,3,false,false,false,2026-11-04
s7,sony laptop,tiny_bench:a10,4,false,false,false,2026-11-04
s7,sony laptop,tiny_bench:a11,5,false,false,false,2026-11-04
s7,sony laptop,tiny_bench:a12,6,false,false,false,2026-11-04
"""


def test_ingest_events_quarantines_bad_rows_with_reasons(spark, base, warehouse, tmp_path, capsys):
    bench = tiny_benchmark(tmp_path / "tiny_bench", n=14)
    assert main([*base, "generate-search-log", "--benchmark", str(bench), "--queries", "5", "--run-id", "sim"]) == 0
    log = tmp_path / "events.csv"
    log.write_text(EVENTS)
    capsys.readouterr()
    assert main([*base, "ingest-events", "--input", str(log), "--run-id", "log1"]) == 0
    assert "events + quarantined == rows read: 9 + 6 == 15" in capsys.readouterr().out
    q = delta.read_pandas(warehouse, "search_events_quarantine").sort_values("row_number")
    reasons = dict(zip(q["row_number"], q["reason"].str.split(":").str[0]))
    assert reasons == {4: "unknown product", 5: "bad flag", 6: "purchase without click", 7: "missing field",
                       8: "bad position", 9: "bad timestamp"}
    ev = delta.read_pandas(warehouse, "search_events", filters=[("run_id", "=", "log1")])
    assert len(ev) == 9 and ev["impressed"].all()
    first = ev[(ev["session_id"] == "s1") & (ev["position"] == 1)].iloc[0]
    assert first["purchased"] and first["event_time"] == pd.Timestamp("2026-11-01T10:00:00", tz="UTC")
    sim_before = len(delta.read_pandas(warehouse, "search_events", filters=[("run_id", "=", "sim")]))
    # A log without a click column: one clear error, nothing written, the simulated events kept.
    log.write_text("session_id,query,product_id\ns1,sony,tiny_bench:a0\n")
    assert main([*base, "ingest-events", "--input", str(log), "--run-id", "log2"]) == 2
    assert "no column for clicked" in capsys.readouterr().err
    assert not len(delta.read_pandas(warehouse, "search_events", filters=[("run_id", "=", "log2")]))
    assert len(delta.read_pandas(warehouse, "search_events", filters=[("run_id", "=", "sim")])) == sim_before
    assert len(delta.read_pandas(warehouse, "search_events", filters=[("run_id", "=", "log1")])) == 9
    assert main([*base, "train-ranker", "--events-run-id", "nosuch"]) == 2
    assert "search_events holds no run 'nosuch' (runs there: log1, sim)" in capsys.readouterr().err
    # A source products does not hold: refused before the log is read, not every event quarantined.
    log.write_text(EVENTS)
    assert main([*base, "ingest-events", "--input", str(log), "--source", "nosuch", "--run-id", "log3"]) == 2
    sources = sorted(set(delta.read_pandas(warehouse, "products", columns=["source"])["source"]))
    assert f"products has no listings of source 'nosuch' (sources there: {', '.join(sources)})" in \
        capsys.readouterr().err
    assert not delta.table_exists(warehouse, "search_events_quarantine") or not len(delta.read_pandas(
        warehouse, "search_events_quarantine", filters=[("run_id", "=", "log3")]))
