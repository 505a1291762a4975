"""The scale benchmark's streamed corpus: blocks regenerate from the seed alone, and each query's
target is its exact-Chamfer best match (what bench_scale.py's recall figures rely on)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from scale_corpus import SyntheticCorpus  # noqa: E402

from muvera.ragged import offsets_of  # noqa: E402
from muvera.store import TokenStore  # noqa: E402


def test_blocks_are_deterministic_and_well_formed():
    a, b = SyntheticCorpus(2500, dim=32, block=500), SyntheticCorpus(2500, dim=32, block=500)
    t1, l1 = a.block_docs(3)
    t2, l2 = b.block_docs(3)
    np.testing.assert_array_equal(t1, t2)
    np.testing.assert_array_equal(l1, l2)
    assert len(l1) == 500 and l1.min() >= 64 and l1.max() <= 160 and len(t1) == l1.sum()
    np.testing.assert_allclose(np.linalg.norm(t1, axis=1), 1.0, rtol=1e-5)
    assert not np.array_equal(a.block_docs(2)[0][:10], t1[:10])
    assert sum(len(ln) for _, ln in a.batches()) == 2500


def test_query_targets_are_the_exact_best_match():
    c = SyntheticCorpus(1000, dim=32, block=500)
    tok = np.concatenate([c.block_docs(b)[0] for b in range(2)])
    lens = np.concatenate([c.block_docs(b)[1] for b in range(2)])
    qt, qo, targets = c.queries(10, q_tokens=16)
    rows, _ = TokenStore.from_arrays(tok.astype(np.float16), offsets_of(lens), "float16").rerank(
        qt, qo, 4, None, None, 1)
    assert np.mean(rows[:, 0] == targets) >= 0.9
    # near-duplicate family members (4 consecutive documents) rank right behind the target
    assert np.mean(rows[:, 1:4] // 4 == (targets // 4)[:, None]) >= 0.6
