"""The PLAID baseline of bench/plaid_baseline.py (colbert-ai from precomputed vectors).

Skipped when colbert-ai is not installed (it is an optional benchmark dependency). The first run
on a machine compiles colbert's small C++ kernels (cached in ~/.cache/torch_extensions).
"""

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "bench" / "plaid_baseline.py"
_spec = importlib.util.spec_from_file_location("plaid_baseline", _PATH)
plaid_baseline = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plaid_baseline)

pytestmark = pytest.mark.skipif(not plaid_baseline.plaid_available(),
                                reason="colbert-ai (PLAID) is not installed")


@pytest.fixture(scope="module")
def corpus():
    dt, do, qt, qo, src = plaid_baseline.synthetic_corpus(300, 12, dim=64, seed=3, n_topics=20,
                                                          n_words=600)
    return dt.astype(np.float16), do, qt, qo, src


@pytest.fixture(scope="module")
def index(corpus):
    dt, do, _, _, _ = corpus
    p = plaid_baseline.PlaidBaseline(dt, do, nbits=2, kmeans_niters=2, num_centroids=256, threads=1)
    yield p
    p.close()


def test_build(index, corpus):
    dt, do, _, _, _ = corpus
    assert index.num_docs == len(do) - 1 and index.num_tokens == len(dt) and index.dim == 64
    assert index.num_centroids == 256
    assert index.build_seconds > 0
    assert index.index_bytes > len(dt) * 64 * 2 // 8  # at least the 2-bit residuals
    assert index.index_dir.startswith("/tmp/")


def test_search_matches_exact_chamfer(index, corpus):
    dt, do, qt, qo, src = corpus
    k = 10
    ex_rows, ex_scores = plaid_baseline.exact_chamfer_topk(qt, qo, dt.astype(np.float32), do, k)
    rows, scores = index.search_batch(qt, qo, k, ncells=4, centroid_score_threshold=0.3, ndocs=1024)
    assert rows.shape == (len(qo) - 1, k) and rows.dtype == np.int64
    assert scores.shape == rows.shape and scores.dtype == np.float32
    assert np.all(rows >= 0) and np.all(np.diff(scores, axis=1) <= 1e-6)
    # queries are noisy copies of a document's tokens: that document comes first
    assert np.mean(rows[:, 0] == src) >= 0.9
    recall = np.mean([len(set(rows[i]) & set(ex_rows[i])) / k for i in range(len(rows))])
    assert recall >= 0.7
    np.testing.assert_allclose(scores[:, 0], ex_scores[:, 0], rtol=0.1)


def test_search_single_query_and_padding(index, corpus):
    _, do, qt, qo, _ = corpus
    q = qt[qo[0]:qo[1]]
    r1, s1 = index.search(q, 5)
    rb, sb = index.search_batch(qt[:qo[1]], qo[:2], 5)
    np.testing.assert_array_equal(r1, rb[0])
    np.testing.assert_array_equal(s1, sb[0])
    big = len(do)  # more than the corpus holds: padded with -1 / -inf
    r, s = index.search(q, big, ndocs=4 * big)
    assert len(r) == big and r[-1] == -1 and s[-1] == -np.inf
    assert len(set(r[r >= 0].tolist())) == int((r >= 0).sum())


def test_knob_defaults(index):
    assert index._knobs(10, None, None, None) == (1, 0.5, 256)
    assert index._knobs(100, None, None, None) == (2, 0.45, 1024)
    assert index._knobs(1000, None, None, None) == (4, 0.4, 4096)
    assert index._knobs(10, 3, None, 64) == (3, 0.5, 64)


def test_bad_inputs(tmp_path):
    dt = np.ones((4, 64), np.float32)
    with pytest.raises(ValueError):
        plaid_baseline.PlaidBaseline(dt, np.array([0, 2, 2, 4]))  # an empty document
    with pytest.raises(ValueError):
        plaid_baseline.PlaidBaseline(dt, np.array([0, 3]))  # offsets do not cover the tokens
    (tmp_path / "x").write_text("")
    with pytest.raises(ValueError):
        plaid_baseline.PlaidBaseline(dt, np.array([0, 4]), index_dir=str(tmp_path))


def test_close_removes_own_directory(corpus):
    dt, do, _, _, _ = corpus
    n = 60
    p = plaid_baseline.PlaidBaseline(dt[:do[n]], do[:n + 1], kmeans_niters=1, num_centroids=64,
                                     threads=1)
    d = p.index_dir
    assert os.path.isdir(d)
    p.close()
    assert not os.path.exists(d)
