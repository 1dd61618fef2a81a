"""DualEncoder with tiny random backbones: pooling, normalisation, batching, save/load, version, LoRA."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from encoder_tiny import save_tiny, tiny_bert, tiny_causal_lm

from epm_spark.errors import InputError
from epm_spark.models.encoder.config import TextSettings
from epm_spark.models.encoder.model import ENCODER_CONFIG, DualEncoder, resolve_backbone

TEXTS = ["sony turntable black", "hp laptop silver 16gb usb hdmi wireless pro", "canon lens", "the best price"]


def test_encoder_backbone_pools_by_mean_and_ignores_padding():
    model, tok = tiny_bert()
    encoder = DualEncoder(model, tok).eval()
    assert encoder.pooling == "mean" and not encoder.causal
    vectors = encoder.encode(TEXTS, batch_size=4)
    assert vectors.dtype == np.float32 and vectors.shape == (4, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Same vector alone (no padding) and inside a padded batch sorted by length.
    for i, text in enumerate(TEXTS):
        np.testing.assert_allclose(encoder.encode([text])[0], vectors[i], atol=1e-5)
    # Mean pooling by hand over the real tokens.
    batch = encoder.tokenize([TEXTS[0]])
    hidden = model(**batch).last_hidden_state[0]
    expected = torch.nn.functional.normalize(hidden.mean(0), dim=0).detach().numpy()
    np.testing.assert_allclose(vectors[0], expected, atol=1e-5)


def test_encoder_backbone_ignores_query_instruction():
    model, tok = tiny_bert()
    encoder = DualEncoder(model, tok, query_instruction="Query: ")
    np.testing.assert_allclose(encoder.encode(TEXTS, query=True), encoder.encode(TEXTS), atol=1e-6)


def test_causal_backbone_pools_last_token_and_prefixes_queries():
    model, tok = tiny_causal_lm()
    encoder = DualEncoder(model.model, tok, query_instruction="the best price for ", causal=True).eval()
    assert encoder.pooling == "last_token"
    docs = encoder.encode(TEXTS, batch_size=3)
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-5)
    for i, text in enumerate(TEXTS):
        np.testing.assert_allclose(encoder.encode([text])[0], docs[i], atol=1e-5)
    # The vector is the hidden state of the last real token (the appended EOS), not of padding.
    batch = encoder.tokenize([TEXTS[2]])
    assert batch["input_ids"][0, -1] == tok.eos_token_id
    hidden = model.model(**batch).last_hidden_state[0, -1]
    np.testing.assert_allclose(docs[2], torch.nn.functional.normalize(hidden, dim=0).detach().numpy(), atol=1e-5)
    queries = encoder.encode(TEXTS, query=True)
    assert not np.allclose(queries, docs, atol=1e-3), "queries must carry the instruction prefix"
    assert encoder.prepare(["x"], query=True) == ["the best price for x</s>"]


def test_causal_folder_is_detected_and_round_trips(tmp_path):
    folder = save_tiny(tmp_path / "llm", causal=True)
    encoder = DualEncoder.load(folder, device="cpu")
    assert encoder.causal and encoder.pooling == "last_token"
    before = encoder.encode(TEXTS, query=True)
    encoder.save(tmp_path / "saved")
    again = DualEncoder.load(tmp_path / "saved", device="cpu")
    np.testing.assert_allclose(again.encode(TEXTS, query=True), before, atol=1e-5)


def test_save_load_round_trip_and_stable_version(tmp_path):
    folder = save_tiny(tmp_path / "bert")
    encoder = DualEncoder.load(folder, device="cpu", max_length=16, text=TextSettings(description_chars=10))
    vectors = encoder.encode(TEXTS)
    out = encoder.save(tmp_path / "model-a", card={"note": "x"})
    assert {"model.safetensors", "config.json", ENCODER_CONFIG, "model_card.json"} <= {p.name for p in out.iterdir()}
    assert not list(out.glob("*.bin")), "weights are written as safetensors only"
    loaded = DualEncoder.load(out, device="cpu")
    np.testing.assert_allclose(loaded.encode(TEXTS), vectors, atol=1e-6)
    # The folder's own options win over the caller's defaults.
    assert loaded.max_length == 16 and loaded.text.description_chars == 10
    assert loaded.model_version == encoder.model_version == DualEncoder.load(out).model_version
    assert loaded.model_version.startswith("model-a-")
    # Other weights or other text options are another version.
    with torch.no_grad():
        next(loaded.backbone.parameters()).add_(0.01)
    loaded.weights_changed()
    assert loaded.model_version != encoder.model_version
    other_text = DualEncoder.load(folder, device="cpu", text=TextSettings(description_chars=50))
    assert other_text.model_version != DualEncoder.load(folder, device="cpu").model_version


def test_listing_texts_follow_the_text_options():
    model, tok = tiny_bert()
    rows = pd.DataFrame([{"title": "sony turntable", "brand": "Sony", "description": "belt drive system",
                          "attributes": {"colour": "black"}}])
    plain = DualEncoder(model, tok).listing_texts(rows)
    with_desc = DualEncoder(model, tok, text=TextSettings(description_chars=4)).listing_texts(rows)
    assert plain == ["sony turntable | colour: black"]
    assert with_desc == ["sony turntable | colour: black | description: belt"]


def test_lora_trains_adapters_only_and_saves_merged(tmp_path):
    model, tok = tiny_bert()
    encoder = DualEncoder(model, tok)
    encoder.add_lora(rank=4, alpha=8, dropout=0.0)
    trainable = [n for n, p in encoder.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():
        for n, p in encoder.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)  # a trained adapter: non-zero
    vectors = encoder.encode(TEXTS)
    encoder.save(tmp_path / "lora")
    merged = DualEncoder.load(tmp_path / "lora", device="cpu")
    assert not any("lora" in n for n, _ in merged.named_parameters())
    np.testing.assert_allclose(merged.encode(TEXTS), vectors, atol=1e-4)


def test_embed_matches_encode_and_keeps_input_order():
    model, tok = tiny_bert()
    encoder = DualEncoder(model, tok).eval()
    vectors = encoder.embed(TEXTS, chunk_size=2)
    assert vectors.requires_grad
    np.testing.assert_allclose(vectors.detach().numpy(), encoder.encode(TEXTS), atol=1e-5)


def test_encode_handles_empty_input_and_rejects_a_bare_string():
    model, tok = tiny_bert()
    encoder = DualEncoder(model, tok)
    assert encoder.encode([]).shape == (0, 32)
    with pytest.raises(InputError, match="list of texts"):
        encoder.encode("one string")


def test_backbone_that_is_not_a_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="neither packaged:minilm nor a model folder"):
        resolve_backbone(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(InputError, match="safetensors"):
        resolve_backbone(tmp_path / "empty")
