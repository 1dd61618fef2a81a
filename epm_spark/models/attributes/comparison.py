"""Two listings compared attribute by attribute: same, different or unknown, with the values and
the reason, so a rationale can quote what it saw."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from epm_spark.models.attributes.codes import model_numbers_related, normalise_model_number
from epm_spark.models.attributes.extraction import ListingAttributes, extract, stem


# What a decision and a rationale compare, in this order.
ATTRIBUTES = ("brand", "model_number", "product_line", "capacity", "colour", "quantity", "condition")


@dataclass(frozen=True)
class AttributeComparison:
    attribute: str
    verdict: str  # same / different / unknown
    left: str | None
    right: str | None
    reason: str = ""


@dataclass(frozen=True)
class Evidence:
    """The result of :func:`compare`: one comparison per attribute, plus the line similarity."""

    comparisons: dict[str, AttributeComparison]
    line_similarity: float
    left: ListingAttributes
    right: ListingAttributes

    def __getitem__(self, attribute: str) -> AttributeComparison:
        return self.comparisons[attribute]

    def verdict(self, attribute: str) -> str:
        return self.comparisons[attribute].verdict

    @property
    def verdicts(self) -> dict[str, str]:
        return {a: c.verdict for a, c in self.comparisons.items()}

    @property
    def noise(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.left.noise, *self.right.noise)))


class TokenWeights(dict):
    """Token -> weight; ``default`` is the weight of a token never seen (the rarest)."""

    default: float = 1.0


def token_weights(titles: Iterable[str]) -> TokenWeights:
    """Inverse document frequency of words over a set of titles (``log((1 + N) / (1 + df)) + 1``)."""
    df: Counter[str] = Counter()
    n = 0
    for title in titles:
        n += 1
        words = re.findall(r"[a-z0-9äöüéèàíóúß][a-z0-9äöüéèàíóúß.'+-]*", (title or "").lower())
        df.update({stem(w.strip(".-'+")) for w in words})
    weights = TokenWeights({t: math.log((1 + n) / (1 + c)) + 1.0 for t, c in df.items()})
    weights.default = math.log(1 + n) + 1.0
    return weights


def compare(left: ListingAttributes | Mapping[str, Any], right: ListingAttributes | Mapping[str, Any], *,
            weights: Mapping[str, float] | None = None, line_same: float = 0.6,
            line_different: float = 0.25) -> Evidence:
    """Compare two listings attribute by attribute.

    ``weights`` (token -> weight, e.g. :func:`token_weights` over the catalog) make rare
    words count more in the product-line similarity; without them every word counts 1.
    """
    a = left if isinstance(left, ListingAttributes) else extract(left)
    b = right if isinstance(right, ListingAttributes) else extract(right)
    sim = _line_similarity(a.line_tokens, b.line_tokens, weights)
    comparisons = {
        "brand": _compare_brand(a, b),
        "model_number": _compare_codes(a, b),
        "product_line": _compare_line(a, b, sim, line_same, line_different),
        "capacity": _compare_measures(a, b),
        "colour": _compare_sets("colour", a.colours, b.colours),
        "quantity": _compare_quantity(a, b),
        "condition": _compare_condition(a, b),
    }
    assert tuple(comparisons) == ATTRIBUTES
    return Evidence(comparisons, sim, a, b)


def _compare_brand(a: ListingAttributes, b: ListingAttributes) -> AttributeComparison:
    def names(x: ListingAttributes, strong: bool) -> set[str]:
        out = set(x.brand_mentions)
        if x.brand and (not strong or x.brand_source != "guess"):
            out.add(x.brand)
        return out

    la, lb = a.brand, b.brand
    if not la or not lb:
        return AttributeComparison("brand", "unknown", la, lb, "one listing names no brand")
    if names(a, False) & names(b, False):
        return AttributeComparison("brand", "same", la, lb)
    # A brand named on one side and spelled out in the other's title counts (brand fields vs titles).
    if any(normalise_model_number(n) in b.search_text for n in names(a, False) if len(n) >= 3) or \
            any(normalise_model_number(n) in a.search_text for n in names(b, False) if len(n) >= 3):
        return AttributeComparison("brand", "same", la, lb, "named in the other title")
    if names(a, True) and names(b, True):
        return AttributeComparison("brand", "different", la, lb)
    return AttributeComparison("brand", "unknown", la, lb, "brand guessed from the first word")


def _near_miss(x: str, y: str) -> bool:
    if abs(len(x) - len(y)) > 2:
        return False
    prefix = 0
    for cx, cy in zip(x, y):
        if cx != cy:
            break
        prefix += 1
    return prefix >= 3 or _edit_distance(x, y) <= 2


def _edit_distance(x: str, y: str) -> int:
    prev = list(range(len(y) + 1))
    for i, cx in enumerate(x, 1):
        cur = [i]
        for j, cy in enumerate(y, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (cx != cy)))
        prev = cur
    return prev[-1]


def _explained(code: str, other: ListingAttributes) -> bool:
    return code in other.model_numbers or (len(code) >= 4 and code in other.search_text)


def unexplained_codes(a: ListingAttributes, b: ListingAttributes) -> tuple[list[str], list[str]]:
    """Each listing's model codes that the other neither carries nor spells out in its text."""
    return ([c for c in a.model_numbers if not _explained(c, b)],
            [d for d in b.model_numbers if not _explained(d, a)])


