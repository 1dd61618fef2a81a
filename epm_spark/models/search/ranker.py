"""The multi-task product ranker: one fine-tuned encoder over (query, listing), one head per signal.

Seed: "Multi-task learning with BERT for product ranking" (the suite's third paper). The
query and the listing text go through the encoder together (``[CLS] query [SEP] listing
[SEP]``, a cross-encoder: full attention between query words and title words); the token
states are mean-pooled into ``h``, and each task ``t`` has its own small tower:

    z_t = w2_t . GELU(W1_t h + b1_t) + b2_t

With the retrieval similarity feature (``ranker.similarity_feature``, the default) each head
also reads ``r``, the cosine of query and listing under the dual-encoder that retrieves the
candidates, and with ``ranker.lexical_features`` (the default) ``c``, how much of the query the
listing's text covers (word and character-trigram coverage, :mod:`.coverage`):

    z_t = w2_t . GELU(W1_t h + b1_t) + b2_t + a_t r + u_t . c

Training starts every head at a logistic regression of its signal on ``r`` and ``c`` (the
bi-encoder's and a term-overlap ranking), so the cross-encoder's tower learns what they miss
rather than relearning retrieval from a few thousand pairs.

Independent heads give ``p_t = s(z_t)`` (``s`` the logistic function), each the probability
of the signal per impression. With ``chain`` the heads follow the funnel purchase c cart c
click (ESMM, Ma et al. 2018): ``p_click = s(z_click)``, ``p_cart = p_click s(z_cart)``,
``p_purchase = p_cart s(z_purchase)``.

Loss (:mod:`.losses`, :class:`~.losses.NormalisedBinomialLoss`): for pair ``i`` shown ``n_i`` times with ``k_ti`` events of
task ``t``, the binomial negative log-likelihood per impression, divided by the entropy of
the task's base rate so that a task with rare events is not drowned by a frequent one
(normalised cross-entropy, He et al. 2014), then weighted and summed:

    L_t = -sum_i [k_ti log p_ti + (n_i - k_ti) log(1 - p_ti)] / sum_i n_i
    H_t = -[q_t log q_t + (1 - q_t) log(1 - q_t)],  q_t = sum_i k_ti / sum_i n_i  (training set)
    L   = sum_t w_t L_t / H_t

With ``ranker.listwise_weight`` > 0 the batches hold whole queries and each task adds a listwise
term (:class:`~.losses.ListNetLoss`, ListNet's top-one cross-entropy, Cao et al. 2007):
over the listings ``i`` of a query ``g`` with at least one event, the observed rates
``y_ti = (k_ti / n_i) / sum_{j in g} k_tj / n_j`` against the softmax of the head's log-probabilities,
divided by ``log |g|`` (the loss of a uniform ranking) so that long and short lists weigh alike:

    LL_t = mean_g [ -sum_{i in g} y_ti log softmax_g(log p_t)_i / log |g| ]
    L    = sum_t w_t (L_t / H_t + lambda LL_t)

A model folder (``models/ranker/<name>-v<N>/``) holds ``ranker.json`` (the card), the
fine-tuned encoder in ``encoder/`` and the towers in ``heads.safetensors``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from epm_spark.errors import InputError
from epm_spark.models.precision import bf16_autocast_faster, resolve_device
from epm_spark.models.search.coverage import COVERAGE_FEATURES, query_coverage
from epm_spark.models.search.losses import event_log_probabilities
from epm_spark.models.search.settings import TASKS, RankerSettings
from epm_spark.models.text import listing_text

__all__ = ["MultiTaskRanker", "RankerCard", "product_texts", "read_card", "blend", "CARD_FILE", "variant_name"]

log = logging.getLogger(__name__)

CARD_FILE = "ranker.json"
# heads.safetensors keys of the similarity weights a_t and coverage weights u_t (the towers' keys are their own).
_SIMILARITY = "similarity."
_LEXICAL = "lexical."
CARD_FORMAT = 1


def variant_name(tasks: Sequence[str], chain: bool) -> str:
    """multi_task, multi_task_chain, click_only, purchase_only, click_cart ..."""
    if list(tasks) == list(TASKS):
        return "multi_task_chain" if chain else "multi_task"
    return f"{tasks[0]}_only" if len(tasks) == 1 else "_".join(tasks)


@dataclass
class RankerCard:
    """What a ranker folder holds and how it was made."""

    name: str
    tasks: list[str]
    chain: bool
    backbone: str
    max_length: int
    tower_hidden: int
    with_price: bool
    blend: dict[str, float]
    task_weights: dict[str, float]
    # model_version of the dual-encoder whose cosine the heads read; "" when they read none.
    similarity_encoder: str = ""
    # The coverage features (COVERAGE_FEATURES) the heads read; empty when they read none.
    lexical: list[str] = field(default_factory=list)
    base_rates: dict[str, float] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    model_version: str = ""
    format: int = CARD_FORMAT

    def check_similarity_encoder(self, version: str, remedy: str) -> None:
        """Refuse similarities from another dual-encoder than the one the heads were trained on."""
        if self.similarity_encoder and self.similarity_encoder != version:
            raise InputError(f"ranker {self.model_version or self.name} reads the retrieval similarity of "
                             f"{self.similarity_encoder}, not of {version}; {remedy}")


def read_card(folder: str | os.PathLike[str]) -> RankerCard:
    path = Path(folder) / CARD_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{folder} is not a ranker folder (no {CARD_FILE}); train one with epm-spark train-ranker") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from None
    if data.get("format") != CARD_FORMAT:
        raise InputError(f"{path}: card format {data.get('format')!r} is not {CARD_FORMAT}")
    unknown = sorted(set(data) - set(RankerCard.__dataclass_fields__))
    if unknown:
        raise InputError(f"{path}: unknown card keys {unknown}")
    if data.get("lexical") and data["lexical"] != list(COVERAGE_FEATURES):
        raise InputError(f"{path}: the heads read coverage features {data['lexical']}; this version computes "
                         f"{list(COVERAGE_FEATURES)}")
    return RankerCard(**data)


def product_texts(products: pd.DataFrame, with_price: bool) -> list[str]:
    """Each listing as the ranker reads it (the project's one listing renderer)."""
    return [listing_text(r, with_price=with_price) for r in products.to_dict("records")]


class MultiTaskRanker(torch.nn.Module):
    """Encoder + one tower per task. Build with :meth:`from_backbone` or :meth:`load`."""

    def __init__(self, encoder: torch.nn.Module, tokenizer: Any, card: RankerCard) -> None:
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.card = card
        hidden = encoder.config.hidden_size
        self.towers = torch.nn.ModuleDict({
            t: torch.nn.Sequential(torch.nn.Dropout(0.1), torch.nn.Linear(hidden, card.tower_hidden), torch.nn.GELU(),
                                   torch.nn.Linear(card.tower_hidden, 1))
            for t in card.tasks})
        # a_t and u_t of the module docstring; zero (and unused) without those features.
        self.similarity_weights = torch.nn.ParameterDict({t: torch.nn.Parameter(torch.zeros(())) for t in card.tasks})
        self.lexical_weights = torch.nn.ParameterDict(
            {t: torch.nn.Parameter(torch.zeros(len(card.lexical))) for t in card.tasks})

    @property
    def reads_similarity(self) -> bool:
        return bool(self.card.similarity_encoder)

    @property
    def reads_lexical(self) -> bool:
        return bool(self.card.lexical)

    def lexical_features(self, queries: Sequence[str], texts: Sequence[str]) -> torch.Tensor | None:
        """The coverage features of each (query, listing text) when the heads read them, else None."""
        return torch.from_numpy(query_coverage(queries, texts)) if self.reads_lexical else None

    def head_parameters(self) -> list[torch.nn.Parameter]:
        return [*self.towers.parameters(), *self.similarity_weights.parameters(), *self.lexical_weights.parameters()]

    # ------------------------------------------------------------------ building

    @classmethod
    def from_backbone(cls, settings: RankerSettings, backbone: str | None = None,
                      similarity_encoder: str = "") -> MultiTaskRanker:
        """A fresh ranker on ``settings.device``; ``similarity_encoder``: the dual-encoder version whose
        cosine the heads read."""
        from transformers import AutoModel, AutoTokenizer

        from epm_spark.models.encoder.model import resolve_backbone
        from epm_spark.models.weights import offline

        offline()
        name = backbone or settings.backbone
        path = resolve_backbone(name)
        torch.manual_seed(settings.seed)
        try:
            encoder = AutoModel.from_pretrained(path, use_safetensors=True, trust_remote_code=False)
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot load a ranker backbone from {path}: {exc}") from None
        card = RankerCard(name=variant_name(settings.tasks, settings.chain), tasks=list(settings.tasks),
                          chain=settings.chain, backbone=str(name), max_length=settings.max_length,
                          tower_hidden=settings.tower_hidden, with_price=settings.with_price,
                          blend=dict(settings.blend), task_weights=dict(settings.task_weights),
                          similarity_encoder=similarity_encoder,
                          lexical=list(COVERAGE_FEATURES) if settings.lexical_features else [])
        return cls(encoder, tokenizer, card).to(resolve_device(settings.device))

    @classmethod
    def load(cls, folder: str | os.PathLike[str], device: str = "auto") -> MultiTaskRanker:
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        from epm_spark.models.weights import offline

        offline()
        folder = Path(folder)
        card = read_card(folder)
        encoder = AutoModel.from_pretrained(folder / "encoder", use_safetensors=True, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(folder / "encoder", trust_remote_code=False)
        model = cls(encoder, tokenizer, card)
        heads = load_file(str(folder / "heads.safetensors"))
        extra = (_SIMILARITY, _LEXICAL)
        model.towers.load_state_dict({k: v for k, v in heads.items() if not k.startswith(extra)})
        for prefix, weights, strict in ((_SIMILARITY, model.similarity_weights, model.reads_similarity),
                                        (_LEXICAL, model.lexical_weights, model.reads_lexical)):
            weights.load_state_dict({k[len(prefix):]: v for k, v in heads.items() if k.startswith(prefix)},
                                    strict=strict)
        return model.to(resolve_device(device)).eval()

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write encoder, towers and card into ``folder`` (aside first, then renamed: never half a folder)."""
        from safetensors.torch import save_file

        final = Path(folder)
        tmp = final.with_name(final.name + f".tmp-{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(tmp / "encoder", safe_serialization=True)
        self.tokenizer.save_pretrained(tmp / "encoder")
        heads = {**self.towers.state_dict(),
                 **{_SIMILARITY + k: v for k, v in self.similarity_weights.state_dict().items()},
                 **{_LEXICAL + k: v for k, v in self.lexical_weights.state_dict().items() if self.reads_lexical}}
        save_file({k: v.detach().cpu().contiguous() for k, v in heads.items()}, str(tmp / "heads.safetensors"))
        self.card.model_version = f"ranker-{final.name}"
        (tmp / CARD_FILE).write_text(json.dumps(asdict(self.card), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if final.exists():
            import shutil

            shutil.rmtree(final)
        tmp.rename(final)
        return final

    # ------------------------------------------------------------------ forward

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def tokenize(self, queries: Sequence[str], texts: Sequence[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(list(queries), list(texts), truncation="only_second" if self._fits(queries) else True,
                               max_length=self.card.max_length, padding=True, return_tensors="pt")
        return {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    def _fits(self, queries: Sequence[str]) -> bool:
        # Queries are short; a pathological long one would make "only_second" fail, so fall back.
        return all(len(q) < self.card.max_length * 2 for q in queries)

    def forward(self, similarity: torch.Tensor | None = None, lexical: torch.Tensor | None = None,
                **batch: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        logits = {t: tower(pooled).squeeze(-1) for t, tower in self.towers.items()}
        if self.reads_similarity:
            if similarity is None:
                raise InputError(f"ranker {self.card.name} reads the retrieval similarity of "
                                 f"{self.card.similarity_encoder}; none was given")
            logits = {t: z.float() + self.similarity_weights[t] * similarity.float() for t, z in logits.items()}
        if self.reads_lexical:
            if lexical is None:
                raise InputError(f"ranker {self.card.name} reads the coverage features {self.card.lexical}; "
                                 "none were given")
            logits = {t: z.float() + lexical.float() @ self.lexical_weights[t] for t, z in logits.items()}
        return logits

    def probabilities(self, logits: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {t: lp.exp() for t, lp in event_log_probabilities(logits, self.card.chain).items()}

    @torch.inference_mode()
    def score(self, queries: Sequence[str], texts: Sequence[str], similarity: Sequence[float] | None = None, *,
              batch_size: int = 64) -> pd.DataFrame:
        """``p_click, p_cart, p_purchase`` (NaN for a task the model has no head for) and the blended ``score``.

        ``similarity``: each pair's retrieval cosine, required when the card names a similarity encoder."""
        self.eval()
        n = len(queries)
        if n != len(texts):
            raise InputError(f"{n} queries for {len(texts)} listings")
        sims = None
        if self.reads_similarity:
            if similarity is None or len(similarity) != n:
                raise InputError(f"ranker {self.card.name} needs the retrieval similarity of each pair "
                                 f"(dual-encoder {self.card.similarity_encoder})")
            sims = torch.tensor(np.asarray(similarity, dtype=np.float32))
        lexical = self.lexical_features(queries, texts)
        out = {t: np.full(n, np.nan) for t in TASKS}
        autocast = bf16_autocast_faster(self.device)
        # Similar lengths batch together: less padding, the same answers.
        order = np.argsort([len(q) + len(t) for q, t in zip(queries, texts)], kind="stable")
        for s in range(0, n, batch_size):
            idx = order[s:s + batch_size]
            batch = self.tokenize([queries[i] for i in idx], [texts[i] for i in idx])
            if sims is not None:
                batch["similarity"] = sims[torch.as_tensor(idx)].to(self.device)
            if lexical is not None:
                batch["lexical"] = lexical[torch.as_tensor(idx)].to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = self(**batch)
            for t, p in self.probabilities(logits).items():
                out[t][idx] = p.float().cpu().numpy()
        frame = pd.DataFrame({f"p_{t}": out[t] for t in TASKS})
        frame["score"] = blend(frame, self.card.blend)
        return frame


def blend(frame: pd.DataFrame, weights: Mapping[str, float]) -> np.ndarray:
    """Weighted sum of the heads present (weights renormalised over them; equal weights when all are 0)."""
    present = [t for t in TASKS if frame[f"p_{t}"].notna().any()]
    w = np.array([weights.get(t, 0.0) for t in present], dtype=float)
    if w.sum() <= 0:
        w = np.ones(len(present))
    w /= w.sum()
    return sum(wi * frame[f"p_{t}"].to_numpy(dtype=float) for wi, t in zip(w, present))
