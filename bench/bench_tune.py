"""tune() on BEIR corpora: the recall-latency curve it measures, the setting it picks, and what
that setting gives on the judged queries (which tune never sees), against the defaults.

Per corpus (embedded MiniLM tokens from the embedding cache, float16 store, ``auto``): build,
``index.tune(target_recall=T)`` on pseudo-queries, then on the judged queries R@10 against exact
Chamfer, nDCG@10 and p50 (one thread) with the default 200 candidates and with the tuned setting.
The curve is saved as ``<out>/tune-<corpus>.png``.

    python bench/bench_tune.py --corpora scifact,nfcorpus [--targets 0.9,0.95] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_defaults import beir_corpus, ndcg, p50_ms, recall  # noqa: E402

import muvera  # noqa: E402
from muvera import FDEConfig, MuveraIndex  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", default="scifact,nfcorpus")
    ap.add_argument("--targets", default="0.9,0.95")
    ap.add_argument("--out", default=".")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = []
    for name in args.corpora.split(","):
        toks, off, qtok, qoff, data = beir_corpus(name, None)
        cfg = FDEConfig.preset("10240", dimension=toks.shape[1])
        index = MuveraIndex(cfg, backend="auto")
        index.add(toks, offsets=off, progress=False)
        index.wait_for_backend()
        truth, _ = index.search_exact(qtok, k=10, offsets=qoff)
        rows_of = index.id_map.rows_of

        def judged(candidates=None):
            ids, scores = index.search(qtok, k=10, candidates=candidates, offsets=qoff)
            rows = np.where(ids >= 0, rows_of(np.maximum(ids, 0).ravel()).reshape(ids.shape), -1)
            t_rows = np.where(truth >= 0, rows_of(np.maximum(truth, 0).ravel()).reshape(truth.shape), -1)
            c = candidates if candidates is not None else (index.tuned or {}).get("candidates", 200)
            return {"candidates": int(c), "recall@10": round(recall(rows, t_rows), 4),
                    "ndcg@10": round(ndcg(data, rows, scores), 4), "p50_ms": round(p50_ms(index, qtok, qoff, int(c)), 2)}

        base = judged(200)
        print(f"== {name}: {len(off) - 1} documents ({index.backend.active}), default {base}", flush=True)
        for target in (float(t) for t in args.targets.split(",")):
            result = index.tune(target_recall=target)
            print(result.table(), flush=True)
            result.plot(out_dir / f"tune-{name}-{target:g}.png")
            tuned = judged(None)
            print(f"   target {target:g}: tuned {index.tuned['candidates']} candidates "
                  f"(pseudo-query recall {index.tuned['recall']:.3f}) -> judged queries {tuned}", flush=True)
            report.append({"corpus": name, "target": target, "default": base, "tuned": tuned,
                           "setting": index.tuned, "curve": result.rows})
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
