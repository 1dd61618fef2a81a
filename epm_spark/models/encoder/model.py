"""The Siamese dual-encoder: one shared backbone embeds both sides of a match.

Seed: "Semantic Retrieval for Product Search in E-Commerce" (Siamese LLM dual-encoder).
Any Hugging Face encoder folder (BERT, MiniLM, e5, bge ...) or causal LM folder (Qwen,
SmolLM, Mistral ...) can be the backbone:

* encoders are mean-pooled over their tokens (sentence-transformers' recipe);
* causal LMs are pooled at the last token (only it has seen the whole text), and
  queries get an instruction prefix so one backbone can tell the two roles apart.

Vectors are L2-normalised, so inner product = cosine similarity (what FAISS indexes).

    encoder = DualEncoder.load("packaged:minilm")
    vectors = encoder.encode(["sony turntable pslx350h", "Sony PS-LX350H belt-drive turntable"])
    vectors @ vectors.T
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from epm_spark.errors import InputError
from epm_spark.models.encoder.config import EncoderSettings, TextSettings
from epm_spark.models.precision import resolve_device
from epm_spark.models.text import listing_text
from epm_spark.models.weights import PACKAGED_ENCODER, offline, packaged_encoder_dir
from epm_spark.progress import progress

__all__ = ["DualEncoder", "encoder_identity", "resolve_backbone", "resolve_dtype", "ENCODER_CONFIG"]

log = logging.getLogger(__name__)

# Written beside the backbone's own config: what turns its hidden states into a listing vector.
ENCODER_CONFIG = "encoder_config.json"
# Inputs longer than this many batches get a progress bar.
_PROGRESS_BATCHES = 8


def resolve_backbone(backbone: str | os.PathLike[str]) -> Path:
    """The folder of a backbone setting: ``packaged:minilm`` or a model folder."""
    if str(backbone) == PACKAGED_ENCODER:
        return packaged_encoder_dir()
    folder = Path(backbone)
    if not folder.is_dir():
        raise InputError(
            f"encoder backbone {str(backbone)!r} is neither {PACKAGED_ENCODER} nor a model folder; "
            "models are never downloaded at run time"
        )
    if not any(folder.glob("*.safetensors")):
        raise InputError(f"{folder} holds no *.safetensors weights (only safetensors are loaded)")
    return folder


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Half precision on GPUs (bf16 where supported), float32 on CPU where half is slow."""
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]


def _is_causal(config: Any) -> bool:
    architectures = getattr(config, "architectures", None) or []
    return any(a.endswith("ForCausalLM") for a in architectures) or bool(getattr(config, "is_decoder", False))


