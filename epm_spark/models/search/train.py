"""Training the ranker on engagement aggregated per (query, listing).

Events become one row per (query, listing): impressions ``n`` and the clicks, carts and
purchases among them. Queries are split by a hash of their text
(:func:`~epm_spark.models.search.queries.query_split`), so no query of the test split is
ever seen in training. The default budget takes the listings of at most
``ranker.max_train_queries`` training queries (about 14 listings each).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from epm_spark.errors import InputError
from epm_spark.models.precision import bf16_autocast_faster
from epm_spark.models.search.losses import ListNetLoss, NormalisedBinomialLoss, base_entropy
from epm_spark.models.search.queries import query_split
from epm_spark.models.search.ranker import MultiTaskRanker, product_texts
from epm_spark.models.search.settings import RankerSettings
from epm_spark.progress import progress

__all__ = ["aggregate_events", "with_texts", "training_pairs", "fit", "COUNT_COLUMNS"]

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "state.pt"

# Task -> its count column in aggregated engagement.
COUNT_COLUMNS = {"click": "clicks", "cart": "carts", "purchase": "purchases"}


def aggregate_events(events: pd.DataFrame) -> pd.DataFrame:
    """``query, product_id, impressions, clicks, carts, purchases`` from ``search_events`` rows."""
    if events.empty:
        raise InputError("search_events holds no events; run generate-search-log or ingest-events first")
    e = events[events["impressed"].astype(bool)]
    agg = (e.assign(clicks=e["clicked"].astype(int), carts=e["added_to_cart"].astype(int),
                    purchases=e["purchased"].astype(int), impressions=1)
           .groupby(["query", "product_id"], as_index=False)[["impressions", "clicks", "carts", "purchases"]].sum())
    return agg


def with_texts(agg: pd.DataFrame, products: pd.DataFrame, with_price: bool) -> pd.DataFrame:
    """Add each listing's ranker text; pairs whose listing left the catalog are dropped (and said so)."""
    texts = pd.DataFrame({"product_id": products["product_id"].astype(str),
                          "text": product_texts(products, with_price)}).drop_duplicates("product_id")
    out = agg.merge(texts, on="product_id", how="inner")
    lost = len(agg) - len(out)
    if lost:
        log.warning("%d (query, listing) pairs name listings not in the catalog; left out", lost)
    return out


def training_pairs(agg: pd.DataFrame, settings: RankerSettings, *, valid_share: float = 0.1,
                   test_share: float = 0.2, split: str = "train", max_queries: int | None = None) -> pd.DataFrame:
    """The pairs of ``split``'s queries, at most ``max_queries`` of them (a seeded random choice)."""
    splits = {q: query_split(q, valid_share, test_share) for q in agg["query"].unique()}
    chosen = sorted(q for q, s in splits.items() if s == split)
    if not chosen:
        raise InputError(f"no query of the {split} split in the events")
    if max_queries is not None and len(chosen) > max_queries:
        rng = np.random.default_rng(settings.seed)
        chosen = sorted(rng.choice(chosen, size=max_queries, replace=False).tolist())
    return agg[agg["query"].isin(set(chosen))].reset_index(drop=True)


def _conditional_counts(pairs: pd.DataFrame, task: str, chain: bool) -> tuple[np.ndarray, np.ndarray]:
    """(trials, events) of a head: impressions and its events, or under the chain the previous step's events."""
    previous = {"click": "impressions", "cart": "clicks", "purchase": "carts"}[task] if chain else "impressions"
    return pairs[previous].to_numpy(dtype=float), pairs[COUNT_COLUMNS[task]].to_numpy(dtype=float)


def _start_heads(model: MultiTaskRanker, pairs: pd.DataFrame, lexical: torch.Tensor | None
                 ) -> dict[str, dict[str, float]] | None:
    """Where each head starts: the first steps then learn relevance instead of how rare purchases are.

    Without pair features, the output bias is the logit of the head's base rate (its conditional
    rate under the chain). With the retrieval similarity and/or the coverage features, the head is
    a binomial logistic regression of its signal on them: the bias its intercept, ``a_t`` and
    ``u_t`` its slopes; returns those per task."""
    from sklearn.linear_model import LogisticRegression

    columns, names = [], []
    if model.reads_similarity:
        columns.append(pairs["similarity"].to_numpy(dtype=float)[:, None])
        names.append("similarity")
    if lexical is not None:
        columns.append(lexical.numpy().astype(float))
        names += model.card.lexical
    x = np.hstack(columns) if columns else None
    fitted = {}
    for t, tower in model.towers.items():
        trials, events = _conditional_counts(pairs, t, model.card.chain)
        slopes = np.zeros(len(names))
        if x is None:
            q = min(max(events.sum() / trials.sum(), 1e-6), 1 - 1e-6)
            intercept = math.log(q / (1 - q))
        else:
            xx = np.vstack([x, x])
            y = np.concatenate([np.ones(len(x)), np.zeros(len(x))])
            weight = np.concatenate([events, trials - events])
            keep = weight > 0
            lr = LogisticRegression(C=1e4).fit(xx[keep], y[keep], sample_weight=weight[keep])
            intercept, slopes = float(lr.intercept_[0]), lr.coef_[0]
            fitted[t] = {"intercept": round(intercept, 4), **{n: round(float(v), 4) for n, v in zip(names, slopes)}}
        with torch.no_grad():
            tower[-1].bias.fill_(intercept)
            if model.reads_similarity:
                model.similarity_weights[t].fill_(float(slopes[0]))
            if lexical is not None:
                model.lexical_weights[t].copy_(torch.as_tensor(slopes[-lexical.shape[1]:], dtype=torch.float32))
    return fitted or None


