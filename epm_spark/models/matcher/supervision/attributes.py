"""What a listing says about the product, with the seller's noise taken out.

Three steps, each usable alone:

* :func:`strip_noise`: remove promotional words ("free shipping", "best price", "new",
  "genuine"), platform and shop tags ("Amazon's Choice", "[Prime]", "| Shop Name"),
  bundle text ("+ case", "with charger", "2-pack") and the quoting left over from web
  extraction (``"Null"``, ``@en``). Returns the clean title and the removed phrases.
* :func:`extract`: the attributes of one listing (a ``products`` row as a mapping):
  brand, model numbers, product-line tokens, capacities and sizes with units
  normalised, colours (English, German, French, Spanish, Italian, Dutch basics),
  pack quantity and condition.
* :func:`compare`: ``same`` / ``different`` / ``unknown`` per attribute of
  :data:`~epm_spark.models.matcher.decision.ATTRIBUTES`, each with the two values
  and the reason, so a rationale can quote what it saw.

Unit rules (see ``docs/matcher-teacher.md``): storage is read in GB with decimal
prefixes (1 TB = 1000 GB) and two storage values are the same when within 3% of
each other, which also makes 1 TB == 1024 GB and 8 GB == 8192 MB; lengths go to mm
(1 inch = 25.4 mm, ``"``, ``''``, ``inch``, ``zoll``), volumes to ml, masses to g,
charge to mAh, power to W, all compared within 2%. Rule-based on purpose: it needs
no model, explains itself, and is the offline teacher's eyes.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from epm_spark.models.matcher.decision import ATTRIBUTES
from epm_spark.models.text import clean

__all__ = [
    "Measure",
    "NoiseStripped",
    "ListingAttributes",
    "AttributeComparison",
    "Evidence",
    "strip_noise",
    "extract",
    "compare",
    "normalise_brand",
    "normalise_model_number",
    "looks_like_model_number",
    "model_numbers_related",
    "unexplained_codes",
    "token_weights",
    "TokenWeights",
    "parse_measures",
    "CONDITIONS",
]

CONDITIONS = ("new", "refurbished", "used", "compatible")

# ----------------------------------------------------------------------------- lexicons

# Other spellings and legal names of a brand -> its canonical name.
_BRAND_ALIASES = {
    "hewlett packard": "hp", "hewlett-packard": "hp", "hp inc": "hp", "hpe": "hp", "hewlett packard enterprise": "hp",
    "western digital": "wd", "wdc": "wd", "wd": "wd",
    "coolermaster": "cooler master", "audio technica": "audio-technica", "audiotechnica": "audio-technica",
    "daddario": "d'addario", "d addario": "d'addario", "g skill": "g.skill", "gskill": "g.skill",
    "a data": "adata", "a-data": "adata", "ram mount": "ram mounts", "ram": "ram mounts",
    "ubiquiti networks": "ubiquiti", "ubnt": "ubiquiti", "tp link": "tp-link", "tplink": "tp-link",
    "d link": "d-link", "dlink": "d-link", "apple computer": "apple", "kingston digital": "kingston",
    "hyper x": "hyperx", "lg electronics": "lg", "black and decker": "black & decker",
    "black decker": "black & decker", "bose corporation": "bose", "the pokemon company": "pokemon",
    "pokémon": "pokemon", "apc mge": "apc", "schneider electric": "apc", "gn netcom": "jabra",
    "swiss military": "swiss military hanowa", "daniel wellington horloges": "daniel wellington",
    "findex com": "findex", "smith micro": "smith micro",
    "microsoft corporation": "microsoft", "adobe systems": "adobe", "sage software": "sage",
    "broderbund": "broderbund", "the learning company": "learning company",
}

_BRANDS = frozenset("""
acer adata adobe aeg akg alcatel alienware amazon amd anker aoc apc apple asrock asus atomos audio-technica
avermedia avery belkin benq beurer blackberry blaze blackmagic bosch bose braun brother buffalo canon casio
celestron cisco citizen clarks coby corsair crucial cyberpower d'addario d-link dell denon dji dymo dyson
eizo elgato elixir emtec energizer epson evans evga fellowes fiio fitbit fossil fujifilm fujitsu g.skill
garmin gigabyte gopro griffin hama hikvision hisense hitachi honeywell hp htc huawei hyperx ibm iiyama
ilford intel intuit iomega jabra jbl jvc kenwood kensington kicker kingston kitchenaid klipsch kodak konica
kyocera lacie lenovo lexar lexmark lg linksys linovision logitech longines lowepro magellan makita
manfrotto marantz maxell maxxis memorex microsoft mikrotik minolta mitsubishi motorola msi netgear nikon
nintendo nokia nvidia oakley oki olympus omega onkyo oneplus oster panasonic parrot patriot pentax philips
pioneer plantronics pny pokemon polaroid qnap qbp rado razer ricoh roku rolex sage samsung samyang sandisk
sanyo sapphire scosche seagate seiko sennheiser sharp shimano sigma skullcandy sony speck sram steelseries
swatch symantec synology tamron targus thermaltake thq tissot tomtom toshiba transcend trust tp-link
ubiquiti uniden verbatim viewsonic vizio wacom wd whirlpool xerox yamaha zagg zebra zotac zyxel norton
mcafee kaspersky autodesk corel nuance roxio ubisoft activision sega capcom konami valve blizzard
broderbund encore findex chronos enfocus readiris apricorn sonos harman monster tivo frigidaire haier
miele smeg delonghi krups nespresso breville cuisinart keurig vtech magnavox insignia rocketfish dynex
sylvania rca emerson polk cerwin-vega hanowa
""".split())

# Brands that are more than one word (matched as phrases, longest first).
_MULTIWORD_BRANDS = sorted({
    "cooler master", "western digital", "audio-technica", "tag heuer", "audemars piguet", "hydro flask",
    "ram mounts", "swiss military hanowa", "daniel wellington", "new era", "park tool", "black & decker",
    "hamilton beach", "ultimate ears", "cerwin vega", "electronic arts", "business objects", "smith micro",
    "life extension", "traveler's company", "sky diamonds", "blaze outdoor products", "learning company",
    "computer associates", "victory multimedia", "hewlett packard", "hewlett-packard", "kingston digital",
}, key=len, reverse=True)

# Words that look like a brand in first position but are not one.
_NOT_BRANDS = frozenset("""
the a an new original genuine authentic buy cheap best top hot sale replica aaa quality high premium
official brand free gaming laser toner ink cartridge headset headphones mouse keyboard monitor cable
adapter case cover battery charger memory card usb wireless digital portable professional pro mini
kappe gorra cap set pack kit lot bundle refurbished used compatible replacement for with and black white
red blue green silver grey gray gold pink
""".split())

_JUNK_BRANDS = frozenset({"null", "none", "n/a", "na", "unknown", "generic", "no brand", "unbranded", "default",
                          "nobrand", "other", "-", "oem"})

# Trailing words that name the legal entity, not the brand.
_BRAND_SUFFIXES = frozenset("""
inc incorporated corp corporation co company ltd limited llc gmbh ag sa plc software computer computers
systems technologies technology tech international intl products direct of america usa us the com group
entertainment interactive publishing media labs usa europe networks electronics
""".split())

_COLOURS: dict[str, str] = {}
for _canonical, _words in {
    "black": "black schwarz noir negro nero zwart preto czarny svart musta",
    "white": "white weiss weiß blanc blanche blanco bianco wit branco biały bialy vit",
    "red": "red rot rouge rojo rosso rood vermelho czerwony",
    "blue": "blue blau bleu azul blu blauw niebieski navy",
    "green": "green grün gruen vert verde groen zielony",
    "yellow": "yellow gelb jaune amarillo giallo geel amarelo",
    "silver": "silver silber argent argenté plata plateado argento zilver prata",
    "grey": "grey gray grau gris grigio grijs cinza graphite anthracite anthrazit",
    "gold": "gold golden doré dorado oro goud dourado",
    "pink": "pink rosa rose roze",
    "purple": "purple lila violett violet morado viola paars roxo",
    "orange": "orange naranja arancione oranje laranja",
    "brown": "brown braun marron marrón bruin marrone castanho",
    "beige": "beige",
    "cyan": "cyan ciano cian",
    "magenta": "magenta",
    "clear": "clear transparent transparente trasparente",
}.items():
    for _w in _words.split():
        _COLOURS[_w] = _canonical
_COLOUR_PHRASES = {"space gray": "grey", "space grey": "grey", "rose gold": "rose gold", "photo black": "black",
                   "matte black": "black", "jet black": "black", "midnight blue": "blue", "light blue": "blue",
                   "dark blue": "blue", "sky blue": "blue", "dark grey": "grey", "light grey": "grey"}

_STOPWORDS = frozenset("""
a an the and or for with of in on to by from at as is are w/ & - + / mit für fur und de la le les des du pour
avec et con per y el los las der die das den dem ein eine sur en het een voor van met it its this that
""".split())

# ----------------------------------------------------------------------------- noise patterns

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

# ----------------------------------------------------------------------------- measures

_NUM = r"(\d+(?:[.,]\d+)?)"
# unit spelling -> (dimension, factor to the base unit: GB, mAh, W, mm, ml, g)
_UNITS: dict[str, tuple[str, float]] = {
    "tb": ("storage", 1000.0), "tib": ("storage", 1000.0), "terabyte": ("storage", 1000.0),
    "gb": ("storage", 1.0), "gib": ("storage", 1.0), "gigabyte": ("storage", 1.0),
    "go": ("storage", 1.0), "mb": ("storage", 0.001), "mib": ("storage", 0.001), "megabyte": ("storage", 0.001),
    "mah": ("charge", 1.0), "ah": ("charge", 1000.0),
    "w": ("power", 1.0), "watt": ("power", 1.0), "watts": ("power", 1.0), "kw": ("power", 1000.0),
    # Metres are kept apart from mm/cm/inch: "600 m" is a depth rating or a cable, "45 mm" a case or a screen.
    "mm": ("length", 1.0), "cm": ("length", 10.0), "m": ("distance", 1.0),
    "inch": ("length", 25.4), "inches": ("length", 25.4), "in": ("length", 25.4), "zoll": ("length", 25.4),
    "pouces": ("length", 25.4), '"': ("length", 25.4), "''": ("length", 25.4), "'": ("length", 25.4),
    "”": ("length", 25.4), "″": ("length", 25.4),
    "ml": ("volume", 1.0), "cl": ("volume", 10.0), "l": ("volume", 1000.0), "ltr": ("volume", 1000.0),
    "liter": ("volume", 1000.0), "litre": ("volume", 1000.0), "oz": ("volume", 29.5735),
    "g": ("mass", 1.0), "kg": ("mass", 1000.0), "gram": ("mass", 1.0), "grams": ("mass", 1.0),
}
# Relative tolerance per dimension: storage is loose enough for decimal vs binary prefixes (2.4%).
_TOLERANCE = {"storage": 0.03}
_DEFAULT_TOLERANCE = 0.02
_UNIT_ALT = "|".join(sorted((re.escape(u) for u in _UNITS), key=len, reverse=True))
_MEASURE = re.compile(
    rf"(?<![\w.]){_NUM}(?:\s?-\s?{_NUM})?\s?-?\s?(?P<unit>{_UNIT_ALT})(?![a-z0-9])", re.I)
_MULTIPLIED = re.compile(rf"(?<![\w.])(\d{{1,2}})\s?x\s?{_NUM}\s?(?P<unit>tb|gb|mb)(?![a-z0-9])", re.I)

# ----------------------------------------------------------------------------- model numbers

# Alphanumeric tokens that are specifications, not model numbers.
_SPEC_TOKEN = re.compile(
    r"^(?:ddr\d?l?(?:-?\d+)?|lpddr\d\w*|gddr\d\w*|pc\d?l?-?\d+|usb-?\d(?:\.\d)?\w*|lga-?\d+|am\d\+?|fm\d\+?|"
    r"802\.?11\w*|\d{3,4}[pi]|\d+k|x\d+|h\.?26\d|mp\d|wi-?fi\d*|\dg|sata\d*\w*|pcie\d*\w*|hdmi\d*\w*|"
    r"cat\d\w*|class\d+|c\d{1,2}|u\d|v\d{1,2}|uhs-?i+|\d+(?:[.,]\d+)?-?[a-z]+|\d+(?:gb|mb)/s|"
    r"gen\d+|ipx?\d|rs-?\d+|sata[-/]?\d*|\d+/uhs-?i+|cl\d{1,2}|uhs-?\d|[an]\d{3}|a[cx]\d{3,5}|\d+x\d+\w*|"
    r"windows\d+|win\d+|ios\d+|v?\d{1,4}(?:\.\d{1,3}){1,2}[a-z]?)$",
    re.I,
)
_CODE_SPLIT = re.compile(r"[\s,;()\[\]{}|!?*:\"”“]+")


def normalise_model_number(code: str) -> str:
    """Upper case without separators: ``sm-g991b`` and ``SMG991B`` compare equal."""
    return re.sub(r"[^0-9A-Z]", "", code.upper())


def looks_like_model_number(token: str) -> bool:
    """A code (CMK64GX4M4A2666C16, 388504-B21), a long part number or ``#117``; not a spec (DDR4, 32GB)."""
    t = token.strip(".-/#'")
    if token.startswith("#") and t.isdigit():
        return len(t) >= 2
    norm = normalise_model_number(t)
    if len(norm) < 4 or _SPEC_TOKEN.match(t) or _MEASURE.fullmatch(t) or _MULTIPLIED.fullmatch(t):
        return False
    has_digit = any(c.isdigit() for c in norm)
    has_alpha = any(c.isalpha() for c in norm)
    if has_digit and has_alpha:
        return True
    # Long digit runs are part numbers (40433, 981-000480, 215.30.46.51.01.001); four digits are years.
    return has_digit and not has_alpha and len(norm) >= 5


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Measure:
    """A capacity or size in its dimension's base unit (GB, mAh, W, mm, ml, g)."""

    value: float
    dimension: str
    text: str

    def same_as(self, other: Measure) -> bool:
        if self.dimension != other.dimension:
            return False
        tol = _TOLERANCE.get(self.dimension, _DEFAULT_TOLERANCE)
        return abs(self.value - other.value) <= tol * max(abs(self.value), abs(other.value), 1e-9)


