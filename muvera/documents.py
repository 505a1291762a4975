"""Documents alone, from the files people have: a BEIR ``corpus.jsonl``, JSONL with
``id``/``text``/``title``, TSV, Parquet, or a folder of text files. No queries needed.

:func:`load_documents` returns parallel lists of ids, titles and the texts a model encodes
(``title + " " + text``, as BEIR loaders join them).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ._optional import require
from .durable import loads_json

__all__ = ["Documents", "load_documents", "SUPPORTED"]

#: File kinds :func:`load_documents` reads (by suffix).
SUPPORTED = (".jsonl", ".tsv", ".parquet", ".txt", ".md")
_ID_KEYS = ("_id", "id", "doc_id", "docid")
_TEXT_KEYS = ("text", "contents", "body")


@dataclass
class Documents:
    """Parallel lists of documents read from files.

    Attributes
    ----------
    ids : list of str
    texts : list of str
        ``title + " " + text`` (stripped): what a model encodes.
    titles : list of str
        Titles alone ("" where none).
    name : str
        A short name for caches and messages (the folder's or file's name).
    bodies : list of str
        The text without the title.
    """

    ids: List[str]
    texts: List[str]
    titles: List[str]
    name: str
    bodies: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


class _Collector:
    def __init__(self) -> None:
        self.ids: List[str] = []
        self.titles: List[str] = []
        self.bodies: List[str] = []
        self.seen: Dict[str, str] = {}

    def add(self, doc_id: Any, title: Any, text: Any, where: str) -> None:
        if doc_id is None or isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)) \
                or (isinstance(doc_id, str) and not doc_id.strip()):
            raise ValueError(f"{where}: the id must be a non-empty string or an int, got {doc_id!r}")
        doc_id = str(doc_id)
        if doc_id in self.seen:
            raise ValueError(f"{where}: duplicate id {doc_id!r} (first at {self.seen[doc_id]})")
        title = "" if title is None else title
        text = "" if text is None else text
        if not isinstance(title, str) or not isinstance(text, str):
            raise ValueError(f"{where}: title and text must be strings, got {type(title).__name__} and "
                             f"{type(text).__name__}")
        if not (title.strip() or text.strip()):
            raise ValueError(f"{where}: document {doc_id!r} has no text and no title")
        self.seen[doc_id] = where
        self.ids.append(doc_id)
        self.titles.append(title)
        self.bodies.append(text)


def _pick(obj: Dict[str, Any], keys: Tuple[str, ...]) -> Optional[str]:
    return next((k for k in keys if k in obj), None)


def _jsonl(path: Path, out: _Collector) -> None:
    with open(path, "rb") as f:  # bytes: a binary file's bad line is named, not a bare decode error
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"{where}: not UTF-8 text (byte {exc.start + 1} of the line: "
                                 f"{raw[exc.start:exc.start + 1]!r}); is this a JSONL file?") from None
            if not line.strip():
                continue
            try:
                obj = loads_json(line, where)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: invalid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            id_key, text_key = _pick(obj, _ID_KEYS), _pick(obj, _TEXT_KEYS)
            if id_key is None:
                raise ValueError(f"{where}: no id field (expected one of {list(_ID_KEYS)})")
            if text_key is None and "title" not in obj:
                raise ValueError(f"{where}: no text field (expected one of {list(_TEXT_KEYS)} or 'title')")
            out.add(obj[id_key], obj.get("title"), obj.get(text_key) if text_key else "", where)


def _tsv(path: Path, out: _Collector) -> None:
    csv.field_size_limit(1 << 28)
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        columns: Optional[List[str]] = None
        for lineno, row in enumerate(reader, 1):
            if not row or not any(c.strip() for c in row):
                continue
            where = f"{path}:{lineno}"
            if columns is None:
                lowered = [c.strip().lower() for c in row]
                if _pick(dict.fromkeys(lowered), _TEXT_KEYS) or "title" in lowered:  # a header line
                    columns = lowered
                    if _pick(dict.fromkeys(columns), _ID_KEYS) is None:
                        raise ValueError(f"{where}: the header names no id column (expected one of {list(_ID_KEYS)})")
                    continue
                columns = ["id", "text", "title"][: max(2, min(3, len(row)))]  # MS MARCO style: id, text[, title]
            if len(row) < 2:
                raise ValueError(f"{where}: expected at least an id and a text separated by a tab")
            obj = dict(zip(columns, row))
            text_key = _pick(obj, _TEXT_KEYS)
            out.add(obj[_pick(obj, _ID_KEYS) or "id"], obj.get("title"), obj.get(text_key) if text_key else "",
                    where)


def _parquet(path: Path, out: _Collector) -> None:
    pq = require("pyarrow.parquet", "arrow", "reading Parquet documents")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 (pyarrow's errors: all mean "not readable")
        raise ValueError(f"{path}: not a readable Parquet file ({exc})") from None
    names = dict.fromkeys(table.column_names)
    id_key, text_key = _pick(names, _ID_KEYS), _pick(names, _TEXT_KEYS)
    if id_key is None or (text_key is None and "title" not in names):
        raise ValueError(f"{path}: expected an id column ({list(_ID_KEYS)}) and a text column "
                         f"({list(_TEXT_KEYS)} or 'title'), got {table.column_names}")
    ids = table.column(id_key).to_pylist()
    texts = table.column(text_key).to_pylist() if text_key else [""] * len(ids)
    titles = table.column("title").to_pylist() if "title" in names else [""] * len(ids)
    for i, (doc_id, title, text) in enumerate(zip(ids, titles, texts)):
        out.add(doc_id, title, text, f"{path}: row {i}")


def _lines(path: Path, out: _Collector) -> None:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                out.add(f"{path.stem}:{lineno}", "", line.rstrip("\n"), f"{path}:{lineno}")


def _files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in SUPPORTED:
                yield Path(dirpath) / name


def load_documents(path: Any) -> Documents:
    """Read documents from a file or folder.

    Parameters
    ----------
    path : str or path
        * a BEIR folder (its ``corpus.jsonl``; ``queries.jsonl`` and qrels are not needed);
        * a ``.jsonl`` file: one object per line with an id (``_id``, ``id``, ``doc_id``), a
          text (``text``, ``contents``, ``body``) and optionally a ``title``;
        * a ``.tsv`` file: a header line naming those columns, or rows ``id<TAB>text[<TAB>title]``;
        * a ``.parquet`` file with those columns;
        * a ``.txt`` or ``.md`` file: one document per non-empty line (id ``<stem>:<line>``);
        * any other folder: every ``.txt``/``.md`` file in it (recursively) is one document
          whose id is its relative path and whose title is its file name; ``.jsonl``, ``.tsv``
          and ``.parquet`` files in it are read as above.

    Returns
    -------
    Documents

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``, or a folder with no supported file.
    ValueError
        A malformed line or row (file and line named), a duplicate id, a document without text.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file or folder path, got {type(path).__name__}")
    root = Path(path)
    out = _Collector()
    if root.is_dir():
        name = root.resolve().name
        if (root / "corpus.jsonl").is_file():
            _jsonl(root / "corpus.jsonl", out)
        else:
            files = list(_files(root))
            if not files:
                raise FileNotFoundError(f"{root}: no documents (expected corpus.jsonl or files ending in "
                                        f"{', '.join(SUPPORTED)})")
            for p in files:
                if p.suffix.lower() in (".txt", ".md"):
                    text = p.read_text(encoding="utf-8")
                    out.add(str(p.relative_to(root)), p.stem, text, str(p))
                else:
                    _read_file(p, out)
    elif root.is_file():
        name = root.stem
        _read_file(root, out)
    else:
        raise FileNotFoundError(f"{root}: no such file or folder (expected documents: corpus.jsonl, "
                                f"{', '.join(SUPPORTED)})")
    if not out.ids:
        raise ValueError(f"{root}: no documents found")
    texts = [(t + " " + b).strip() for t, b in zip(out.titles, out.bodies)]
    return Documents(out.ids, texts, out.titles, name, out.bodies)


def _read_file(p: Path, out: _Collector) -> None:
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        _jsonl(p, out)
    elif suffix == ".tsv":
        _tsv(p, out)
    elif suffix == ".parquet":
        _parquet(p, out)
    elif suffix in (".txt", ".md"):
        _lines(p, out)
    else:
        raise ValueError(f"{p}: unsupported file type {suffix!r} (expected one of {', '.join(SUPPORTED)})")


def texts_digest(texts: List[str]) -> str:
    """A short digest of texts (names cache entries of documents read from loose files)."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()[:12]
