"""Tiny random backbones, tokenizers and labelled data for the encoder tests (seconds, no real weights)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

WORDS = (
    "sony samsung apple lenovo hp canon nikon bose logitech dell asus acer "
    "turntable speaker laptop camera lens mouse keyboard monitor tablet phone printer router "
    "black white silver red blue 16gb 32gb 64gb 128gb 256gb 1tb 500gb wireless usb hdmi pro mini max "
    "new sale free shipping best price the a with for and of"
).split()


def tiny_tokenizer(causal: bool = False):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "</s>"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if causal:
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="</s>")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]")


def tiny_bert(seed: int = 0):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, architectures=["BertModel"])
    return BertModel(config), tokenizer


def tiny_causal_lm(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer(causal=True)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(config), tokenizer


def save_tiny(folder: Path, causal: bool = False) -> Path:
    """A model folder (safetensors + tokenizer) as a user would bring one."""
    model, tokenizer = tiny_causal_lm() if causal else tiny_bert()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_catalog(n: int = 24, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """products + labelled_pairs of a small synthetic benchmark: listing i on the left matches i on the right."""
    import random

    rng = random.Random(seed)
    brands, things = WORDS[:12], WORDS[12:24]
    rows, pairs = [], []
    for i in range(n):
        brand, thing = brands[i % len(brands)], things[(i * 5) % len(things)]
        colour, size = WORDS[24 + i % 5], WORDS[29 + i % 8]
        title = f"{brand} {thing} {colour} {size}"
        rows.append({"product_id": f"a{i}", "source": "tiny_left", "title": title, "brand": brand,
                     "attributes": {}})
        rows.append({"product_id": f"b{i}", "source": "tiny_right", "title": f"new {title} free shipping",
                     "brand": None, "attributes": {}})
    splits = ["train"] * (n // 2) + ["valid"] * (n // 4) + ["test"] * (n - n // 2 - n // 4)
    for i, split in enumerate(splits):
        pairs.append({"left_id": f"a{i}", "right_id": f"b{i}", "label": 1, "split": split})
        j = rng.choice([x for x in range(n) if x != i])
        pairs.append({"left_id": f"a{i}", "right_id": f"b{j}", "label": 0, "split": split})
    products = pd.DataFrame(rows)
    for col in ("category", "description", "price", "currency", "price_raw"):
        products[col] = None
    frame = pd.DataFrame(pairs)
    frame["benchmark"] = "tiny"
    frame["left_source"] = "tiny_left"
    frame["right_source"] = "tiny_right"
    frame["left_cluster_id"] = None
    frame["right_cluster_id"] = None
    frame["is_hard_negative"] = None
    return products, frame
