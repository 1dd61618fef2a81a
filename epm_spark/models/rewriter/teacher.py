"""Rewrite teachers: who writes the rewrites the student is distilled from.

* :class:`AgenticRewriter`: offline and deterministic. A pipeline of named steps over the
  catalog's own vocabulary (:class:`CatalogVocabulary`), each recorded in the trace::

      noise -> units -> spelling -> abbreviations -> brand -> category

  ``noise`` drops promotional and filler words (the attribute extractor's noise rules);
  ``units`` writes sizes one way (``1 tb`` -> ``1tb``, ``15.6in`` -> ``15.6 inch``);
  ``spelling`` replaces a word the catalog never uses by the most frequent catalog word one
  edit away (two for long words), same first letter; ``abbreviations`` swaps a shopper's word
  for the catalog's word for it when the catalog uses that more; ``brand`` puts the brand in
  front when the query names none: the brand of the listings carrying its model number, or of
  the listings carrying one of its words when 80% of those share a brand; ``category`` adds the
  most common product-type words of the listings carrying its model number.
* :class:`EndpointRewriter`: an OpenAI-compatible chat endpoint through
  :class:`~epm_spark.models.matcher.supervision.endpoint.ChatEndpoint` (retries, cache, cost
  accounting), its answer read by :func:`~epm_spark.models.rewriter.prompt.clean_rewrite`.

Both return one :class:`RewriteResult` per query, in order: a rewrite, or why there is none.
"""

from __future__ import annotations

import logging
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from epm_spark.errors import ConfigError
from epm_spark.models.attributes import (
    extract, looks_like_model_number, normalise_model_number, strip_noise,
)
from epm_spark.models.rewriter.prompt import clean_rewrite, normalise_query, rewrite_messages
from epm_spark.models.rewriter.settings import TEACHER_REWRITE_SYSTEM, RewritePromptSettings
from epm_spark.progress import progress

__all__ = ["RewriteResult", "CatalogVocabulary", "AgenticRewriter", "EndpointRewriter", "build_rewrite_teacher",
           "ABBREVIATIONS", "FILLER"]

log = logging.getLogger(__name__)

# What shoppers type -> what listings may say instead (the catalog's counts decide).
ABBREVIATIONS: dict[str, tuple[str, ...]] = {
    "tv": ("television", "hdtv"), "hdd": ("hard drive",), "ram": ("memory",), "cpu": ("processor",),
    "gpu": ("graphics card",), "pc": ("computer",), "laptop": ("notebook",), "laptops": ("notebooks",),
    "cell": ("mobile phone", "cellphone"), "earbuds": ("earphones", "headphones"), "sub": ("subwoofer",),
    "amp": ("amplifier", "receiver"), "fridge": ("refrigerator",), "mic": ("microphone",), "cam": ("camera",),
    "sneakers": ("trainers",), "bt": ("bluetooth",), "kb": ("keyboard",), "mice": ("mouse",),
    "screen": ("monitor", "display"), "video camera": ("camcorder",), "all in one": ("multifunction",),
    "travel": ("portable",), "pro": ("professional",), "glasses": ("spectacles",), "cell phone": ("smartphone",),
    "headphones": ("headset",), "phone": ("smartphone",), "specs": ("spectacles",), "wifi": ("wireless",),
    "watch": ("wristwatch",), "accessories": ("accessory",), "cord": ("cable",), "printer ink": ("ink cartridge",),
}
# Words that say nothing about the product wanted.
FILLER = frozenset("""
a an the cheap cheapest best buy new sale deal deals discount discounted online free shipping good great top
quality price prices offer offers shop store genuine original authentic official please me near
""".split())

