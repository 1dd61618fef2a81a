"""Training examples for the dual-encoder, from ``products`` rows and ``labelled_pairs`` rows.

Both inputs are plain pandas frames in the warehouse's columns, so the same code
serves the training job (which reads Delta tables) and scripts that load a benchmark
folder directly. A listing is identified by its key ``(source, product_id)``.

* Stage 1 (:func:`contrastive_examples`): one example per positive (a label-1 pair, two
  offers of the same ``cluster_id``, or a pair whose optional ``relation`` column says
  ``exact`` or ``substitute``), with its labelled negatives (hard negatives first) and the
  anchor's known duplicates, which the loss masks instead of punishing.
* Stage 2 (:func:`graded_queries`): for each query listing, its candidates grouped by
  graded relevance. With a ``relation`` column: exact 3 > substitute 2 > complement 1 >
  irrelevant 0; otherwise match 2 > hard negative 1 > random negative 0 (random
  negatives are sampled per epoch by the trainer).
"""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from epm_spark.errors import InputError
from epm_spark.io.benchmarks import Benchmark

__all__ = [
    "Key", "ContrastiveExample", "GradedQuery", "TRAIN_SPLITS", "VALID_SPLITS", "RELATION_GRADES",
    "contrastive_examples", "graded_queries", "known_duplicates", "benchmarks_from_tables", "right_keys",
    "sample_random_negatives", "hard_negative_flags",
]

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (source, product_id)

# Stored split names: DeepMatcher folders use train/valid, WDC Products train_medium/valid_medium.
TRAIN_SPLITS = ("train", "train_medium")
VALID_SPLITS = ("valid", "valid_medium")
RELATION_GRADES = {"exact": 3, "substitute": 2, "complement": 1, "irrelevant": 0}
MATCH, HARD_NEGATIVE, RANDOM_NEGATIVE = 2, 1, 0
# Same-cluster offers of a big cluster would otherwise give quadratically many positives.
MAX_CLUSTER_POSITIVES = 8


@dataclass
class ContrastiveExample:
    anchor: Key
    positive: Key
    # Labelled non-matches of the anchor, hard negatives first (verified: never margin-masked).
    negatives: list[Key] = field(default_factory=list)


@dataclass
class GradedQuery:
    query: Key
    # grade -> candidates of that grade; the lowest grade is filled by the trainer each epoch.
    groups: dict[int, list[Key]]


def _require(pairs: pd.DataFrame, columns: Iterable[str]) -> None:
    missing = set(columns) - set(pairs.columns)
    if missing:
        raise InputError(f"labelled_pairs lacks columns {sorted(missing)}")


def _select(pairs: pd.DataFrame, splits: Iterable[str]) -> pd.DataFrame:
    _require(pairs, ("left_id", "right_id", "left_source", "right_source", "label", "split"))
    splits = list(splits)
    chosen = pairs[pairs["split"].isin(splits)]
    if chosen.empty:
        raise InputError(f"labelled_pairs holds no pairs of split {' or '.join(splits)}; "
                         f"splits present: {', '.join(sorted(map(str, pairs['split'].unique())))}")
    return chosen.reset_index(drop=True)


def _keys(frame: pd.DataFrame, side: str) -> list[Key]:
    return list(zip(frame[f"{side}_source"].astype(str), frame[f"{side}_id"].astype(str)))


def _is_positive(frame: pd.DataFrame) -> np.ndarray:
    positive = frame["label"].astype(int).to_numpy() == 1
    if "relation" in frame:
        positive |= frame["relation"].isin(["exact", "substitute"]).to_numpy()
    return positive


def hard_negative_flags(frame: pd.DataFrame) -> np.ndarray:
    """``is_hard_negative`` as plain booleans (missing column or null: False)."""
    if "is_hard_negative" not in frame:
        return np.zeros(len(frame), dtype=bool)
    return frame["is_hard_negative"].eq(True).fillna(False).to_numpy(dtype=bool)


def _cluster_positives(frame: pd.DataFrame, include_self: bool = False) -> set[tuple[Key, Key]]:
    """(left, right) offers that share a cluster id across the split's pairs, at most a few per left offer.

    WDC offers keep one id on both sides: an offer is no positive of itself, but it is a
    duplicate to keep out of its own negatives (``include_self``).
    """
    if "left_cluster_id" not in frame or "right_cluster_id" not in frame:
        return set()
    left = {k: c for k, c in zip(_keys(frame, "left"), frame["left_cluster_id"]) if isinstance(c, str) and c}
    right_by_cluster: dict[str, list[Key]] = defaultdict(list)
    for k, c in zip(_keys(frame, "right"), frame["right_cluster_id"]):
        if isinstance(c, str) and c and k not in right_by_cluster[c]:
            right_by_cluster[c].append(k)
    out = set()
    for anchor, cluster in left.items():
        mates = [r for r in right_by_cluster.get(cluster, []) if include_self or r[1] != anchor[1]]
        for right in mates[:MAX_CLUSTER_POSITIVES]:
            out.add((anchor, right))
    return out


def known_duplicates(pairs: pd.DataFrame, splits: Iterable[str] = TRAIN_SPLITS) -> dict[Key, set[Key]]:
    """For each left listing, the right listings known to be the same product (labels and clusters)."""
    frame = _select(pairs, splits)
    dup: dict[Key, set[Key]] = defaultdict(set)
    for (left, right), positive in zip(zip(_keys(frame, "left"), _keys(frame, "right")), _is_positive(frame)):
        if positive:
            dup[left].add(right)
    for left, right in _cluster_positives(frame, include_self=True):
        dup[left].add(right)
    return dict(dup)


