"""Nearest-neighbour search over listing vectors: the blocker's index.

Vectors are L2-normalised, so the metric is inner product (= cosine). Kinds:

* ``flat``: exact search (faiss ``IndexFlatIP``), for small catalogs.
* ``hnsw``: graph index, high recall at any size that fits in memory.
* ``ivf_flat`` / ``ivf_pq``: inverted lists (with product quantisation for very large catalogs).
* ``torch``: exact search as chunked matrix products and ``topk``, on the GPU when there is
  one (the second GPU path, and the path where faiss is not installed).

``auto`` picks by size (``IndexSettings``). faiss runs on the GPU when it was built with
GPU support (``faiss-gpu``) and sees a device; otherwise on the CPU.

    index = VectorIndex.build(vectors, ids, settings=IndexSettings(kind="auto"))
    scores, positions = index.search(queries, k=10)
    index.save(folder); VectorIndex.load(folder)
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from epm_spark.errors import ConfigError, InputError

__all__ = ["IndexSettings", "VectorIndex", "faiss_available", "exact_topk", "choose_kind"]

log = logging.getLogger(__name__)

Kind = Literal["auto", "flat", "hnsw", "ivf_flat", "ivf_pq", "torch"]


@dataclass
class IndexSettings:
    """Which index the blocker builds and how it searches."""

    kind: Kind = "auto"
    # auto: exact up to this many vectors, then HNSW, then IVF-PQ above `pq_above`.
    exact_below: int = 50_000
    pq_above: int = 5_000_000
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128
    # IVF: lists = ivf_lists_per_sqrt * sqrt(n); probed lists per query.
    ivf_lists_per_sqrt: float = 4.0
    ivf_nprobe: int = 32
    pq_m: int = 48  # sub-quantisers; must divide the dimension
    # Use a GPU for search when one is there (faiss-gpu or torch).
    gpu: bool = True
    # Vectors per torch matrix-product chunk (memory bound on the GPU).
    torch_chunk: int = 8192

    def __post_init__(self) -> None:
        for name in ("exact_below", "pq_above", "hnsw_m", "hnsw_ef_construction", "hnsw_ef_search",
                     "ivf_nprobe", "pq_m", "torch_chunk"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0")
        if self.ivf_lists_per_sqrt <= 0:
            raise ConfigError("ivf_lists_per_sqrt must be > 0")


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def choose_kind(n: int, settings: IndexSettings) -> str:
    if settings.kind != "auto":
        return settings.kind
    if not faiss_available():
        return "torch"
    if n <= settings.exact_below:
        return "flat"
    return "hnsw" if n <= settings.pq_above else "ivf_pq"


def _torch_device(gpu: bool):
    # Imported here: the faiss kinds need no torch.
    from epm_spark.models.precision import resolve_device

    return resolve_device("auto" if gpu else "cpu")


def exact_topk(corpus: np.ndarray, queries: np.ndarray, k: int, *, gpu: bool = True,
               chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k with torch: query chunks against the whole corpus on one device."""
    import torch

    device = _torch_device(gpu)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    base = torch.from_numpy(np.ascontiguousarray(corpus)).to(device=device, dtype=dtype)
    k = min(k, base.shape[0])
    scores = np.empty((len(queries), k), dtype=np.float32)
    positions = np.empty((len(queries), k), dtype=np.int64)
    with torch.inference_mode():
        for start in range(0, len(queries), chunk):
            q = torch.from_numpy(np.ascontiguousarray(queries[start:start + chunk])).to(device=device, dtype=dtype)
            top = torch.topk(q @ base.T, k, dim=1)
            scores[start:start + len(q)] = top.values.float().cpu().numpy()
            positions[start:start + len(q)] = top.indices.cpu().numpy()
    return scores, positions


