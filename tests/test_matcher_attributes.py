"""Seller-noise stripping, attribute extraction and attribute comparison."""

from __future__ import annotations

import pytest

from epm_spark.models.attributes import (
    compare, extract, looks_like_model_number, normalise_brand, normalise_model_number, parse_measures,
    strip_noise, token_weights, unexplained_codes,
)
from epm_spark.models.matcher.decision import ATTRIBUTES


def verdicts(left, right) -> dict[str, str]:
    return compare(extract(left), extract(right)).verdicts


# ----------------------------------------------------------------------------- noise


@pytest.mark.parametrize("title, noise, kept", [
    ("Samsung 870 EVO 1TB - FREE SHIPPING! Best Price", ["FREE SHIPPING", "Best Price"], "Samsung 870 EVO 1TB"),
    ("Apple iPhone 12 64GB Amazon's Choice [Prime]", ["Amazon's Choice", "[Prime]"], "Apple iPhone 12 64GB"),
    ("Corsair ML140 Pro LED Blue 140mm Fan | Discount Computer Needs", ["Discount Computer Needs"],
     "Corsair ML140 Pro LED Blue 140mm Fan"),
    ("Logitech C922 webcam - Tweakers Online Shop", ["Tweakers Online Shop"], "Logitech C922 webcam"),
    ("Sony FE 24mm F1.4 GM Lens + Bonus", ["+ Bonus"], "Sony FE 24mm F1.4 GM Lens"),
    ("Nikon D3500 camera with charger", ["with charger"], "Nikon D3500 camera"),
    ("AA batteries 2-pack", ["2-pack"], "AA batteries"),
    ("AA batteries pack of 4", ["pack of 4"], "AA batteries"),
    ("Brand New Genuine Canon PFI-107C Cyan Ink", ["Genuine", "Brand New"], "Canon PFI-107C Cyan Ink"),
    ('"HP 36.4-GB U320 SCSI 15K" "Null" ""@en', ["Null", "@en"], "HP 36.4-GB U320 SCSI 15K"),
    ("Buy Quality Replica Omega Seamaster Watch", ["Buy", "Quality", "Replica"], "Omega Seamaster Watch"),
    ("Original Epson T1571 ink - at example.com", ["Original", "example.com"], "Epson T1571 ink"),
])
def test_strip_noise_removes_seller_noise_and_keeps_the_product(title, noise, kept):
    result = strip_noise(title)
    assert result.text == kept
    for phrase in noise:
        assert any(phrase.lower() in r.lower() for r in result.removed), (phrase, result.removed)


@pytest.mark.parametrize("title", [
    "Asus Dual GeForce GTX 1660 6GB OC | 90YV0D11-M0NA00",  # a model number after | is not a shop
    "0884B001 | Canon PFI-101 | Original Canon Ink Cartridge - Cyan",  # a brand and colour after |
    "Logitech H570e - Mono Headset - USB",  # " - USB" is not a shop
    "Kappe New Era NFL Cap",  # New Era is a brand, not promo
])
def test_strip_noise_keeps_product_segments(title):
    text = strip_noise(title).text.lower()
    for word in ("90yv0d11", "cyan", "usb", "new era"):
        if word in title.lower():
            assert word in text, (word, text)


def test_strip_noise_of_empty_title():
    assert strip_noise("").text == "" and strip_noise(None).removed == ()  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- extraction


@pytest.mark.parametrize("code, normal", [("SM-G991B", "SMG991B"), ("388504-b21", "388504B21"),
                                          ("MWP22AM/A", "MWP22AMA"), ("215.30.46.51.01.001", "21530465101001")])
def test_model_numbers_are_normalised(code, normal):
    assert normalise_model_number(code) == normal
    assert looks_like_model_number(code)


@pytest.mark.parametrize("token", ["DDR4", "32GB", "2666MHz", "1080p", "PC4-21300", "USB3.0", "802.11ac", "5-Pack",
                                   "2x16GB", "6Gb/s", "CL16", "2007", "7.2", "i7", "cs3"])
def test_specifications_and_versions_are_not_model_numbers(token):
    assert not looks_like_model_number(token)


def test_extract_reads_codes_from_title_and_attributes():
    attrs = extract({"title": "Corsair Vengeance LPX 64GB DDR4 CMK64GX4M4A2666C16", "attributes": {"mpn": "CMK64-X"}})
    assert "CMK64GX4M4A2666C16" in attrs.model_numbers and "CMK64X" in attrs.model_numbers
    assert attrs.brand == "corsair" and attrs.brand_source == "lexicon"


