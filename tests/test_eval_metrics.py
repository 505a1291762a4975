"""muvera.eval.metrics: hand-computed nDCG@10 / R@100 / MRR@10, make_run and TREC run files."""

import math

import numpy as np
import pytest

pytest.importorskip("ir_measures")

from muvera.eval.metrics import evaluate, make_run, write_trec_run

QRELS = {
    "q1": {"d1": 1, "d2": 2, "d5": 1, "d3": 0},   # d3 judged non-relevant
    "q2": {"d7": 1},
    "q3": {"d9": 1},
    "q4": {"d1": 1},                               # not in the run: not averaged
}
RUN = {
    "q1": {"d3": 0.9, "d2": 0.8, "d1": 0.7, "d4": 0.6},          # d5 never retrieved
    "q2": {"d7": 5.0, "d1": 4.0},
    "q3": {**{f"x{i}": 1.0 - i / 100 for i in range(10)}, "d9": 0.5},  # relevant doc at rank 11
    "q5": {"d1": 1.0},                                              # no judgements: not averaged
}


def _dcg(gains):
    return sum(g / math.log2(r + 1) for r, g in enumerate(gains, 1))


def test_evaluate_hand_computed():
    ndcg_q1 = _dcg([0, 2, 1, 0]) / _dcg([2, 1, 1])
    assert ndcg_q1 == pytest.approx(0.562727, abs=1e-6)
    expected = {
        "ndcg@10": (ndcg_q1 + 1.0 + 0.0) / 3,
        "recall@100": (2 / 3 + 1.0 + 1.0) / 3,
        "mrr@10": (1 / 2 + 1.0 + 0.0) / 3,
    }
    got = evaluate(QRELS, RUN)
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key


def test_evaluate_empty_result_counts_as_zero():
    got = evaluate({"a": {"d1": 1}, "b": {"d2": 1}}, {"a": {"d1": 1.0}, "b": {}})
    assert got == pytest.approx({"ndcg@10": 0.5, "recall@100": 0.5, "mrr@10": 0.5})


def test_evaluate_perfect():
    got = evaluate({"a": {"d1": 1, "d2": 1}}, {"a": {"d1": 2.0, "d2": 1.0, "d3": 0.0}})
    assert got == pytest.approx({"ndcg@10": 1.0, "recall@100": 1.0, "mrr@10": 1.0})


def test_make_run_drops_padding():
    ids = np.array([["d1", "d2", None], ["d3", None, None]], dtype=object)
    scores = np.array([[3.0, 2.0, -np.inf], [1.0, -np.inf, -np.inf]])
    assert make_run(["a", "b"], ids, scores) == {"a": {"d1": 3.0, "d2": 2.0}, "b": {"d3": 1.0}}


def test_make_run_int_ids_and_minus_one():
    ids = np.array([[7, 3, -1], [-1, -1, -1]], dtype=np.int64)
    scores = np.array([[0.5, 0.25, 0.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    run = make_run(["a", "b"], ids, scores)
    assert run == {"a": {"7": 0.5, "3": 0.25}, "b": {}}
    assert all(type(s) is float for s in run["a"].values())


def test_make_run_drops_non_finite_scores():
    ids = np.array([["d1", "d2", "d3"]], dtype=object)
    scores = np.array([[1.0, np.nan, -np.inf]])
    assert make_run(["a"], ids, scores) == {"a": {"d1": 1.0}}


def test_write_trec_run(tmp_path):
    run = {"q1": {"d2": 0.5, "d1": 2.0, "d3": -1.25}, "q2": {"x": 1.0}}
    path = tmp_path / "run.trec"
    write_trec_run(path, run, tag="test")
    lines = path.read_text().splitlines()
    assert lines == [
        "q1 Q0 d1 1 2.000000 test",
        "q1 Q0 d2 2 0.500000 test",
        "q1 Q0 d3 3 -1.250000 test",
        "q2 Q0 x 1 1.000000 test",
    ]
    assert not list(tmp_path.glob("*.tmp"))


def test_write_trec_run_round_trip(tmp_path):
    import ir_measures

    path = tmp_path / "run.trec"
    write_trec_run(path, RUN)
    assert all(line.split()[-1] == "muvera" for line in path.read_text().splitlines())
    back = {}
    for sd in ir_measures.read_trec_run(str(path)):
        back.setdefault(sd.query_id, {})[sd.doc_id] = sd.score
    assert back.keys() == RUN.keys()
    for q in RUN:
        assert back[q] == pytest.approx(RUN[q], abs=1e-6)
    assert evaluate(QRELS, back) == pytest.approx(evaluate(QRELS, RUN), abs=1e-6)


def test_identical_ids_dropped_by_default_as_beir_does():
    # ArguAna-style: query "a1" is also a document of the corpus and would rank first.
    qrels = {"a1": {"a2": 1}}
    ids = np.array([["a1", "a2", "a3"]], dtype=object)
    scores = np.array([[3.0, 2.0, 1.0]], np.float32)
    run = make_run(["a1"], ids, scores)
    assert run == {"a1": {"a2": 2.0, "a3": 1.0}}
    assert evaluate(qrels, run)["mrr@10"] == 1.0
    kept = make_run(["a1"], ids, scores, ignore_identical_ids=False)
    assert "a1" in kept["a1"] and evaluate(qrels, kept)["mrr@10"] == 0.5
