"""Shopper-style queries made from real listing titles, each with graded products.

Shoppers do not type listing titles. They type fewer words, a brand or a model number
alone, a category word, their own word for the thing ("laptop" for "notebook"), and
typos. :func:`make_queries` writes such queries from the titles of a
:class:`~epm_spark.models.search.catalog.SearchCatalog`, one per product it picks, in
four styles:

* ``model``: the model number, with the brand half of the time (``sony pslx350h``);
* ``brand_line``: brand and one to three product-line words (``sony turntable``);
* ``short_title``: the first three to five words of the clean title;
* ``category``: the line's most common (least specific) words, often the brand too.

then a colloquial synonym (``synonym_rate``) and a typo (``typo_rate``). Words come
from :func:`~epm_spark.models.attributes.extract` (seller noise
already stripped).

Each query is graded against the product the shopper had in mind (its source listing):

==========  =====  ============================================================
relation    grade  rule
==========  =====  ============================================================
exact       3      same product cluster as the source listing
substitute  2      a look-alike of the benchmark, or same brand and a shared
                   product-line word, neither an accessory of the other
complement  1      an accessory (case, charger, cable ...) that shares the
                   brand or a line word with a product that is not one
irrelevant  0      anything else (some are kept as judged negatives)
==========  =====  ============================================================

The judged set of a query (all its exact, substitute and complement listings up to the
caps, plus look-alike and random irrelevant ones) is what the search-log simulator
shows shoppers, and what query rewriting is judged against. Spark-free.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from epm_spark.errors import ConfigError
from epm_spark.models.attributes import ListingAttributes, extract, token_weights
from epm_spark.models.search.catalog import SearchCatalog
from epm_spark.progress import progress

__all__ = ["QuerySettings", "QuerySet", "GRADES", "STYLES", "make_queries", "shopper_query", "query_split",
           "is_accessory"]

log = logging.getLogger(__name__)

GRADES = {"exact": 3, "substitute": 2, "complement": 1, "irrelevant": 0}
STYLES = ("model", "brand_line", "short_title", "category")

# Listing word -> what shoppers type for it.
SYNONYMS = {
    "notebook": "laptop", "television": "tv", "televison": "tv", "smartphone": "phone", "mobile": "cell",
    "earphone": "earbuds", "headset": "headphones", "loudspeaker": "speaker", "monitor": "screen",
    "camcorder": "video camera", "refrigerator": "fridge", "wristwatch": "watch", "harddisk": "hdd",
    "hard": "hdd", "solid": "ssd", "processor": "cpu", "graphic": "gpu", "memory": "ram",
    "photocopier": "copier", "cordless": "wireless", "multifunction": "all in one", "trainer": "sneakers",
    "notebooks": "laptops", "spectacles": "glasses", "mouse": "mice", "receiver": "amp", "subwoofer": "sub",
    "personal": "pc", "portable": "travel", "professional": "pro", "accessory": "accessories",
}
# Words that make a listing an accessory of another product rather than the product itself.
ACCESSORY_WORDS = frozenset("""
case bag sleeve pouch cover skin holster strap protector refill charger cable adapter adaptor mount stand
tripod battery batterie dock cradle holder film filter
""".split())
# Words after which an accessory word is part of a bundle ("AirPods with charging case").
_BUNDLE_MARKERS = frozenset("with w/ incl including inkl plus + and & met mit avec con".split())


@dataclass
class QuerySettings:
    """How many queries, in which styles, how noisy, and how many judged listings each gets."""

    # 3,000 queries hold out about 570 test queries: enough for intervals of a few thousandths of NDCG.
    queries: int = 3000
    seed: int = 11
    style_weights: dict[str, float] = field(default_factory=lambda: {
        "model": 0.25, "brand_line": 0.25, "short_title": 0.3, "category": 0.2})
    typo_rate: float = 0.15
    synonym_rate: float = 0.5
    # Share of queries whose source listing has other offers of the same product (multi-offer clusters).
    multi_offer_share: float = 0.8
    max_exact: int = 4
    max_substitutes: int = 6
    max_complements: int = 3
    lookalike_irrelevant: int = 3
    random_irrelevant: int = 2
    # Sessions per query follow a Zipf law (head, torso, tail), at least min_frequency: the head and
    # torso queries a nightly ranker or rewrite cache serves, about ten sessions a day or more over
    # the simulated four weeks, so a query's dozen listings get a few purchases each to rank by.
    zipf_exponent: float = 1.1
    min_frequency: int = 300
    max_frequency: int = 3000
    # Query-level split: no query of one split is in another.
    valid_share: float = 0.1
    test_share: float = 0.2

    def __post_init__(self) -> None:
        if self.queries <= 0:
            raise ConfigError(f"queries must be > 0, got {self.queries}")
        unknown = sorted(set(self.style_weights) - set(STYLES))
        if unknown or not self.style_weights or any(w < 0 for w in self.style_weights.values()) \
                or sum(self.style_weights.values()) <= 0:
            raise ConfigError(f"style_weights must give weights >= 0 (not all 0) to {', '.join(STYLES)}; "
                              f"got {self.style_weights}")
        for name in ("typo_rate", "synonym_rate", "multi_offer_share", "valid_share", "test_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        if self.valid_share + self.test_share >= 1.0:
            raise ConfigError("valid_share + test_share must be < 1: training needs queries")
        for name in ("max_exact", "max_substitutes", "max_complements", "lookalike_irrelevant",
                     "random_irrelevant", "min_frequency"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0")
        if self.max_frequency < self.min_frequency or self.min_frequency < 1:
            raise ConfigError("need 1 <= min_frequency <= max_frequency")
        if self.zipf_exponent <= 0:
            raise ConfigError("zipf_exponent must be > 0")


@dataclass
class QuerySet:
    """``queries``: query, style, source_product_id, cluster_id, frequency, split.
    ``judgments``: query, product_id, relation, grade (the judged listings of each query)."""

    queries: pd.DataFrame
    judgments: pd.DataFrame


def query_split(query: str, valid_share: float = 0.1, test_share: float = 0.2) -> str:
    """train / valid / test from a hash of the normalised query: stable across runs and machines."""
    key = " ".join(query.lower().split())
    u = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    if u < test_share:
        return "test"
    return "valid" if u < test_share + valid_share else "train"


def is_accessory(attrs: ListingAttributes) -> bool:
    """An accessory word names the thing sold, not something bundled with it ("case" vs "with case")."""
    text = attrs.title.lower().replace("jewel case", " ")
    words = re.findall(r"[a-z+/]+", text)
    for w in words:
        if w in _BUNDLE_MARKERS:
            return False
        if w in ACCESSORY_WORDS or (w.endswith("s") and w[:-1] in ACCESSORY_WORDS):
            return True
    return False


# ----------------------------------------------------------------------------- query text


def _typo(word: str, rng: np.random.Generator) -> str:
    if len(word) < 4 or not word.isalpha():
        return word
    i = int(rng.integers(1, len(word) - 1))
    op = int(rng.integers(0, 3))
    if op == 0:  # swap two neighbours
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if op == 1:  # drop one
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]  # double one


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9][a-z0-9.+-]*", text.lower()) if len(w) > 1 or w.isdigit()]


def shopper_query(attrs: ListingAttributes, style: str, rng: np.random.Generator, *,
                  common: dict[str, float] | None = None, synonym_rate: float = 0.5,
                  typo_rate: float = 0.15) -> str | None:
    """A query in ``style`` for the listing ``attrs``; ``None`` when the listing has nothing for that style."""
    brand = attrs.brand if attrs.brand_source in ("field", "lexicon") else None
    line = [t for t in attrs.line_tokens if not t.isdigit()]
    words: list[str]
    if style == "model":
        if not attrs.model_numbers_text:
            return None
        code = attrs.model_numbers_text[0].lower()
        words = [brand, code] if brand and rng.random() < 0.5 else [code]
    elif style == "brand_line":
        if not brand or not line:
            return None
        words = [brand, *line[: int(rng.integers(1, 4))]]
    elif style == "short_title":
        title = _words(attrs.clean_title)
        if len(title) < 3:
            return None
        words = title[: int(rng.integers(3, 6))]
    elif style == "category":
        if not line:
            return None
        weight = common or {}
        generic = sorted(line, key=lambda t: weight.get(t, 99.0))[: int(rng.integers(1, 3))]
        words = ([brand] if brand and rng.random() < 0.6 else []) + generic
    else:
        raise ConfigError(f"unknown query style {style!r}; styles: {', '.join(STYLES)}")
    words = [w for w in (" ".join(w for w in words if w)).split() if w]
    if not words:
        return None
    if rng.random() < synonym_rate:
        swappable = [i for i, w in enumerate(words) if w in SYNONYMS]
        if swappable:
            i = swappable[int(rng.integers(0, len(swappable)))]
            words[i] = SYNONYMS[words[i]]
    if rng.random() < typo_rate:
        i = int(rng.integers(0, len(words)))
        words[i] = _typo(words[i], rng)
    query = " ".join(" ".join(words).split())
    return query if len(query) >= 2 else None


# ----------------------------------------------------------------------------- grading


class _Index:
    """Attributes of every listing, and an inverted index from brand / line words / model numbers to listings."""

    def __init__(self, catalog: SearchCatalog) -> None:
        rows = catalog.products.to_dict("records")
        self.ids = [str(r["product_id"]) for r in rows]
        self.attrs = [extract(r) for r in progress(rows, desc="search catalog: attributes", unit="listing")]
        self.cluster = [catalog.cluster.get(pid, pid) for pid in self.ids]
        self.position = {pid: i for i, pid in enumerate(self.ids)}
        self.accessory = np.array([is_accessory(a) for a in self.attrs])
        self.tokens = [self._tokens(a) for a in self.attrs]
        self.postings: dict[str, list[int]] = defaultdict(list)
        for i, toks in enumerate(self.tokens):
            for t in toks:
                self.postings[t].append(i)
        self.weights = token_weights(a.clean_title for a in self.attrs)
        self.lookalikes = {self.position[p]: {self.position[q] for q in qs if q in self.position}
                           for p, qs in catalog.lookalikes.items() if p in self.position}

    @staticmethod
    def _tokens(a: ListingAttributes) -> set[str]:
        toks = {f"line:{t}" for t in a.line_tokens}
        toks |= {f"code:{c}" for c in a.model_numbers}
        if a.brand:
            toks.add(f"brand:{a.brand}")
        return toks


def _overlap(ix: _Index, a: ListingAttributes, shared: set[str]) -> float:
    """Share of the source's product-line words (weighted by rarity) the other listing has too."""
    total = sum(ix.weights.get(t, ix.weights.default) for t in a.line_tokens)
    return sum(ix.weights.get(t, ix.weights.default) for t in shared) / total if total else 0.0


