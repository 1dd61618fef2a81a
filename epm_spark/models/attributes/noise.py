"""Seller noise: promotional words, platform and shop tags, bundle text and web-extraction
quoting, removed from a title; and the pack quantity and condition those words state."""

from __future__ import annotations

import re
from dataclasses import dataclass

from epm_spark.models.attributes.lexicons import BRANDS, COLOURS, lexicon_brands
from epm_spark.models.text import clean


CONDITIONS = ("new", "refurbished", "used", "compatible")


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.I)


# Order matters: longer phrases first so "free shipping" is removed whole, not as "free" + "shipping".
_PROMO = [_rx(p) for p in (
    r"\b(?:free|fast|quick|express|next[- ]day|same[- ]day)\s+(?:shipping|delivery|dispatch|postage|p&p)\b",
    r"\b(?:best|lowest|great|low|top|wholesale|special)\s+price[s]?\b",
    r"\b(?:hot|big|on|flash|mega)\s+sale\b", r"\bsale\b", r"\bclearance\b",
    r"\b(?:special|limited(?:\s+time)?)\s+offer\b", r"\blimited\s+time\b", r"\bdeal\s+of\s+the\s+day\b",
    r"\b(?:buy|shop|order)\s+(?:now|online|today)\b", r"\bbuy\s+quality\b", r"\bbuy\b", r"\bcheap(?:est)?\b",
    r"\bdiscount(?:ed)?\b",
    r"\b(?:in\s+stock|ships?\s+today|uk\s+seller|us\s+seller|fast\s+dispatch)\b",
    r"\b(?:high|top|best|premium)\s+quality\b", r"\baaa\+?(?=\s)", r"\breplica\b",
    r"\b(?:100%\s*)?(?:original|genuine|authentic)\b", r"\bofficial(?:ly\s+licensed)?\b",
    r"\bwholesale\b", r"\bprice[s]?\b", r"\bprijz(?:en)?\b", r"\bpreis(?:e)?\b", r"\bprix\b", r"\bprecio[s]?\b",
    r"\b(?:hot|new)\s+arrivals?\b", r"\b(?:#1\s+)?best[- ]?sellers?\b", r"\btop[- ]rated(?:\s+seller)?\b",
    r"\bfree\s+gift\b",
)]


_PLATFORM = [_rx(p) for p in (
    r"\bamazon'?s\s+choice\b", r"\[\s*prime\s*\]", r"\bprime\s+eligible\b", r"\bamazon\s+prime\b",
    r"\bfulfilled\s+by\s+amazon\b", r"\bebay\b", r"\bfba\b",
    r"\b[\w-]+\.(?:com|net|org|de|co\.uk|uk|nl|fr|it|es|eu|ca|com\.au|pl|ch|at|be)\b",
)]


# Web-extraction leftovers in WDC titles: language tags and quoted nulls.
_QUOTING = [_rx(p) for p in (r'"*@[a-z]{2}\b', r'"*\bnull\b"*')]


_NEW = [_rx(p) for p in (
    r"\bbrand[- ]new\b", r"\b100%\s*new\b", r"\bnew\s+in\s+box\b", r"\bnib\b", r"\bfactory\s+sealed\b",
    r"[(\[]\s*new\s*[)\]]", r"^\s*new\b(?!\s+(?:era|balance|york|orleans|jersey|zealand|england|mexico|line|edition))",
    r"\bnew\s*$", r"\bneu\b", r"\bnuevo\b", r"\bneuf\b", r"\bsealed\b",
)]


_CONDITION = [
    ("refurbished", _rx(r"\b(?:manufacturer\s+|factory\s+|certified\s+)?(?:refurbished|refurb|renewed|reconditioned|"
                        r"remanufactured|generalüberholt|reacondicionado|ricondizionato|reconditionné)\b")),
    ("used", _rx(r"\b(?:used|pre-?owned|second[- ]hand|gebraucht|usado|usato|occasion|open[- ]box)\b")),
    ("compatible", _rx(r"\b(?:compatible|kompatibel|compatibile|remanufactured\s+for|replacement\s+for|"
                       r"generic|non[- ]oem|alternative)\b")),
]


_ACCESSORIES = (r"(?:charger|charging\s+(?:cable|case)|case|carry(?:ing)?\s+case|bag|pouch|cable|batter(?:y|ies)|"
                r"memory\s+card|sd\s+card|screen\s+protector|stand|mount|strap|tripod|remote|adapter|"
                r"headphones|earphones|gift|bonus|stylus|sleeve|cleaning\s+kit|lens\s+cloth|accessor(?:y|ies)|"
                r"adaptor|adaptador)")


