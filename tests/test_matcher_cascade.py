"""The matcher cascade: combiner calibration, short decisions, resumable --stage all, ablation, the Spark job."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from cascade_tiny import build_tiny_cross_encoder, split_pairs, tiny_cascade_settings
from matcher_pairs import hard_pair_frame, write_hard_warehouse
from tiny_student import tiny_student  # noqa: F401

from epm_spark.cli import main
from epm_spark.errors import InputError
from epm_spark.models.matcher.cascade import train as cascade_train
from epm_spark.models.matcher.cascade.cascade import TIERS, Cascade, is_cascade
from epm_spark.models.matcher.cascade.combiner import fit_combiner
from epm_spark.models.matcher.cascade.features import TEACHER_FEATURES, pair_features
from epm_spark.models.matcher.decision import DecisionFormatError, parse_short_decision, short_decision_json
from epm_spark.models.matcher.evaluation import matching_metrics, paired_bootstrap_f1
from epm_spark.models.matcher.model_folder import read_card
from epm_spark.models.matcher.supervision.rewards import build_rewards
from epm_spark.models.matcher.supervision.teacher import AgenticTeacher


@pytest.fixture(scope="module")
def tiny_ce(tmp_path_factory):
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-ce"))


# ----------------------------------------------------------------------------- combiner


def test_combiner_reports_held_out_figures_not_its_training_fit():
    """On pure noise an in-sample fit looks skilful; the cross-fitted figures must not."""
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(80, 70)), columns=[f"f{i}" for i in range(70)])
    y = (rng.random(80) < 0.3).astype(int)
    combiner, oof = fit_combiner(x, y, folds=5, c=100.0)
    in_sample = combiner.predict_proba(x)
    in_sample_f1 = matching_metrics(in_sample >= 0.5, y)["f1"]
    assert in_sample_f1 > 0.95  # the training fit memorises noise
    assert combiner.held_out["f1"] < in_sample_f1 - 0.3
    assert not np.allclose(oof, in_sample, atol=0.05)
    assert combiner.held_out["pairs"] == 80 and combiner.held_out["folds"] == 5


def test_combiner_probabilities_are_calibrated_on_new_pairs():
    rng = np.random.default_rng(1)

    def sample(n):
        y = (rng.random(n) < 0.2).astype(int)
        return pd.DataFrame({"signal": rng.normal(1.5 * y, 1.0), "noise": rng.normal(size=n)}), y

    x, y = sample(3000)
    combiner, _ = fit_combiner(x, y)
    x_new, y_new = sample(20000)
    p = combiner.predict_proba(x_new)
    bins = np.digitize(p, np.linspace(0, 1, 11)[1:-1])
    gaps = [abs(p[bins == b].mean() - y_new[bins == b].mean()) for b in range(10) if (bins == b).sum() > 200]
    assert max(gaps) < 0.05
    assert combiner.contributions()["signal"] > 5 * abs(combiner.contributions()["noise"])


def test_teacher_features_flag_part_numbers_that_disagree_beside_a_shared_code():
    pairs = {"conflict": ("455035-B22 HP Xeon X3210 2.13GHz DL120 G5", "533993-B22 HP Xeon E7400 2.8GHz DL120 G5"),
             "same kit": ("HP 455035-B22 Xeon X3210 DL120 G5", "455035-B22 HP Xeon X3210 kit"),
             "one side": ("Logitech headset 981-000589", "Logitech stereo headset")}
    frame = pd.concat([hard_pair_frame().iloc[[0]]] * len(pairs), ignore_index=True)
    for k, (a, b) in enumerate(pairs.values()):
        frame.loc[k, ["left_id", "right_id", "left_title", "right_title"]] = [f"l{k}", f"r{k}", a, b]
    frame[[f"{side}_{f}" for side in ("left", "right") for f in ("brand", "description", "attributes")]] = None
    teacher = AgenticTeacher()
    x = pair_features(frame, teacher.evidence(frame), teacher)
    assert list(x.columns) == list(TEACHER_FEATURES)
    # The part numbers disagree (the right side's E7400 counts once the left has a code to set against it).
    assert x["model_conflicts"].tolist() == [1.0, 0.0, 0.0]
    # The rules alone read the shared server name as one model.
    assert x.loc[0, "model_number_same"] == 1.0 and x.loc[0, "measure_conflicts"] == 1.0


def test_combiner_needs_both_classes():
    with pytest.raises(InputError, match="at least 2 matches and 2 non-matches"):
        fit_combiner(pd.DataFrame({"a": [0.0, 1.0, 2.0]}), np.array([1, 0, 0]))


def test_paired_bootstrap_interval_brackets_the_difference():
    rng = np.random.default_rng(2)
    gold = rng.random(1000) < 0.3
    good = np.where(rng.random(1000) < 0.9, gold, ~gold)
    bad = np.where(rng.random(1000) < 0.7, gold, ~gold)
    r = paired_bootstrap_f1(good, bad, gold)
    assert r["ci95_low"] > 0 and r["ci95_low"] <= r["difference"] <= r["ci95_high"]
    same = paired_bootstrap_f1(good, good, gold)
    assert same["ci95_low"] == same["ci95_high"] == 0.0



def test_student_decides_its_band_only_when_shown_better_on_held_out_pairs():
    rng = np.random.default_rng(3)
    thresholds = {"fast": {"default": 0.5}, "full": {"default": 0.5}}

    def band_case(n, fast_right, full_right):
        gold = rng.random(n) < 0.5
        # Every pair inside the band (fast log-odds ~0), right or wrong by the given rates.
        p_fast = np.where(np.where(rng.random(n) < fast_right, gold, ~gold), 0.55, 0.45)
        p_full = np.where(np.where(rng.random(n) < full_right, gold, ~gold), 0.9, 0.1)
        return cascade_train._band_check(p_fast, p_full, gold, thresholds, band=1.0)

    clear = band_case(400, 0.55, 0.9)
    assert clear["pairs"] == 400 and clear["student_decides"] and clear["full_minus_fast"]["ci95_low"] > 0
    # A handful of band pairs where the student looked a little better: noise, not evidence.
    few = band_case(12, 0.5, 0.6)
    assert few["pairs"] == 12 and not few["student_decides"]
    worse = band_case(400, 0.8, 0.6)
    assert not worse["student_decides"] and worse["full_minus_fast"]["difference"] < 0

# ----------------------------------------------------------------------------- short decision


def test_short_decision_round_trips_and_is_strict():
    text = short_decision_json("no_match", {"capacity": "different", "brand": "same", "colour": "unknown"})
    assert text == '{"label": "no_match", "evidence": {"brand": "same", "capacity": "different"}}'
    decision = parse_short_decision(text)
    assert decision.label == "no_match" and decision.evidence == {"brand": "same", "capacity": "different"}
    for bad, reason in [('{"label": "match"}', "exactly the keys"), ('{"label": "yes", "evidence": {}}', "label must"),
                        ('{"label": "match", "evidence": {"brand": "same"', "truncated"),
                        ('Sure! {"label": "match", "evidence": {}}', "text before")]:
        with pytest.raises(DecisionFormatError, match=reason):
            parse_short_decision(bad)


def test_short_rewards_score_short_decisions():
    rewards = build_rewards(None, short=True)
    fmt, label, _ = rewards.funcs
    completions = ['{"label": "match", "evidence": {"brand": "same"}}', '{"label": "no_match", "evidence": {}}',
                   "match"]
    assert fmt(None, completions) == [1.0, 1.0, 0.0]
    assert label(None, completions, gold_label=[1, 1, 1]) == [1.0, 0.0, 0.0]


# ----------------------------------------------------------------------------- training and decisions


def _frames():
    pairs = split_pairs({"train": 3, "valid": 2})
    train, valid = pairs[pairs.split == "train"], pairs[pairs.split == "valid"]
    decided = AgenticTeacher().decide(train)
    explained = train.assign(decision_json=[r.decision.to_json() for r in decided])
    return train.reset_index(drop=True), valid.reset_index(drop=True), explained


def _train(settings, out, **kwargs):
    train, valid, explained = _frames()
    rewards = build_rewards(settings, short=True)
    return cascade_train.train_cascade(train, valid, out, matcher=settings.matcher, explained=explained,
                                       reward_funcs=rewards.funcs, reward_weights=rewards.weights, max_steps=2,
                                       **kwargs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_student, tiny_ce):
    from epm_spark.config import load_settings

    # Without the standing features: tests that need them add them with known weights.
    settings = tiny_cascade_settings(load_settings(), tiny_student, tiny_ce, candidate_standing=False)
    out = tmp_path_factory.mktemp("cascade") / "cascade-v1"
    card = _train(settings, out)
    return settings, out, card


def test_stage_all_resumes_from_finished_tiers(tmp_path, tiny_student, tiny_ce, monkeypatch):
    from epm_spark.config import load_settings

    settings = tiny_cascade_settings(load_settings(), tiny_student, tiny_ce)
    out = tmp_path / "cascade"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    import epm_spark.models.matcher.student.sft as sft_module

    real_sft = sft_module.train_sft
    monkeypatch.setattr(sft_module, "train_sft", killed)
    with pytest.raises(KeyboardInterrupt):
        _train(settings, out)
    assert (out / "cross_encoder" / "model" / "config.json").is_file()
    assert (out / "scores" / "valid_cross_encoder.npy").is_file()
    assert not is_cascade(out)  # no card, no cascade.json: not a usable model yet
    ce_scores = np.load(out / "scores" / "valid_cross_encoder.npy")

    def retrained(*args, **kwargs):
        raise AssertionError("the finished cross-encoder was trained again")

    monkeypatch.setattr(cascade_train, "train_cross_encoder", retrained)
    monkeypatch.setattr(sft_module, "train_sft", real_sft)
    card = _train(settings, out)
    assert is_cascade(out) and card.stage == "cascade"
    assert np.array_equal(np.load(out / "scores" / "valid_cross_encoder.npy"), ce_scores)
    assert (out / "student-sft" / "matcher.json").is_file() and (out / "student-rl" / "matcher.json").is_file()


def test_stage_all_refuses_mistyped_models_before_training_a_tier(tmp_path, tiny_student, tiny_ce):
    from epm_spark.config import load_settings

    for student, ce, error in ((tmp_path / "no-student", tiny_ce, "no-student' is neither"),
                               (tiny_student, tmp_path / "no-ce", "no-ce' is neither packaged:minilm")):
        settings = tiny_cascade_settings(load_settings(), student, ce)
        with pytest.raises(InputError, match=error):
            _train(settings, tmp_path / "cascade")
        assert not (tmp_path / "cascade").exists()


def test_cascade_card_and_decisions(trained):
    settings, out, card = trained
    spec = json.loads((out / "cascade.json").read_text())
    assert set(spec["combiners"]) == {"teacher", "fast", "full"}
    assert spec["combiners"]["full"]["features"][-1] == "student_logit"
    student = card.training["student"]
    assert student["used"] == "student-rl" and student["valid_pairs_scored"] == 20
    assert {"difference", "ci95_low", "ci95_high"} <= set(student["rl_minus_sft"])
    assert read_card(out / "student-rl").parent is not None  # RL started from the SFT student

    cascade = Cascade.load(out, settings.matcher.inference)
    _, valid, _ = _frames()
    decided = cascade.decide(valid)
    assert len(decided) == len(valid) and set(decided["decided_by"]) <= set(TIERS)
    assert decided["probability"].between(0, 1).all() and decided["label"].isin(["match", "no_match"]).all()
    assert decided["rationale"].str.len().gt(0).all()
    # A wide band and no cap send every pair the cheap tiers were unsure of to the student.
    assert isinstance(spec["student_decides"], bool) and "student_decides" in card.metrics["validation"]["band"]
    cascade.spec.update(band=100.0, max_student_share=1.0, teacher_sure=0.0, student_decides=True)
    wide = cascade.decide(valid)
    assert (wide["decided_by"] == "student").all() and wide["p_student"].notna().all() and wide["in_band"].all()
    cascade.spec.update(max_student_share=0.1)
    capped = cascade.decide(valid)
    assert (capped["decided_by"] == "student").sum() == 2 == capped["in_band"].sum()  # ceil(10% of 20)
    # A student that did not beat the fast combiner on the band explains it but does not decide it.
    cascade.spec.update(student_decides=False)
    explained_only = cascade.decide(valid)
    assert (explained_only["decided_by"] != "student").all() and explained_only["in_band"].sum() == 2
    assert np.allclose(explained_only["probability"], explained_only["p_fast"])


def test_teacher_decides_every_pair_when_the_cross_encoder_was_not_shown_to_help(trained, monkeypatch):
    settings, out, card = trained
    check = card.metrics["validation"]["fast_tier"]
    assert check["cross_encoder_decides"]  # the fixture turns the gate off
    assert {"difference", "ci95_low", "ci95_high"} <= set(check["fast_minus_teacher"])
    cascade = Cascade.load(out, settings.matcher.inference)
    assert cascade.cross_encoder_decides
    cascade.spec.update(cross_encoder_decides=False)

    def not_run(*args, **kwargs):
        raise AssertionError("the cross-encoder ran although it does not decide")

    monkeypatch.setattr(cascade.cross_encoder, "predict_logits", not_run)
    _, valid, _ = _frames()
    decided = cascade.decide(valid)
    assert (decided["decided_by"] == "teacher").all() and not decided["in_band"].any()
    threshold = cascade.threshold(None, "teacher")
    assert 0 < threshold < 1
    assert ((decided["p_teacher"] >= threshold) == (decided["label"] == "match")).all()
    assert decided["cross_encoder_logit"].isna().all()


def test_fast_tier_check_needs_an_interval_above_zero():
    """The cross-encoder's tier decides only where valid shows it beats the teacher tier alone."""
    rng = np.random.default_rng(0)
    gold = (rng.random(600) < 0.25).astype(int)
    groups = np.full(600, "all")
    # A teacher right on 95% of pairs, never sure; a fast tier with the very same decisions.
    right = rng.random(600) < 0.95
    p_teacher = np.where(right == gold.astype(bool), 0.8, 0.2)
    never_sure = np.zeros(600, dtype=bool)
    same = cascade_train._fast_tier_check(p_teacher, never_sure, p_teacher, gold, groups, 0.5, gate=True)
    assert same["fast_minus_teacher"]["difference"] == pytest.approx(0.0)
    assert not same["cross_encoder_decides"]
    assert 0.2 < same["teacher_thresholds"]["default"] <= 0.8
    ungated = cascade_train._fast_tier_check(p_teacher, never_sure, p_teacher, gold, groups, 0.5, gate=False)
    assert ungated["cross_encoder_decides"]
    # A fast tier right on every pair the teacher gets wrong.
    p_fast = np.where(gold == 1, 0.9, 0.1)
    better = cascade_train._fast_tier_check(p_teacher, never_sure, p_fast, gold, groups, 0.5, gate=True)
    assert better["fast_minus_teacher"]["ci95_low"] > 0 and better["cross_encoder_decides"]