@dataclass(frozen=True)
class NoiseStripped:
    text: str
    removed: tuple[str, ...]


@dataclass(frozen=True)
class ListingAttributes:
    """One listing's attributes; values are normalised, ``*_text`` keep the seller's spelling."""

    title: str
    clean_title: str
    noise: tuple[str, ...] = ()
    brand: str | None = None
    brand_source: str | None = None  # "field", "lexicon" or "guess"
    brand_mentions: frozenset[str] = frozenset()
    model_numbers: tuple[str, ...] = ()
    model_numbers_text: tuple[str, ...] = ()
    line_tokens: tuple[str, ...] = ()
    versions: tuple[str, ...] = ()
    measures: tuple[Measure, ...] = ()
    colours: frozenset[str] = frozenset()
    quantity: int | None = None
    condition: str | None = None
    search_text: str = field(default="", repr=False)

    def value(self, attribute: str) -> str | None:
        """The attribute as a short display string, or ``None`` when the listing does not say."""
        if attribute == "brand":
            return self.brand
        if attribute == "model_number":
            return ", ".join(self.model_numbers_text) or None
        if attribute == "product_line":
            return " ".join(self.line_tokens + self.versions) or None
        if attribute == "capacity":
            return ", ".join(m.text for m in self.measures) or None
        if attribute == "colour":
            return ", ".join(sorted(self.colours)) or None
        if attribute == "quantity":
            return None if self.quantity is None else str(self.quantity)
        if attribute == "condition":
            return self.condition
        raise KeyError(attribute)


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