_BUNDLE = [_rx(p) for p in (
    r"\s\+\s*(?:free\s+)?(?:a\s+)?[^+|]{1,40}$",
    rf"(?:\b(?:with|incl\.?|including|inkl\.?|plus|mit|con)\s+|\bw/\s*|\bc/\s*)"
    rf"(?:free\s+|a\s+|an\s+|extra\s+|spare\s+)*"
    rf"(?:[\w-]+\s+){{0,2}}{_ACCESSORIES}\b",
    r"\bbundle\b", r"\bbonus\b",
)]


_QUANTITY = [
    (_rx(r"\b(\d{1,3})\s*-?\s*(?:er[- ]?)?(?:pack|pk|pcs|pieces?|count|ct|stück|stk|units?|packs?)\b"), None),
    (_rx(r"\b(?:pack|set|lot|box|case)\s+of\s+(\d{1,3})\b"), None),
    (_rx(r"(?:^|(?<=[\s(\[,]))x\s?(\d{1,2})\s*(?=$|[)\]])"), None),
    (_rx(r"\b(\d{1,3})\s*-?\s*(?:users?|seats?|licen[cs]es?|pc)\b(?!\s*-?\d)"), None),
    (_rx(r"\b(?:twin|double|dual)[- ]pack\b"), 2),
    (_rx(r"\btriple[- ]pack\b"), 3),
    (_rx(r"\bsingle(?:[- ]pack)?\b"), 1),
]


_SHOP_WORDS = _rx(r"\b(?:shop|store|online|outlet|direct|gmbh|ltd|inc|llc|mall|market(?:place)?|warehouse|"
                  r"tweakers|novatech|pcbyte|scan|ebuyer|newegg|walmart|bestbuy|best\s+buy|argos|currys)\b|\.com\b")


@dataclass(frozen=True)
class NoiseStripped:
    text: str
    removed: tuple[str, ...]


def unescape(title: str) -> str:
    # WDC titles carry JSON-escaped inch marks (\") and doubled CSV quotes ("").
    title = title.replace('\\"', '"').replace("\\'", "'")
    return title


def strip_noise(title: str) -> NoiseStripped:
    """Remove seller noise from a title; return the clean title and what was removed."""
    text = unescape(clean(title) or "")
    removed: list[str] = []

    def cut(pattern: re.Pattern[str], keep_group: bool = False) -> None:
        nonlocal text

        def repl(m: re.Match[str]) -> str:
            phrase = " ".join(m.group(0).strip(" \"'-|,;:!*").split())
            if phrase:
                removed.append(phrase)
            return " "

        text = pattern.sub(repl, text)

    for p in _QUOTING:
        cut(p)
    text = _shop_suffix(text, removed)
    for p in (*_PLATFORM, *_PROMO, *_NEW, *_BUNDLE):
        cut(p)
    for p, _ in _QUANTITY[:3] + _QUANTITY[4:6]:
        cut(p)
    # Quotes that are not inch marks are web-extraction leftovers.
    text = re.sub(r'(?<![\d\s])"|(?<!\d)\s"|^"|""', " ", text)
    text = re.sub(r"(?:\s*[|,;:/!*–-])+\s*$", "", text)
    text = re.sub(r"^(?:\s*[|,;:/!*–-])+\s*", "", text)
    text = re.sub(r"\(\s*\)|\[\s*\]", " ", text)
    text = " ".join(text.split())
    return NoiseStripped(text, tuple(dict.fromkeys(r for r in removed if r)))


def _shop_suffix(text: str, removed: list[str]) -> str:
    """Drop a trailing shop name after ``|`` (no digits, no brand, no colour) or after `` - `` (shop words)."""
    for sep in (" | ", "|", " - ", " – ", " :: "):
        if sep not in text:
            continue
        head, _, tail = text.rpartition(sep)
        tail_clean = tail.strip(" \"'")
        words = tail_clean.lower().split()
        if not head.strip() or not words or len(words) > 5 or any(c.isdigit() for c in tail_clean):
            continue
        shop_like = bool(_SHOP_WORDS.search(tail_clean))
        if sep.strip() == "|":
            descriptive = (any(w in COLOURS or w in BRANDS for w in words)
                           or lexicon_brands(tail_clean.lower()) or len(words) > 4)
            if shop_like or not descriptive:
                removed.append(tail_clean)
                return head
        elif shop_like:
            removed.append(tail_clean)
            return head
    return text


def read_quantity(text: str) -> int | None:
    for pattern, fixed in _QUANTITY:
        m = pattern.search(text)
        if m:
            n = fixed if fixed is not None else int(m.group(1))
            if 0 < n < 1000:
                return n
    return None


def read_condition(text: str) -> str | None:
    for name, pattern in _CONDITION:
        if pattern.search(text):
            return name
    if any(p.search(text) for p in _NEW):
        return "new"
    return None
