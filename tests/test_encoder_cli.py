"""`epm-spark train-encoder` and `epm-spark evaluate retrieval`: happy paths on tiny data, clear errors."""

import json

import pandas as pd
import pytest
from encoder_tiny import save_tiny, tiny_catalog

from epm_spark.cli import main
from epm_spark.io.delta import write_pandas


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny") / "bert")


def tiny_settings(backbone):
    return ["--set", f"encoder.backbone={backbone}", "--set", "encoder.device=cpu", "--set", "encoder.max_length=16",
            "--set", "encoder.contrastive.batch_size=4", "--set", "encoder.contrastive.epochs=1",
            "--set", "encoder.roar.batch_size=4", "--set", "encoder.roar.epochs=1"]


@pytest.fixture()
def warehouse(tmp_path):
    products, pairs = tiny_catalog()
    products["price"] = products["price"].astype(float)
    products["ingested_at"] = pd.Timestamp("2026-01-01", tz="UTC")
    products["run_id"] = "t"
    write_pandas(str(tmp_path / "wh"), "products", products, "overwrite")
    write_pandas(str(tmp_path / "wh"), "labelled_pairs", pairs, "overwrite")
    return tmp_path / "wh"


def tiny_benchmark_folder(folder):
    """The tiny catalog as a DeepMatcher folder (tableA/tableB + split files)."""
    products, pairs = tiny_catalog()
    folder.mkdir()
    for side, name in (("tiny_left", "tableA.csv"), ("tiny_right", "tableB.csv")):
        rows = products[products["source"] == side]
        pd.DataFrame({"id": rows["product_id"], "title": rows["title"]}).to_csv(folder / name, index=False)
    for split in ("train", "valid", "test"):
        part = pairs[pairs["split"] == split]
        pd.DataFrame({"ltable_id": part["left_id"], "rtable_id": part["right_id"], "label": part["label"]}).to_csv(
            folder / f"{split}.csv", index=False)
    return folder


def test_train_both_stages_from_the_warehouse(backbone, warehouse, tmp_path, capsys):
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    args = ["--warehouse", str(warehouse), *tiny_settings(backbone)]
    assert main([*args, "train-encoder", "--stage", "contrastive", "--benchmark", "tiny", "--out", str(s1)]) == 0
    assert main([*args, "train-encoder", "--stage", "roar", "--init", str(s1), "--out", str(s2)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {s1}" in out and f"wrote {s2}" in out
    card = json.loads((s2 / "model_card.json").read_text())
    assert card["stage"] == "roar" and "warehouse" in card["data"]["description"]


def test_evaluate_retrieval_json_on_a_benchmark_folder(backbone, tmp_path, capsys):
    folder = tiny_benchmark_folder(tmp_path / "tiny")
    code = main(["--set", "encoder.device=cpu", "evaluate", "retrieval", "--benchmark", str(folder),
                 "--model", str(backbone), "--k", "5", "--split", "valid", "--json"])
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["benchmark"] == "tiny" and metrics["split"] == "valid"
    assert metrics["queries"] == 6 and metrics["corpus"] == 24
    assert 0 <= metrics["recall@1"] <= metrics["recall@5"] <= metrics["recall@10"] <= 1
    assert metrics["reduction_ratio@5"] == pytest.approx(1 - 5 / 24)
    assert metrics["model_version"].startswith("bert-")


def test_bad_stage_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train-encoder", "--stage", "sft"])
    assert exc.value.code == 2
    assert "invalid choice: 'sft'" in capsys.readouterr().err


def test_embed_and_block_refuse_unknown_sources_before_spark_starts(backbone, warehouse, monkeypatch, capsys):
    import epm_spark.cli.catalog

    def no_spark(settings):
        raise AssertionError("Spark started before the inputs were checked")

    monkeypatch.setattr(epm_spark.cli.catalog, "spark_session", no_spark)
    for verb, error in ((["embed", "--source", "nosuch"], "products has no listings of source(s) ['nosuch']; "
                                                          "ingest them first (sources there: "),
                        (["embed", "--source", "nosuch", "--model", str(warehouse / "typo")],
                         "is neither packaged:minilm nor a model folder"),
                        (["block", "--left", "nosuch"], "table 'embeddings' does not exist")):
        assert main(["--warehouse", str(warehouse), *tiny_settings(backbone), *verb]) == 2, verb
        assert error in capsys.readouterr().err, verb


def test_missing_tables_are_one_clear_line(backbone, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["--warehouse", str(tmp_path / "empty"), *tiny_settings(backbone), "train-encoder",
                 "--stage", "contrastive"])
    assert code == 2
    err = capsys.readouterr().err
    assert "table 'labelled_pairs' does not exist" in err and "load-benchmark" in err
    assert "Traceback" not in err


def test_unknown_benchmark_in_the_warehouse(backbone, warehouse, capsys):
    code = main(["--warehouse", str(warehouse), *tiny_settings(backbone), "train-encoder", "--stage", "roar",
                 "--benchmark", "abt_buy"])
    assert code == 2
    assert "holds no pairs of benchmark abt_buy (benchmarks there: tiny)" in capsys.readouterr().err


def test_missing_benchmark_folder_and_bad_model(backbone, tmp_path, capsys):
    assert main(["evaluate", "retrieval", "--benchmark", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    folder = tiny_benchmark_folder(tmp_path / "tiny")
    assert main(["evaluate", "retrieval", "--benchmark", str(folder), "--model", str(tmp_path / "no-model")]) == 2
    assert "neither packaged:minilm nor a model folder" in capsys.readouterr().err
    assert main(["evaluate", "retrieval", "--benchmark", str(folder), "--model", str(backbone), "--split", "x"]) == 2
    assert "has no split 'x'" in capsys.readouterr().err
