import re

import pandas as pd

from epm_spark.synthetic import generate_catalogs


def test_same_seed_same_catalogs_other_seed_other_catalogs():
    a, b = generate_catalogs(150, 2, seed=3), generate_catalogs(150, 2, seed=3)
    for source in a.exports:
        pd.testing.assert_frame_equal(a.exports[source], b.exports[source])
    pd.testing.assert_frame_equal(a.pairs, b.pairs)
    c = generate_catalogs(150, 2, seed=4)
    assert not a.exports["ours"].equals(c.exports["ours"])


def test_listings_carry_the_noise_sellers_add():
    cats = generate_catalogs(600, 3, seed=1)
    titles = pd.concat([cats.exports["ours"].title, cats.exports["competitor_a"].bezeichnung,
                        cats.exports["competitor_b"].name, cats.exports["competitor_c"].title]).dropna()
    text = " ".join(titles)
    assert re.search(r"Free Shipping|HOT SALE|Best Price", text)          # promotional keywords
    assert re.search(r"\[Amazon's Choice\]|\| eBay|Prime", text)          # platform tags
    assert re.search(r"\+ (case|free case|wall mount)|bundle", text)      # bundle text
    assert re.search(r"\b\d000GB\b", text)                                # 1TB written as 1000GB
    assert re.search(r"\d+ (inch|cm)\b|\d+-inch", text)                   # unit variants
    assert (titles.str.upper() == titles).any()                          # shouting titles


def test_ground_truth_and_pairs_agree():
    cats = generate_catalogs(300, 2, seed=5)
    key = dict(zip(cats.truth.product_id, cats.truth.product_key))
    family = dict(zip(cats.truth.product_id, cats.truth.family))
    p = cats.pairs
    assert p.label.sum() > 50
    for row in p.itertuples():
        assert row.label == int(key[row.left_id] == key[row.right_id])
        assert row.is_hard_negative == (row.label == 0 and family[row.left_id] == family[row.right_id])
    assert p.is_hard_negative.sum() > 10  # near-miss siblings exist
    # Splits never share a product family.
    fams = p.assign(family=p.left_id.map(family)).groupby("family").split.nunique()
    assert (fams == 1).all()


def test_near_misses_differ_in_exactly_one_spec():
    cats = generate_catalogs(300, 1, seed=2, near_miss_rate=1.0)
    by_family = {}
    for prod in cats.products:
        by_family.setdefault(prod.family, []).append(prod)
    siblings = [ps for ps in by_family.values() if len(ps) == 2]
    assert len(siblings) > 50
    for a, b in siblings:
        assert (a.brand, a.line) == (b.brand, b.line) and a.model_number != b.model_number
        assert sum(x != y for (_, x), (_, y) in zip(a.specs, b.specs)) == 1


def test_exports_are_slightly_dirty_and_ours_has_duplicates():
    cats = generate_catalogs(1000, 1, seed=9, dirty_rate=0.02)
    truth = cats.truth
    assert 5 < truth.dirty.sum() < 80
    ours = truth[truth.source == "ours"]
    assert ours.product_key.duplicated().sum() > 20