# ----------------------------------------------------------------------------- noise


def _unescape(title: str) -> str:
    # WDC titles carry JSON-escaped inch marks (\") and doubled CSV quotes ("").
    title = title.replace('\\"', '"').replace("\\'", "'")
    return title


def strip_noise(title: str) -> NoiseStripped:
    """Remove seller noise from a title; return the clean title and what was removed."""
    text = _unescape(clean(title) or "")
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
            descriptive = (any(w in _COLOURS or w in _BRANDS for w in words)
                           or _lexicon_brands(tail_clean.lower()) or len(words) > 4)
            if shop_like or not descriptive:
                removed.append(tail_clean)
                return head
        elif shop_like:
            removed.append(tail_clean)
            return head
    return text


# ----------------------------------------------------------------------------- extraction


def normalise_brand(value: Any) -> str | None:
    """A brand name in canonical form: lower case, legal suffixes dropped, known aliases merged."""
    text = clean(value)
    if not text:
        return None
    text = text.lower().replace("®", "").replace("™", "")
    text = re.sub(r"\(.*?\)", " ", text)
    text = re.sub(r"[^\w&'.+ -]", " ", text)
    text = " ".join(text.replace("_", " ").split())
    if text in _JUNK_BRANDS or not text:
        return None
    if text in _BRAND_ALIASES:
        return _BRAND_ALIASES[text]
    words = re.split(r"[\s.-]+", text)
    while len(words) > 1 and (words[-1] in _BRAND_SUFFIXES or len(words[-1]) <= 1):
        words.pop()
    text = " ".join(w for w in words if w)
    text = _BRAND_ALIASES.get(text, text)
    if text in _JUNK_BRANDS or not text or text.isdigit():
        return None
    return text


