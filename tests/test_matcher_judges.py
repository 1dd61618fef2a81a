"""The learned preference judge: corruptions, Bradley-Terry training on a tiny random BERT, save/load."""

from __future__ import annotations

import json
import random
import re

import pytest
from matcher_pairs import hard_pair_frame, write_hard_warehouse

from epm_spark.config import Settings, from_dict
from epm_spark.errors import ConfigError, EnvironmentProblem, InputError
from epm_spark.models.matcher.decision import MatchDecision
from epm_spark.models.matcher.supervision.judges import AttributeConsistencyJudge, build_judge
from epm_spark.models.matcher.pairs import listing
from epm_spark.models.matcher.supervision.preference import (
    CORRUPTIONS, PreferenceJudge, agreeing_decisions, corrupt_decision, preference_pairs, train_preference_judge,
)
from epm_spark.models.matcher.supervision.settings import PreferenceJudgeSettings
from epm_spark.models.matcher.supervision.teacher import AgenticTeacher

SSD_1TB = {"title": "Samsung 870 EVO 1TB SATA SSD MZ-77E1T0B"}
SSD_2TB = {"title": "Samsung 870 EVO 2TB SATA SSD MZ-77E2T0B"}
GOOD = MatchDecision("no_match", 0.9, {"brand": "same", "capacity": "different"}, (),
                     "Different capacity (1 TB vs 2 TB). Same brand (samsung). Not the same product.")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; more threads only contend on a shared CI machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def preferred():
    frame = hard_pair_frame()
    return agreeing_decisions(frame, [r.decision for r in AgenticTeacher().decide(frame)])


