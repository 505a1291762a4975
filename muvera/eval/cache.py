"""Embedding cache: a corpus's token vectors encoded once, in float16 shards with a manifest.

Layout of a cache entry directory::

    manifest.json        {"format": "muvera-embeddings", "format_version": 2, "dim": D, "count": N,
                          "shard_size": S, "shards": [{"file": ..., "count": ..., "rows": ...,
                          "sha256": ...}, ...], "fingerprint": ..., "texts_sha256": ...,
                          "checksum": {"sha256": ...}}
    shard-00000.npz      tokens (rows, D) float16, lengths (count,) int64

Shards are written to a temporary name, fsynced and renamed, and the manifest is rewritten the
same way after each shard (by the writer every muvera manifest uses, with its checksum; version 1
entries, without one, are still read and are rewritten as version 2 when a shard is added), so an interrupted run resumes at the first missing shard. A shard whose
checksum does not match is reported (ValueError) and can be re-encoded with ``repair=True``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from ..durable import TMP_MARK, file_sha256, loads_json, write_atomic
from ..index_format import read_manifest, write_manifest

FORMAT = "muvera-embeddings"
VERSION = 2  # 2: "format_version" and a checksum, as every muvera manifest


def _read_cache_manifest(root: Path) -> dict:
    """The entry's manifest, checked; a version-1 one (no checksum) is read as it is."""
    raw = loads_json((root / "manifest.json").read_text(encoding="utf-8"), "manifest.json")
    if isinstance(raw, dict) and raw.get("format") == FORMAT and "format_version" not in raw and raw.get("version") == 1:
        doc = dict(raw)
        doc.pop("version")
        doc["format_version"] = VERSION
        return doc
    try:
        return read_manifest(root, FORMAT, VERSION)
    except ValueError as exc:
        raise ValueError(f"{root / 'manifest.json'}: not a muvera embedding cache of version <= {VERSION} "
                         f"({exc})") from None


def default_cache_root() -> Path:
    """``$MUVERA_CACHE`` or ``~/.cache/muvera``."""
    return Path(os.environ.get("MUVERA_CACHE", Path.home() / ".cache" / "muvera"))


