"""BEIR-layout datasets: corpus.jsonl, queries.jsonl and qrels/<split>.tsv."""

from __future__ import annotations

import csv
import json
import os
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"


@dataclass
class BeirDataset:
    """A loaded BEIR dataset: parallel id/text lists and graded relevance judgements."""

    name: str
    doc_ids: List[str]
    doc_texts: List[str]  # title + " " + text
    query_ids: List[str]  # only queries that have judgements in the split
    query_texts: List[str]
    qrels: Dict[str, Dict[str, int]]
    doc_titles: Optional[List[str]] = None  # titles alone (doc_texts holds title + text)


def load_beir(path: os.PathLike, split: str = "test", max_queries: Optional[int] = None) -> BeirDataset:
    """Load a BEIR-layout folder.

    Raises
    ------
    FileNotFoundError
        If a required file is missing (the message names it).
    ValueError
        If a line is malformed (file and line number given).
    """
    root = Path(path)
    for rel in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (root / rel).is_file():
            raise FileNotFoundError(f"{root / rel}: missing (expected a BEIR-layout folder)")
    qrels: Dict[str, Dict[str, int]] = {}
    with open(root / "qrels" / f"{split}.tsv", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        for lineno, row in enumerate(reader, 1):
            if lineno == 1 and [c.strip().lower() for c in row[:3]] == ["query-id", "corpus-id", "score"]:
                continue  # BEIR's header: anything else on line 1 is data, checked like the rest
            if not row:
                continue  # blank line
            if len(row) < 3 or not row[2].strip().lstrip("-").isdigit():
                raise ValueError(f"{root / 'qrels' / (split + '.tsv')}:{lineno}: expected query-id, corpus-id, "
                                 f"integer score")
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    doc_ids, doc_texts, doc_titles = [], [], []
    seen: Dict[str, int] = {}
    for lineno, obj in _jsonl(root / "corpus.jsonl"):
        did = str(obj["_id"])
        if did in seen:
            raise ValueError(f"{root / 'corpus.jsonl'}:{lineno}: duplicate _id {did!r} (first on line {seen[did]})")
        seen[did] = lineno
        doc_ids.append(did)
        title = obj.get("title") or ""
        doc_titles.append(str(title))
        doc_texts.append((title + " " + (obj.get("text") or "")).strip())
    query_ids, query_texts = [], []
    seen_q: Dict[str, int] = {}
    for lineno, obj in _jsonl(root / "queries.jsonl"):
        qid = str(obj["_id"])
        if qid in seen_q:
            raise ValueError(f"{root / 'queries.jsonl'}:{lineno}: duplicate _id {qid!r} (first on line {seen_q[qid]})")
        seen_q[qid] = lineno
        if qid in qrels:
            query_ids.append(qid)
            query_texts.append(obj.get("text") or "")
    if max_queries is not None:
        query_ids, query_texts = query_ids[:max_queries], query_texts[:max_queries]
    return BeirDataset(root.resolve().name, doc_ids, doc_texts, query_ids, query_texts, qrels, doc_titles)


def _jsonl(path: Path):
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict) or "_id" not in obj:
                raise ValueError(f"{path}:{lineno}: missing '_id'")
            if obj["_id"] is None or (isinstance(obj["_id"], str) and not obj["_id"].strip()) \
                    or not isinstance(obj["_id"], (str, int)) or isinstance(obj["_id"], bool):
                raise ValueError(f"{path}:{lineno}: '_id' must be a non-empty string or an int, got {obj['_id']!r}")
            yield lineno, obj


def download_beir(name: str, dest: os.PathLike, timeout: float = 30.0) -> Path:
    """Download and unpack a BEIR dataset (e.g. "scifact") into ``dest/name``.

    Raises
    ------
    ConnectionError
        If the download server cannot be reached (offline machines): copy the folder by hand.
    """
    dest = Path(dest)
    target = dest / name
    if (target / "corpus.jsonl").is_file():
        return target
    dest.mkdir(parents=True, exist_ok=True)
    url = BEIR_URL.format(name=name)
    tmp = dest / f".{name}.zip.part"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
    except (urllib.error.URLError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise ConnectionError(f"could not download {url} ({exc}); without network access, place the "
                              f"BEIR folder at {target} yourself") from exc
    with zipfile.ZipFile(tmp) as z:
        z.extractall(dest)
    tmp.unlink()
    return target