def freeze_lower_layers(model: MultiTaskRanker, train_layers: int) -> int:
    """Freeze the embeddings and all but the top ``train_layers`` layers; returns the layers left trainable."""
    layers = getattr(getattr(model.encoder, "encoder", None), "layer", None)
    if train_layers <= 0 or layers is None or train_layers >= len(layers):
        return len(layers) if layers is not None else 0
    for module in (model.encoder.embeddings, *layers[: len(layers) - train_layers]):
        for p in module.parameters():
            p.requires_grad_(False)
    return train_layers


def _pair_batches(n: int, batch_size: int, rng: np.random.Generator):
    """Index arrays of ``batch_size`` pairs, each epoch a fresh permutation."""
    order = np.array([], dtype=int)
    while True:
        if len(order) < batch_size:
            order = np.concatenate([order, rng.permutation(n)])
        idx, order = order[:batch_size], order[batch_size:]
        yield idx


def _query_batches(pairs: pd.DataFrame, batch_size: int, rng: np.random.Generator):
    """Index arrays of whole queries (for the listwise term), about ``batch_size`` pairs each."""
    groups = list(pairs.groupby("query", sort=True).indices.values())
    while True:
        idx: list[np.ndarray] = []
        size = 0
        for g in rng.permutation(len(groups)):
            idx.append(groups[g])
            size += len(groups[g])
            if size >= batch_size:
                yield np.concatenate(idx)
                idx, size = [], 0
        if idx:
            yield np.concatenate(idx)