def _texts_sha256(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def encode_cached(directory: os.PathLike, texts: Sequence[str],
                  encode: Callable[[Sequence[str]], List[np.ndarray]], *, fingerprint: str = "",
                  shard_size: int = 256, progress: bool = True, repair: bool = False,
                  description: str = "encoding") -> Tuple[np.ndarray, np.ndarray]:
    """Encode ``texts`` into ``directory`` (or reuse what is there) and return all token vectors.

    Parameters
    ----------
    directory : path
        The cache entry (one corpus x one model).
    texts : sequence of str
    encode : callable
        texts -> list of (n_i, D) arrays.
    fingerprint : str
        Identifies model + settings; a mismatch with an existing entry raises ValueError.
    shard_size : int
        Texts per shard.
    repair : bool
        Re-encode shards that fail their checksum instead of raising.

    Returns
    -------
    tokens : (total_tokens, D) float16
    offsets : (len(texts) + 1,) int64
    """
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size <= 0:
        raise ValueError(f"shard_size: expected a positive int, got {shard_size!r}")
    if isinstance(texts, str):
        raise TypeError("texts: expected a sequence of strings, got one string")
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    _remove_orphans(root)
    manifest_path = root / "manifest.json"
    n_shards = (len(texts) + shard_size - 1) // shard_size
    texts_sha256 = _texts_sha256(texts)
    manifest = {"format": FORMAT, "format_version": VERSION, "count": len(texts), "shard_size": shard_size,
                "fingerprint": fingerprint, "texts_sha256": texts_sha256, "dim": None, "shards": []}
    if manifest_path.exists():
        old = _read_cache_manifest(root)
        if (old.get("count"), old.get("shard_size"), old.get("fingerprint")) != (len(texts), shard_size, fingerprint):
            raise ValueError(f"{manifest_path}: the cache was built for other texts, shard size or model "
                             f"(fingerprint {old.get('fingerprint')!r}); use another directory")
        if old.get("texts_sha256", texts_sha256) != texts_sha256:  # entries from before the key: not checked
            raise ValueError(f"{manifest_path}: the cache was built for other texts (same count, other "
                             f"content); use another directory")
        manifest = old
    else:  # written up front so that an entry with no shards (no texts) is complete too
        write_manifest(root, manifest)
    done = {s["file"]: s for s in manifest["shards"]}
    bar = _progress(n_shards, description) if progress else None
    shards: List[Optional[dict]] = []
    for i in range(n_shards):
        name = f"shard-{i:05d}.npz"
        entry = done.get(name)
        if entry is not None and (root / name).exists():
            if file_sha256(root / name) == entry["sha256"]:
                shards.append(entry)
                if bar:
                    bar.update(1)
                continue
            if not repair:
                raise ValueError(f"{root / name}: checksum mismatch (corrupt shard); rerun with repair=True")
        batch = list(texts[i * shard_size:(i + 1) * shard_size])
        vecs = encode(batch)
        if not isinstance(vecs, (list, tuple)) or len(vecs) != len(batch):
            got = len(vecs) if isinstance(vecs, (list, tuple)) else type(vecs).__name__
            raise ValueError(f"encode: returned {got} arrays for {len(batch)} texts (shard {i}); "
                             "expected one (n_tokens, dim) array per text")
        lengths = np.array([len(v) for v in vecs], dtype=np.int64)
        dim = int(vecs[0].shape[1]) if vecs else 0
        tokens = np.concatenate(vecs, axis=0).astype(np.float16) if vecs else np.zeros((0, dim), np.float16)
        buf = io.BytesIO()  # zip needs a seekable file; a shard is a few MB
        np.savez(buf, tokens=tokens, lengths=lengths)
        written = write_atomic(root / name, lambda f: f.write(buf.getbuffer()))
        entry = {"file": name, "count": len(batch), "rows": int(tokens.shape[0]), "sha256": written["sha256"]}
        manifest["dim"] = dim
        manifest["shards"] = [s for s in manifest["shards"] if s["file"] != name] + [entry]
        write_manifest(root, manifest)
        shards.append(entry)
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    return load_cached(root)


def load_cached(directory: os.PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """All shards of a complete cache entry, verified: (tokens float16, offsets int64)."""
    root = Path(directory)
    manifest = _read_cache_manifest(root)
    n_shards = (manifest["count"] + manifest["shard_size"] - 1) // manifest["shard_size"]
    by_name = {s["file"]: s for s in manifest["shards"]}
    parts, lengths = [], []
    for i in range(n_shards):
        name = f"shard-{i:05d}.npz"
        if name not in by_name or not (root / name).exists():
            raise ValueError(f"{root}: incomplete cache ({name} missing); run the encoding again to resume")
        if file_sha256(root / name) != by_name[name]["sha256"]:
            raise ValueError(f"{root / name}: checksum mismatch (corrupt shard)")
        with np.load(root / name) as z:
            parts.append(z["tokens"])
            lengths.append(z["lengths"])
    lens = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    offsets = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    dim = manifest.get("dim") or 0
    tokens = np.concatenate(parts, axis=0) if parts else np.zeros((0, dim), np.float16)
    return tokens, offsets


_ORPHAN = re.compile(r"^\.(shard-\d{5}\.npz|manifest\.json)" + re.escape(TMP_MARK) + r"[0-9a-f]{8}$")


def _remove_orphans(root: Path) -> None:
    """Delete temporaries a killed run left behind (only names our own writer makes)."""
    for p in root.iterdir():
        if _ORPHAN.match(p.name) and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()


def _progress(total: int, description: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=description, unit="shard")
