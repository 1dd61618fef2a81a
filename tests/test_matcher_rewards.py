"""GRPO reward functions in TRL's form, and the attribute-consistency judge they use."""

from __future__ import annotations

import json

import pytest
from matcher_pairs import hard_pair_frame

from epm_spark.config import from_dict, Settings
from epm_spark.errors import ConfigError
from epm_spark.models.matcher.decision import MatchDecision
from epm_spark.models.matcher.supervision.judges import AttributeConsistencyJudge, rationale_claims
from epm_spark.models.matcher.supervision.rewards import (
    CombinedReward, JudgeReward, build_rewards, combined_reward, completion_text, format_reward, format_score,
    judge_reward, label_reward, reward_columns,
)
from epm_spark.models.matcher.supervision.settings import RewardSettings

SSD_1TB = {"title": "Samsung 870 EVO 1TB SATA SSD MZ-77E1T0B"}
SSD_2TB = {"title": "Samsung 870 EVO 2TB SATA SSD MZ-77E2T0B"}


def decision_json(label="no_match", rationale="Different capacity (1 TB vs 2 TB). Same brand (samsung).",
                  evidence=None) -> str:
    return json.dumps({"label": label, "confidence": 0.9,
                       "evidence": evidence if evidence is not None else {"capacity": "different", "brand": "same"},
                       "noise_ignored": [], "rationale": rationale})


GOOD = decision_json()
CHATTY = f"Here you go: {GOOD}"
BROKEN_WITH_LABEL = '{"label": "no_match", "confidence": "high"}'
GARBAGE = "I think they are the same."


# ----------------------------------------------------------------------------- completions


def test_completion_text_handles_strings_and_chat_messages():
    assert completion_text("abc") == "abc"
    assert completion_text([{"role": "assistant", "content": "abc"}]) == "abc"
    assert completion_text([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a1"},
                            {"role": "assistant", "content": "a2"}]) == "a2"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "a"},
                                                              {"type": "text", "text": "b"}]}]) == "ab"
    assert completion_text([{"role": "user", "content": "only a prompt"}]) == ""
    with pytest.raises(TypeError):
        completion_text(3)


# ----------------------------------------------------------------------------- format


def test_format_reward_credits():
    scores = format_reward(prompts=["p"] * 4, completions=[GOOD, CHATTY, BROKEN_WITH_LABEL, GARBAGE])
    assert scores == [1.0, 0.5, 0.2, 0.0]


def test_format_reward_on_chat_completions_and_fences():
    fenced = [{"role": "assistant", "content": f"```json\n{GOOD}\n```"}]
    assert format_reward(None, [fenced]) == [1.0]


def test_format_credit_is_configurable():
    assert format_score(CHATTY, lenient_credit=0.1, label_credit=0.0) == 0.1
    assert format_score(BROKEN_WITH_LABEL, lenient_credit=0.1, label_credit=0.0) == 0.0


# ----------------------------------------------------------------------------- label


def test_label_reward_against_gold_in_any_form():
    completions = [GOOD, decision_json("match"), GOOD, GOOD]
    assert label_reward(None, completions, gold_label=[0, 0, "no_match", True]) == [1.0, 0.0, 1.0, 0.0]


def test_label_reward_is_zero_for_format_failures():
    assert label_reward(None, [GARBAGE, BROKEN_WITH_LABEL], gold_label=[0, 0]) == [0.0, 0.0]
    # Strict by default: a correct label wrapped in chatter earns nothing; lenient mode accepts it.
    assert label_reward(None, [CHATTY], gold_label=[0]) == [0.0]
    assert label_reward(None, [CHATTY], gold_label=[0], strict=False) == [1.0]


def test_label_reward_needs_the_gold_column():
    with pytest.raises(ValueError, match="dataset column 'gold_label'"):
        label_reward(None, [GOOD], answer=[1])
    with pytest.raises(ValueError, match="2 values for 1 completions"):
        label_reward(None, [GOOD], gold_label=[0, 1])


# ----------------------------------------------------------------------------- judge


