"""Builds the small BEIR sample shipped in the package (muvera/data/scifact-sample).

50 judged SciFact test queries, every document they judge relevant, and random other documents
up to 800 in all (fixed seed). SciFact: CC BY-NC 2.0, Allen Institute for AI.

    python bench/make_sample.py ../shared/data/scifact muvera/data/scifact-sample
"""

import json
import random
import sys
from pathlib import Path


def main(src: str, dst: str, n_queries: int = 50, n_docs: int = 800, seed: int = 0) -> None:
    src_p, dst_p = Path(src), Path(dst)
    rng = random.Random(seed)
    qrels = {}
    lines = (src_p / "qrels" / "test.tsv").read_text().splitlines()
    header, rows = lines[0], [l.split("\t") for l in lines[1:] if l.strip()]
    for q, d, s in rows:
        qrels.setdefault(q, []).append((d, s))
    queries = sorted(qrels, key=lambda q: int(q) if q.isdigit() else q)
    chosen = sorted(rng.sample(queries, n_queries), key=lambda q: int(q) if q.isdigit() else q)
    wanted = {d for q in chosen for d, _ in qrels[q]}
    corpus = [json.loads(l) for l in (src_p / "corpus.jsonl").read_text().splitlines() if l.strip()]
    others = [c for c in corpus if c["_id"] not in wanted]
    keep_ids = wanted | {c["_id"] for c in rng.sample(others, n_docs - len(wanted))}
    (dst_p / "qrels").mkdir(parents=True, exist_ok=True)
    with open(dst_p / "corpus.jsonl", "w") as f:
        for c in corpus:
            if c["_id"] in keep_ids:
                f.write(json.dumps({"_id": c["_id"], "title": c.get("title", ""), "text": c.get("text", "")}) + "\n")
    qs = {json.loads(l)["_id"]: json.loads(l) for l in (src_p / "queries.jsonl").read_text().splitlines() if l.strip()}
    with open(dst_p / "queries.jsonl", "w") as f:
        for q in chosen:
            f.write(json.dumps({"_id": q, "text": qs[q]["text"]}) + "\n")
    with open(dst_p / "qrels" / "test.tsv", "w") as f:
        f.write(header + "\n")
        for q in chosen:
            for d, s in qrels[q]:
                f.write(f"{q}\t{d}\t{s}\n")
    (dst_p / "README.md").write_text(
        "# SciFact sample\n\nA 50-query, 800-document sample of BEIR SciFact (test split), made by "
        "`bench/make_sample.py`.\nSciFact: Wadden et al., EMNLP 2020, Allen Institute for AI, CC BY-NC 2.0.\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
