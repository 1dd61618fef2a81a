"""EncoderTrainer on a tiny random backbone: model folder, card, checkpoints, resume, best epoch."""

import json

import numpy as np
import pytest
import torch
from encoder_tiny import save_tiny, tiny_catalog

import epm_spark.models.encoder.train as train_module
from epm_spark.errors import ConfigError, InputError
from epm_spark.models.encoder.config import ContrastiveSettings, EncoderSettings, RoarSettings
from epm_spark.models.encoder.model import DualEncoder
from epm_spark.models.encoder.train import EncoderTrainer, EncoderTrainingConfig


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny") / "bert")


def settings(backbone, epochs=2):
    return EncoderSettings(backbone=str(backbone), device="cpu", max_length=16,
                           contrastive=ContrastiveSettings(epochs=epochs, batch_size=4, lr=1e-3, hard_negatives=2),
                           roar=RoarSettings(epochs=epochs, batch_size=4, lr=1e-3))


def weights(folder):
    return DualEncoder.load(folder, device="cpu").backbone.state_dict()


def test_contrastive_training_writes_a_versioned_folder_with_a_card(backbone, tmp_path):
    products, pairs = tiny_catalog()
    out = tmp_path / "s1"
    result = EncoderTrainer(EncoderTrainingConfig(stage="contrastive", output_dir=str(out),
                                                  encoder=settings(backbone))).train(products, pairs)
    assert result.model_dir == out
    assert {"model.safetensors", "config.json", "tokenizer.json", "encoder_config.json", "model_card.json"} \
        <= {p.name for p in out.iterdir()}
    assert not (out / "checkpoints").exists(), "checkpoints are removed after a finished run"
    card = json.loads((out / "model_card.json").read_text())
    assert [h["epoch"] for h in card["history"]] == [0, 1, 2]
    assert card["history"][1]["train_loss"] > 0
    assert {"recall@1", "recall@10", "mrr"} <= set(card["history"][2]["valid"])
    assert card["data"]["benchmarks"] == ["tiny"] and card["data"]["examples"] == 12
    assert card["hyper_parameters"]["encoder"]["contrastive"]["batch_size"] == 4
    assert result.model_version == DualEncoder.load(out).model_version
    assert result.model_version.startswith("s1-")
    best = max(card["history"], key=lambda h: h["valid"]["mrr"])
    assert card["best_epoch"] == best["epoch"] == result.best_epoch


def test_training_changes_weights_and_roar_starts_from_stage_one(backbone, tmp_path, monkeypatch):
    products, pairs = tiny_catalog()
    # Every epoch "improves" so the last one is kept: the test is about the weights, not quality.
    scores = iter(np.linspace(0.1, 0.9, 10))
    monkeypatch.setattr(train_module, "evaluate_retrieval",
                        lambda enc, bench, split: {"recall@1": 0, "recall@10": 0, "mrr": next(scores)})
    s1 = EncoderTrainer(EncoderTrainingConfig(stage="contrastive", output_dir=str(tmp_path / "s1"),
                                              encoder=settings(backbone, epochs=1))).train(products, pairs)
    s2 = EncoderTrainer(EncoderTrainingConfig(stage="roar", output_dir=str(tmp_path / "s2"), init=str(s1.model_dir),
                                              encoder=settings(backbone, epochs=1))).train(products, pairs)
    start, one, two = weights(backbone), weights(s1.model_dir), weights(s2.model_dir)
    key = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(start[key], one[key]) and not torch.equal(one[key], two[key])
    card = json.loads((s2.model_dir / "model_card.json").read_text())
    assert card["stage"] == "roar" and card["init"] == str(s1.model_dir) and card["data"]["queries"] == 12
    # Stage 2's start is stage 1's best model on the same validation data: its card's numbers are reused.
    s1_card = json.loads((s1.model_dir / "model_card.json").read_text())
    assert card["history"][0]["valid"]["from_card"] == str(s1.model_dir / "model_card.json")
    assert card["history"][0]["valid"]["mrr"] == s1_card["best_valid_score"]


def test_best_epoch_is_kept_not_the_last(backbone, tmp_path, monkeypatch):
    products, pairs = tiny_catalog()
    scores = iter([0.2, 0.8, 0.5])  # start, epoch 1 (best), epoch 2 (worse)
    seen = {}

    def fake_eval(encoder, bench, split):
        seen[len(seen)] = {k: v.clone() for k, v in encoder.backbone.state_dict().items()}
        return {"recall@1": 0.0, "recall@10": 0.0, "mrr": next(scores)}

    monkeypatch.setattr(train_module, "evaluate_retrieval", fake_eval)
    result = EncoderTrainer(EncoderTrainingConfig(stage="contrastive", output_dir=str(tmp_path / "m"),
                                                  encoder=settings(backbone))).train(products, pairs)
    assert result.best_epoch == 1
    kept = weights(result.model_dir)
    for name, tensor in seen[1].items():
        torch.testing.assert_close(kept[name], tensor)
    key = "encoder.layer.1.output.dense.weight"
    assert not torch.equal(kept[key], seen[2][key]), "epoch 2 trained further, and was dropped"


