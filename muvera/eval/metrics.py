"""IR metrics through ir-measures (pytrec_eval underneath) and TREC run files."""

from __future__ import annotations

import os
from typing import Dict, Mapping, Sequence

import numpy as np

Run = Dict[str, Dict[str, float]]


def make_run(query_ids: Sequence[str], doc_ids: np.ndarray, scores: np.ndarray, *,
             ignore_identical_ids: bool = True) -> Run:
    """A run dict from (n_queries, k) arrays of document ids and scores; None/-1 padding dropped.

    ``ignore_identical_ids`` (BEIR's convention, on by default in BEIR's evaluation and in
    published ArguAna/Quora figures): a hit whose document id equals the query's id is dropped,
    since on such corpora the query is itself a document and would otherwise rank first.
    """
    run: Run = {}
    for qid, ids, sc in zip(query_ids, doc_ids, scores):
        run[qid] = {str(d): float(s) for d, s in zip(ids, sc)
                    if d is not None and d != -1 and np.isfinite(s)
                    and not (ignore_identical_ids and str(d) == str(qid))}
    return run


def evaluate(qrels: Mapping[str, Mapping[str, int]], run: Run) -> Dict[str, float]:
    """nDCG@10, Recall@100 and MRR@10 averaged over the judged queries of the run."""
    try:
        import ir_measures
        from ir_measures import RR, R, nDCG
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise ImportError("metrics need the Python package 'ir_measures': pip install \"muvera-toolkit[eval]\"") from exc
    judged = {q: {d: int(g) for d, g in rel.items()} for q, rel in qrels.items() if q in run}
    agg = ir_measures.calc_aggregate([nDCG @ 10, R @ 100, RR @ 10], judged, run)
    return {"ndcg@10": float(agg[nDCG @ 10]), "recall@100": float(agg[R @ 100]), "mrr@10": float(agg[RR @ 10])}


def write_trec_run(path: os.PathLike, run: Run, tag: str = "muvera") -> None:
    """Write a run in TREC format (qid Q0 docid rank score tag), best first, atomically."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        for qid, docs in run.items():
            for rank, (doc, score) in enumerate(sorted(docs.items(), key=lambda kv: -kv[1]), 1):
                f.write(f"{qid} Q0 {doc} {rank} {score:.6f} {tag}\n")
    os.replace(tmp, path)
