"""The student's loader, GGUF conversion and prompt."""

from __future__ import annotations

import json
import re

import pytest
import torch
from tiny_student import TOY_PAIRS, listing, pair_rows, tiny_student  # noqa: F401

from epm_spark.errors import InputError
from epm_spark.models.matcher.decision import MatchDecision
from epm_spark.models.matcher.student.prompt import DECISION_PREFIX, LabelTokens, PairPrompter, encode
from epm_spark.models.matcher.settings import PromptSettings
from epm_spark.models.matcher.student.model import check_student, load_student, load_tokenizer, resolve_student


def test_prompt_holds_both_listings_in_the_chat_template(tiny_student):
    tokenizer = load_tokenizer(str(tiny_student))
    prompter = PairPrompter(tokenizer, PromptSettings(system="Match?"))
    left, right = listing("Samsung 870 EVO 1TB", "Samsung", colour="black"), listing("Sony TV", "Sony")
    text = prompter.render(left, right)
    assert text.startswith("<|im_start|>system\nMatch?<|im_end|>\n<|im_start|>user\n")
    assert "A: Samsung 870 EVO 1TB | colour: black\nB: Sony TV" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_long_listing_is_cut_to_its_token_budget(tiny_student):
    tokenizer = load_tokenizer(str(tiny_student))
    prompter = PairPrompter(tokenizer, PromptSettings(max_listing_tokens=12))
    long_title = "Samsung 870 EVO " * 30
    cut = prompter.listing(listing(long_title))
    assert cut.endswith(" …")
    assert len(encode(tokenizer, cut[:-2])) <= 12
    assert prompter.listing(listing("Sony TV")) == "Sony TV"


def test_training_example_masks_the_prompt_and_ends_with_end_of_turn(tiny_student):
    tokenizer = load_tokenizer(str(tiny_student))
    prompter = PairPrompter(tokenizer)
    decision = MatchDecision("match", 0.9, {"brand": "same"}, (), "Same.").to_json()
    left, right, _ = TOY_PAIRS[0]
    example = prompter.training_example(left, right, decision)
    ids, mask = example["input_ids"], example["completion_mask"]
    assert len(ids) == len(mask)
    completion = tokenizer.decode([t for t, m in zip(ids, mask) if m])
    prompt = tokenizer.decode([t for t, m in zip(ids, mask) if not m])
    assert completion == decision + "<|im_end|>\n"
    assert prompt == example["prompt"] == prompter.render(left, right)
    # The prompt part is exactly what inference tokenizes: no extra special token.
    assert ids[: mask.index(1)] == encode(tokenizer, prompter.render(left, right))


def test_label_tokens_split_where_the_labels_part(tiny_student):
    tokenizer = load_tokenizer(str(tiny_student))
    prompt = PairPrompter(tokenizer).render(*TOY_PAIRS[0][:2])
    ids, t_match, t_no = LabelTokens(tokenizer).split(prompt)
    assert t_match != t_no
    assert tokenizer.decode(ids).startswith(prompt)
    assert tokenizer.decode(ids + [t_match]).endswith(DECISION_PREFIX[-1] + tokenizer.decode([t_match]))
    assert "match" in tokenizer.decode(ids + [t_match])[len(prompt):]


def test_prompter_rejects_a_frame_without_listing_columns(tiny_student):
    import pandas as pd

    prompter = PairPrompter(load_tokenizer(str(tiny_student)))
    with pytest.raises(InputError, match="left_title"):
        prompter.render_frame(pd.DataFrame({"title": ["x"]}))


def test_resolve_student_checks_folders(tmp_path):
    with pytest.raises(InputError, match="no config.json"):
        resolve_student(str(tmp_path))
    with pytest.raises(InputError, match="unknown packaged student"):
        resolve_student("packaged:gpt5")
    assert resolve_student("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"


def test_check_student_refuses_what_resolve_refuses_without_converting(tmp_path, monkeypatch):
    import epm_spark.models.matcher.student.model as student_model

    def converted(*args, **kwargs):
        raise AssertionError("the packaged student was converted")

    monkeypatch.setattr(student_model, "convert_gguf", converted)
    check_student("packaged:smollm2")
    check_student("Qwen/Qwen2.5-0.5B-Instruct")
    with pytest.raises(InputError, match="no config.json"):
        check_student(str(tmp_path))
    with pytest.raises(InputError, match="is neither"):
        check_student(str(tmp_path / "typo"))


def test_tokenizer_without_chat_template_is_refused(tiny_student, tmp_path):
    import shutil

    folder = tmp_path / "plain"
    shutil.copytree(tiny_student, folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="no chat template"):
        load_tokenizer(str(folder))


@pytest.mark.real_model
def test_packaged_gguf_converts_once_to_a_loadable_folder(tmp_path):
    from epm_spark.models.matcher.student.model import convert_gguf
    from epm_spark.models.weights import packaged_student_gguf

    folder = convert_gguf(packaged_student_gguf(), root=tmp_path)
    assert (folder / "model.safetensors").exists() and (folder / "chat_template.jinja").exists()
    assert not list(tmp_path.glob("*.tmp-*")), "the temporary folder must be renamed or removed"
    assert convert_gguf(packaged_student_gguf(), root=tmp_path) == folder  # second call: cached
    model, tokenizer = load_student(str(folder))
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert "quantization_config" not in model.config.to_dict()
    prompter = PairPrompter(tokenizer)
    ids = encode(tokenizer, prompter.render(*TOY_PAIRS[1][:2]))
    assert 90 <= len(ids) <= 200, "the prompt should stay compact"
    with torch.no_grad():
        out = model.generate(torch.tensor([encode(tokenizer, "<|im_start|>user\nWhat is the capital of France?"
                                                  "<|im_end|>\n<|im_start|>assistant\n")]),
                             max_new_tokens=8, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0]), "de-quantized weights must still make a working model"


@pytest.mark.parametrize("override, message", [
    ("matcher.rl.num_generations=1", "num_generations must be >= 2"),
    ("matcher.sft.positive_share=1.5", "positive_share must be in (0, 1)"),
    ("matcher.sft.max_steps=0", "max_steps must be -1 or > 0"),
    ("matcher.prompt.max_listing_tokens=0", "max_listing_tokens must be > 0"),
    ("matcher.inference.dtype=int4", "must be one of"),
    ("matcher.sft.lora.rank=8", "unknown setting 'matcher.sft.lora.rank'"),
])
def test_matcher_settings_reject_bad_values(override, message):
    from epm_spark.config import load_settings
    from epm_spark.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(None, [override])


def test_matcher_settings_load_from_the_local_conf():
    from epm_spark.config import load_settings

    settings = load_settings(None, ["matcher.sft.max_examples=480", "matcher.rl.max_steps=5"])
    assert settings.matcher.student == "packaged:smollm2"
    assert settings.matcher.sft.max_examples == 480 and settings.matcher.rl.max_steps == 5
    assert settings.matcher.rl.learning_rate != settings.matcher.sft.learning_rate