_WORD = re.compile(r"[a-z0-9äöüéèàíóúß][a-z0-9äöüéèàíóúß.+'/\"-]*")
_STORAGE = re.compile(r"\b(\d+(?:[.,]\d+)?)\s?-?(tb|gb|mb|terabytes?|gigabytes?|megabytes?)\b")
_INCH = re.compile(r"(\d+(?:[.,]\d+)?)\s?-?(?:\"|''|”|inch(?:es)?|in\b|zoll)")
_OTHER_UNIT = re.compile(r"\b(\d+(?:[.,]\d+)?)\s?-?(mah|w|watts?|mm|cm|ml|l|kg|g|v|hz|mhz|ghz|mp)\b")
_UNIT_WORD = {"terabyte": "tb", "terabytes": "tb", "gigabyte": "gb", "gigabytes": "gb", "megabyte": "mb",
              "megabytes": "mb", "watt": "w", "watts": "w"}


def _tokens(text: str) -> list[str]:
    return [w.strip(".-'/\"") for w in _WORD.findall(text.lower()) if w.strip(".-'/\"")]


def _osa(a: str, b: str, limit: int) -> int:
    """Optimal-string-alignment distance (a swap of neighbours is one edit), stopped early past ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1]


def normalise_units(text: str) -> str:
    """Sizes written one way: ``1 TB`` -> ``1tb``, ``15.6"`` / ``15.6in`` -> ``15.6 inch``, ``65 watts`` -> ``65w``."""
    text = text.lower()
    text = _STORAGE.sub(lambda m: f"{m.group(1).replace(',', '.')}{_UNIT_WORD.get(m.group(2), m.group(2))}", text)
    text = _INCH.sub(lambda m: f"{m.group(1).replace(',', '.')} inch", text)
    text = _OTHER_UNIT.sub(lambda m: f"{m.group(1).replace(',', '.')}{_UNIT_WORD.get(m.group(2), m.group(2))}", text)
    return " ".join(text.split())


@dataclass
class CatalogVocabulary:
    """What the catalog itself says: word counts, brands, and which brands and product words go with
    each model number and each word."""

    words: Counter = field(default_factory=Counter)  # word -> listings using it (document frequency)
    brands: Counter = field(default_factory=Counter)  # brand -> listings of it
    code_brands: dict[str, Counter] = field(default_factory=dict)  # model number -> brands of its listings
    code_lines: dict[str, Counter] = field(default_factory=dict)  # model number -> product-line words
    code_listings: Counter = field(default_factory=Counter)  # model number -> listings carrying it
    word_brands: dict[str, Counter] = field(default_factory=dict)  # word -> brands of listings using it
    listings: int = 0

    @classmethod
    def from_listings(cls, listings: Iterable[Mapping[str, Any]], show_progress: bool = False) -> CatalogVocabulary:
        vocab = cls()
        code_brands: dict[str, Counter] = defaultdict(Counter)
        code_lines: dict[str, Counter] = defaultdict(Counter)
        word_brands: dict[str, Counter] = defaultdict(Counter)
        rows = list(listings)
        for row in progress(rows, desc="rewrite teacher: catalog vocabulary", unit="listing") if show_progress else rows:
            attrs = extract(row)
            vocab.listings += 1
            words = set(_tokens(normalise_units(attrs.clean_title)))
            vocab.words.update(words)
            brand = attrs.brand if attrs.brand_source in ("field", "lexicon") else None
            if brand:
                vocab.brands[brand] += 1
                vocab.words.update(set(brand.split()) - words)
                for w in words:
                    word_brands[w][brand] += 1
            for code in attrs.model_numbers:
                vocab.code_listings[code] += 1
                code_lines[code].update(attrs.line_tokens)
                if brand:
                    code_brands[code][brand] += 1
        vocab.code_brands, vocab.code_lines, vocab.word_brands = dict(code_brands), dict(code_lines), dict(word_brands)
        by_start: dict[str, list[str]] = defaultdict(list)
        for w, n in vocab.words.items():
            if n >= 2 and w.isalpha() and len(w) >= 4:
                by_start[w[0]].append(w)
        vocab._by_start = dict(by_start)
        return vocab

    def df(self, word: str) -> int:
        return self.words.get(word, 0)

    def correction(self, word: str) -> str | None:
        """The most frequent catalog word within one edit (two for words of 8+ letters), same first letter."""
        if self.df(word) or len(word) < 4 or not word.isalpha():
            return None
        limit = 1 if len(word) < 8 else 2
        best, best_n = None, 0
        for cand in getattr(self, "_by_start", {}).get(word[0], ()):
            n = self.words[cand]
            if n > best_n and _osa(word, cand, limit) <= limit:
                best, best_n = cand, n
        return best

    def is_brand_word(self, word: str) -> bool:
        if not hasattr(self, "_brand_words"):
            self._brand_words = {w for b in self.brands for w in (b, *re.split(r"[\s'-]+", b)) if len(w) > 1}
        return word in self._brand_words


