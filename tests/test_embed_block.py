"""embed + block end to end in local Spark with a tiny random encoder, checked against numpy."""

import numpy as np
import pandas as pd
import pytest

from encoder_tiny import WORDS, save_tiny
from epm_spark.errors import InputError
from epm_spark.io import delta
from epm_spark.pipeline.catalog.block import block
from epm_spark.pipeline.catalog.embed import embed

NOUNS = [w for w in WORDS if w in "turntable speaker laptop camera lens mouse keyboard monitor tablet phone printer router".split()]
BRANDS = WORDS[:11]
SPECS = [w for w in WORDS if w[0].isdigit()] + ["black", "white", "silver", "red", "blue"]


def listings(source, n, seed):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        title = " ".join([rng.choice(BRANDS), rng.choice(NOUNS), *rng.choice(SPECS, 2, replace=False)])
        rows.append(dict(product_id=f"{source[:1]}{i}", source=source, title=title, brand=None, category=None,
                         description=None, price=1.0, currency="EUR", price_raw="1", attributes={},
                         ingested_at=pd.Timestamp("2026-01-01", tz="UTC"), run_id="r1"))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    return str(save_tiny(tmp_path_factory.mktemp("enc") / "tiny"))


@pytest.fixture
def setup(settings, tiny_encoder):
    settings.encoder.backbone = tiny_encoder
    settings.block.query_partitions = 3
    delta.write_pandas(settings.warehouse, "products", listings("ours", 40, 1), "replace", partition={"source": "ours"})
    delta.write_pandas(settings.warehouse, "products", listings("theirs", 30, 2), "replace",
                       partition={"source": "theirs"})
    return settings


def vectors(settings, source):
    emb = delta.read_pandas(settings.warehouse, "embeddings", filters=[("source", "=", source)])
    emb = emb.sort_values("product_id").reset_index(drop=True)
    return emb.product_id.to_numpy(), np.stack(emb.embedding.to_numpy())


def candidates(settings, left, right):
    c = delta.read_pandas(settings.warehouse, "candidates",
                          filters=[("left_source", "=", left), ("right_source", "=", right)])
    return c


def test_linkage_candidates_equal_brute_force_top_k(spark, setup):
    report = embed(spark, setup, sources=["ours", "theirs"], run_id="r1")
    assert (report.embedded, report.kept) == (70, 0)
    block(spark, setup, left="ours", right="theirs", k=4, run_id="r1")
    left_ids, left_v = vectors(setup, "ours")
    right_ids, right_v = vectors(setup, "theirs")
    assert np.allclose(np.linalg.norm(left_v, axis=1), 1.0, atol=1e-4)
    sims = left_v @ right_v.T
    c = candidates(setup, "ours", "theirs")
    assert len(c) == 40 * 4 and set(c.run_id) == {"r1"}
    for i, lid in enumerate(left_ids):
        got = c[c.left_id == lid].sort_values("rank")
        expected = right_ids[np.argsort(-sims[i], kind="stable")[:4]]
        assert set(got.right_id) == set(expected)
        assert got["rank"].tolist() == [1, 2, 3, 4]
        assert np.allclose(got.similarity, np.sort(sims[i])[::-1][:4], atol=1e-4)


def test_shards_and_torch_index_give_the_same_candidates(spark, setup):
    embed(spark, setup, sources=["ours", "theirs"], run_id="r1")
    block(spark, setup, left="ours", right="theirs", k=3, run_id="single")
    setup.block.max_shard_size = 8  # 30 right listings -> 4 shards, top-k merged across them
    setup.block.index.kind = "torch"
    report = block(spark, setup, left="ours", right="theirs", k=3, run_id="sharded")
    assert report.shards == 4 and report.index_kind == "torch"
    c = delta.read_pandas(setup.warehouse, "candidates")
    pairs = {run: set(zip(g.left_id, g.right_id)) for run, g in c.groupby("run_id")}
    assert pairs["single"] == pairs["sharded"] and len(pairs["single"]) == 120


