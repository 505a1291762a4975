"""How FDE inner products relate to Chamfer on real token vectors (README's "How FDE scores
relate to Chamfer"): the ratio <FDE(q), FDE(d)> / Chamfer(q, d) and the per-query rank
correlation, for every query against every document of a BEIR-layout dataset.

    python bench/fde_vs_chamfer.py sample [--preset 10240]

Uses the embedded MiniLM model through the embedding cache (the first run encodes the texts).
"""

from __future__ import annotations

import argparse

import numpy as np

import muvera
from muvera.cli import SAMPLE


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset", help="BEIR folder, or 'sample'")
    ap.add_argument("--preset", default="10240")
    args = ap.parse_args()
    from muvera.eval.embed import embed_beir

    emb = embed_beir(SAMPLE if args.dataset == "sample" else args.dataset, progress=False)
    dt, do = emb.doc_tokens.astype(np.float32), emb.doc_offsets
    qt, qo = emb.query_tokens.astype(np.float32), emb.query_offsets
    cfg = muvera.FDEConfig.preset(args.preset, dimension=dt.shape[1])
    enc = muvera.FDEEncoder(cfg)
    fde = enc.encode_queries(qt, offsets=qo) @ enc.encode_documents(dt, offsets=do).T
    cham = muvera.chamfer_matrix(qt, dt, query_offsets=qo, doc_offsets=do)
    ratio = fde / cham
    print(f"{emb.data.name}: {len(qo) - 1} queries x {len(do) - 1} documents, {cfg.output_dimension}-d FDE, "
          f"R = {cfg.num_repetitions}")
    print(f"FDE / Chamfer: mean {ratio.mean():.2f}, median {np.median(ratio):.2f}, "
          f"5th-95th percentile {np.percentile(ratio, 5):.2f} to {np.percentile(ratio, 95):.2f}")
    print(f"per-query Spearman(FDE, Chamfer): mean {np.mean([spearman(f, c) for f, c in zip(fde, cham)]):.3f}")


if __name__ == "__main__":
    main()
