"""Word lists the extractor reads: brands and their other spellings, colours in seven languages,
stop words; and finding the brands a title names."""

from __future__ import annotations

import re
from typing import Any

from epm_spark.models.text import clean


# Other spellings and legal names of a brand -> its canonical name.
BRAND_ALIASES = {
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


BRANDS = frozenset("""
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
MULTIWORD_BRANDS = sorted({
    "cooler master", "western digital", "audio-technica", "tag heuer", "audemars piguet", "hydro flask",
    "ram mounts", "swiss military hanowa", "daniel wellington", "new era", "park tool", "black & decker",
    "hamilton beach", "ultimate ears", "cerwin vega", "electronic arts", "business objects", "smith micro",
    "life extension", "traveler's company", "sky diamonds", "blaze outdoor products", "learning company",
    "computer associates", "victory multimedia", "hewlett packard", "hewlett-packard", "kingston digital",
}, key=len, reverse=True)


# Words that look like a brand in first position but are not one.
NOT_BRANDS = frozenset("""
the a an new original genuine authentic buy cheap best top hot sale replica aaa quality high premium
official brand free gaming laser toner ink cartridge headset headphones mouse keyboard monitor cable
adapter case cover battery charger memory card usb wireless digital portable professional pro mini
kappe gorra cap set pack kit lot bundle refurbished used compatible replacement for with and black white
red blue green silver grey gray gold pink
""".split())


JUNK_BRANDS = frozenset({"null", "none", "n/a", "na", "unknown", "generic", "no brand", "unbranded", "default",
                          "nobrand", "other", "-", "oem"})


# Trailing words that name the legal entity, not the brand.
BRAND_SUFFIXES = frozenset("""
inc incorporated corp corporation co company ltd limited llc gmbh ag sa plc software computer computers
systems technologies technology tech international intl products direct of america usa us the com group
entertainment interactive publishing media labs usa europe networks electronics
""".split())


COLOURS: dict[str, str] = {}


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
        COLOURS[_w] = _canonical


COLOUR_PHRASES = {"space gray": "grey", "space grey": "grey", "rose gold": "rose gold", "photo black": "black",
                   "matte black": "black", "jet black": "black", "midnight blue": "blue", "light blue": "blue",
                   "dark blue": "blue", "sky blue": "blue", "dark grey": "grey", "light grey": "grey"}


STOPWORDS = frozenset("""
a an the and or for with of in on to by from at as is are w/ & - + / mit für fur und de la le les des du pour
avec et con per y el los las der die das den dem ein eine sur en het een voor van met it its this that
""".split())


def normalise_brand(value: Any) -> str | None:
    """A brand name in canonical form: lower case, legal suffixes dropped, known aliases merged."""
    text = clean(value)
    if not text:
        return None
    text = text.lower().replace("®", "").replace("™", "")
    text = re.sub(r"\(.*?\)", " ", text)
    text = re.sub(r"[^\w&'.+ -]", " ", text)
    text = " ".join(text.replace("_", " ").split())
    if text in JUNK_BRANDS or not text:
        return None
    if text in BRAND_ALIASES:
        return BRAND_ALIASES[text]
    words = re.split(r"[\s.-]+", text)
    while len(words) > 1 and (words[-1] in BRAND_SUFFIXES or len(words[-1]) <= 1):
        words.pop()
    text = " ".join(w for w in words if w)
    text = BRAND_ALIASES.get(text, text)
    if text in JUNK_BRANDS or not text or text.isdigit():
        return None
    return text


def lexicon_brands(lower: str, spelled: set[str] | None = None) -> list[str]:
    """Known brands named in ``lower``, in order; the words as spelled are added to ``spelled``."""
    found: list[tuple[int, str, str]] = []
    padded = " " + re.sub(r"[^a-z0-9&.+' -]", " ", lower) + " "
    for phrase in MULTIWORD_BRANDS:
        i = padded.find(f" {phrase} ")
        if i >= 0:
            found.append((i, BRAND_ALIASES.get(phrase, phrase), phrase))
    for m in re.finditer(r"[a-z0-9][a-z0-9&.'+-]*", lower):
        word = m.group(0).strip(".'-")
        canon = BRAND_ALIASES.get(word)
        if word in BRANDS or (canon and word not in ("ram", "wd")):
            found.append((m.start(), canon or word, word))
        elif word == "wd" or (word == "ram" and "mount" in lower):
            found.append((m.start(), BRAND_ALIASES[word], word))
    if spelled is not None:
        for _, _, raw in found:
            spelled.update(re.split(r"[\s-]+", raw))
            spelled.add(raw)
    return [b for _, b, _ in sorted(found)]
