"""train-matcher on warehouse tables and evaluate matching on a benchmark folder, through the CLI."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from matcher_pairs import hard_pair_frame, write_hard_warehouse
from tiny_student import tiny_student  # noqa: F401

from epm_spark.cli import main
from epm_spark.models.matcher.model_folder import read_card

TINY_BUDGET = [
    "--set", "matcher.inference.validation_pairs=20", "--set", "matcher.inference.max_new_tokens=16",
    "--set", "matcher.rl.num_generations=2", "--set", "matcher.rl.max_completion_length=16",
    "--set", "matcher.rl.prompts_per_step=1", "--set", "matcher.rl.pool=10",
    "--set", "matcher.sft.batch_size=2", "--set", "matcher.sft.gradient_accumulation=1",
    # The tiny byte-level tokenizer spends many more tokens per listing than a real one.
    "--set", "matcher.sft.max_length=2048",
]


@pytest.fixture
def warehouse(tmp_path):
    from epm_spark.io.delta import read_pandas, write_pandas

    wh = str(tmp_path / "warehouse")
    write_hard_warehouse(wh)
    pairs = read_pandas(wh, "labelled_pairs")
    both = pd.concat([pairs, pairs.assign(split="valid")], ignore_index=True)
    write_pandas(wh, "labelled_pairs", both, mode="replace", partition={"benchmark": "hard"})
    return wh


def _run(args: list[str], capsys) -> dict:
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


def test_train_matcher_sft_then_rl_from_the_warehouse(warehouse, tiny_student, tmp_path, capsys):
    models = tmp_path / "models"
    common = ["--warehouse", warehouse, "--set", f"matcher.student={tiny_student}",
              "--set", f"matcher.models_dir={models}", *TINY_BUDGET]
    assert main([*common, "teach", "--benchmark", "hard", "--run-id", "t1"]) == 0
    capsys.readouterr()
    sft = _run([*common, "train-matcher", "--stage", "sft", "--max-steps", "1", "--json"], capsys)
    assert sft["folder"] == str(models / "sft-v1") and sft["stage"] == "sft"
    assert sft["training"]["steps"] == 1 and sft["training"]["data"]["tables"]["rationales"] is not None
    assert sft["training"]["examples"] == sum(sft["training"]["data"]["statuses"].values())
    assert "hard" in sft["thresholds"]
    rl = _run([*common, "train-matcher", "--stage", "rl", "--max-steps", "1", "--json"], capsys)
    # RL starts from the newest SFT model by default.
    assert rl["folder"] == str(models / "rl-v1") and rl["parent"] == str((models / "sft-v1").resolve())
    assert rl["training"]["reward_functions"] == ["format_reward", "label_reward", "judge_reward"]
    assert rl["training"]["reward_weights"] == [0.2, 0.6, 0.2]
    assert read_card(models / "rl-v1").adapters == ["adapters/0-0-sft", "adapters/1-rl"]


def test_train_matcher_rl_without_an_sft_model_says_so(warehouse, tiny_student, tmp_path, capsys):
    code = main(["--warehouse", warehouse, "--set", f"matcher.models_dir={tmp_path / 'none'}",
                 "train-matcher", "--stage", "rl", "--max-steps", "1"])
    assert code == 2
    assert "no SFT model under" in capsys.readouterr().err


def _benchmark_folder(path):
    frame = hard_pair_frame()
    path.mkdir()
    pd.DataFrame({"id": frame["left_id"], "title": frame["left_title"]}).to_csv(path / "tableA.csv", index=False)
    pd.DataFrame({"id": frame["right_id"], "title": frame["right_title"]}).to_csv(path / "tableB.csv", index=False)
    pairs = pd.DataFrame({"ltable_id": frame["left_id"], "rtable_id": frame["right_id"], "label": frame["label"]})
    for split in ("train", "valid", "test"):
        pairs.to_csv(path / f"{split}.csv", index=False)
    return path


def test_evaluate_matching_reports_quality_and_speed(tiny_student, tmp_path, capsys):
    bench = _benchmark_folder(tmp_path / "hard")
    report = _run(["--set", "matcher.inference.max_new_tokens=16", "evaluate", "matching", "--benchmark",
                   str(bench), "--model", str(tiny_student), "--threshold", "tune", "--json"], capsys)
    assert report["pairs"] == 10 and report["positives"] == 5 and report["split"] == "test"
    assert report["threshold_source"].startswith("tuned on 10 valid pairs")
    # valid and test are the same pairs here: the tuned threshold reproduces its validation F1.
    assert report["f1"] == pytest.approx(report["valid_f1_at_threshold"])
    assert report["pairs_per_s"] > 0 and report["machine"]["cores"] >= 1
    explained = _run(["--set", "matcher.inference.max_new_tokens=16", "evaluate", "matching", "--benchmark",
                      str(bench), "--model", str(tiny_student), "--mode", "explain", "--limit", "4",
                      "--threshold", "0.5", "--json"], capsys)
    assert explained["pairs"] == 4 and explained["format_valid_rate"] == 0.0
    assert explained["tokens_generated_per_pair"] > 0 and explained["format_failures"]


def test_evaluate_matching_rejects_a_bad_threshold(tiny_student, tmp_path, capsys):
    bench = _benchmark_folder(tmp_path / "hard")
    code = main(["evaluate", "matching", "--benchmark", str(bench), "--model", str(tiny_student),
                 "--threshold", "high"])
    assert code == 2 and "--threshold must be model, tune or a number" in capsys.readouterr().err


def test_match_refuses_a_mistyped_model_before_reading_candidates(spark, warehouse, tmp_path, capsys):
    # The warehouse has no candidates table: the model is checked first.
    assert main(["--warehouse", warehouse, "match", "--left", "ours", "--model", str(tmp_path / "no-model"),
                 "--run-id", "r1"]) == 2
    assert "no-model' is neither" in capsys.readouterr().err
    from epm_spark.io.delta import list_tables
    assert "matches" not in list_tables(warehouse)
