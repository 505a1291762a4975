"""MuveraIndex.tune: the fastest setting that meets a recall target, stored, used and saved."""

from __future__ import annotations

import numpy as np
import pytest

import muvera
from muvera.cli import main as cli_main

CFG = muvera.FDEConfig(dimension=16, num_repetitions=8, num_simhash_projections=4)


def _docs(n, seed=0):
    rng = np.random.default_rng(seed)
    docs = [rng.normal(size=(int(rng.integers(4, 16)), 16)).astype(np.float32) for _ in range(n)]
    return [d / np.linalg.norm(d, axis=1, keepdims=True) for d in docs]


@pytest.fixture(scope="module")
def pq_index():
    index = muvera.MuveraIndex(CFG)  # auto: 2,500 documents -> PQ fast-scan + SQ8 refine
    index.add(_docs(2_500))
    return index


def test_tune_meets_a_reachable_target_and_search_uses_it(pq_index, tmp_path):
    docs = _docs(2_500)
    queries = [d[: max(1, len(d) // 2)] + 0.05 for d in docs[:40]]
    res = pq_index.tune(queries, target_recall=0.9, k=10, verbose=False, plot=tmp_path / "curve.png")
    assert res.met and res.chosen["recall"] >= 0.9 and res.queries == "given" and res.num_queries == 40
    assert (tmp_path / "curve.png").stat().st_size > 1000
    assert len(res.rows) >= 3 and "<-" in res.table()
    # the fastest of the settings that met the target was chosen
    meeting = [r for r in res.rows if r["recall"] >= 0.9]
    assert res.chosen["p50_ms"] == min(r["p50_ms"] for r in meeting)
    tuned = pq_index.tuned
    assert tuned["candidates"] == res.chosen["candidates"] and tuned["met"] and tuned["k"] == 10
    # search() without arguments uses the tuned setting; explicit arguments win
    seen = {}
    real = pq_index.search_rows

    def spy(qtok, qoff, qfde, k, c, **kw):
        seen.update(c=c, params=kw.get("params"))
        return real(qtok, qoff, qfde, k, c, **kw)

    pq_index.search_rows = spy
    try:
        pq_index.search(queries[:2], k=10)
        assert seen["c"] == tuned["candidates"] and (seen["params"] or {}) == tuned["params"]
        pq_index.search(queries[:2], k=10, candidates=37, params={"k_factor": 2})
        assert seen["c"] == 37 and seen["params"] == {"k_factor": 2}
    finally:
        del pq_index.search_rows
    # measured recall holds when searched the ordinary way
    ids, _ = pq_index.search(queries, k=10)
    truth, _ = pq_index.search_exact(queries, k=10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), truth.tolist())])
    assert abs(recall - res.chosen["recall"]) < 1e-9
    # it survives save/load; None forgets it
    pq_index.save(tmp_path / "idx")
    back = muvera.MuveraIndex.load(tmp_path / "idx")
    assert back.tuned == tuned
    back.tuned = None
    assert back.tuned is None


def test_tune_with_pseudo_queries_and_an_unreachable_target():
    index = muvera.MuveraIndex(CFG, backend="exact")
    index.add(_docs(300, seed=2))
    res = index.tune(target_recall=0.999, k=5, num_queries=16, verbose=False)
    assert res.queries == "pseudo" and res.num_queries == 16
    if not res.met:  # kept the best recall and said so
        assert res.chosen["recall"] == max(r["recall"] for r in res.rows) and "NOT met" in res.table()
    assert index.tuned["met"] == res.met


def test_tune_refuses_bad_arguments():
    index = muvera.MuveraIndex(CFG, backend="exact")
    with pytest.raises(ValueError, match="empty"):
        index.tune(verbose=False)
    index.add(_docs(50))
    for bad in (0, 1.5, -0.1, True, "0.9", float("nan")):
        with pytest.raises(ValueError, match="target_recall"):
            index.tune(target_recall=bad, verbose=False)
    with pytest.raises((ValueError, TypeError), match="k"):
        index.tune(k=0, verbose=False)
    with pytest.raises((ValueError, TypeError), match="num_queries"):
        index.tune(num_queries=-3, verbose=False)
    with pytest.raises(ValueError, match="queries"):
        index.tune([np.zeros((3, 7), np.float32)], verbose=False)
    with pytest.raises(ValueError, match="only None"):
        index.tuned = {"candidates": 5}


def test_tuned_params_apply_only_to_the_backend_they_were_measured_on():
    index = muvera.MuveraIndex(CFG)
    index.add(_docs(1_000))  # exact phase
    index.tune(target_recall=0.5, verbose=False, num_queries=8)
    assert index.tuned["backend"] == "exact" and index.tuned["params"] == {}
    index.add(_docs(1_200, seed=9))  # crosses into PQ: the tuned candidates still apply, no params
    c, params, rescore = index._search_defaults(10, None, None, None)
    assert c == max(index.tuned["candidates"], 10) and params is None and rescore is None


def test_cli_tune_saves_the_setting(tmp_path, capsys):
    index = muvera.MuveraIndex(CFG, backend="exact")
    index.add(_docs(200, seed=4))
    index.save(tmp_path / "idx")
    assert cli_main(["tune", str(tmp_path / "idx"), "--target-recall", "0.8", "-k", "5",
                     "--num-queries", "8", "--plot", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    assert "target recall@5 >= 0.8" in out and (tmp_path / "c.png").exists()
    assert muvera.MuveraIndex.load(tmp_path / "idx").tuned["k"] == 5
    with pytest.raises(SystemExit):
        cli_main(["tune", str(tmp_path / "idx"), "--target-recall", "2"])
    assert "expected a number in (0, 1]" in capsys.readouterr().err
