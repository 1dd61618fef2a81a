"""A hand-written catalog with graded queries, and a bag-of-words encoder: the retrieval judge with
known answers (a word the catalog spells differently does not match), in milliseconds."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pandas as pd

from epm_spark.models.rewriter.retrieval import RetrievalJudge

LISTINGS = [
    ("s1", "Samsung 870 EVO 1TB SATA SSD MZ-77E1T0", "Samsung"),
    ("s2", "Samsung 870 EVO 2TB SATA SSD MZ-77E2T0", "Samsung"),
    ("s3", "Samsung T7 portable SSD 1TB", "Samsung"),
    ("p1", "Sony PS-LX350H belt drive turntable", "Sony"),
    ("p2", "Sony Bravia KDL46V5100 46 inch LCD TV", "Sony"),
    ("p3", "Sony WH-1000XM4 wireless headphones", "Sony"),
    ("c1", "Crucial MX500 1TB SATA SSD", "Crucial"),
    ("c2", "Crucial MX500 500GB SATA SSD", "Crucial"),
    ("a1", "Apple iPod nano 8GB blue", "Apple"),
    ("a2", "Apple MacBook Air 13 inch notebook", "Apple"),
    ("l1", "Lenovo ThinkPad X1 notebook 16GB", "Lenovo"),
    ("b1", "Bose SoundLink mini speaker", "Bose"),
    ("t1", "Audio-Technica AT-LP60X automatic turntable", "Audio-Technica"),
]
# query -> {product_id: grade}
GRADES = {
    "smasung ssd 1tb": {"s1": 3, "s3": 3, "s2": 2},
    "sony pslx350h turntable": {"p1": 3},
    "crucial mx500 1tb": {"c1": 3, "c2": 2},
    "lenovo laptop": {"l1": 3, "a2": 1},
}


def products() -> pd.DataFrame:
    return pd.DataFrame([{"product_id": pid, "title": title, "brand": brand, "source": "catalog", "attributes": {}}
                         for pid, title, brand in LISTINGS])


def judgments() -> pd.DataFrame:
    return pd.DataFrame([{"query": q, "product_id": pid, "grade": g} for q, gs in GRADES.items()
                         for pid, g in gs.items()])


class BagOfWords:
    """Unit vectors of hashed lower-case words: cosine = shared words. The encoder interface of DualEncoder."""

    model_version = "bag-of-words-256"

    def __init__(self, dim: int = 256):
        self.dim = dim

    def encode(self, texts, batch_size: int = 64, *, query: bool = False, show_progress=None) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)


def tiny_judge(k: int = 3) -> RetrievalJudge:
    frame = products()
    encoder = BagOfWords()
    vectors = encoder.encode([f"{t} {b}" for t, b in zip(frame["title"], frame["brand"])])
    return RetrievalJudge.build(encoder, frame["product_id"].tolist(), vectors, judgments(), k=k)