def tiny_backbone(folder, texts) -> str:
    """A random 2-layer BERT with a word-level tokenizer over ``texts``, saved as a Hugging Face folder."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())})
    vocab = {w: i for i, w in enumerate([*specials, *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]")
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, num_labels=1, pad_token_id=0)
    import torch

    torch.manual_seed(0)  # a fixed random init keeps the training test deterministic
    BertForSequenceClassification(config).save_pretrained(folder, safe_serialization=True)
    fast.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory, preferred):
    pairs = preference_pairs(preferred, per_pair=len(CORRUPTIONS))
    texts = [*pairs["pair_text"], *pairs["chosen"], *pairs["rejected"]]
    return tiny_backbone(tmp_path_factory.mktemp("tiny-bert"), texts)


# ----------------------------------------------------------------------------- corruptions


def test_each_corruption_makes_a_valid_worse_decision():
    rng = random.Random(0)
    flipped = corrupt_decision(GOOD, "flipped_label", rng)
    assert flipped.label == "match" and flipped.rationale == GOOD.rationale
    contradicted = corrupt_decision(GOOD, "contradicted_claim", rng)
    changed = [a for a in GOOD.evidence if contradicted.evidence[a] != GOOD.evidence[a]]
    assert len(changed) == 1
    attribute = changed[0].replace("_", " ")
    assert f"{contradicted.evidence[changed[0]].capitalize()} {attribute}" in contradicted.rationale
    swapped = corrupt_decision(GOOD, "swapped_values", rng)
    assert swapped.rationale != GOOD.rationale and "(1 TB vs 2 TB)" not in swapped.rationale
    unsupported = corrupt_decision(GOOD, "unsupported", rng)
    assert unsupported.evidence == {} and unsupported.rationale == "Not the same product."


def test_corruptions_the_attribute_judge_sees_through():
    """Contradicted claims and swapped values are checkable: the rule judge scores them lower."""
    judge = AttributeConsistencyJudge()
    rng = random.Random(1)
    good = judge.score([GOOD], [SSD_1TB], [SSD_2TB])[0]
    for kind in ("contradicted_claim", "swapped_values", "flipped_label", "unsupported"):
        bad = corrupt_decision(GOOD, kind, rng)
        assert judge.score([bad], [SSD_1TB], [SSD_2TB])[0] < good, kind


def test_corruption_that_cannot_apply_returns_none():
    bare = MatchDecision("match", 0.5, {}, (), "Same product.")
    rng = random.Random(0)
    assert corrupt_decision(bare, "contradicted_claim", rng) is None
    assert corrupt_decision(bare, "swapped_values", rng) is None
    assert corrupt_decision(bare, "unsupported", rng) is None
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt_decision(bare, "shuffled", rng)


def test_preference_pairs(preferred):
    pairs = preference_pairs(preferred, per_pair=2, seed=3)
    assert len(pairs) == 2 * len(preferred)
    assert set(pairs["kind"]) <= set(CORRUPTIONS)
    assert (pairs["chosen"] != pairs["rejected"]).all()
    assert pairs.groupby("group").size().max() == 2
    assert pairs.loc[0, "pair_text"].startswith("A: ")
    with pytest.raises(InputError, match="decision_json"):
        preference_pairs(preferred.drop(columns="decision_json"))


# ----------------------------------------------------------------------------- the learned judge


def test_a_few_training_steps_move_the_preference_the_right_way(backbone, preferred, tmp_path):
    settings = PreferenceJudgeSettings(backbone=backbone, holdout=0.0, corruptions_per_pair=4, batch_size=8,
                                       learning_rate=1e-2, max_length=128, seed=5)
    judge = PreferenceJudge.from_backbone(backbone, max_length=128)
    pairs = preference_pairs(preferred, per_pair=4, seed=5)

    def margin() -> float:
        chosen = judge.rewards(list(pairs["pair_text"]), list(pairs["chosen"]))
        rejected = judge.rewards(list(pairs["pair_text"]), list(pairs["rejected"]))
        return sum(c - r for c, r in zip(chosen, rejected)) / len(pairs)

    before = margin()
    weights_before = [p.detach().clone() for p in judge.model.parameters()]
    judge, report = train_preference_judge(preferred, settings, tmp_path / "judge", judge=judge, max_steps=20,
                                           logging_steps=100)
    after = margin()
    assert report.steps == 20 and report.train_pairs == len(pairs)
    assert any(not (a == b).all() for a, b in zip(weights_before, judge.model.parameters()))
    assert after > before + 0.2, (before, after)
    assert judge.pairwise_accuracy(pairs)["overall"] >= 0.8

    # Saved and loaded, the judge scores exactly the same; scores are in [0, 1].
    loaded = PreferenceJudge.load(tmp_path / "judge")
    decisions = [MatchDecision.from_dict(json.loads(c)) for c in pairs["chosen"][:4]]
    lefts = [listing(r, "left") for r in preferred.head(4).to_dict("records")]
    rights = [listing(r, "right") for r in preferred.head(4).to_dict("records")]
    assert loaded.score(decisions, lefts, rights) == pytest.approx(judge.score(decisions, lefts, rights), abs=1e-5)
    assert all(0.0 <= s <= 1.0 for s in loaded.score(decisions, lefts, rights))
    assert loaded.meta["training"]["steps"] == 20


def test_held_out_pairs_are_never_trained_on(backbone, preferred):
    settings = PreferenceJudgeSettings(backbone=backbone, holdout=0.3, corruptions_per_pair=2, batch_size=4,
                                       max_length=128)
    _, report = train_preference_judge(preferred, settings, None, max_steps=1)
    assert report.holdout_pairs > 0 and report.train_pairs + report.holdout_pairs == 2 * len(preferred)
    assert "overall" in report.accuracy_before and "overall" in report.accuracy_after


def test_build_judge_loads_a_trained_preference_judge(backbone, tmp_path):
    PreferenceJudge.from_backbone(backbone).save(tmp_path / "j")
    judge = build_judge(from_dict(Settings, {"judges": {"kind": "preference",
                                                        "preference": {"path": str(tmp_path / "j")}}}))
    assert isinstance(judge, PreferenceJudge)
    with pytest.raises(ConfigError, match="train-judge"):
        build_judge(from_dict(Settings, {"judges": {"kind": "preference"}}))
    with pytest.raises(EnvironmentProblem, match="not a trained judge folder"):
        PreferenceJudge.load(tmp_path)


def test_train_judge_verb_on_rationales(backbone, tmp_path, capsys):
    from epm_spark.cli import main

    warehouse = str(tmp_path / "wh")
    write_hard_warehouse(warehouse)
    assert main(["--warehouse", warehouse, "teach", "--run-id", "t"]) == 0
    capsys.readouterr()
    out = tmp_path / "judge"
    code = main(["--warehouse", warehouse, "--set", f"judges.preference.backbone={backbone}",
                 "--set", "judges.preference.max_length=128", "train-judge", "--out", str(out),
                 "--max-steps", "2", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["steps"] == 2 and report["path"] == str(out)
    assert (out / "judge.json").exists() and (out / "model.safetensors").exists()
    assert json.loads((out / "judge.json").read_text())["training"]["steps"] == 2