def contrastive_examples(pairs: pd.DataFrame, splits: Iterable[str] = TRAIN_SPLITS) -> list[ContrastiveExample]:
    """Stage 1 examples: every positive of the splits with the anchor's labelled negatives."""
    frame = _select(pairs, splits)
    lefts, rights = _keys(frame, "left"), _keys(frame, "right")
    positive = _is_positive(frame)
    hard = hard_negative_flags(frame)
    negatives: dict[Key, list[tuple[bool, Key]]] = defaultdict(list)
    positives: dict[Key, list[Key]] = defaultdict(list)
    for left, right, pos, is_hard in zip(lefts, rights, positive, hard):
        if pos:
            if right not in positives[left]:
                positives[left].append(right)
        else:
            negatives[left].append((not is_hard, right))
    for left, right in sorted(_cluster_positives(frame)):
        if right not in positives[left]:
            positives[left].append(right)
    examples = []
    for left in sorted(positives):
        ordered = [k for _, k in sorted(negatives.get(left, []), key=lambda t: t[0])]
        examples.extend(ContrastiveExample(left, right, ordered) for right in positives[left])
    if not examples:
        raise InputError("the training pairs hold no positive pair (label 1 or a shared cluster_id)")
    return examples


def graded_queries(pairs: pd.DataFrame, splits: Iterable[str] = TRAIN_SPLITS) -> list[GradedQuery]:
    """Stage 2 queries: each left listing with its candidates grouped by graded relevance."""
    frame = _select(pairs, splits)
    groups: dict[Key, dict[int, list[Key]]] = defaultdict(lambda: defaultdict(list))
    has_relation = "relation" in frame
    hard = hard_negative_flags(frame)
    # Where a benchmark flags hard negatives, unflagged non-matches are random ones; where it
    # does not (DeepMatcher), every labelled non-match came out of blocking and is hard.
    flags_hard = "is_hard_negative" in frame and frame["is_hard_negative"].notna().any()
    relations = frame["relation"].to_numpy() if has_relation else [None] * len(frame)
    for left, right, label, is_hard, relation in zip(_keys(frame, "left"), _keys(frame, "right"),
                                                     frame["label"].astype(int), hard, relations):
        if has_relation and relation in RELATION_GRADES:
            grade = RELATION_GRADES[relation]
        elif label == 1:
            grade = MATCH
        elif flags_hard and not is_hard:
            grade = RANDOM_NEGATIVE
        else:
            grade = HARD_NEGATIVE
        if right not in groups[left][grade]:
            groups[left][grade].append(right)
    for left, right in _cluster_positives(frame):
        top = max(RELATION_GRADES.values()) if has_relation else MATCH
        if right not in groups[left][top]:
            groups[left][top].append(right)
    queries = [GradedQuery(left, {g: list(v) for g, v in sorted(groups[left].items(), reverse=True)})
               for left in sorted(groups)]
    return [q for q in queries if q.groups]


def right_keys(pairs: pd.DataFrame, splits: Iterable[str] = TRAIN_SPLITS) -> list[Key]:
    """The right listings the splits' pairs name: the pool for mined and random negatives.

    Negatives come only from listings of the training pairs, so no listing that appears
    only in validation or test pairs shapes training.
    """
    return sorted(set(_keys(_select(pairs, splits), "right")))


def sample_random_negatives(queries: list[GradedQuery], pool: list[Key], per_query: int,
                            duplicates: dict[Key, set[Key]], rng: np.random.Generator,
                            grade: int = RANDOM_NEGATIVE) -> list[GradedQuery]:
    """Copies of ``queries`` with ``per_query`` random listings added to the lowest grade."""
    out = []
    for q in queries:
        taken = set(itertools.chain.from_iterable(q.groups.values())) | duplicates.get(q.query, set())
        chosen: list[Key] = []
        if per_query and pool:
            for i in rng.permutation(len(pool))[: per_query + len(taken)]:
                if pool[i] not in taken and len(chosen) < per_query:
                    chosen.append(pool[i])
        groups = {g: list(v) for g, v in q.groups.items()}
        if chosen:
            groups.setdefault(grade, []).extend(chosen)
        out.append(GradedQuery(q.query, groups))
    return out


def benchmarks_from_tables(products: pd.DataFrame, pairs: pd.DataFrame,
                           names: Iterable[str] | None = None) -> list[Benchmark]:
    """Rebuild :class:`Benchmark` objects from warehouse rows (one per ``benchmark`` value).

    A benchmark whose pairs carry cluster ids is a pairs-layout one (WDC Products): its
    evaluation corpus is the offers of the split's pairs, not the whole table.
    """
    _require(pairs, ("benchmark", "left_id", "right_id", "left_source", "right_source", "label", "split"))
    wanted = list(names) if names else sorted(pairs["benchmark"].unique())
    unknown = set(wanted) - set(pairs["benchmark"].unique())
    if unknown:
        raise InputError(f"labelled_pairs holds no benchmark {', '.join(sorted(unknown))}; "
                         f"benchmarks: {', '.join(sorted(pairs['benchmark'].unique()))}")
    out = []
    for name in wanted:
        bp = pairs[pairs["benchmark"] == name].reset_index(drop=True)
        left_source, right_source = bp["left_source"].iloc[0], bp["right_source"].iloc[0]
        clusters = bp.get("left_cluster_id")
        layout = "pairs" if clusters is not None and clusters.notna().any() else "tables"
        left = products[products["source"] == left_source].reset_index(drop=True)
        right = products[products["source"] == right_source].reset_index(drop=True)
        if left.empty or right.empty:
            raise InputError(f"products holds no listings of {left_source if left.empty else right_source} "
                             f"(benchmark {name}); load the benchmark first")
        out.append(Benchmark(name, layout, left, right, bp))
    return out