class DualEncoder(torch.nn.Module):
    """Shared-weight (Siamese) text encoder producing L2-normalised listing vectors.

    Build it with :meth:`load` (a folder or ``packaged:minilm``) or :meth:`from_settings`;
    the constructor takes an already loaded backbone and tokenizer (tests build tiny ones).
    """

    def __init__(self, backbone: torch.nn.Module, tokenizer: Any, *, pooling: str = "auto",
                 max_length: int = 64, query_instruction: str = "", causal: bool | None = None,
                 text: TextSettings | Mapping[str, Any] | None = None, name: str = "encoder") -> None:
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.causal = _is_causal(backbone.config) if causal is None else causal
        if pooling == "auto":
            pooling = "last_token" if self.causal else "mean"
        if pooling not in ("mean", "last_token"):
            raise InputError(f"pooling must be auto, mean or last_token, got {pooling!r}")
        self.pooling = pooling
        self.max_length = max_length
        self.query_instruction = query_instruction if self.causal else ""
        self.text = text if isinstance(text, TextSettings) else TextSettings(**dict(text or {}))
        self.name = name
        self._version: str | None = None
        if self.pooling == "last_token":
            # Right padding puts every text's last token at (length - 1), whatever the tokenizer's default.
            self.tokenizer.padding_side = "right"
        if self.tokenizer.pad_token is None:
            if self.tokenizer.eos_token is None:
                raise InputError("the backbone's tokenizer has neither a pad nor an eos token")
            self.tokenizer.pad_token = self.tokenizer.eos_token

    # ------------------------------------------------------------------ building

    @classmethod
    def from_settings(cls, settings: EncoderSettings, *, backbone: str | None = None,
                      device: str | None = None, for_training: bool = False) -> "DualEncoder":
        """The encoder a settings section describes; ``backbone`` replaces ``settings.backbone``.

        A folder written by :meth:`save` keeps its own pooling, max length and text options.
        ``for_training`` loads float32 weights (accelerate handles mixed precision) and adds
        LoRA adapters when the settings ask for them.
        """
        encoder = cls.load(backbone or settings.backbone, device=device or settings.device,
                           dtype="float32" if for_training else settings.dtype,
                           pooling=settings.pooling, max_length=settings.max_length,
                           query_instruction=settings.query_instruction, text=settings.text)
        if for_training and settings.gradient_checkpointing:
            encoder.backbone.gradient_checkpointing_enable()
        if for_training and settings.lora:
            encoder.add_lora(settings.lora_rank, settings.lora_alpha, settings.lora_dropout)
        return encoder

    @classmethod
    def load(cls, folder: str | os.PathLike[str] = PACKAGED_ENCODER, *, device: str = "auto",
             dtype: str = "auto", pooling: str = "auto", max_length: int = 64,
             query_instruction: str = "", text: TextSettings | None = None) -> "DualEncoder":
        """Load a backbone folder (or ``packaged:minilm``); a saved encoder's own options win."""
        offline()
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        path = resolve_backbone(folder)
        saved: dict[str, Any] = {}
        if (path / ENCODER_CONFIG).exists():
            saved = json.loads((path / ENCODER_CONFIG).read_text(encoding="utf-8"))
        target = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, target)
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
        try:
            backbone = AutoModel.from_pretrained(path, dtype=torch_dtype, use_safetensors=True,
                                                 trust_remote_code=False)
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot load an encoder backbone from {path}: {exc}") from None
        name = "all-minilm-l6-v2" if str(folder) == PACKAGED_ENCODER else path.resolve().name
        encoder = cls(backbone, tokenizer,
                      pooling=saved.get("pooling", pooling),
                      max_length=int(saved.get("max_length", max_length)),
                      query_instruction=saved.get("query_instruction", query_instruction),
                      causal=saved.get("causal", _is_causal(config)),
                      text=saved.get("text") or text, name=name)
        encoder._version = f"{name}-{_folder_digest(path, encoder._options())}"
        return encoder.to(target).eval()

    def add_lora(self, rank: int = 16, alpha: int = 32, dropout: float = 0.05) -> None:
        """Train low-rank adapters instead of the whole backbone (large LLM backbones)."""
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear")
        self.backbone = get_peft_model(self.backbone, config)
        self._version = None

    # ------------------------------------------------------------------ forward

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def prepare(self, texts: Sequence[str], *, query: bool = False) -> list[str]:
        """The exact strings the tokenizer sees: instruction prefix and EOS for causal backbones."""
        if not self.causal:
            return list(texts)
        prefix = self.query_instruction if query else ""
        eos = self.tokenizer.eos_token or ""
        return [f"{prefix}{t}{eos}" for t in texts]

    def tokenize(self, texts: Sequence[str], *, query: bool = False) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(self.prepare(texts, query=query), padding=True, truncation=True,
                               max_length=self.max_length, return_tensors="pt")
        return {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "mean":
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        last = attention_mask.sum(1) - 1
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Unit-length vectors for a tokenized batch (differentiable: training calls this)."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.backbone(**kwargs).last_hidden_state
        return F.normalize(self.pool(hidden, attention_mask).float(), dim=-1)

    def embed(self, texts: Sequence[str], *, query: bool = False, chunk_size: int = 32,
              forward: Any = None) -> torch.Tensor:
        """Differentiable vectors of one training batch, in input order.

        The texts go through the backbone in chunks of similar token length, so a batch of
        short titles is not padded to its one long title; ``forward`` is the module to call
        (the accelerate-wrapped model in distributed training, where gradients must sync).
        """
        forward = forward or self
        encoded = self.tokenizer(self.prepare(texts, query=query), truncation=True, max_length=self.max_length,
                                 padding=False)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
        order = sorted(range(len(texts)), key=lambda i: len(encoded["input_ids"][i]))
        parts, placed = [], []
        for start in range(0, len(order), chunk_size):
            idx = order[start:start + chunk_size]
            batch = self.tokenizer.pad([{k: encoded[k][i] for k in keys} for i in idx], padding=True,
                                       return_tensors="pt")
            parts.append(forward(**{k: v.to(self.device) for k, v in batch.items() if k in keys}))
            placed.extend(idx)
        vectors = torch.cat(parts)
        inverse = torch.empty(len(placed), dtype=torch.long, device=vectors.device)
        inverse[torch.tensor(placed, device=vectors.device)] = torch.arange(len(placed), device=vectors.device)
        return vectors[inverse]

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 128, *, query: bool = False,
               show_progress: bool | None = None) -> np.ndarray:
        """Unit-length float32 vectors, one row per text, in input order.

        Texts are tokenized once and batched by token length, so a batch pads to its own
        longest text instead of the corpus's.
        """
        if isinstance(texts, str):
            raise InputError("encode() takes a list of texts, not one string")
        n = len(texts)
        width = self.embedding_dim
        if n == 0:
            return np.zeros((0, width), dtype=np.float32)
        was_training = self.training
        self.eval()
        encoded = self.tokenizer(self.prepare(texts, query=query), truncation=True,
                                 max_length=self.max_length, padding=False)
        lengths = np.fromiter((len(ids) for ids in encoded["input_ids"]), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable")
        out = np.empty((n, width), dtype=np.float32)
        starts = range(0, n, batch_size)
        if show_progress is None:
            show_progress = len(starts) > _PROGRESS_BATCHES
        if show_progress:
            starts = progress(starts, desc=f"encoding {n} texts", unit="batch")
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
        for start in starts:
            idx = order[start:start + batch_size]
            features = [{k: encoded[k][i] for k in keys} for i in idx]
            batch = self.tokenizer.pad(features, padding=True, return_tensors="pt")
            batch = {k: v.to(self.device) for k, v in batch.items() if k in keys}
            out[idx] = self(**batch).cpu().numpy()
        self.train(was_training)
        return out

    def listing_texts(self, listings: pd.DataFrame | Sequence[Mapping[str, Any]]) -> list[str]:
        """Listings (``products`` rows) as text, rendered with this encoder's text options."""
        records = listings.to_dict("records") if isinstance(listings, pd.DataFrame) else listings
        return [listing_text(r, attributes=self.text.attributes, description_chars=self.text.description_chars,
                             with_price=self.text.with_price) for r in records]

    def encode_listings(self, listings: pd.DataFrame, batch_size: int = 128, *, query: bool = False) -> np.ndarray:
        return self.encode(self.listing_texts(listings), batch_size, query=query)

    @property
    def embedding_dim(self) -> int:
        config = self.backbone.config
        return int(getattr(config, "hidden_size", None) or getattr(config, "d_model"))

    # ------------------------------------------------------------------ persistence

    @property
    def model_version(self) -> str:
        """Stable id of these weights and options: name plus a short hash (stored with every vector)."""
        if self._version is None:
            digest = hashlib.sha256(json.dumps(self._options(), sort_keys=True).encode())
            for key, tensor in sorted(self.backbone.state_dict().items()):
                digest.update(key.encode())
                digest.update(tensor.detach().float().cpu().numpy().tobytes())
            self._version = f"{self.name}-{digest.hexdigest()[:12]}"
        return self._version

    def weights_changed(self) -> None:
        """Forget the cached version after the weights were trained in place."""
        self._version = None

    def _options(self) -> dict[str, Any]:
        return _options(self.pooling, self.max_length, self.causal, self.query_instruction, self.text)

    def save(self, folder: str | os.PathLike[str], card: Mapping[str, Any] | None = None) -> Path:
        """Write a self-contained model folder: safetensors, tokenizer, configs, optional card.

        LoRA adapters are merged into a copy of the backbone, so the folder loads like any model.
        """
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        backbone = self.backbone
        if hasattr(backbone, "merge_and_unload"):
            backbone = copy.deepcopy(backbone).merge_and_unload()
        backbone.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        (path / ENCODER_CONFIG).write_text(json.dumps(self._options(), indent=2, sort_keys=True), encoding="utf-8")
        if card is not None:
            (path / "model_card.json").write_text(json.dumps(card, indent=2, sort_keys=True, default=str),
                                                  encoding="utf-8")
        self.name = path.resolve().name
        self._version = f"{self.name}-{_folder_digest(path, self._options())}"
        return path


def _options(pooling: str, max_length: int, causal: bool, query_instruction: str,
             text: TextSettings) -> dict[str, Any]:
    """What turns a backbone's hidden states into a listing vector (hashed into the model version)."""
    return {"pooling": pooling, "max_length": max_length, "causal": causal, "query_instruction": query_instruction,
            "text": {"attributes": list(text.attributes), "description_chars": text.description_chars,
                     "with_price": text.with_price}}


def encoder_identity(backbone: str | os.PathLike[str], settings: EncoderSettings) -> tuple[str, TextSettings]:
    """The ``model_version`` and text options :meth:`DualEncoder.load` would give, without loading weights.

    The Spark embed job needs both on the driver (to find listings whose vectors are stale)
    while only the executors load the model.
    """
    offline()
    from transformers import AutoConfig

    path = resolve_backbone(backbone)
    saved: dict[str, Any] = {}
    if (path / ENCODER_CONFIG).exists():
        saved = json.loads((path / ENCODER_CONFIG).read_text(encoding="utf-8"))
    causal = saved.get("causal", _is_causal(AutoConfig.from_pretrained(path, trust_remote_code=False)))
    pooling = saved.get("pooling", settings.pooling)
    if pooling == "auto":
        pooling = "last_token" if causal else "mean"
    text = TextSettings(**saved["text"]) if saved.get("text") else settings.text
    instruction = saved.get("query_instruction", settings.query_instruction) if causal else ""
    options = _options(pooling, int(saved.get("max_length", settings.max_length)), causal, instruction, text)
    name = "all-minilm-l6-v2" if str(backbone) == PACKAGED_ENCODER else path.resolve().name
    return f"{name}-{_folder_digest(path, options)}", text


def _folder_digest(path: Path, options: Mapping[str, Any]) -> str:
    """Short hash of a model folder's weights and the options that turn text into vectors."""
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for file in sorted(path.glob("*.safetensors")):
        digest.update(file.name.encode())
        with open(file, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:12]