class VectorIndex:
    """An index over ``vectors`` whose rows are named by ``ids`` (e.g. product ids)."""

    def __init__(self, kind: str, dim: int, ids: np.ndarray, settings: IndexSettings, *, faiss_index=None,
                 vectors: np.ndarray | None = None, meta: dict | None = None):
        self.kind, self.dim, self.ids, self.settings = kind, dim, ids, settings
        self._faiss, self._vectors = faiss_index, vectors
        self._gpu_index = None
        self.meta = dict(meta or {})

    def __len__(self) -> int:
        return len(self.ids)

    # ------------------------------------------------------------------ build

    @classmethod
    def build(cls, vectors: np.ndarray, ids, *, settings: IndexSettings | None = None,
              meta: dict | None = None) -> VectorIndex:
        settings = settings or IndexSettings()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.asarray(ids, dtype=object)
        if vectors.ndim != 2 or len(vectors) == 0:
            raise InputError("cannot build an index over no vectors")
        if len(ids) != len(vectors):
            raise InputError(f"{len(ids)} ids for {len(vectors)} vectors")
        n, dim = vectors.shape
        kind = choose_kind(n, settings)
        start = time.monotonic()
        if kind == "torch":
            index = cls(kind, dim, ids, settings, vectors=vectors, meta=meta)
        else:
            index = cls(kind, dim, ids, settings, faiss_index=_faiss_index(kind, vectors, settings), meta=meta)
        index.meta.update(kind=kind, dim=dim, count=n, build_seconds=round(time.monotonic() - start, 3))
        log.info("built %s index over %d vectors (dim %d) in %.1f s", kind, n, dim, time.monotonic() - start)
        return index

    # ------------------------------------------------------------------ search

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, positions into ``ids``) per query; position -1 where fewer exist."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise InputError(f"queries have dimension {queries.shape[-1]}, the index {self.dim}")
        if k <= 0:
            raise InputError("k must be > 0")
        if len(queries) == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        if self.kind == "torch":
            scores, pos = exact_topk(self._vectors, queries, k, gpu=self.settings.gpu,
                                     chunk=self.settings.torch_chunk)
        else:
            scores, pos = self._searcher().search(queries, min(k, len(self)))
        if scores.shape[1] < k:  # fewer vectors than k
            pad = k - scores.shape[1]
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            pos = np.pad(pos, ((0, 0), (0, pad)), constant_values=-1)
        return scores.astype(np.float32), pos.astype(np.int64)

    def _searcher(self):
        import faiss

        if self.kind == "hnsw":
            self._faiss.hnsw.efSearch = self.settings.hnsw_ef_search
        elif self.kind.startswith("ivf"):
            faiss.extract_index_ivf(self._faiss).nprobe = self.settings.ivf_nprobe
        if self.settings.gpu and self.kind != "hnsw" and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0:
            if self._gpu_index is None:
                self._gpu_index = faiss.index_cpu_to_all_gpus(self._faiss)
            return self._gpu_index
        return self._faiss

    # ------------------------------------------------------------------ persistence

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the index, its ids and a meta.json into ``folder`` (written aside, then renamed)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        final = Path(folder)
        tmp = final.with_name(final.name + f".tmp-{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        if self.kind == "torch":
            np.save(tmp / "vectors.npy", self._vectors)
        else:
            import faiss

            faiss.write_index(self._faiss, str(tmp / "index.faiss"))
        pq.write_table(pa.table({"id": pa.array(self.ids.tolist(), pa.string())}), tmp / "ids.parquet")
        meta = {**self.meta, "kind": self.kind, "dim": self.dim, "count": len(self), "settings": asdict(self.settings)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str), encoding="utf-8")
        if final.exists():
            import shutil

            shutil.rmtree(final)
        tmp.rename(final)
        return final

    @classmethod
    def load(cls, folder: str | os.PathLike[str], settings: IndexSettings | None = None) -> VectorIndex:
        import pyarrow.parquet as pq

        path = Path(folder)
        if not (path / "meta.json").exists():
            raise InputError(f"{path} is not a saved index (no meta.json)")
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        saved = IndexSettings(**meta.get("settings", {}))
        settings = settings or saved
        ids = np.asarray(pq.read_table(path / "ids.parquet").column("id").to_pylist(), dtype=object)
        if meta["kind"] == "torch":
            return cls("torch", meta["dim"], ids, settings, vectors=np.load(path / "vectors.npy"), meta=meta)
        import faiss

        return cls(meta["kind"], meta["dim"], ids, settings, faiss_index=faiss.read_index(str(path / "index.faiss")),
                   meta=meta)


def _faiss_index(kind: str, vectors: np.ndarray, settings: IndexSettings):
    try:
        import faiss
    except ImportError:
        raise InputError(f"index kind {kind!r} needs faiss (pip install faiss-cpu, or faiss-gpu); "
                         "kind 'torch' needs only torch") from None
    n, dim = vectors.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = settings.hnsw_ef_construction
    elif kind in ("ivf_flat", "ivf_pq"):
        lists = max(1, min(n // 39, int(settings.ivf_lists_per_sqrt * math.sqrt(n))))
        quantizer = faiss.IndexFlatIP(dim)
        if kind == "ivf_flat":
            index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
        else:
            if dim % settings.pq_m:
                raise ConfigError(f"block.index.pq_m={settings.pq_m} must divide the vector dimension {dim}")
            index = faiss.IndexIVFPQ(quantizer, dim, lists, settings.pq_m, 8, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
    else:
        raise ConfigError(f"unknown index kind {kind!r}; use auto, flat, hnsw, ivf_flat, ivf_pq or torch")
    index.add(vectors)
    return index