def test_start_model_is_kept_when_no_epoch_beats_it(backbone, tmp_path, monkeypatch):
    products, pairs = tiny_catalog()
    scores = iter([0.9, 0.1])
    monkeypatch.setattr(train_module, "evaluate_retrieval",
                        lambda enc, bench, split: {"recall@1": 0, "recall@10": 0, "mrr": next(scores)})
    result = EncoderTrainer(EncoderTrainingConfig(stage="contrastive", output_dir=str(tmp_path / "m"),
                                                  encoder=settings(backbone, epochs=1))).train(products, pairs)
    assert result.best_epoch == 0
    card = json.loads((result.model_dir / "model_card.json").read_text())
    assert card["kept_start_model"] is True
    for name, tensor in weights(backbone).items():
        torch.testing.assert_close(weights(result.model_dir)[name], tensor)


def test_resume_continues_after_the_last_checkpoint_and_matches_one_run(backbone, tmp_path, caplog):
    products, pairs = tiny_catalog()
    full = EncoderTrainer(EncoderTrainingConfig(stage="contrastive", output_dir=str(tmp_path / "full"),
                                                encoder=settings(backbone, epochs=2))).train(products, pairs)
    caplog.set_level("INFO")
    first_two = EncoderTrainer(EncoderTrainingConfig(stage="contrastive", output_dir=str(tmp_path / "two"),
                                                     keep_checkpoints=True, max_steps=3,
                                                     encoder=settings(backbone, epochs=2))).train(products, pairs)
    assert first_two.history[-1]["steps"] == 3
    state = json.loads((tmp_path / "two" / "checkpoints" / "state.json").read_text())
    assert state["epochs"] == 1 and [h["epoch"] for h in state["history"]] == [0, 1]
    assert (tmp_path / "two" / "checkpoints" / "epoch-1").is_dir()
    resumed = EncoderTrainer(EncoderTrainingConfig(stage="contrastive", output_dir=str(tmp_path / "two"),
                                                   encoder=settings(backbone, epochs=2))).train(products, pairs)
    assert "resuming after epoch 1" in caplog.text
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2]
    assert resumed.history[1] == first_two.history[1], "the finished epoch is not trained again"
    assert resumed.history[2]["steps"] == 6
    # Interrupted-and-resumed training ends where the uninterrupted run ends.
    a, b = weights(full.model_dir), weights(resumed.model_dir)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4)


def test_bad_training_config_and_data_are_clear_errors(backbone, tmp_path):
    with pytest.raises(ConfigError, match="stage"):
        EncoderTrainingConfig(stage="sft")
    products, pairs = tiny_catalog()
    with pytest.raises(InputError, match="not in products"):
        EncoderTrainer(EncoderTrainingConfig(output_dir=str(tmp_path / "x"), encoder=settings(backbone))).train(
            products[~products["product_id"].isin(["b0", "b1"])], pairs)


def test_lora_training_changes_only_adapters_and_writes_merged_weights(backbone, tmp_path, monkeypatch):
    products, pairs = tiny_catalog()
    scores = iter([0.1, 0.9])
    monkeypatch.setattr(train_module, "evaluate_retrieval",
                        lambda enc, bench, split: {"recall@1": 0, "recall@10": 0, "mrr": next(scores)})
    lora = settings(backbone, epochs=1)
    lora.lora, lora.lora_rank, lora.lora_alpha = True, 4, 8
    result = EncoderTrainer(EncoderTrainingConfig(stage="contrastive", output_dir=str(tmp_path / "lora"),
                                                  encoder=lora)).train(products, pairs)
    merged = weights(result.model_dir)
    assert not any("lora" in name for name in merged)
    start = weights(backbone)
    # Adapters sit on linear layers: their merged weights moved, embeddings and norms did not.
    assert not torch.equal(merged["encoder.layer.0.attention.self.query.weight"],
                           start["encoder.layer.0.attention.self.query.weight"])
    torch.testing.assert_close(merged["embeddings.word_embeddings.weight"], start["embeddings.word_embeddings.weight"])
    torch.testing.assert_close(merged["encoder.layer.0.output.LayerNorm.weight"],
                               start["encoder.layer.0.output.LayerNorm.weight"])


def test_training_after_a_bf16_trainer_in_the_same_process(backbone, tmp_path):
    # The matcher's cross-encoder Trainer (bf16 on GPUs and AMX CPUs) leaves accelerate's process-wide
    # state behind; a notebook that trains it and then the encoder must not be refused.
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # as the Trainer does before it sets its own precision
    Accelerator(mixed_precision="bf16", cpu=True)
    products, pairs = tiny_catalog()
    out = tmp_path / "after-bf16"
    EncoderTrainer(EncoderTrainingConfig(stage="contrastive", output_dir=str(out), mixed_precision="no",
                                         encoder=settings(backbone, epochs=1))).train(products, pairs)
    assert (out / "model_card.json").is_file()