def _benchmark_folder(path, pairs: pd.DataFrame):
    path.mkdir()
    for side, table in (("left", "tableA.csv"), ("right", "tableB.csv")):
        rows = pairs[[f"{side}_id", f"{side}_title"]].drop_duplicates(f"{side}_id")
        rows.set_axis(["id", "title"], axis=1).to_csv(path / table, index=False)
    for split, group in pairs.groupby("split"):
        group.rename(columns={"left_id": "ltable_id", "right_id": "rtable_id"})[
            ["ltable_id", "rtable_id", "label"]].to_csv(path / f"{split}.csv", index=False)
    return path


def test_stage_all_and_ablation_through_the_cli(tmp_path, tiny_student, tiny_ce, capsys):
    pairs = split_pairs({"train": 3, "valid": 2, "test": 1})
    bench = _benchmark_folder(tmp_path / "hard", pairs)
    wh, out = str(tmp_path / "warehouse"), tmp_path / "models" / "cascade"
    tiny = ["--warehouse", wh, "--set", f"matcher.student={tiny_student}",
            "--set", f"matcher.cascade.cross_encoder.base={tiny_ce}", "--set", "matcher.cascade.cross_encoder.max_length=48",
            "--set", "matcher.cascade.label_examples=16", "--set", "matcher.cascade.explain_examples=4",
            "--set", "matcher.cascade.student_valid_pairs=20", "--set", "matcher.cascade.folds=2",
            "--set", "matcher.sft.batch_size=4", "--set", "matcher.sft.gradient_accumulation=1",
            "--set", "matcher.sft.max_length=2048", "--set", "matcher.rl.num_generations=2",
            "--set", "matcher.rl.prompts_per_step=1", "--set", "matcher.rl.pool=8",
            "--set", "matcher.inference.max_new_tokens=16"]
    assert main([*tiny, "load-benchmark", "--benchmark", str(bench)]) == 0
    capsys.readouterr()
    assert main([*tiny, "train-matcher", "--stage", "all", "--benchmark", "hard", "--out", str(out),
                 "--max-steps", "1", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["stage"] == "cascade" and card["training"]["train_pairs"] == 30
    # the teacher ran first: its decisions are in rationales, and the SFT student learned from them
    assert card["training"]["data"]["tables"]["rationales"] is not None
    assert {"left_gap", "right_best"} <= set(card["metrics"]["validation"]["weights"]["fast"])
    assert card["metrics"]["validation"]["fast_plain_combiner_held_out"]["pairs"] == 20
    spec = json.loads((out / "cascade.json").read_text())
    assert not set(spec["combiners"]["fast_plain"]["features"]) & {"left_gap", "right_best"}
    assert not set(spec["combiners"]["full"]["features"]) & {"left_gap", "right_best"}
    assert set(spec["standing"]["shared"]) == {"left", "right"}
    # The train split's matches are the known ones: 15 pairs, 30 listings, none of them in valid.
    assert {"left_known", "right_known"} <= set(spec["combiners"]["fast"]["features"])
    assert not {"left_known", "right_known"} & set(spec["combiners"]["fast_plain"]["features"])
    assert len(json.loads((out / "known_matches.json").read_text())) == 30
    assert spec["standing"]["known_matches"]["valid_share"] == {"left_known": 0.0, "right_known": 0.0}
    # The cross-encoder's gate compares like with like: no known matches on either side.
    gate = card["metrics"]["validation"]["fast_tier"]
    assert "left_gap" in gate["features"] and not {"left_known", "right_known"} & set(gate["features"])
    assert main([*tiny, "evaluate", "matching", "--benchmark", str(bench), "--model", str(out), "--ablation",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pairs"] == 10 and report["split"] == "test"
    decides = spec["cross_encoder_decides"]
    assert report["cascade"]["cross_encoder_decides"] == decides
    assert decides == card["metrics"]["validation"]["fast_tier"]["cross_encoder_decides"]
    if decides:
        assert isinstance(report["cascade"]["standing_used"], bool)
    else:  # the teacher tier decided every pair; the cross-encoder did not run
        assert report["cascade"]["decided_by"]["teacher"] == 1.0 and report["cascade"]["standing_used"] is None
    assert set(report["tiers_alone"]) == {"teacher", "cross_encoder", "student_sft", "student_rl"}
    for r in (report["cascade"], *report["tiers_alone"].values()):
        assert {"precision", "recall", "f1", "pairs_per_s"} <= set(r) and 0 <= r["f1"] <= 1
        assert r["tp"] + r["fn"] == 5
    assert sum(report["cascade"]["decided_by"].values()) == pytest.approx(1.0)
    assert sum(t["pairs"] for t in report["cascade"]["by_tier"].values()) == 10
    for tier, diff in report["cascade_minus_tier"].items():
        expected = report["cascade"]["f1"] - report["tiers_alone"][tier]["f1"]
        assert diff["difference"] == pytest.approx(expected) and diff["ci95_low"] <= diff["ci95_high"]
    assert main([*tiny, "evaluate", "matching", "--benchmark", str(bench), "--model", str(out), "--mode",
                 "explain", "--limit", "4", "--json"]) == 0
    explained = json.loads(capsys.readouterr().out)["explain"]
    assert explained["pairs"] == 4 and 0 <= explained["format_valid_rate"] <= 1
    assert main([*tiny, "evaluate", "matching", "--benchmark", str(bench), "--model", str(tiny_student),
                 "--ablation"]) == 2
    assert "--ablation needs a cascade model folder" in capsys.readouterr().err


def test_spark_match_job_runs_the_cascade(spark, tmp_path, trained):
    from epm_spark.config import load_settings
    from epm_spark.io.delta import read_pandas, write_pandas
    from epm_spark.io.schemas import CANDIDATES
    from epm_spark.pipeline.catalog.match import match

    settings, out, _ = trained
    wh = str(tmp_path / "warehouse")
    frame = write_hard_warehouse(wh)
    candidates = pd.DataFrame({"left_id": frame["left_id"], "right_id": frame["right_id"],
                               "left_source": "hard_left", "right_source": "hard_right",
                               "similarity": np.linspace(0.2, 0.9, len(frame)).astype("float32"),
                               "rank": np.ones(len(frame), dtype="int32"), "run_id": "r1"})
    write_pandas(wh, "candidates", candidates[CANDIDATES.columns], mode="append", run_id="r1")
    run_settings = load_settings(overrides=["spark.ui_enabled=false", "match.similarity_floor=0.3",
                                            "match.explain=band", "match.max_explain_per_batch=1"], warehouse=wh)
    run_settings.matcher = settings.matcher
    report = match(spark, run_settings, left="hard_left", right="hard_right", run_id="r1", model=str(out))
    matches = read_pandas(wh, "matches", filters=[("run_id", "=", "r1")])
    assert report.candidates == len(matches) == len(candidates)
    assert sorted(zip(matches.left_id, matches.right_id)) == sorted(zip(candidates.left_id, candidates.right_id))
    assert set(matches.decided_by) <= {"floor", *TIERS}
    assert (matches[matches.decided_by == "floor"].similarity < 0.3).all()
    model_rows = matches[matches.decided_by != "floor"]
    assert model_rows.decision_json.notna().all() and model_rows.probability.between(0, 1).all()
    assert sum(report.decided_by.values()) == len(candidates)


def test_spark_match_job_ranks_each_listings_candidates_over_the_whole_run(spark, tmp_path, trained):
    """The job's two passes give every pair the standing the in-process cascade computes over all candidates."""
    import shutil

    from epm_spark.config import load_settings
    from epm_spark.io.delta import read_pandas, write_pandas
    from epm_spark.io.schemas import CANDIDATES
    from epm_spark.models.matcher.cascade.cascade import uses_standing
    from epm_spark.pipeline.catalog.match import match

    settings, trained_out, _ = trained
    # The fixture leaves standing out (and the tiny valid split has one candidate per
    # listing): give the fast combiner the standing features with weight, and score in fp32 so
    # batch composition hardly moves a probability (the tiny model's logits spread little, so a
    # standardised gap magnifies float noise a little).
    out = tmp_path / "cascade"
    shutil.copytree(trained_out, out)
    assert not uses_standing(out)
    spec = json.loads((out / "cascade.json").read_text())
    fast = spec["combiners"]["fast"]
    for name, weight in (("left_gap", 1.5), ("right_gap", 1.0), ("left_best", 2.0), ("right_alone", -1.0),
                         ("left_alone", 0.0), ("right_best", 0.0), ("left_known", -2.0), ("right_known", 0.0)):
        fast["features"].append(name)
        fast["mean"].append(0.0)
        fast["scale"].append(1.0 if name.endswith("gap") else 0.5)
        fast["weights"].append(weight)
    spec["cross_encoder"]["settings"]["bf16"] = False
    spec["teacher_sure"] = 0.0  # every pair reaches the cross-encoder tier
    (out / "cascade.json").write_text(json.dumps(spec))
    assert uses_standing(out)

    wh = str(tmp_path / "warehouse")
    frame = write_hard_warehouse(wh)
    n = len(frame)
    # The first left listing already has a labelled match, a listing no candidate holds.
    known = {f"hard_left\x1f{frame['left_id'][0]}": ["hard_right\x1felsewhere"],
             "hard_right\x1felsewhere": [f"hard_left\x1f{frame['left_id'][0]}"]}
    (out / "known_matches.json").write_text(json.dumps(known))
    # Each left listing meets its own right listing and the next one's: two candidates per listing.
    left, right = np.r_[np.arange(n), np.arange(n)], np.r_[np.arange(n), (np.arange(n) + 1) % n]
    candidates = pd.DataFrame({"left_id": frame["left_id"].to_numpy()[left],
                               "right_id": frame["right_id"].to_numpy()[right],
                               "left_source": "hard_left", "right_source": "hard_right",
                               "similarity": np.float32(0.9), "rank": np.ones(2 * n, dtype="int32"), "run_id": "r2"})
    write_pandas(wh, "candidates", candidates[CANDIDATES.columns], mode="append", run_id="r2")
    run_settings = load_settings(overrides=["spark.ui_enabled=false", "match.explain=none"], warehouse=wh)
    run_settings.matcher = settings.matcher
    match(spark, run_settings, left="hard_left", right="hard_right", run_id="r2", model=str(out))
    got = read_pandas(wh, "matches", filters=[("run_id", "=", "r2")]).set_index(["left_id", "right_id"])

    sides = {side: frame[[c for c in frame if c.startswith(f"{side}_")]] for side in ("left", "right")}
    pairs = pd.concat([sides["left"].iloc[left].reset_index(drop=True),
                       sides["right"].iloc[right].reset_index(drop=True)], axis=1)
    cascade = Cascade.load(out, settings.matcher.inference, with_student=False)
    expected = cascade.decide(pairs)
    job = got.loc[list(zip(pairs.left_id, pairs.right_id))]
    assert len(got) == 2 * n and (job["decided_by"] == "cross_encoder").all()
    assert np.abs(job["probability"].to_numpy() - expected["probability"].to_numpy()).max() < 5e-3
    # Scored without its rivals (half the candidates), the same pairs come out differently.
    alone = cascade.decide(pairs.iloc[:n])
    assert np.abs(alone["probability"].to_numpy() - expected["probability"].to_numpy()[:n]).max() > 0.05
    # The known match weighs on both candidates of its listing (rows 0 and n), and on no other pair.
    cascade.known = {}
    unknown = cascade.decide(pairs)["probability"].to_numpy()
    lowered = np.flatnonzero(expected["probability"].to_numpy() < unknown - 1e-9)
    assert lowered.tolist() == [0, n]

    # A cascade whose cross-encoder was not shown to help: one pass, every pair the teacher's.
    teacher_dir = tmp_path / "teacher-decides"
    shutil.copytree(out, teacher_dir)
    (teacher_dir / "cascade.json").write_text(json.dumps({**spec, "cross_encoder_decides": False}))
    assert not uses_standing(teacher_dir)
    match(spark, run_settings, left="hard_left", right="hard_right", run_id="r2", model=str(teacher_dir))
    by_teacher = read_pandas(wh, "matches", filters=[("run_id", "=", "r2")])
    assert len(by_teacher) == 2 * n and (by_teacher["decided_by"] == "teacher").all()

    # With a fallback combiner and valid's shares on record, a set whose listings are all alone
    # (unlike valid's, where every listing had rivals) is decided without the standing features.
    spec["combiners"]["fast_plain"] = json.loads((trained_out / "cascade.json").read_text())["combiners"]["fast"]
    spec["thresholds"]["fast_plain"] = spec["thresholds"]["fast"]
    spec["standing"] = {"shared": {"left": 1.0, "right": 1.0}, "tolerance": 0.25}
    (out / "cascade.json").write_text(json.dumps(spec))
    guarded = Cascade.load(out, settings.matcher.inference, with_student=False)
    together = guarded.decide(pairs)
    assert guarded.standing_used is True
    np.testing.assert_allclose(together["probability"], expected["probability"])
    lone = guarded.decide(pairs.iloc[:n])
    assert guarded.standing_used is False
    plain_dir = tmp_path / "plain"
    shutil.copytree(out, plain_dir)
    plain_spec = {**spec, "combiners": {**spec["combiners"], "fast": spec["combiners"]["fast_plain"]}}
    (plain_dir / "cascade.json").write_text(json.dumps(plain_spec))
    plain_cascade = Cascade.load(plain_dir, settings.matcher.inference, with_student=False)
    np.testing.assert_allclose(lone["probability"], plain_cascade.decide(pairs.iloc[:n])["probability"])
    # A catalog against itself (de-duplication) is decided without them too, whatever its shares.
    dedup = pairs.assign(left_source="ours", right_source="ours")
    np.testing.assert_allclose(guarded.decide(dedup)["probability"], plain_cascade.decide(dedup)["probability"])
    assert guarded.standing_used is False
    # Learned on one pool of offers against itself (a WDC Products file), the other way round: its
    # own kind of pair reads the standing, pairs of two catalogs do not.
    (out / "cascade.json").write_text(json.dumps({**spec, "standing": {**spec["standing"], "same_source": True}}))
    pooled = Cascade.load(out, settings.matcher.inference, with_student=False)
    assert pooled.valid_same_source and not guarded.valid_same_source
    np.testing.assert_allclose(pooled.decide(dedup)["probability"], cascade.decide(dedup)["probability"])
    assert pooled.standing_used is True
    np.testing.assert_allclose(pooled.decide(pairs)["probability"], plain_cascade.decide(pairs)["probability"])
    assert pooled.standing_used is False
    (out / "cascade.json").write_text(json.dumps(spec))
    # The Spark job measures the shares over the whole run, not per batch: every listing has a rival.
    match(spark, run_settings, left="hard_left", right="hard_right", run_id="r3", candidates_run_id="r2",
          model=str(out))
    got3 = read_pandas(wh, "matches", filters=[("run_id", "=", "r3")]).set_index(["left_id", "right_id"])
    job3 = got3.loc[list(zip(pairs.left_id, pairs.right_id))]
    assert np.abs(job3["probability"].to_numpy() - expected["probability"].to_numpy()).max() < 5e-3