def _compare_codes(a: ListingAttributes, b: ListingAttributes) -> AttributeComparison:
    va, vb = a.value("model_number"), b.value("model_number")
    if not a.model_numbers and not b.model_numbers:
        return AttributeComparison("model_number", "unknown", None, None, "no model number")
    shared = [c for c in a.model_numbers if _explained(c, b)] + [d for d in b.model_numbers if _explained(d, a)]
    # Codes left unexplained on both sides that differ in a character or two are variants of one
    # family (colour or capacity suffixes: DVP-FX820R vs DVP-FX820P): that outweighs a shared code.
    rest_a, rest_b = unexplained_codes(a, b)
    near = [(c, d) for c in rest_a for d in rest_b if _near_miss(c, d)]
    if near:
        return AttributeComparison("model_number", "different", va, vb, "near miss")
    if shared or any(model_numbers_related(c, d) for c in rest_a for d in rest_b):
        return AttributeComparison("model_number", "same", va, vb, "shared model number")
    if not a.model_numbers or not b.model_numbers:
        return AttributeComparison("model_number", "unknown", va, vb, "model number on one side only")
    return AttributeComparison("model_number", "different", va, vb, "no model number in common")


def _line_similarity(x: tuple[str, ...], y: tuple[str, ...], weights: Mapping[str, float] | None) -> float:
    if not x or not y:
        return 0.0
    if weights:
        default = getattr(weights, "default", None) or max(weights.values())
        w = lambda t: weights.get(t, default)  # noqa: E731
    else:
        w = lambda t: 1.0  # noqa: E731
    sx, sy = set(x), set(y)
    inter = sum(w(t) for t in sx & sy)
    union = sum(w(t) for t in sx | sy)
    smaller = min(sum(w(t) for t in sx), sum(w(t) for t in sy))
    return 0.5 * (inter / union) + 0.5 * (inter / smaller)


def _numbers_conflict(x: tuple[str, ...], y: tuple[str, ...]) -> bool:
    """Both titles carry numbers (versions, years, series) and none agree: Evolve 40 vs Evolve 20."""
    if not x or not y:
        return False
    for v in x:
        for u in y:
            if v == u or v.startswith(u + ".") or u.startswith(v + "."):
                return False
    return True


# Words that name what kind of thing a listing is when the other listing is the main product.
_ACCESSORY_WORDS = frozenset("case bag sleeve pouch cover skin holster strap protector refill".split())


# Software editions and licence kinds: two listings naming different ones are different products.
_EDITION_WORDS = frozenset("""
standard professional premium deluxe home student academic basic ultimate enterprise express lite platinum
elements
""".split())


_LICENCE_WORDS = frozenset("upgrade upsell renewal academic oem trial".split())


