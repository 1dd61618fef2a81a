"""The GPU paths: device and precision choice (everywhere, with torch's view of the hardware faked),
and tiny models run on a real CUDA device against the same models on the CPU (skipped without one).

On a GPU machine: ``python -m pytest -q tests/test_gpu.py``.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from encoder_tiny import save_tiny
from search_tiny import pairs_frame
from tiny_student import TOY_PAIRS, pair_rows, tiny_student  # noqa: F401

from epm_spark.errors import EnvironmentProblem
from epm_spark.models import precision
from epm_spark.models.encoder.model import resolve_dtype
from epm_spark.models.matcher.student.model import pick_dtype
from epm_spark.models.precision import resolve_device
from epm_spark.models.search.ranker import MultiTaskRanker
from epm_spark.models.search.settings import RankerSettings
from epm_spark.models.search.train import fit

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device: the GPU runs of tiny models need one")


# /proc/cpuinfo flags of a CPU with AVX-512 BF16 alone, and of one with AMX as well.
BF16_CPUS = {"avx512_bf16": frozenset({"avx512f", "avx512_bf16"}),
             "amx": frozenset({"avx512_bf16", "amx_bf16", "amx_tile"})}


def _fake_gpu(monkeypatch, *, present: bool = True, bf16: bool = True) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: present)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)


# ----------------------------------------------------------------------------- choice (runs everywhere)


def test_auto_device_is_the_gpu_when_torch_sees_one(monkeypatch):
    _fake_gpu(monkeypatch, present=True)
    assert resolve_device("auto") == torch.device("cuda")
    _fake_gpu(monkeypatch, present=False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_exact_search_follows_the_same_device_rule(monkeypatch):
    from epm_spark.models.index import _torch_device

    _fake_gpu(monkeypatch, present=True)
    assert _torch_device(True) == torch.device("cuda")
    assert _torch_device(False) == torch.device("cpu")
    _fake_gpu(monkeypatch, present=False)
    assert _torch_device(True) == torch.device("cpu")


def test_asking_for_a_gpu_without_one_is_a_clear_error(monkeypatch, tiny_student):
    from epm_spark.models.matcher.student.inference import load_matcher_model

    _fake_gpu(monkeypatch, present=False)
    with pytest.raises(EnvironmentProblem, match="'cuda:1' asked for, but torch sees no CUDA device"):
        resolve_device("cuda:1")
    with pytest.raises(EnvironmentProblem, match="'cuda:1' asked for"):
        load_matcher_model(str(tiny_student), device="cuda:1")


def test_half_precision_on_gpus_bf16_where_supported(monkeypatch):
    gpu = torch.device("cuda")
    _fake_gpu(monkeypatch, bf16=True)
    assert resolve_dtype("auto", gpu) is torch.bfloat16
    assert pick_dtype("auto", gpu) is torch.bfloat16
    assert precision.bf16_available(gpu)
    _fake_gpu(monkeypatch, bf16=False)
    assert resolve_dtype("auto", gpu) is torch.float16
    assert pick_dtype("auto", gpu) is torch.float16
    assert not precision.bf16_available(gpu)
    # A setting that names the dtype wins over the hardware.
    assert resolve_dtype("float32", gpu) is torch.float32 and pick_dtype("float32", gpu) is torch.float32


def test_ranker_autocasts_to_bf16_only_where_it_beats_float32(monkeypatch, tmp_path):
    cpu = torch.device("cpu")
    settings = RankerSettings(backbone=str(save_tiny(tmp_path / "tiny")), batch_size=8, device="cpu")
    trained_bf16 = {}
    for name, flags in BF16_CPUS.items():
        monkeypatch.setattr(precision, "_cpu_flags", lambda flags=flags: flags)
        # The hardware has bf16 either way; only AMX makes autocast pay (precision.py's measurements).
        assert precision.bf16_available(cpu), name
        trained_bf16[name] = fit(MultiTaskRanker.from_backbone(settings), pairs_frame(), settings, max_steps=1)["bf16"]
    assert trained_bf16 == {"avx512_bf16": False, "amx": True}
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"avx2"}))
    assert not precision.bf16_available(cpu) and not precision.bf16_autocast_faster(cpu)
    _fake_gpu(monkeypatch, bf16=True)
    assert precision.bf16_autocast_faster(torch.device("cuda"))
    _fake_gpu(monkeypatch, bf16=False)
    assert not precision.bf16_autocast_faster(torch.device("cuda"))


def test_cross_encoder_autocasts_to_bf16_only_where_it_beats_float32(monkeypatch, tmp_path):
    from cascade_tiny import build_tiny_cross_encoder, split_pairs

    from epm_spark.models.matcher.cascade.cross_encoder import CrossEncoder, CrossEncoderSettings, train_cross_encoder

    _fake_gpu(monkeypatch, present=False)
    settings = CrossEncoderSettings(base=str(build_tiny_cross_encoder(tmp_path / "base")), max_length=48,
                                    batch_size=8, save_steps=100)
    pairs = split_pairs({"train": 2})
    chosen = {}
    for name, flags in BF16_CPUS.items():
        monkeypatch.setattr(precision, "_cpu_flags", lambda flags=flags: flags)
        info = train_cross_encoder(pairs, tmp_path / name, settings, max_steps=1)
        scorer = CrossEncoder.load(tmp_path / name / "model", settings, device="cpu")
        chosen[name] = (info["bf16"], scorer.autocast)
    # Training and scoring alike: float32 on AVX-512 BF16 alone, bf16 autocast with AMX.
    assert chosen == {"avx512_bf16": (False, False), "amx": (True, True)}
    assert not CrossEncoder.load(tmp_path / "amx" / "model", dataclasses.replace(settings, bf16=False), device="cpu").autocast


def test_encoders_stay_float32_on_the_cpu_whatever_its_instructions(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert resolve_dtype("auto", torch.device("cpu")) is torch.float32


def test_student_training_asks_for_bf16_on_the_gpu(monkeypatch):
    from epm_spark.models.matcher.student.training import use_bf16

    _fake_gpu(monkeypatch, present=True, bf16=True)
    assert use_bf16(True) and not use_bf16(False)
    _fake_gpu(monkeypatch, present=True, bf16=False)
    assert not use_bf16(True)


def test_student_uses_bf16_on_the_cpu_only_where_it_beats_float32(monkeypatch, tiny_student):
    from epm_spark.models.matcher.student.inference import load_matcher_model
    from epm_spark.models.matcher.student.training import use_bf16

    _fake_gpu(monkeypatch, present=False)
    chosen = {}
    for name, flags in BF16_CPUS.items():
        monkeypatch.setattr(precision, "_cpu_flags", lambda flags=flags: flags)
        model = load_matcher_model(str(tiny_student), device="cpu")[0]
        chosen[name] = (next(model.parameters()).dtype, use_bf16(True))
    # Inference weights and training autocast alike: float32 with AVX-512 BF16 alone, bf16 with AMX.
    assert chosen == {"avx512_bf16": (torch.float32, False), "amx": (torch.bfloat16, True)}
    assert not use_bf16(False)
    assert next(load_matcher_model(str(tiny_student), device="cpu", dtype="float32")[0].parameters()).dtype \
        is torch.float32


def test_student_weights_load_in_bf16_for_gpu_training_only(monkeypatch):
    from epm_spark.models.matcher.student.training import starting_point

    asked = []

    def load(init, dtype):
        asked.append(dtype)
        return None, None, None

    _fake_gpu(monkeypatch, present=True)
    starting_point("student", bf16=True, load=load)
    starting_point("student", bf16=False, load=load)
    _fake_gpu(monkeypatch, present=False)  # the CPU keeps float32 weights under bf16 autocast
    starting_point("student", bf16=True, load=load)
    assert asked == ["bfloat16", "float32", "float32"]


def test_spark_task_runs_on_the_gpu_spark_scheduled_for_it(monkeypatch):
    pyspark = pytest.importorskip("pyspark")
    from epm_spark.pipeline.catalog.embed import task_device

    _fake_gpu(monkeypatch, present=True)
    gpus = SimpleNamespace(addresses=["3"])
    monkeypatch.setattr(pyspark.TaskContext, "get", staticmethod(lambda: SimpleNamespace(resources=lambda: {"gpu": gpus})))
    assert task_device("auto") == "cuda:3"
    # Spark scheduled no GPU to the task: any GPU torch sees, else the CPU.
    monkeypatch.setattr(pyspark.TaskContext, "get", staticmethod(lambda: SimpleNamespace(resources=lambda: {})))
    assert task_device("auto") == "cuda"
    _fake_gpu(monkeypatch, present=False)
    assert task_device("auto") == "cpu"
    # A device named in the settings is used as it is.
    assert task_device("cuda:1") == "cuda:1"


def test_the_gpu_cluster_config_schedules_gpus_to_tasks():
    from epm_spark.config import load_settings

    conf = load_settings("conf/cluster-gpu.yaml").spark.conf
    assert float(conf["spark.task.resource.gpu.amount"]) <= float(conf["spark.executor.resource.gpu.amount"])
    assert conf["spark.executor.resource.gpu.discoveryScript"].endswith(".sh")


def test_ranker_is_built_on_its_configured_device(monkeypatch, tmp_path):
    from encoder_tiny import save_tiny

    from epm_spark.models.search.ranker import MultiTaskRanker
    from epm_spark.models.search.settings import RankerSettings

    backbone = str(save_tiny(tmp_path / "tiny"))
    assert MultiTaskRanker.from_backbone(RankerSettings(backbone=backbone, device="cpu")).device.type == "cpu"
    _fake_gpu(monkeypatch, present=False)
    with pytest.raises(EnvironmentProblem, match="no CUDA device"):
        MultiTaskRanker.from_backbone(RankerSettings(backbone=backbone, device="cuda"))


# ----------------------------------------------------------------------------- tiny models on a real GPU


@needs_cuda
def test_exact_topk_on_the_gpu_finds_the_cpu_neighbours():
    from epm_spark.models.index import exact_topk

    rng = np.random.default_rng(0)
    corpus = rng.normal(size=(500, 32)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    queries = corpus[:50] + 0.05 * rng.normal(size=(50, 32)).astype(np.float32)
    gpu_scores, gpu_pos = exact_topk(corpus, queries, 5, gpu=True, chunk=16)
    cpu_scores, cpu_pos = exact_topk(corpus, queries, 5, gpu=False, chunk=16)
    assert np.array_equal(gpu_pos[:, 0], np.arange(50)) and np.array_equal(cpu_pos[:, 0], np.arange(50))
    np.testing.assert_allclose(gpu_scores, cpu_scores, atol=5e-3)  # fp16 on the GPU


@needs_cuda
def test_dual_encoder_on_the_gpu_embeds_like_the_cpu(tmp_path):
    from encoder_tiny import save_tiny

    from epm_spark.models.encoder.model import DualEncoder

    folder = save_tiny(tmp_path / "tiny")
    texts = ["sony speaker black 32gb", "apple laptop silver 1tb", "canon camera lens"]
    gpu = DualEncoder.load(folder, device="auto", max_length=16)
    assert next(gpu.parameters()).device.type == "cuda"
    assert next(gpu.parameters()).dtype in (torch.bfloat16, torch.float16)
    cpu = DualEncoder.load(folder, device="cpu", max_length=16)
    a, b = gpu.encode(texts), cpu.encode(texts)
    assert a.dtype == np.float32 and a.shape == b.shape
    assert (np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min() > 0.99


@needs_cuda
def test_cross_encoder_trains_in_bf16_on_the_gpu_and_scores_like_the_cpu(tmp_path):
    from cascade_tiny import build_tiny_cross_encoder, split_pairs

    from epm_spark.models.matcher.cascade.cross_encoder import CrossEncoder, CrossEncoderSettings, train_cross_encoder

    base = build_tiny_cross_encoder(tmp_path / "base")
    settings = CrossEncoderSettings(base=str(base), max_length=48, batch_size=8, save_steps=100)
    pairs = split_pairs({"train": 2})
    info = train_cross_encoder(pairs, tmp_path / "ce", settings, max_steps=4)
    assert info["bf16"] is torch.cuda.is_bf16_supported() and info["steps"] == 4
    gpu = CrossEncoder.load(tmp_path / "ce" / "model", settings, device="auto")
    cpu = CrossEncoder.load(tmp_path / "ce" / "model", settings, device="cpu")
    assert gpu.device.type == "cuda"
    np.testing.assert_allclose(gpu.predict_logits(pairs), cpu.predict_logits(pairs), atol=0.1)


@needs_cuda
def test_student_label_mode_on_the_gpu_agrees_with_the_cpu(tiny_student):
    from epm_spark.models.matcher.settings import InferenceSettings
    from epm_spark.models.matcher.student.inference import Matcher

    pairs = pair_rows(TOY_PAIRS)
    gpu = Matcher.load(str(tiny_student), InferenceSettings(batch_size=3, max_new_tokens=16))
    cpu = Matcher.load(str(tiny_student), InferenceSettings(batch_size=3, max_new_tokens=16, device="cpu"))
    assert gpu.device.type == "cuda"
    np.testing.assert_allclose(gpu.predict_proba(pairs), cpu.predict_proba(pairs), atol=0.02)


@needs_cuda
def test_ranker_trains_on_the_gpu_and_its_losses_fall(tmp_path):
    from encoder_tiny import save_tiny
    from search_tiny import pairs_frame

    from epm_spark.models.search.ranker import MultiTaskRanker
    from epm_spark.models.search.settings import RankerSettings
    from epm_spark.models.search.train import fit

    settings = RankerSettings(backbone=str(save_tiny(tmp_path / "tiny")), batch_size=48, learning_rate=1e-3,
                              head_learning_rate=1e-2, warmup_ratio=0.0, epochs=40)
    model = MultiTaskRanker.from_backbone(settings)
    assert model.device.type == "cuda"
    info = fit(model, pairs_frame(), settings, max_steps=30)
    assert info["bf16"] is torch.cuda.is_bf16_supported()
    first, last = info["loss_history"][0], info["loss_history"][-1]
    assert all(last[t] < first[t] for t in ("click", "cart", "purchase")), info["loss_history"]
    frame = model.score(["sony speaker"] * 2, ["sony speaker black 32gb", "apple tablet"])
    saved = MultiTaskRanker.load(model.save(tmp_path / "multi_task-v1"), device="cpu")
    again = saved.score(["sony speaker"] * 2, ["sony speaker black 32gb", "apple tablet"])
    np.testing.assert_allclose(frame["p_purchase"], again["p_purchase"], rtol=0.05)


@needs_cuda
def test_student_sft_on_the_gpu_trains_an_adapter_on_bf16_weights(tiny_student, tmp_path):
    from safetensors.torch import load_file

    from epm_spark.models.matcher.decision import MatchDecision
    from epm_spark.models.matcher.settings import InferenceSettings, LoraSettings, SFTSettings
    from epm_spark.models.matcher.student.sft import train_sft

    pairs = pair_rows(TOY_PAIRS)
    decisions = [MatchDecision("match" if y else "no_match", 0.9, {"brand": "same" if y else "different"}, (),
                               "Same." if y else "Other.").to_json() for y in pairs["label"]]
    card = train_sft(pairs.assign(decision_json=decisions), tmp_path / "sft", student=str(tiny_student),
                     inference=InferenceSettings(batch_size=4, validation_pairs=4, max_new_tokens=32), valid=pairs,
                     settings=SFTSettings(max_steps=2, batch_size=2, gradient_accumulation=1, warmup_ratio=0.0,
                                          learning_rate=5e-3, lora=LoraSettings(r=4, alpha=8), logging_steps=1))
    assert card.training["device"].startswith("cuda") and card.training["steps"] == 2
    lora_b = {k: v for k, v in load_file(str(tmp_path / "sft" / "adapters/0-sft" / "adapter_model.safetensors")).items()
              if "lora_B" in k}
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b.values()), "LoRA B starts at zero; a step moves it"