def test_rationale_claims_are_read_from_words():
    claims = {(c.attribute, c.verdict) for c in rationale_claims(
        "Same capacity. The brands differ. Model numbers do not match. Colours are the same. "
        "Not the same product line. Different pack size.")}
    assert claims == {("capacity", "same"), ("brand", "different"), ("model_number", "different"),
                      ("colour", "same"), ("product_line", "different"), ("quantity", "different")}


def test_attribute_judge_scores_a_false_same_capacity_claim_low():
    judge = AttributeConsistencyJudge()
    truthful = MatchDecision.from_dict(json.loads(GOOD))
    lying = MatchDecision("match", 0.9, {"capacity": "same", "brand": "same"}, (),
                          "Same capacity (1 TB). Same brand (samsung). Same product.")
    good, bad = judge.score([truthful, lying], [SSD_1TB] * 2, [SSD_2TB] * 2)
    assert good == pytest.approx(1.0)
    assert bad < 0.3
    detail = judge.judge(lying, SSD_1TB, SSD_2TB)
    assert any(c.attribute == "capacity" and credit == 0 for c, _, credit in detail.claims)


def test_attribute_judge_checks_quoted_values_and_coherence():
    judge = AttributeConsistencyJudge()
    invented = MatchDecision("no_match", 0.9, {"capacity": "different"}, (),
                             "Different capacity (4 TB vs 8 TB). Different model number (XY-9999Z vs MZ-77E2T0B).")
    detail = judge.judge(invented, SSD_1TB, SSD_2TB)
    assert ("4 TB", False) in detail.values and ("XY-9999Z", False) in detail.values
    assert ("MZ-77E2T0B", True) in detail.values
    incoherent = MatchDecision("match", 0.9, {"capacity": "different"}, (), "Different capacity (1 TB vs 2 TB).")
    assert not judge.judge(incoherent, SSD_1TB, SSD_2TB).coherent
    silent = MatchDecision("no_match", 0.9, {}, (), "No.")  # nothing checkable: claims term 0.25, coherent
    assert judge.judge(silent, SSD_1TB, SSD_2TB).score == pytest.approx(0.7 * 0.25 + 0.3)


def test_attribute_judge_rewards_the_agentic_teachers_own_rationales():
    from epm_spark.models.matcher.pairs import listing
    from epm_spark.models.matcher.supervision.teacher import AgenticTeacher

    frame = hard_pair_frame()
    rows = frame.to_dict("records")
    decisions = [r.decision for r in AgenticTeacher().decide(frame)]
    scores = AttributeConsistencyJudge().score(decisions, [listing(r, "left") for r in rows],
                                               [listing(r, "right") for r in rows])
    assert min(scores) >= 0.9


def test_judge_reward_takes_listings_as_json_or_mappings():
    left, right = json.dumps(SSD_1TB), SSD_2TB
    lying = decision_json("match", "Same capacity. Same product.", {"capacity": "same"})
    scores = judge_reward(["p"] * 3, [GOOD, lying, GARBAGE], left=[left] * 3, right=[right] * 3)
    assert scores[0] > 0.9 and scores[1] < 0.5 and scores[2] == 0.0


def test_judge_reward_passes_unscorable_as_none():
    class Unsure:
        name = "unsure"

        def score(self, decisions, lefts, rights):
            return [None for _ in decisions]

    reward = JudgeReward(Unsure())
    assert reward.__name__ == "judge_reward"
    assert reward(None, [GOOD, GARBAGE], left=[SSD_1TB] * 2, right=[SSD_2TB] * 2) == [None, 0.0]


# ----------------------------------------------------------------------------- combined


def test_combined_reward_is_the_weighted_sum():
    settings = RewardSettings(w_format=0.2, w_label=0.5, w_judge=0.3)
    reward = CombinedReward(settings)
    kwargs = {"gold_label": [0, 1, 0], "left": [SSD_1TB] * 3, "right": [SSD_2TB] * 3}
    completions = [GOOD, GOOD, GARBAGE]
    judge_scores = judge_reward(None, completions, **kwargs)
    got = reward(None, completions, **kwargs)
    assert got[0] == pytest.approx(0.2 + 0.5 + 0.3 * judge_scores[0])
    assert got[1] == pytest.approx(0.2 + 0.0 + 0.3 * judge_scores[1])
    assert got[2] == pytest.approx(0.0)
    assert reward.__name__ == "combined_reward"
    # The ready-made one uses the default weights.
    default = combined_reward(None, completions, **kwargs)
    assert default[0] == pytest.approx(0.2 + 0.6 + 0.2 * judge_scores[0])