@pytest.mark.parametrize("raw, brand", [
    ("Hewlett-Packard", "hp"), ("apple-computer - ( direct )", "apple"), ("Microsoft Software", "microsoft"),
    ("sega-of-america-inc .", "sega"), ("Western Digital (WDC)", "wd"), ("null", None), ("", None),
    ("Kingston Digital", "kingston"), ("RAM® Mounts", "ram mounts"),
])
def test_brand_field_is_normalised(raw, brand):
    assert normalise_brand(raw) == brand


def test_brand_field_wins_over_title_and_first_word_is_only_a_guess():
    assert extract({"title": "stuffit deluxe 10", "brand": "Smith Micro Software"}).brand == "smith micro"
    guessed = extract("fogware stuffit deluxe 10.0")
    assert (guessed.brand, guessed.brand_source) == ("fogware", "guess")
    assert extract("Sandisk Cruzer 32GB").brand_source == "lexicon"


@pytest.mark.parametrize("text, values", [
    ("1TB", [("storage", 1000.0)]),
    ("500 GB", [("storage", 500.0)]),
    ("8192MB", [("storage", 8.192)]),
    ("64GB (4x16GB)", [("storage", 64.0)]),  # a kit's total, not its modules: 2x16GB is not one 16GB module
    ("5000mAh", [("charge", 5000.0)]),
    ("1100w", [("power", 1100.0)]),
    ('27"', [("length", 27 * 25.4)]),
    ("sony 46 ' bravia", [("length", 46 * 25.4)]),
    ("68,6 cm", [("length", 686.0)]),
    ("140mm", [("length", 140.0)]),
    ("500ml", [("volume", 500.0)]),
    ("1.5 l", [("volume", 1500.0)]),
    ("2kg", [("mass", 2000.0)]),
    ("18-55mm", [("length", 18.0), ("length", 55.0)]),
])
def test_measures_are_normalised_to_base_units(text, values):
    got = sorted((m.dimension, round(m.value, 3)) for m in parse_measures(text))
    assert got == sorted((d, round(v, 3)) for d, v in values)


@pytest.mark.parametrize("text", ["4G LTE phone", "2-in-1 laptop", "3M privacy filter", "DDR4 2666MHz"])
def test_things_that_are_not_sizes(text):
    assert parse_measures(text) == ()


@pytest.mark.parametrize("title, quantity", [
    ("AA batteries 2-pack", 2), ("AA batteries pack of 4", 4), ("batteries (x3)", 3), ("twin pack socks", 2),
    ("Windows Server CAL 5 user", 5), ("Film 20 Pack", 20), ("single USB stick", 1), ("USB stick", None),
    ("PCIe 3.0 x16 card", None),
])
def test_quantity(title, quantity):
    assert extract(title).quantity == quantity


@pytest.mark.parametrize("title, condition", [
    ("Cisco switch (Refurb)", "refurbished"), ("iPhone renewed", "refurbished"), ("Nikon D750 used", "used"),
    ("Brand New Sony TV", "new"), ("Toner compatible with Samsung MLT-D103L", "compatible"), ("Sony TV", None),
])
def test_condition(title, condition):
    assert extract(title).condition == condition


@pytest.mark.parametrize("title, colours", [
    ("iPhone 12 Schwarz", {"black"}), ("Coque iPhone blanc", {"white"}), ("Cartucho tinta rojo", {"red"}),
    ("MacBook space gray", {"grey"}), ("Toner ciano", {"cyan"}), ("Label tape black on yellow", {"black", "yellow"}),
    ("Kingston Fury 16GB", set()),
])
def test_colours_are_multilingual(title, colours):
    assert set(extract(title).colours) == colours


# ----------------------------------------------------------------------------- comparison


def test_one_terabyte_equals_thousand_and_1024_gigabytes():
    assert verdicts("Samsung 870 EVO 1TB", "Samsung 870 EVO 1000GB")["capacity"] == "same"
    assert verdicts("Samsung 870 EVO 1TB", "Samsung 870 EVO 1024 GB")["capacity"] == "same"
    assert verdicts("Kingston 8GB DIMM", "Kingston 8192MB DIMM")["capacity"] == "same"


def test_one_terabyte_differs_from_two():
    evidence = compare(extract("Samsung 870 EVO 1TB"), extract("Samsung 870 EVO 2TB"))
    assert evidence.verdict("capacity") == "different"
    assert (evidence["capacity"].left, evidence["capacity"].right) == ("1 TB", "2 TB")


def test_inches_and_centimetres_compare():
    assert verdicts('Samsung LH46 116,8 cm (46")', 'Samsung UH46 46" monitor')["capacity"] == "same"
    assert verdicts('BenQ 27" monitor', "BenQ 32 inch monitor")["capacity"] == "different"