def _plan_digest(pairs: pd.DataFrame, settings: RankerSettings, tasks: list[str], steps: int) -> str:
    """What a checkpoint must share with a run to be resumed by it: the pairs, settings and plan."""
    h = hashlib.sha1(json.dumps([dataclasses.asdict(settings), tasks, steps], sort_keys=True, default=str).encode())
    h.update(pd.util.hash_pandas_object(pairs, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def _load_checkpoint(folder: Path, digest: str) -> dict[str, Any] | None:
    file = folder / CHECKPOINT_FILE
    if not file.exists():
        return None
    state = torch.load(file, map_location="cpu", weights_only=False)
    if state.get("digest") != digest:
        log.warning("ranker checkpoint %s is of another run (other pairs or settings); starting afresh", file)
        return None
    log.info("resuming the ranker's training after step %d from %s", state["step"], file)
    return state


def _save_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (CHECKPOINT_FILE + ".tmp")
    torch.save(state, tmp)
    tmp.replace(folder / CHECKPOINT_FILE)  # a run killed mid-save keeps the previous checkpoint


def fit(model: MultiTaskRanker, pairs: pd.DataFrame, settings: RankerSettings, *,
        max_steps: int | None = None, checkpoints: str | Path | None = None) -> dict[str, Any]:
    """Fine-tune ``model`` on ``pairs`` (``query, text, impressions`` and the count columns); what the card records.

    With ``checkpoints``, the state (weights, optimizer, schedule, random streams, loss history) is
    saved there every ``settings.checkpoint_every`` steps, and a run over the same pairs and
    settings resumes from it: the result is the one an uninterrupted run gives.
    """
    tasks = model.card.tasks
    needed = {"query", "text", "impressions", *(COUNT_COLUMNS[t] for t in tasks)}
    if model.reads_similarity:
        needed.add("similarity")
    missing = needed - set(pairs.columns)
    if missing:
        raise InputError(f"training pairs lack columns {sorted(missing)}")
    if pairs.empty:
        raise InputError("no training pairs")
    n_total = float(pairs["impressions"].sum())
    rates = {t: float(pairs[COUNT_COLUMNS[t]].sum()) / n_total for t in tasks}
    for t, r in rates.items():
        if r <= 0:
            raise InputError(f"the training pairs hold no {t} events; the {t} head cannot learn")
    pointwise = NormalisedBinomialLoss({t: base_entropy(r) for t, r in rates.items()}, settings.task_weights,
                                       chain=model.card.chain)
    listwise = ListNetLoss(settings.task_weights, chain=model.card.chain) if settings.listwise_weight > 0 else None
    model.card.base_rates = {t: round(r, 6) for t, r in rates.items()}
    lexical = model.lexical_features(pairs["query"].tolist(), pairs["text"].tolist())
    start_heads = _start_heads(model, pairs, lexical)
    device = model.device
    trainable_layers = freeze_lower_layers(model, settings.train_layers)
    model.train()
    encoder_params = [p for p in model.encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([
        {"params": encoder_params, "lr": settings.learning_rate},
        {"params": model.head_parameters(), "lr": settings.head_learning_rate},
    ], weight_decay=settings.weight_decay)
    per_epoch = math.ceil(len(pairs) / settings.batch_size)
    steps = max(1, int(round(per_epoch * settings.epochs)))
    if max_steps is not None:
        steps = min(steps, max_steps)
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, int(settings.warmup_ratio * steps), steps)
    autocast = settings.bf16 and bf16_autocast_faster(device)
    rng = np.random.default_rng(settings.seed)
    torch.manual_seed(settings.seed)
    queries = pairs["query"].tolist()
    texts = pairs["text"].tolist()
    n = torch.tensor(pairs["impressions"].to_numpy(), dtype=torch.float32)
    counts = {t: torch.tensor(pairs[COUNT_COLUMNS[t]].to_numpy(), dtype=torch.float32) for t in tasks}
    sims = torch.tensor(pairs["similarity"].to_numpy(), dtype=torch.float32) if model.reads_similarity else None
    history: list[dict[str, float]] = []
    window: list[dict[str, float]] = []
    start = time.monotonic()
    batches = (_query_batches(pairs, settings.batch_size, rng) if listwise is not None
               else _pair_batches(len(pairs), settings.batch_size, rng))
    query_index = pd.factorize(pairs["query"])[0] if listwise is not None else None
    first, earlier_seconds = 0, 0.0
    folder = Path(checkpoints) if checkpoints is not None else None
    digest = _plan_digest(pairs[sorted(needed)], settings, tasks, steps) if folder is not None else ""
    state = _load_checkpoint(folder, digest) if folder is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        first, history, window, earlier_seconds = state["step"], state["history"], state["window"], state["seconds"]
        for _ in range(first):  # the batch order is drawn from the seed: replay it to where the run stopped
            next(batches)
    bar = progress(range(first, steps), desc=f"train ranker ({model.card.name})", unit="step")
    for step in bar:
        idx = next(batches)
        batch = model.tokenize([queries[i] for i in idx], [texts[i] for i in idx])
        if sims is not None:
            batch["similarity"] = sims[idx].to(device)
        if lexical is not None:
            batch["lexical"] = lexical[idx].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(**batch)
        batch_counts = {t: c[idx].to(device) for t, c in counts.items()}
        loss, parts = pointwise(logits, n[idx].to(device), batch_counts)
        if listwise is not None:
            lw, lw_parts = listwise(logits, n[idx].to(device), batch_counts,
                                    torch.as_tensor(query_index[idx], device=device))
            loss = loss + settings.listwise_weight * lw
            parts.update({f"list_{t}": v for t, v in lw_parts.items()})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        scheduler.step()
        window.append({"loss": float(loss.detach()), **parts})
        if len(window) == 20 or step == steps - 1:
            keys = sorted({k for w in window for k in w})  # a batch without an event has no listwise part
            history.append({k: round(float(np.mean([w[k] for w in window if k in w])), 4) for k in keys})
            window = []
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=history[-1]["loss"])
        if folder is not None and (step + 1) % settings.checkpoint_every == 0 and step + 1 < steps:
            _save_checkpoint(folder, {
                "digest": digest, "step": step + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(), "history": history,
                "window": window, "seconds": earlier_seconds + time.monotonic() - start})
    model.eval()
    seconds = earlier_seconds + time.monotonic() - start
    log.info("ranker %s: %d steps over %d pairs in %.0f s; loss %s -> %s", model.card.name, steps, len(pairs),
             seconds, history[0]["loss"], history[-1]["loss"])
    return {"pairs": len(pairs), "queries": int(pairs["query"].nunique()), "impressions": int(n_total),
            "resumed_at_step": first or None,
            "steps": steps, "epochs": round(steps / per_epoch, 2), "trainable_layers": trainable_layers, "batch_size": settings.batch_size,
            "bf16": autocast, "loss_history": history, "seconds": round(seconds, 1),
            "pairs_per_s": round(steps * settings.batch_size / seconds, 1) if seconds else None,
            "events": {COUNT_COLUMNS[t]: int(pairs[COUNT_COLUMNS[t]].sum()) for t in tasks},
            "head_start": start_heads}