def _lexicon_brands(lower: str, spelled: set[str] | None = None) -> list[str]:
    """Known brands named in ``lower``, in order; the words as spelled are added to ``spelled``."""
    found: list[tuple[int, str, str]] = []
    padded = " " + re.sub(r"[^a-z0-9&.+' -]", " ", lower) + " "
    for phrase in _MULTIWORD_BRANDS:
        i = padded.find(f" {phrase} ")
        if i >= 0:
            found.append((i, _BRAND_ALIASES.get(phrase, phrase), phrase))
    for m in re.finditer(r"[a-z0-9][a-z0-9&.'+-]*", lower):
        word = m.group(0).strip(".'-")
        canon = _BRAND_ALIASES.get(word)
        if word in _BRANDS or (canon and word not in ("ram", "wd")):
            found.append((m.start(), canon or word, word))
        elif word == "wd" or (word == "ram" and "mount" in lower):
            found.append((m.start(), _BRAND_ALIASES[word], word))
    if spelled is not None:
        for _, _, raw in found:
            spelled.update(re.split(r"[\s-]+", raw))
            spelled.add(raw)
    return [b for _, b, _ in sorted(found)]


def parse_measures(text: str) -> tuple[Measure, ...]:
    """Every capacity/size in ``text`` in its base unit, including both ends of ranges and kit totals."""
    out: list[Measure] = []
    for m in _MULTIPLIED.finditer(text):
        n, value, unit = int(m.group(1)), _number(m.group(2)), m.group("unit").lower()
        dim, factor = _UNITS[unit]
        out.append(Measure(n * value * factor, dim, f"{_fmt(n * value)} {unit.upper()}"))
    for m in _MEASURE.finditer(text):
        unit = m.group("unit").lower()
        dim, factor = _UNITS[unit]
        for raw in (m.group(1), m.group(2)):
            if raw is None:
                continue
            value = _number(raw)
            if dim == "mass" and unit == "g" and value < 10 and "." not in raw:
                continue  # 4G / 5G are network generations, not grams
            if unit == "m" and re.search(rf"(?<![\w.]){re.escape(raw)}M\b", text) and raw == "3":
                continue  # 3M is a brand
            if unit in ("'", "in") and (value > 120 or re.match(r"\s*-?\s*1\b", text[m.end():])):
                continue  # 2-in-1, feet, years
            label = {"'": '"', "''": '"', "”": '"', "″": '"', "inches": '"', "inch": '"', "in": '"',
                     "zoll": '"', "pouces": '"'}.get(unit, unit.upper() if dim == "storage" else unit)
            sep = "" if label == '"' else " "
            out.append(Measure(value * factor, dim, f"{_fmt(value)}{sep}{label}"))
    unique: list[Measure] = []
    for m in out:
        if not any(m.same_as(u) for u in unique):
            unique.append(m)
    return tuple(unique)