@dataclass(frozen=True)
class RewriteResult:
    """One teacher answer: a rewrite, or the reason there is none."""

    query: str
    rewrite: str | None
    teacher: str
    steps: tuple[str, ...] = ()
    failure: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.rewrite is not None


class AgenticRewriter:
    """The offline rewrite teacher (see the module docstring); deterministic for one catalog."""

    name = "agentic"

    def __init__(self, vocabulary: CatalogVocabulary, *, brand_share: float = 0.8, min_brand_listings: int = 3,
                 category_words: int = 2):
        self.vocab = vocabulary
        self.brand_share, self.min_brand_listings, self.category_words = brand_share, min_brand_listings, category_words

    def rewrite(self, queries: Sequence[str]) -> list[RewriteResult]:
        out = []
        for q in queries:
            text, steps = self.rewrite_one(q)
            out.append(RewriteResult(normalise_query(q, 10_000), text or None, self.name, tuple(steps),
                                     None if text else "nothing left of the query"))
        return out

    def rewrite_one(self, query: str) -> tuple[str, list[str]]:
        """(rewrite, trace of the steps that changed something)."""
        steps: list[str] = []
        text = normalise_query(query, 10_000)
        stripped = strip_noise(text).text.lower()
        words = [w for w in _tokens(stripped) if w not in FILLER]
        self._note(steps, "noise", text, words)
        words = self._units(words, steps)
        words = self._spelling(words, steps)
        words = self._abbreviations(words, steps)
        codes = [normalise_model_number(w) for w in words if looks_like_model_number(w)]
        codes = [c for c in codes if c in self.vocab.code_listings]
        words = self._brand(words, codes, steps)
        words = self._category(words, codes, steps)
        return " ".join(dict.fromkeys(words)), steps

    @staticmethod
    def _note(steps: list[str], step: str, before: str, words: list[str]) -> None:
        after = " ".join(words)
        if after != before:
            steps.append(f"{step}: {before} -> {after}")

    def _units(self, words: list[str], steps: list[str]) -> list[str]:
        before = " ".join(words)
        out = normalise_units(before).split()
        self._note(steps, "units", before, out)
        return out

    def _spelling(self, words: list[str], steps: list[str]) -> list[str]:
        out = []
        for w in words:
            fixed = None if looks_like_model_number(w) else self.vocab.correction(w)
            if fixed:
                steps.append(f"spelling: {w} -> {fixed}")
            out.append(fixed or w)
        return out

    def _abbreviations(self, words: list[str], steps: list[str]) -> list[str]:
        text = f" {' '.join(words)} "
        for short in sorted(ABBREVIATIONS, key=len, reverse=True):
            if f" {short} " not in text:
                continue
            best = max(ABBREVIATIONS[short], key=lambda c: min(self.vocab.df(w) for w in c.split()))
            best_n = min(self.vocab.df(w) for w in best.split())
            short_n = min(self.vocab.df(w) for w in short.split())
            if best_n > short_n and f" {best} " not in text:
                text = text.replace(f" {short} ", f" {best} ")
                steps.append(f"abbreviations: {short} -> {best}")
        return text.split()

    def _brand(self, words: list[str], codes: list[str], steps: list[str]) -> list[str]:
        joined = " ".join(words)
        if extract(joined).brand_mentions or any(self.vocab.is_brand_word(w) for w in words):
            return words
        votes: Counter = Counter()
        for code in codes:
            votes.update(self.vocab.code_brands.get(code, {}))
        evidence = "model number"
        if not votes:
            for w in words:
                brands = self.vocab.word_brands.get(w)
                if not brands or len(w) < 3:
                    continue
                top, n = brands.most_common(1)[0]
                if n >= self.min_brand_listings and n / sum(brands.values()) >= self.brand_share:
                    votes[top] += n
                    evidence = f"'{w}'"
        if not votes:
            return words
        brand, n = votes.most_common(1)[0]
        if n / sum(votes.values()) < self.brand_share and evidence == "model number":
            return words
        steps.append(f"brand: {brand} (from {evidence})")
        return [*brand.split(), *words]

    def _category(self, words: list[str], codes: list[str], steps: list[str]) -> list[str]:
        if not codes or self.category_words <= 0:
            return words
        lines: Counter = Counter()
        listings = 0
        for code in codes:
            lines.update(self.vocab.code_lines.get(code, {}))
            listings += self.vocab.code_listings.get(code, 0)
        present = set(words)
        # Words most of the model number's listings use; of those, the catalog's most common are the
        # product types ("turntable", "ssd"), the rarer ones product-line names.
        common = [w for w, n in lines.items() if n * 2 >= listings and w not in present and w.isalpha()
                  and len(w) > 2 and w not in FILLER]
        chosen = sorted(common, key=lambda w: (-self.vocab.df(w), w))[: self.category_words]
        if chosen:
            steps.append(f"category: + {' '.join(chosen)}")
        return [*words, *chosen]