def _relation(ix: _Index, src: int, other: int) -> str | None:
    if ix.cluster[src] == ix.cluster[other]:
        return "exact"
    a, b = ix.attrs[src], ix.attrs[other]
    same_brand = a.brand is not None and a.brand == b.brand
    shared_line = set(a.line_tokens) & set(b.line_tokens)
    if ix.accessory[other] != ix.accessory[src]:
        return "complement" if (same_brand or shared_line) and ix.accessory[other] else None
    if other in ix.lookalikes.get(src, ()) or (same_brand and shared_line) or _overlap(ix, a, shared_line) >= 0.5:
        return "substitute"
    return None


def _judge(ix: _Index, src: int, settings: QuerySettings, rng: np.random.Generator,
           members: list[int]) -> list[tuple[int, str]]:
    # Sorted walks and an explicit tie order: sets of strings iterate in the order of the
    # process's hash seed, and the same seed must write the same log in every process.
    scores: Counter[int] = Counter()
    cap = max(200, len(ix.ids) // 20)
    for t in sorted(ix.tokens[src]):
        posting = ix.postings.get(t, ())
        if len(posting) > cap:  # a word most listings share says nothing
            continue
        w = ix.weights.get(t.split(":", 1)[1], ix.weights.default)
        for j in posting:
            scores[j] += w
    for j in sorted(ix.lookalikes.get(src, ())):
        scores[j] += 1.0
    judged: dict[int, str] = {}
    exact = [src] + [m for m in members if m != src][: max(0, settings.max_exact - 1)]
    for m in exact:
        judged[m] = "exact"
    by_relation: dict[str, list[int]] = defaultdict(list)
    unrelated: list[int] = []
    for j, _ in heapq.nsmallest(300, scores.items(), key=lambda kv: (-kv[1], kv[0])):
        if j in judged:
            continue
        rel = _relation(ix, src, j)
        if rel == "exact":
            continue  # cluster members beyond max_exact stay unjudged
        (by_relation[rel] if rel else unrelated).append(j)
    for rel, cap_n in (("substitute", settings.max_substitutes), ("complement", settings.max_complements)):
        for j in by_relation[rel][:cap_n]:
            judged[j] = rel
    for j in unrelated[: settings.lookalike_irrelevant]:
        judged[j] = "irrelevant"
    tries = 0
    added = 0
    while added < settings.random_irrelevant and tries < 20:
        tries += 1
        j = int(rng.integers(0, len(ix.ids)))
        if j not in judged and ix.cluster[j] != ix.cluster[src] and _relation(ix, src, j) is None:
            judged[j] = "irrelevant"
            added += 1
    return list(judged.items())


def make_queries(catalog: SearchCatalog, settings: QuerySettings | None = None) -> QuerySet:
    """``settings.queries`` queries (at most one per product cluster) with their judged listings."""
    settings = settings or QuerySettings()
    rng = np.random.default_rng(settings.seed)
    ix = _Index(catalog)
    members: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(ix.cluster):
        members[c].append(i)
    multi = [c for c, m in members.items() if len(m) > 1]
    single = [c for c, m in members.items() if len(m) == 1]
    rng.shuffle(multi)
    rng.shuffle(single)
    # Candidates in order: multi-offer clusters at multi_offer_share, singletons filling the rest.
    want = min(settings.queries, len(members))
    n_multi = min(len(multi), int(round(want * settings.multi_offer_share)))
    order = multi[:n_multi] + single[: want - n_multi] + multi[n_multi:] + single[want - n_multi:]
    styles = [s for s in STYLES if settings.style_weights.get(s, 0) > 0]
    p = np.array([settings.style_weights[s] for s in styles], dtype=float)
    p /= p.sum()
    common = {t: w for t, w in ix.weights.items()}
    queries, judgments, seen = [], [], set()
    bar = progress(total=want, desc="search queries", unit="query")
    for c in order:
        if len(queries) >= want:
            break
        src = members[c][int(rng.integers(0, len(members[c])))]
        # Try the drawn style, then the others: every listing has a short title or a line word.
        first = rng.choice(len(styles), p=p)
        query = style = None
        for k in range(len(styles)):
            style = styles[(first + k) % len(styles)]
            query = shopper_query(ix.attrs[src], style, rng, common=common, synonym_rate=settings.synonym_rate,
                                  typo_rate=settings.typo_rate)
            if query:
                break
        if not query or query in seen:
            continue
        seen.add(query)
        for j, rel in _judge(ix, src, settings, rng, members[c]):
            judgments.append((query, ix.ids[j], rel, GRADES[rel]))
        queries.append((query, style, ix.ids[src], c))
        bar.update(1)
    bar.close()
    qf = pd.DataFrame(queries, columns=["query", "style", "source_product_id", "cluster_id"])
    # Zipf frequencies over a random order of the queries: a few head queries, a long tail.
    ranks = rng.permutation(len(qf)) + 1
    freq = settings.max_frequency * ranks.astype(float) ** -settings.zipf_exponent
    qf["frequency"] = np.clip(np.round(freq), settings.min_frequency, settings.max_frequency).astype("int64")
    qf["split"] = [query_split(q, settings.valid_share, settings.test_share) for q in qf["query"]]
    jf = pd.DataFrame(judgments, columns=["query", "product_id", "relation", "grade"])
    jf["grade"] = jf["grade"].astype("int32")
    log.info("search queries: %d (%s); %d judged listings (%s)", len(qf), dict(Counter(qf["style"])), len(jf),
             dict(Counter(jf["relation"])))
    return QuerySet(qf, jf)