def test_build_rewards_reads_weights_and_judge_from_settings():
    settings = from_dict(Settings, {"rewards": {"w_format": 1, "w_label": 2, "w_judge": 0},
                                    "judges": {"kind": "attribute", "claim_weight": 0.5}})
    rewards = build_rewards(settings)
    assert rewards.weights == [1.0, 2.0, 0.0]
    assert [getattr(f, "__name__") for f in rewards.funcs] == ["format_reward", "label_reward", "judge_reward"]
    assert rewards.funcs[2].judge.claim_weight == 0.5
    assert rewards.combined(None, [GOOD], gold_label=[0], left=[SSD_1TB], right=[SSD_2TB]) == [pytest.approx(3.0)]


def test_reward_settings_are_validated():
    with pytest.raises(ConfigError, match="reward weights"):
        from_dict(Settings, {"rewards": {"w_format": -1}})
    with pytest.raises(ConfigError, match="reward weights"):
        from_dict(Settings, {"rewards": {"w_format": 0, "w_label": 0, "w_judge": 0}})
    with pytest.raises(ConfigError, match="unknown setting 'rewards.w_style'"):
        from_dict(Settings, {"rewards": {"w_style": 1}})


def test_reward_columns_from_a_pair_frame():
    frame = hard_pair_frame()
    cols = reward_columns(frame)
    assert list(cols.columns) == ["gold_label", "left", "right"]
    assert set(cols["gold_label"]) == {"match", "no_match"}
    assert json.loads(cols.loc[0, "left"])["title"] == frame.loc[0, "left_title"]
    # The columns feed the rewards directly.
    assert len(judge_reward(None, [GOOD] * len(cols), **cols.to_dict("list"))) == len(cols)


def test_rewards_plug_into_trl_grpo_trainer(tmp_path):
    """One GRPO step with a tiny random GPT-2: TRL passes the dataset columns to each reward."""
    import torch
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    from trl import GRPOConfig, GRPOTrainer

    from epm_spark.models.matcher.pairs import listing
    from epm_spark.models.matcher.supervision.prompts import decision_messages

    frame = hard_pair_frame().head(4)
    prompts = [decision_messages(listing(r, "left"), listing(r, "right"))[1]["content"]
               for r in frame.to_dict("records")]
    chars = sorted(set("".join(prompts)) | set('{}":,._ abcdefghijklmnopqrstuvwxyz0123456789'))
    vocab = {c: i for i, c in enumerate(["<pad>", "<eos>", *chars])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab), n_embd=32, n_layer=1, n_head=2, n_positions=1024))
    dataset = Dataset.from_dict({"prompt": prompts, **reward_columns(frame).to_dict("list")})
    rewards = build_rewards(None)
    seen: dict[str, tuple[list[str], list]] = {}

    def spy(func):
        def wrapped(prompts=None, completions=None, **kwargs):
            out = func(prompts=prompts, completions=completions, **kwargs)
            seen[func.__name__] = (sorted(kwargs), out)
            return out

        wrapped.__name__ = func.__name__
        return wrapped

    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=8, max_steps=1, report_to=[], use_cpu=True, save_strategy="no",
                      reward_weights=rewards.weights)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only contend
    try:
        GRPOTrainer(model=model, reward_funcs=[spy(f) for f in rewards.funcs], args=args, train_dataset=dataset,
                    processing_class=tokenizer).train()
    finally:
        torch.set_num_threads(threads)
    assert set(seen) == {"format_reward", "label_reward", "judge_reward"}
    for columns, values in seen.values():
        assert {"gold_label", "left", "right"} <= set(columns)
        assert len(values) == 4 and all(v == 0.0 for v in values)  # random text never parses