class EndpointRewriter:
    """A chat endpoint as rewrite teacher: the student's prompt with the instructions spelled out
    (:data:`TEACHER_REWRITE_SYSTEM`), the answer read by :func:`clean_rewrite`; an empty answer is
    asked again once with the reason."""

    def __init__(self, endpoint: Any, *, prompt: RewritePromptSettings | None = None, format_retries: int = 1,
                 name: str | None = None):
        self.endpoint = endpoint
        self.prompt = prompt or RewritePromptSettings(system=TEACHER_REWRITE_SYSTEM)
        self.format_retries = format_retries
        self.name = name or f"endpoint:{endpoint.settings.model}"

    def rewrite(self, queries: Sequence[str]) -> list[RewriteResult]:
        def parse(text: str) -> str:
            rewrite = clean_rewrite(text)
            if not rewrite:
                raise ValueError("the answer holds no query")
            return rewrite

        def repair(reason: str) -> dict[str, str]:
            return {"role": "user", "content": f"Your answer could not be used ({reason}). "
                                               "Reply with the rewritten search query only, on one line."}

        answers = self.endpoint.complete_parsed([rewrite_messages(q, self.prompt) for q in queries], parse, repair,
                                                format_retries=self.format_retries, desc=f"teacher {self.name}")
        return [RewriteResult(normalise_query(q, 10_000), a.value, self.name, (), a.failure, a.prompt_tokens,
                              a.completion_tokens, a.cached) for q, a in zip(queries, answers)]


def build_rewrite_teacher(kind: str, *, vocabulary: CatalogVocabulary | None = None, settings: Any = None,
                          prompt: RewritePromptSettings | None = None):
    """``agentic`` (needs the catalog ``vocabulary``) or ``endpoint`` (``settings``: the ``teacher`` section)."""
    if kind == "agentic":
        if vocabulary is None:
            raise ConfigError("the agentic rewrite teacher needs the catalog's vocabulary")
        return AgenticRewriter(vocabulary)
    if kind == "endpoint":
        from epm_spark.models.matcher.supervision.endpoint import ChatEndpoint

        endpoint_settings = settings.endpoint if settings is not None else None
        if endpoint_settings is None or not endpoint_settings.configured:
            raise ConfigError("the endpoint rewrite teacher needs teacher.endpoint.base_url and teacher.endpoint.model")
        return EndpointRewriter(ChatEndpoint(endpoint_settings), prompt=prompt, format_retries=settings.format_retries)
    raise ConfigError(f"unknown rewrite teacher {kind!r}; use agentic or endpoint")