def _number(raw: str) -> float:
    if re.fullmatch(r"\d{1,3},\d{3}", raw):
        return float(raw.replace(",", ""))
    return float(raw.replace(",", "."))


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _quantity(text: str) -> int | None:
    for pattern, fixed in _QUANTITY:
        m = pattern.search(text)
        if m:
            n = fixed if fixed is not None else int(m.group(1))
            if 0 < n < 1000:
                return n
    return None


def _condition(text: str) -> str | None:
    for name, pattern in _CONDITION:
        if pattern.search(text):
            return name
    if any(p.search(text) for p in _NEW):
        return "new"
    return None


def _colours(lower: str, brand_words: set[str]) -> frozenset[str]:
    found = set()
    for phrase, canon in _COLOUR_PHRASES.items():
        if phrase in lower:
            found.add(canon)
            lower = lower.replace(phrase, " ")
    for word in re.findall(r"[a-zäöüéèàíóúß]+", lower):
        if word in _COLOURS and word not in brand_words:
            found.add(_COLOURS[word])
    return frozenset(found)


def _attrs_map(listing: Mapping[str, Any]) -> dict[str, str]:
    attrs = listing.get("attributes") or {}
    if not isinstance(attrs, Mapping):
        attrs = dict(attrs)
    return {str(k).lower(): v for k, v in attrs.items() if clean(v)}