def _kind_conflict(a: ListingAttributes, b: ListingAttributes) -> str | None:
    la, lb = set(a.line_tokens), set(b.line_tokens)
    acc_a, acc_b = la & _ACCESSORY_WORDS, lb & _ACCESSORY_WORDS
    if bool(acc_a) != bool(acc_b) and la and lb:
        return f"accessory ({', '.join(sorted(acc_a or acc_b))}) vs the product"
    ed_a, ed_b = la & _EDITION_WORDS, lb & _EDITION_WORDS
    if ed_a and ed_b and not ed_a & ed_b:
        return f"edition {'/'.join(sorted(ed_a))} vs {'/'.join(sorted(ed_b))}"
    lic_a, lic_b = la & _LICENCE_WORDS, lb & _LICENCE_WORDS
    if bool(lic_a) != bool(lic_b):
        return f"licence {'/'.join(sorted(lic_a or lic_b))} on one side only"
    return None


def _compare_line(a: ListingAttributes, b: ListingAttributes, sim: float, same_at: float,
                  different_at: float) -> AttributeComparison:
    va, vb = a.value("product_line"), b.value("product_line")
    if _numbers_conflict(a.versions, b.versions):
        return AttributeComparison("product_line", "different", va, vb,
                                   f"numbers {'/'.join(a.versions)} vs {'/'.join(b.versions)}")
    kind = _kind_conflict(a, b)
    if kind:
        return AttributeComparison("product_line", "different", va, vb, kind)
    if not a.line_tokens or not b.line_tokens:
        return AttributeComparison("product_line", "unknown", va, vb, "no product line words")
    if sim >= same_at:
        return AttributeComparison("product_line", "same", va, vb, f"similarity {sim:.2f}")
    if sim <= different_at:
        return AttributeComparison("product_line", "different", va, vb, f"similarity {sim:.2f}")
    return AttributeComparison("product_line", "unknown", va, vb, f"similarity {sim:.2f}")


def _compare_measures(a: ListingAttributes, b: ListingAttributes) -> AttributeComparison:
    va, vb = a.value("capacity"), b.value("capacity")
    if not a.measures or not b.measures:
        return AttributeComparison("capacity", "unknown", va, vb, "size on one side only" if va or vb else "")
    verdict, reason = "unknown", "different kinds of size"
    for dim in {m.dimension for m in a.measures} & {m.dimension for m in b.measures}:
        xs = [m for m in a.measures if m.dimension == dim]
        ys = [m for m in b.measures if m.dimension == dim]
        pairs = [(x, y) for x in xs for y in ys if x.same_as(y)]
        if not pairs:
            return AttributeComparison("capacity", "different", va, vb, f"{dim} differs")
        verdict = "same"
        x, y = pairs[0]
        reason = f"{x.text} = {y.text}" if x.text.replace(" ", "") != y.text.replace(" ", "") else ""
    return AttributeComparison("capacity", verdict, va, vb, reason)


def _compare_sets(attribute: str, x: frozenset[str], y: frozenset[str]) -> AttributeComparison:
    vx, vy = ", ".join(sorted(x)) or None, ", ".join(sorted(y)) or None
    if not x or not y:
        return AttributeComparison(attribute, "unknown", vx, vy)
    return AttributeComparison(attribute, "same" if x & y else "different", vx, vy)


def _compare_quantity(a: ListingAttributes, b: ListingAttributes) -> AttributeComparison:
    qa, qb = a.quantity, b.quantity
    va, vb = a.value("quantity"), b.value("quantity")
    if qa is None and qb is None:
        return AttributeComparison("quantity", "unknown", None, None)
    # A multipack is not the single item; a listing that says nothing is read as one unit.
    if (qa or 1) == (qb or 1):
        return AttributeComparison("quantity", "same", va or "1", vb or "1")
    return AttributeComparison("quantity", "different", va or "1", vb or "1",
                               "" if qa and qb else "pack size on one side only")


def _compare_condition(a: ListingAttributes, b: ListingAttributes) -> AttributeComparison:
    ca, cb = a.condition, b.condition
    if ca is None or cb is None:
        return AttributeComparison("condition", "unknown", ca, cb)
    return AttributeComparison("condition", "same" if ca == cb else "different", ca, cb)