def test_dedup_has_no_self_pairs_and_each_pair_once(spark, setup):
    embed(spark, setup, sources=["ours"], run_id="r1")
    block(spark, setup, left="ours", k=3, run_id="r1")
    ids, v = vectors(setup, "ours")
    sims = v @ v.T
    np.fill_diagonal(sims, -np.inf)
    expected = set()
    for i in range(len(ids)):
        for j in np.argsort(-sims[i], kind="stable")[:3]:
            expected.add(tuple(sorted((ids[i], ids[j]))))
    c = candidates(setup, "ours", "ours")
    got = list(zip(c.left_id, c.right_id))
    assert all(a < b for a, b in got) and len(got) == len(set(got))
    assert set(got) == expected


def test_similarity_floor_and_rerun_replace(spark, setup):
    embed(spark, setup, sources=["ours", "theirs"], run_id="r1")
    setup.block.similarity_floor = 0.9
    for _ in range(2):
        block(spark, setup, left="ours", right="theirs", k=5, run_id="r1")
    c = candidates(setup, "ours", "theirs")
    assert (c.similarity >= 0.9).all() and len(c) < 200
    assert not c.duplicated(["left_id", "right_id"]).any()


def test_incremental_embedding_re_embeds_only_what_changed(spark, setup):
    embed(spark, setup, sources=["ours"], run_id="night1")
    before = delta.read_pandas(setup.warehouse, "embeddings").set_index("product_id")
    night2 = listings("ours", 40, 1)
    night2.loc[night2.product_id.isin(["o1", "o2", "o3"]), "title"] = "sony laptop 16gb black"
    night2 = pd.concat([night2[~night2.product_id.isin(["o10", "o11"])],
                        listings("ours", 41, 1).iloc[[40]].assign(title="canon camera red 1tb")])
    delta.write_pandas(setup.warehouse, "products", night2, "replace", partition={"source": "ours"})
    report = embed(spark, setup, sources=["ours"], run_id="night2")
    assert (report.embedded, report.kept, report.removed) == (4, 35, 5)
    after = delta.read_pandas(setup.warehouse, "embeddings").set_index("product_id")
    assert sorted(after.index[after.run_id == "night2"]) == ["o1", "o2", "o3", "o40"]
    assert "o10" not in after.index and len(after) == 39
    untouched = after.index[after.run_id == "night1"]
    assert all(np.array_equal(after.embedding[i], before.embedding[i]) for i in untouched)
    assert (after.content_hash["o1"] != before.content_hash["o1"])


def test_clear_errors_before_anything_is_written(spark, setup, tmp_path):
    with pytest.raises(InputError, match=r"no listings of source\(s\) \['nobody'\].*sources there: \['ours', 'theirs'\]"):
        embed(spark, setup, sources=["nobody"], run_id="r1")
    embed(spark, setup, sources=["ours"], run_id="r1")
    with pytest.raises(InputError, match="no embeddings for source 'theirs'.*embed --source theirs"):
        block(spark, setup, left="ours", right="theirs", run_id="r1")
    more = pd.concat([listings("ours", 40, 1), listings("ours", 43, 1).iloc[40:]])
    delta.write_pandas(setup.warehouse, "products", more, "replace", partition={"source": "ours"})
    with pytest.raises(InputError, match="3 listings have no embedding"):
        block(spark, setup, left="ours", run_id="r1")
    # Another encoder for one side: two model versions may not be searched together.
    other = save_tiny(tmp_path / "other")
    import shutil

    shutil.rmtree(other)
    from encoder_tiny import tiny_bert

    model, tok = tiny_bert(seed=5)
    model.save_pretrained(other)
    tok.save_pretrained(other)
    embed(spark, setup, sources=["ours"], run_id="r1")
    embed(spark, setup, sources=["theirs"], run_id="r1", model=str(other))
    with pytest.raises(InputError, match="more than one model"):
        block(spark, setup, left="ours", right="theirs", run_id="r1")
    assert not delta.table_exists(setup.warehouse, "candidates")
