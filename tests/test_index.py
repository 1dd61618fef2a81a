import numpy as np
import pytest

from epm_spark.errors import InputError
from epm_spark.models.index import IndexSettings, VectorIndex, choose_kind, exact_topk


def unit(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute(corpus, queries, k):
    return np.argsort(-(queries @ corpus.T), axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("kind", ["flat", "torch"])
def test_exact_kinds_equal_brute_force(kind, tmp_path):
    rng = np.random.default_rng(0)
    corpus, queries = unit(rng, 300, 16), unit(rng, 40, 16)
    ids = np.array([f"r{i}" for i in range(300)], dtype=object)
    index = VectorIndex.build(corpus, ids, settings=IndexSettings(kind=kind))
    scores, pos = index.search(queries, 7)
    assert (pos == brute(corpus, queries, 7)).all()
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ corpus.T, pos, 1), atol=1e-5)
    loaded = VectorIndex.load(index.save(tmp_path / kind))
    assert (loaded.search(queries, 7)[1] == pos).all() and loaded.ids[5] == "r5"


@pytest.mark.parametrize("kind", ["hnsw", "ivf_flat"])
def test_approximate_kinds_find_most_neighbours_of_clustered_data(kind):
    rng = np.random.default_rng(1)
    centres = unit(rng, 50, 32)
    corpus = centres[rng.integers(0, 50, 4000)] + 0.15 * rng.normal(size=(4000, 32)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    queries = corpus[:200]
    index = VectorIndex.build(corpus, np.arange(4000).astype(str), settings=IndexSettings(kind=kind, ivf_nprobe=16))
    _, pos = index.search(queries, 10)
    truth = brute(corpus, queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(pos, truth)])
    assert recall > 0.9


def test_k_above_the_corpus_pads_with_minus_one():
    rng = np.random.default_rng(2)
    index = VectorIndex.build(unit(rng, 3, 8), ["a", "b", "c"], settings=IndexSettings(kind="flat"))
    scores, pos = index.search(unit(rng, 2, 8), 5)
    assert (pos[:, 3:] == -1).all() and sorted(pos[0, :3]) == [0, 1, 2] and np.isinf(scores[:, 3:]).all()


def test_errors_name_the_problem():
    rng = np.random.default_rng(3)
    with pytest.raises(InputError, match="no vectors"):
        VectorIndex.build(np.zeros((0, 8), np.float32), [])
    index = VectorIndex.build(unit(rng, 5, 8), list("abcde"), settings=IndexSettings(kind="flat"))
    with pytest.raises(InputError, match="dimension 4, the index 8"):
        index.search(unit(rng, 2, 4), 3)
    with pytest.raises(InputError, match="2 ids for 5 vectors"):
        VectorIndex.build(unit(rng, 5, 8), ["a", "b"])


def test_auto_kind_by_size():
    s = IndexSettings(exact_below=100, pq_above=1000)
    assert [choose_kind(n, s) for n in (50, 500, 5000)] == ["flat", "hnsw", "ivf_pq"]


def test_torch_topk_matches_numpy_in_chunks():
    rng = np.random.default_rng(4)
    corpus, queries = unit(rng, 100, 8), unit(rng, 33, 8)
    _, pos = exact_topk(corpus, queries, 4, gpu=False, chunk=10)
    assert (pos == brute(corpus, queries, 4)).all()