def test_model_number_near_miss_is_different_and_separators_do_not_matter():
    near = compare(extract("Sony DSC-W120 camera"), extract("Sony DSCW150 camera"))
    assert near.verdict("model_number") == "different" and near["model_number"].reason == "near miss"
    assert verdicts("Samsung SM-G991B", "Samsung smg991b")["model_number"] == "same"
    assert verdicts("samsung ht-bd2t blu-ray", "samsung htbd2txaa blu-ray")["model_number"] == "same"


def test_variant_suffix_beats_a_shared_family_code():
    # DVP-FX820 on both sides, but the full codes differ in the colour letter.
    assert verdicts("sony dvp-fx820 dvd player dvpfx820r", "sony dvp-fx820 dvd player dvpfx820p")[
        "model_number"] == "different"


def test_codes_only_on_one_side_are_unknown():
    assert verdicts("Logitech H151 headset 981-000589", "Logitech H151 stereo headset")["model_number"] in (
        "same", "unknown")
    assert verdicts("Logitech headset 981-000589", "Logitech stereo headset")["model_number"] == "unknown"


def test_part_numbers_that_disagree_stay_unexplained_beside_a_shared_code():
    # The server name DL120 is shared, so the rules read one model; each side's part number is not.
    left, right = extract("455035-B22 HP Xeon X3210 DL120 G5"), extract("533993-B22 HP Xeon E7400 DL120 G5")
    assert compare(left, right).verdict("model_number") == "same"
    rest_left, rest_right = unexplained_codes(left, right)
    assert "455035B22" in rest_left and "533993B22" in rest_right and "DL120" not in rest_left + rest_right
    # A code the other listing spells with separators, or one side without codes, leaves nothing on one side.
    assert unexplained_codes(extract("Samsung SM-G991B"), extract("Samsung smg991b")) == ([], [])
    assert unexplained_codes(extract("Logitech headset 981-000589"), extract("Logitech stereo headset"))[1] == []


def test_brand_comparison():
    assert verdicts("SanDisk Ultra 32GB", "Kingston Canvas 32GB")["brand"] == "different"
    assert verdicts({"title": "stuffit deluxe", "brand": "smith-micro-software"}, "smith micro stuffit")[
        "brand"] == "same"
    # A guessed first word never makes brands "different".
    assert verdicts({"title": "stuffit deluxe", "brand": "Smith Micro"}, "fogware stuffit deluxe")["brand"] == "unknown"


def test_colour_quantity_condition():
    assert verdicts("iPhone 12 black", "iPhone 12 Schwarz")["colour"] == "same"
    assert verdicts("Logitech M185 grey", "Logitech M185 red")["colour"] == "different"
    assert verdicts("Ubiquiti UAP-AC-LR 3-pack", "Ubiquiti UAP-AC-LR")["quantity"] == "different"
    assert verdicts("batteries pack of 2", "batteries 2-pack")["quantity"] == "same"
    assert verdicts("Cisco switch (Refurbished)", "Cisco switch brand new")["condition"] == "different"
    assert verdicts("Cisco switch (Refurbished)", "Cisco switch")["condition"] == "unknown"


def test_product_line_numbers_and_editions():
    assert verdicts("Jabra Evolve 40 UC mono", "Jabra Evolve 20 UC mono")["product_line"] == "different"
    assert verdicts("microsoft office 2008 home", "microsoft office 2007 home")["product_line"] == "different"
    assert verdicts("adobe cs3 design premium", "adobe cs3 design standard")["product_line"] == "different"
    assert verdicts("appleworks 6.2.9", "appleworks 6.2 for mac")["product_line"] != "different"
    assert verdicts("sony cyber-shot digital camera", "sony cyber-shot camera case")["product_line"] == "different"
    assert verdicts("Pokemon Sword Shield Booster", "Pokemon Sword Shield Boosters")["product_line"] == "same"


def test_rare_words_weigh_more_with_token_weights():
    titles = ["sony digital camera"] * 20 + ["canon digital camera", "sony cyber-shot"]
    weights = token_weights(titles)
    assert weights["cyber-shot"] > weights["camera"]
    plain = compare(extract("sony cyber-shot digital camera"), extract("sony powershot digital camera"))
    weighted = compare(extract("sony cyber-shot digital camera"), extract("sony powershot digital camera"),
                       weights=weights)
    assert weighted.line_similarity < plain.line_similarity


def test_compare_covers_every_attribute_and_collects_noise():
    evidence = compare(extract("Samsung 1TB SSD free shipping"), extract("Samsung 1TB SSD [Prime]"))
    assert tuple(evidence.verdicts) == ATTRIBUTES
    assert set(evidence.noise) == {"free shipping", "[Prime]"}