def extract(listing: Mapping[str, Any] | str) -> ListingAttributes:
    """The attributes of one listing (a ``products`` row as a mapping, or a bare title)."""
    if isinstance(listing, str):
        listing = {"title": listing}
    title = _unescape(clean(listing.get("title")) or "")
    attrs = _attrs_map(listing)
    stripped = strip_noise(title)
    text = stripped.text
    lower = text.lower()
    raw_lower = title.lower()

    spelled: set[str] = set()
    lexicon = _lexicon_brands(lower, spelled)
    field_brand = normalise_brand(listing.get("brand"))
    if field_brand:
        raw_brand = (clean(listing.get("brand")) or "").lower()
        spelled.update(w for w in re.split(r"[\s-]+", raw_brand) if w and w not in _BRAND_SUFFIXES)
    brand, source = None, None
    if field_brand:
        brand, source = field_brand, "field"
    elif lexicon:
        brand, source = lexicon[0], "lexicon"
    else:
        first = re.match(r"[a-z][a-z0-9&'-]+", lower)
        if first and first.group(0) not in _NOT_BRANDS and first.group(0) not in _COLOURS \
                and not looks_like_model_number(first.group(0)) and len(first.group(0)) > 1:
            brand, source = first.group(0), "guess"
    brand_words: set[str] = set(spelled)
    for b in {brand if source != "guess" else None, *lexicon} - {None}:
        brand_words.add(b)
        brand_words.update(re.split(r"[\s-]+", b))

    codes_text: list[str] = []
    for key in ("model", "model_number", "mpn", "gtin", "ean", "sku"):
        if key in attrs:
            codes_text.extend(t for t in _CODE_SPLIT.split(str(attrs[key])) if t)
    tokens = [p for t in _CODE_SPLIT.split(text) for p in (t.split("/") if t.count("/") >= 2 else [t])]
    codes_text.extend(t.strip(".-/'") for t in tokens if looks_like_model_number(t))
    seen: dict[str, str] = {}
    for t in codes_text:
        norm = normalise_model_number(t)
        if len(norm) >= 2 and norm not in seen:
            seen[norm] = t
    measures = parse_measures(text)
    for key in ("capacity", "size"):
        if key in attrs:
            measures = tuple(dict.fromkeys((*measures, *parse_measures(str(attrs[key])))))
    colour_text = lower + " " + " ".join(str(attrs[k]).lower() for k in ("colour", "color") if k in attrs)
    colours = _colours(colour_text, brand_words)
    quantity = _quantity(title)
    if quantity is None and "pack_size" in attrs:
        quantity = _quantity(f"pack of {attrs['pack_size']}")
    condition = _condition(raw_lower)
    if condition is None and "condition" in attrs:
        condition = _condition(str(attrs["condition"]).lower())

    line, versions = _line_tokens(lower, brand_words, set(seen), measures)
    return ListingAttributes(
        title=title, clean_title=text, noise=stripped.removed, brand=brand, brand_source=source,
        brand_mentions=frozenset(lexicon), model_numbers=tuple(seen), model_numbers_text=tuple(seen.values()),
        line_tokens=line, versions=versions, measures=measures, colours=colours, quantity=quantity,
        condition=condition, search_text=normalise_model_number(title + " " + " ".join(attrs.values())),
    )


