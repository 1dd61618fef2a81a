"""A tiny random student for fast tests: a byte-level BPE tokenizer with a ChatML template and a
2-layer Llama, built offline in a second and saved as a normal Hugging Face folder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    '{"label": "match", "confidence": 0.9, "evidence": {"brand": "same", "model_number": "same"}, '
    '"noise_ignored": ["free shipping"], "rationale": "Same brand and model."}',
    '{"label": "no_match", "confidence": 0.8, "evidence": {"capacity": "different"}, "noise_ignored": [], '
    '"rationale": "1TB vs 2TB."}',
    "Decide if listings A and B are the same product. Compare brand, model number, capacity, colour.",
    "A: Samsung 870 EVO 1TB SATA SSD | brand: Samsung\nB: SAMSUNG 870 EVO 2TB SSD free shipping",
    "Sony Bravia 46 LCD TV KDL46V5100 black | Canon EOS 5D camera body | Apple iPod nano 8GB blue",
]


def build_tiny_student(folder: Path, seed: int = 0) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=["<pad>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    raw.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<pad>", chat_template=CHATML, model_max_length=1024)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
                         # Wide enough logits that LoRA (which leaves the tied head alone) can make a peaked
                         # distribution; the default 0.02 keeps every next-token distribution near uniform.
                         initializer_range=0.25)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory) -> Path:
    return build_tiny_student(tmp_path_factory.mktemp("tiny-student"))


def listing(title: str, brand: str | None = None, **attributes) -> dict:
    return {"product_id": title[:8], "title": title, "brand": brand, "category": None, "description": None,
            "price": None, "currency": None, "attributes": attributes}


def pair_rows(pairs: list[tuple[dict, dict, int]], benchmark: str = "toy") -> pd.DataFrame:
    rows = []
    for left, right, label in pairs:
        row = {f"left_{k}": v for k, v in left.items()} | {f"right_{k}": v for k, v in right.items()}
        row["left_id"], row["right_id"] = row.pop("left_product_id"), row.pop("right_product_id")
        rows.append({**row, "label": label, "benchmark": benchmark})
    return pd.DataFrame(rows)


TOY_PAIRS = [
    (listing("Samsung 870 EVO 1TB SATA SSD", "Samsung"), listing("SAMSUNG 870 EVO 1TB SSD free shipping"), 1),
    (listing("Samsung 870 EVO 1TB SATA SSD", "Samsung"), listing("SAMSUNG 870 EVO 2TB SSD"), 0),
    (listing("Sony Bravia 46 LCD TV KDL46V5100"), listing("Sony KDL46V5100 46in LCD black"), 1),
    (listing("Canon EOS 5D camera body"), listing("Apple iPod nano 8GB blue"), 0),
]
