"""SFT and GRPO steps on a tiny random student: the adapter changes, the model folder loads back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from tiny_student import TOY_PAIRS, pair_rows, tiny_student  # noqa: F401

from epm_spark.errors import InputError
from epm_spark.models.matcher.decision import MatchDecision
from epm_spark.models.matcher.student.inference import Matcher
from epm_spark.models.matcher.model_folder import read_card
from epm_spark.models.matcher.supervision.rewards import completion_text, format_reward, label_reward
from epm_spark.models.matcher.student.rl import select_prompts, train_rl
from epm_spark.models.matcher.settings import InferenceSettings, LoraSettings, RLSettings, SFTSettings
from epm_spark.models.matcher.student.sft import sft_examples, train_sft

INFERENCE = InferenceSettings(batch_size=4, validation_pairs=8, max_new_tokens=64)


def _decisions(frame: pd.DataFrame) -> pd.DataFrame:
    def decision(label: int) -> str:
        if label:
            return MatchDecision("match", 0.9, {"brand": "same"}, (), "Same model.").to_json()
        return MatchDecision("no_match", 0.8, {"capacity": "different"}, (), "1TB vs 2TB.").to_json()

    return frame.assign(decision_json=[decision(v) for v in frame["label"]])


def _lora_b(folder) -> dict[str, torch.Tensor]:
    weights = load_file(str(folder / "adapter_model.safetensors"))
    return {k: v for k, v in weights.items() if "lora_B" in k}


@pytest.fixture(scope="module")
def sft_folder(tiny_student, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "sft-v1"
    frame = _decisions(pair_rows(TOY_PAIRS))
    train_sft(frame, out, student=str(tiny_student), inference=INFERENCE, valid=pair_rows(TOY_PAIRS),
              settings=SFTSettings(max_steps=2, batch_size=2, gradient_accumulation=1, warmup_ratio=0.0,
                                   learning_rate=5e-3, lora=LoraSettings(r=4, alpha=8), logging_steps=1))
    return out


def test_one_sft_step_changes_the_adapter_and_writes_a_model_folder(sft_folder, tiny_student):
    card = read_card(sft_folder)
    assert card.stage == "sft" and card.adapters == ["adapters/0-sft"] and card.base == str(tiny_student)
    lora_b = _lora_b(sft_folder / "adapters/0-sft")
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b.values()), "LoRA B starts at zero; a step moves it"
    assert card.training["examples"] == 4 and card.training["steps"] == 2
    assert card.metrics["train_loss"] > 0 and len(card.metrics["loss_history"]) == 2
    assert set(card.thresholds) == {"default", "toy"} and 0 <= card.thresholds["toy"] <= 1
    assert (sft_folder / "tokenizer" / "tokenizer.json").exists()
    assert not (sft_folder / "checkpoints").exists()


def test_saved_model_loads_back_with_its_adapter(sft_folder, tiny_student):
    pairs = pair_rows(TOY_PAIRS)
    trained = Matcher.load(str(sft_folder), INFERENCE)
    base = Matcher.load(str(tiny_student), INFERENCE)
    assert trained.threshold("toy") == read_card(sft_folder).thresholds["toy"]
    assert not np.allclose(trained.predict_proba(pairs), base.predict_proba(pairs), atol=1e-6)
    again = Matcher.load(str(sft_folder), INFERENCE)
    assert np.allclose(trained.predict_proba(pairs), again.predict_proba(pairs), atol=1e-6)


def test_sft_learns_the_decision_format(tiny_student, tmp_path):
    """Enough steps on two decisions: explain mode then writes valid JSON the parser accepts."""
    frame = _decisions(pair_rows(TOY_PAIRS[:2]))
    train_sft(frame, tmp_path / "m", student=str(tiny_student), inference=INFERENCE,
              settings=SFTSettings(max_steps=60, batch_size=2, gradient_accumulation=1, warmup_ratio=0.0,
                                   learning_rate=1e-2, lora=LoraSettings(r=16, alpha=32, dropout=0.0),
                                   logging_steps=50))
    matcher = Matcher.load(str(tmp_path / "m"), INFERENCE)
    results = matcher.explain(frame)
    assert [r.format_valid for r in results] == [True, True], [r.text for r in results]
    assert [r.label for r in results] == ["match", "no_match"]
    assert matcher.predict_proba(frame)[0] > 0.5 > matcher.predict_proba(frame)[1]


def test_sft_refuses_invalid_teacher_decisions(tiny_student):
    from epm_spark.models.matcher.student.prompt import PairPrompter
    from epm_spark.models.matcher.student.model import load_tokenizer

    frame = pair_rows(TOY_PAIRS[:1]).assign(decision_json='{"label": "maybe"}')
    with pytest.raises(InputError, match="SFT example 0: the decision is not valid"):
        sft_examples(frame, PairPrompter(load_tokenizer(str(tiny_student))))


def _length_reward(prompts, completions, **kwargs):
    # Random completions all fail the format; length varies, so a group has an advantage to learn.
    return [len(completion_text(c)) / 100.0 for c in completions]


def test_one_grpo_step_changes_a_new_adapter_on_top_of_sft(sft_folder, tmp_path):
    pairs = pair_rows(TOY_PAIRS * 2)
    out = tmp_path / "rl-v1"
    card = train_rl(pairs, str(sft_folder), out, reward_funcs=[format_reward, label_reward, _length_reward],
                    reward_weights=[0.2, 0.6, 1.0], inference=INFERENCE, valid=pair_rows(TOY_PAIRS),
                    settings=RLSettings(max_steps=1, prompts_per_step=2, num_generations=2,
                                        max_completion_length=16, learning_rate=1e-2, pool=8, logging_steps=1,
                                        lora=LoraSettings(r=4, alpha=8)))
    assert card.stage == "rl" and card.adapters == ["adapters/0-0-sft", "adapters/1-rl"]
    assert card.parent == str(sft_folder.resolve())
    rl_b = _lora_b(out / "adapters/1-rl")
    assert any(v.abs().sum() > 0 for v in rl_b.values()), "one GRPO step must move the RL adapter"
    sft_b = _lora_b(sft_folder / "adapters/0-sft")
    copied = _lora_b(out / "adapters/0-0-sft")
    assert all(torch.equal(sft_b[k], copied[k]) for k in sft_b), "the SFT adapter is copied unchanged"
    assert card.training["steps"] == 1 and card.training["prompts"] == 2
    assert card.training["reward_functions"] == ["format_reward", "label_reward", "_length_reward"]
    rl = Matcher.load(str(out), INFERENCE).predict_proba(pairs)
    sft = Matcher.load(str(sft_folder), INFERENCE).predict_proba(pairs)
    assert not np.allclose(rl, sft, atol=1e-7)


def test_rl_prompt_selection_prefers_groups_that_disagree():
    pairs = pd.DataFrame({"label": [1, 1, 0, 0, 1, 0]})
    p_match = np.array([0.99, 0.5, 0.01, 0.45, 0.6, 0.97])
    chosen = select_prompts(pairs, p_match, 3, hard_share=1.0, generations=4)
    # q = P(gold): 0.99, 0.5, 0.99, 0.55, 0.6, 0.03 -> the three closest to 0.5 are chosen
    assert sorted(chosen["p_match"]) == [0.45, 0.5, 0.6]
    assert len(select_prompts(pairs, p_match, 4, hard_share=0.5, generations=4)) == 4
    with pytest.raises(InputError, match="weights"):
        train_rl(pairs, "x", "y", reward_funcs=[format_reward], reward_weights=[1.0, 2.0])


def test_balanced_sample_evens_out_benchmarks_and_labels():
    from epm_spark.models.matcher.student.training import balanced_sample

    frame = pd.DataFrame({"benchmark": ["a"] * 100 + ["b"] * 40, "label": ([1] * 10 + [0] * 90) + ([1] * 20 + [0] * 20)})
    sample = balanced_sample(frame, 40, 0.4)
    counts = sample.groupby(["benchmark", "label"]).size().to_dict()
    assert counts == {("a", 0): 12, ("a", 1): 8, ("b", 0): 12, ("b", 1): 8}
    short = balanced_sample(frame, 60, 0.6)  # a has only 10 matches: it gives them all
    assert short.groupby(["benchmark", "label"]).size().to_dict()[("a", 1)] == 10
    assert len(balanced_sample(frame, None, 0.4)) == 140


def test_interrupted_sft_resumes_from_its_last_checkpoint(tiny_student, tmp_path, monkeypatch):
    import epm_spark.models.matcher.student.sft as sft_module

    frame = _decisions(pair_rows(TOY_PAIRS))
    settings = SFTSettings(max_steps=1, batch_size=2, gradient_accumulation=1, warmup_ratio=0.0, save_steps=1,
                           logging_steps=1,
                           lora=LoraSettings(r=4, alpha=8))

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed after the checkpoint")

    monkeypatch.setattr(sft_module, "finish_model_folder", crash)
    with pytest.raises(KeyboardInterrupt):
        train_sft(frame, tmp_path / "m", student=str(tiny_student), inference=INFERENCE, settings=settings)
    assert (tmp_path / "m" / "checkpoints" / "checkpoint-1").is_dir()
    monkeypatch.undo()
    settings.max_steps = 2
    card = train_sft(frame, tmp_path / "m", student=str(tiny_student), inference=INFERENCE, settings=settings)
    assert card.training["resumed_from"].endswith("checkpoint-1")
    assert card.training["steps"] == 2 and len(card.metrics["loss_history"]) == 1, "only step 2 ran again"


def test_lora_on_the_top_layers_only_leaves_the_lower_ones_frozen(tiny_student):
    from peft import get_peft_model

    from epm_spark.models.matcher.settings import LoraSettings
    from epm_spark.models.matcher.student.model import load_student
    from epm_spark.models.matcher.student.training import lora_config

    model, _ = load_student(str(tiny_student), dtype="float32")
    adapted = get_peft_model(model, lora_config(LoraSettings(top_layers=1), model))
    trainable = [n for n, p in adapted.named_parameters() if p.requires_grad]
    assert trainable and all(".layers.1." in n for n in trainable)
    # every linear projection of that layer, none of the head
    assert {n.split(".")[-4] for n in trainable} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                     "up_proj", "down_proj"}