def _line_tokens(lower: str, brand_words: set[str], codes: set[str],
                 measures: tuple[Measure, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Product-line words and the bare numbers/versions of a clean title (codes, sizes, brand, colours out)."""
    text = _MULTIPLIED.sub(" ", lower)
    text = _MEASURE.sub(" ", text)
    line: list[str] = []
    numbers: list[str] = []
    for token in re.findall(r"[a-z0-9äöüéèàíóúß][a-z0-9äöüéèàíóúß.'+-]*", text):
        token = token.strip(".-'+")
        if not token or token in _STOPWORDS or token in brand_words or token in _COLOURS:
            continue
        if normalise_model_number(token) in codes or looks_like_model_number(token):
            continue
        if re.fullmatch(r"v?\d+(?:\.\d+)*|'\d\d", token):
            numbers.append(_version(token))
        elif len(token) > 1:
            line.append(_stem(token))
    return tuple(dict.fromkeys(line)), tuple(dict.fromkeys(numbers))


def _stem(token: str) -> str:
    """Fold plurals and one abbreviation so "boosters" meets "booster" and "pro" meets "professional"."""
    if token == "pro":
        return "professional"
    if len(token) > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


def _version(token: str) -> str:
    token = token.lstrip("v'")
    while token.endswith(".0"):
        token = token[:-2]
    return token


# ----------------------------------------------------------------------------- comparison


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
        df.update({_stem(w.strip(".-'+")) for w in words})
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


def model_numbers_related(c: str, d: str) -> bool:
    """One code extends or contains the other: HT-BD2T vs HTBD2TXAA, R550 vs PD-R550."""
    return c == d or (min(len(c), len(d)) >= 4 and (c in d or d in c))


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
