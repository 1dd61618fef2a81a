"""How good a night's matches are, where the truth is known (the synthetic catalogs' ``truth.csv``).

For each catalog pair of a run (ours x ours for de-duplication, ours x a competitor for price
matching) the accepted matches are compared with every pair of ingested listings that share
a true product: precision over the accepted matches, recall over all true pairs (so a match
blocking never proposed counts as missed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from epm_spark.errors import InputError

__all__ = ["TruthScore", "score_matches", "wrong_matches", "label_candidates"]


@dataclass
class TruthScore:
    left: str
    right: str
    accepted: int
    true_pairs: int
    tp: int

    @property
    def precision(self) -> float:
        return self.tp / self.accepted if self.accepted else 0.0

    @property
    def recall(self) -> float:
        return self.tp / self.true_pairs if self.true_pairs else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def line(self) -> str:
        return (f"  {self.left} -> {self.right}: precision {self.precision:.3f} recall {self.recall:.3f} "
                f"F1 {self.f1:.3f} ({self.tp} of {self.accepted} accepted matches right, {self.true_pairs} true pairs)")


def _key(frame: pd.DataFrame) -> dict[tuple[str, str], str]:
    return {(s, str(i)): k for s, i, k in zip(frame["source"], frame["product_id"], frame["product_key"])}


def _pair(a: tuple[str, str], b: tuple[str, str], same_source: bool) -> tuple:
    return tuple(sorted((a, b))) if same_source else (a, b)


def score_matches(warehouse: str, truth_csv: str | Path, run_id: str) -> list[TruthScore]:
    """One score per (left, right) catalog pair that ``matches`` holds for ``run_id``."""
    from epm_spark.io.delta import read_pandas

    truth = pd.read_csv(truth_csv, dtype={"product_id": str})
    if not {"source", "product_id", "product_key"} <= set(truth.columns):
        raise InputError(f"{truth_csv} needs the columns source, product_id, product_key")
    key = _key(truth)
    products = read_pandas(warehouse, "products", columns=["source", "product_id"])
    matches = read_pandas(warehouse, "matches", columns=["left_source", "right_source", "left_id", "right_id", "label"],
                          filters=[("run_id", "=", run_id)])
    if matches.empty:
        raise InputError(f"matches holds no rows for run {run_id!r}")
    listed: dict[str, list[tuple[str, str]]] = {}
    for s, i in zip(products["source"], products["product_id"].astype(str)):
        if (s, i) in key:
            listed.setdefault(s, []).append((s, i))
    scores = []
    for (left, right), group in matches.groupby(["left_source", "right_source"], sort=True):
        same = left == right
        accepted = {_pair((left, str(a)), (right, str(b)), same)
                    for a, b, label in zip(group["left_id"], group["right_id"], group["label"])
                    if label == "match" and (left, str(a)) != (right, str(b))}
        by_key: dict[str, list[tuple[str, str]]] = {}
        for item in listed.get(right, []):
            by_key.setdefault(key[item], []).append(item)
        true_pairs = set()
        for a in listed.get(left, []):
            for b in by_key.get(key[a], []):
                if a != b:
                    true_pairs.add(_pair(a, b, same))
        tp = sum(1 for p in accepted if key.get(p[0]) is not None and key.get(p[0]) == key.get(p[1]))
        scores.append(TruthScore(left, right, len(accepted), len(true_pairs), tp))
    return scores


def wrong_matches(truth_csv: str | Path, pairs: list[tuple[str, str, str, str]]) -> list[tuple[str, str, str, str]]:
    """The (left_source, left_id, right_source, right_id) pairs whose listings are different true products."""
    key = _key(pd.read_csv(truth_csv, dtype={"product_id": str}))
    return [p for p in pairs if key.get((p[0], str(p[1]))) != key.get((p[2], str(p[3])))]


def label_candidates(warehouse: str, truth_csv: str | Path, run_id: str, *, benchmark: str = "synthetic") -> int:
    """Add ``run_id``'s candidate pairs, labelled from ``truth_csv``, to ``labelled_pairs`` of ``benchmark``.

    A candidate joins the split of its left listing's product family in the benchmark's existing
    pairs (so no family straddles train and test); families without pairs are split by a stable
    hash, 60/20/20. Pairs already labelled are kept as they are. One replace of the benchmark's
    partition: a re-run adds nothing twice. Returns how many pairs were added.
    """
    import hashlib

    from epm_spark.io import delta
    from epm_spark.io.schemas import LABELLED_PAIRS

    truth = pd.read_csv(truth_csv, dtype={"product_id": str})
    if not {"source", "product_id", "product_key", "family"} <= set(truth.columns):
        raise InputError(f"{truth_csv} needs the columns source, product_id, product_key, family")
    key = _key(truth)
    family = {(s, i): f for s, i, f in zip(truth["source"], truth["product_id"], truth["family"])}
    existing = delta.read_pandas(warehouse, "labelled_pairs", filters=[("benchmark", "=", benchmark)])
    candidates = delta.read_pandas(warehouse, "candidates",
                                   columns=["left_source", "left_id", "right_source", "right_id"],
                                   filters=[("run_id", "=", run_id)])
    if candidates.empty:
        raise InputError(f"candidates holds no pairs for run {run_id!r}; run `epm-spark block` first")
    split_of = {family.get((s, str(i))): split for s, i, split in
                zip(existing["left_source"], existing["left_id"], existing["split"])}

    def split_for(fam: str) -> str:
        if fam in split_of:
            return split_of[fam]
        r = int(hashlib.sha1(str(fam).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        return "train" if r < 0.6 else ("valid" if r < 0.8 else "test")

    seen = set(zip(existing["left_source"], existing["left_id"].astype(str),
                   existing["right_source"], existing["right_id"].astype(str)))
    rows = []
    for ls, li, rs, ri in candidates.itertuples(index=False):
        pair = (ls, str(li), rs, str(ri))
        a, b = pair[:2], pair[2:]
        if a == b or a not in key or b not in key or pair in seen:
            continue
        seen.add(pair)
        same = key[a] == key[b]
        rows.append({"benchmark": benchmark, "left_source": ls, "left_id": a[1], "right_source": rs,
                     "right_id": b[1], "label": int(same), "split": split_for(family[a]),
                     "left_cluster_id": key[a], "right_cluster_id": key[b], "is_hard_negative": not same})
    if not rows:
        return 0
    added = pd.DataFrame(rows).reindex(columns=LABELLED_PAIRS.columns)
    frames = [f for f in (existing, added) if not f.empty]
    delta.write_pandas(warehouse, "labelled_pairs", pd.concat(frames, ignore_index=True), "replace",
                       partition={"benchmark": benchmark}, job="label-candidates")
    return len(added)
