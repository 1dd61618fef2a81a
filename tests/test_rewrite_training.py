"""One distill (SFT) step and one GRPO step of the rewriter on a tiny random student: the adapters
change, the folders load back as rewriters."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from rewrite_tiny import GRADES, products, tiny_judge
from safetensors.torch import load_file
from tiny_student import tiny_student  # noqa: F401

from epm_spark.errors import InputError
from epm_spark.models.matcher.settings import LoraSettings
from epm_spark.models.matcher.supervision.rewards import completion_text
from epm_spark.models.rewriter.model import Rewriter, load_rewriter_model, read_rewriter_card
from epm_spark.models.rewriter.prompt import render_prompt, rewrite_messages
from epm_spark.models.rewriter.retrieval import ListingContext
from epm_spark.models.rewriter.rewards import build_rewrite_rewards
from epm_spark.models.rewriter.settings import (
    RewriteInferenceSettings, RewritePromptSettings, RewriteRewardSettings, RewriteRLSettings, RewriteSFTSettings,
)
from epm_spark.models.rewriter.training import (
    _contexts, distill_examples, select_rl_queries, train_distill, train_rewriter_rl,
)

EXAMPLES = pd.DataFrame({"query": ["smasung ssd 1tb", "ps-lx350h", "crucial mx500 1 tb", "lenovo laptop"],
                         "rewrite": ["samsung ssd 1tb", "sony ps-lx350h turntable", "crucial mx500 1tb",
                                     "lenovo thinkpad notebook"]})
INFERENCE = RewriteInferenceSettings(batch_size=4, max_new_tokens=8)


def _lora_b(folder) -> dict[str, torch.Tensor]:
    weights = load_file(str(folder / "adapter_model.safetensors"))
    return {k: v for k, v in weights.items() if "lora_B" in k}


def _next_token_logits(path: str) -> torch.Tensor:
    model, tokenizer, _ = load_rewriter_model(path, device="cpu", dtype="float32")
    ids = tokenizer(render_prompt(tokenizer, "smasung ssd 1tb"), add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits[0, -1]


def nearest_titles(n: int = 3) -> ListingContext:
    return ListingContext.from_listings(tiny_judge(), products(), n)


def test_context_leads_with_the_listings_carrying_the_querys_model_number():
    # The bag-of-words judge reads "pslx350h" as one unknown word: its nearest listings miss the
    # turntable that the catalog spells PS-LX350H; the model-number index finds it.
    plain, coded = nearest_titles(), ListingContext.from_listings(tiny_judge(), products(), 3, codes=2)
    assert not any("ps-lx350h" in t for t in plain(["pslx350h"])[0])
    shown = coded(["pslx350h", "mz77e1t0", "lenovo laptop"])
    assert shown[0][0] == "sony ps-lx350h belt drive turntable" and len(shown[0]) == 3
    assert shown[1][0] == "samsung 870 evo 1tb sata ssd mz-77e1t0"
    assert len(set(shown[1])) == 3, "a listing found both ways is shown once"
    assert shown[2] == plain(["lenovo laptop"])[0], "a query without a model number sees its nearest listings"
    assert plain.with_listings(3, codes=1)(["pslx350h"])[0][0] == "sony ps-lx350h belt drive turntable"
    with pytest.raises(InputError, match="model-number listings needs the catalog's index"):
        ListingContext(tiny_judge(), {}, 3, codes=1)
    # Training shows what the model's own prompt asks for, whatever the context was built with.
    assert _contexts(["pslx350h"], RewritePromptSettings(code_listings=0), coded) == plain(["pslx350h"])
    assert _contexts(["pslx350h"], RewritePromptSettings(code_listings=1), plain)[0][0].startswith("sony ps-lx350h")


@pytest.fixture(scope="module")
def distilled(tiny_student, tmp_path_factory):
    out = tmp_path_factory.mktemp("rewriter") / "distill-v1"
    train_distill(EXAMPLES, out, student=str(tiny_student), context=nearest_titles(),
                  settings=RewriteSFTSettings(max_steps=2, batch_size=2, learning_rate=5e-3, warmup_ratio=0.0, max_length=512,
                                              lora=LoraSettings(r=4, alpha=8), logging_steps=1))
    return out


def test_one_distill_step_changes_the_adapter(distilled, tiny_student):
    card = read_rewriter_card(distilled)
    assert card.stage == "distill" and card.adapters == ["adapters/0-distill"] and card.base == str(tiny_student)
    assert card.model_version.startswith("distill-v1-") and card.training["examples"] == 4
    assert any(v.abs().sum() > 0 for v in _lora_b(distilled / "adapters/0-distill").values()), "LoRA B starts at 0"
    assert len(card.metrics["loss_history"]) == 2 and not (distilled / "checkpoints").exists()
    assert not torch.allclose(_next_token_logits(str(distilled)), _next_token_logits(str(tiny_student)), atol=1e-6)
    rewriter = Rewriter.load(str(distilled), INFERENCE)
    assert rewriter.reads_context and card.prompt["context_listings"] == 3
    queries = list(EXAMPLES["query"])
    rewrites = rewriter.rewrite(queries, nearest_titles()(queries))
    assert len(rewrites) == 4 and all(isinstance(r, str) for r in rewrites)
    with pytest.raises(InputError, match="trained with the nearest listings"):
        rewriter.rewrite(queries)


def test_the_prompt_shows_the_nearest_listings_without_seller_noise():
    titles = nearest_titles(2)(["crucial mx500 1tb", "sony pslx350h turntable"])
    assert titles[0] == ["crucial mx500 1tb sata ssd", "crucial mx500 500gb sata ssd"]
    assert titles[1][0] == "sony ps-lx350h belt drive turntable"

    user = rewrite_messages("Crucial  MX500 1tb", RewritePromptSettings(context_chars=20), titles[0])[1]["content"]
    assert user == "crucial mx500 1tb\ncatalog: crucial mx500 1tb | crucial mx500 500gb"  # cut at a word
    alone = rewrite_messages("crucial mx500 1tb", RewritePromptSettings(context_listings=0), titles[0])
    assert alone[1]["content"] == "crucial mx500 1tb"


def test_distill_examples_mask_the_prompt_and_skip_empty_rewrites(tiny_student):
    from epm_spark.models.matcher.student.model import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_student))
    frame = pd.concat([EXAMPLES, pd.DataFrame({"query": ["x y"], "rewrite": [None]})], ignore_index=True)
    data = distill_examples(frame, tokenizer, RewritePromptSettings(), context=nearest_titles())
    assert len(data) == 4
    ids, mask = data[0]["input_ids"], data[0]["completion_mask"]
    assert tokenizer.decode([t for t, m in zip(ids, mask) if m]) == "samsung ssd 1tb<|im_end|>\n"
    assert "\ncatalog: " in tokenizer.decode([t for t, m in zip(ids, mask) if not m])
    assert "samsung t7 portable ssd 1tb" in tokenizer.decode([t for t, m in zip(ids, mask) if not m])
    with pytest.raises(InputError, match="no distill example"):
        distill_examples(frame.iloc[4:], tokenizer, RewritePromptSettings(), context=nearest_titles())
    with pytest.raises(InputError, match="no listing context was given"):
        distill_examples(frame, tokenizer, RewritePromptSettings())


def _length(prompts, completions, **kwargs):
    # Random samples mostly tie on the task rewards; length varies, so the group has an advantage.
    return [len(completion_text(c)) / 50.0 for c in completions]


def test_one_grpo_step_changes_a_new_adapter_on_top_of_the_distilled_one(distilled, tmp_path):
    judge = tiny_judge()
    rewards = build_rewrite_rewards(RewriteRewardSettings(), judge)
    out = tmp_path / "rl-v1"
    card = train_rewriter_rl(list(GRADES) * 2, str(distilled), out, judge=judge,
                             reward_funcs=[*rewards.funcs, _length], reward_weights=[*rewards.weights, 1.0],
                             settings=RewriteRLSettings(max_steps=1, prompts_per_step=2, num_generations=2,
                                                        max_completion_length=16, learning_rate=1e-2, pool=8,
                                                        logging_steps=1, lora=LoraSettings(r=4, alpha=8)),
                             context=nearest_titles())
    assert card.stage == "rl" and card.adapters == ["adapters/0-0-distill", "adapters/1-rl"]
    assert card.parent == str(distilled.resolve()) and card.training["steps"] == 1
    assert card.training["reward_functions"] == ["retrieval_gain", "drift_reward", "format_reward", "_length"]
    assert any(v.abs().sum() > 0 for v in _lora_b(out / "adapters/1-rl").values()), "one step moves the RL adapter"
    sft_b, copied = _lora_b(distilled / "adapters/0-distill"), _lora_b(out / "adapters/0-0-distill")
    assert all(torch.equal(sft_b[k], copied[k]) for k in sft_b)
    assert not torch.allclose(_next_token_logits(str(out)), _next_token_logits(str(distilled)), atol=1e-7)


def test_rl_prompts_prefer_queries_with_room_to_gain():
    chosen = select_rl_queries(["a", "b", "c", "d", "e"], [1.0, 0.2, float("nan"), 0.5, 1.0], 3, hard_share=2 / 3)
    assert set(chosen["query"]) >= {"b", "d"} and "c" not in set(chosen["query"]) and len(chosen) == 3
    with pytest.raises(InputError, match="no RL query has graded listings"):
        select_rl_queries(["a"], [float("nan")], 1, hard_share=0.5)
