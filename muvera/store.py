"""TokenStore: every document's token codes packed in one array, for Chamfer reranking.

Documents are rows; row ``i`` owns ``codes[offsets[i]:offsets[i+1]]``. How tokens become codes,
and how candidates are scored on them, is the store's :class:`~muvera.codecs.TokenCodec`
(float16 by default). Tombstones live in the index's :class:`~muvera.idmap.IdMap`; the store only
drops rows when :meth:`TokenStore.compact` is given the rows to keep.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, Optional, Tuple, Union

import numpy as np

from .batch import DTYPE_CODES, as_token_batch
from .buffers import Growable
from .ragged import offsets_of, span_index
from .durable import write_atomic, write_npy


def _core() -> Any:
    from . import _core as core  # noqa: PLC0415 (the extension: imported where first needed)

    return core

if TYPE_CHECKING:
    from .codecs import TokenCodec

__all__ = ["TokenStore", "pack_tokens"]

_STORE_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))
_CHECK_ROWS = 1 << 16  # finite check in blocks: bounds the temporary boolean array


class _Spilled:
    """An append-only buffer kept in an anonymous temporary file, not in RAM: the exact tier
    while a large index is built. Reads go through a read-only memory map of what was written;
    the file disappears with the buffer (or the process)."""

    def __init__(self, tail: Tuple[int, ...], dtype: Any, directory: Path):
        import tempfile  # noqa: PLC0415

        self._tail = tuple(tail)
        self._dtype = np.dtype(dtype)
        self._row_bytes = int(np.prod(self._tail, dtype=np.int64)) * self._dtype.itemsize
        self.directory = Path(os.fspath(directory))
        self._file = tempfile.TemporaryFile(dir=os.fspath(directory), prefix=".muvera-spill-")
        self._n = 0
        self._map: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return self._n

    def fileno(self) -> int:
        return self._file.fileno()

    @property
    def view(self) -> np.ndarray:
        if self._n == 0:
            return np.empty((0,) + self._tail, dtype=self._dtype)
        if self._map is None or len(self._map) != self._n:
            self._file.flush()
            self._map = np.memmap(self._file, dtype=self._dtype, mode="r", shape=(self._n,) + self._tail)
        return self._map

    @property
    def nbytes(self) -> int:
        return self._n * self._row_bytes

    @property
    def is_memmap(self) -> bool:
        return True

    def extend(self, values: np.ndarray) -> None:
        arr = np.ascontiguousarray(values, dtype=self._dtype)
        if arr.shape[1:] != self._tail:
            raise ValueError(f"values: expected rows of shape {self._tail}, got {arr.shape[1:]}")
        self._file.seek(self._n * self._row_bytes)
        self._file.write(memoryview(arr).cast("B"))
        self._n += len(arr)

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` rows (the rollback of a failed append); later appends overwrite."""
        if int(n) < self._n:
            self._n = int(n)
            self._map = None

    def writable(self) -> np.ndarray:
        raise ValueError("a spilled buffer is append-only")

    def write_npy(self, f: Any) -> None:
        """Write the content as a ``.npy`` file to ``f`` with plain reads of the temporary file:
        nothing is mapped into this process (saving never pulls the tier into RSS)."""
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(self._dtype),
                                                 "fortran_order": False, "shape": (self._n,) + self._tail})
        self._file.flush()
        fd, pos, end = self._file.fileno(), 0, self._n * self._row_bytes
        while pos < end:
            chunk = os.pread(fd, min(1 << 24, end - pos), pos)
            if not chunk:
                raise OSError("the exact tier's temporary file is shorter than written")
            f.write(chunk)
            pos += len(chunk)


def _as_dtype(dtype: Any, name: str = "dtype") -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{name}: expected 'float16' or 'float32', got {dtype!r}") from exc
    if dt not in _STORE_DTYPES:
        raise ValueError(f"{name}: expected 'float16' or 'float32', got {dt}")
    return dt


def _check_finite(tokens: np.ndarray, offsets: np.ndarray, name: str, dtype: np.dtype) -> None:
    for r0 in range(0, len(tokens), _CHECK_ROWS):
        ok = np.isfinite(tokens[r0: r0 + _CHECK_ROWS]).all(axis=1)
        if not ok.all():
            row = r0 + int(np.argmin(ok))
            item = int(np.searchsorted(offsets, row, side="right")) - 1
            extra = " (or values beyond the float16 range)" if dtype == np.float16 else ""
            raise ValueError(f"{name}[{item}]: contains NaN or Inf values{extra}")


def pack_tokens(batch: Any, dimension: int, dtype: Any = np.float32, *, lengths: Any = None,
                offsets: Any = None, mask: Any = None, name: str = "documents",
                allow_empty_items: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Any batch form -> ``(tokens (T, dimension) in dtype, lengths (n,) int64)``, validated.

    Parameters
    ----------
    batch : list of 2-D arrays, packed 2-D array (with lengths/offsets) or padded 3-D array
    dimension : int
    dtype : {"float32", "float16"}
    lengths, offsets, mask : optional
        As in :func:`muvera.batch.as_token_batch`.
    name : str
        Argument name used in error messages (``documents[i]: ...``).

    Returns
    -------
    tokens : (T, dimension) ndarray
        C-contiguous. It may share memory with ``batch`` when no conversion was needed.
    lengths : (n,) int64

    Raises
    ------
    ValueError
        Wrong dimension, an empty batch, an item with zero tokens, NaN/Inf (also values that
        overflow float16).
    TypeError
        Unsupported input types.
    """
    target = _as_dtype(dtype)
    tb = as_token_batch(batch, dimension, lengths=lengths, offsets=offsets, mask=mask, name=name)
    if tb.arrays is not None:
        lens = np.fromiter((len(a) for a in tb.arrays), dtype=np.int64, count=len(tb.arrays))
    else:
        lens = np.asarray(tb.lengths, dtype=np.int64)
    if lens.size == 0:
        raise ValueError(f"{name}: expected at least one item")
    if not allow_empty_items and (lens == 0).any():
        raise ValueError(f"{name}[{int(np.argmin(lens))}]: expected at least one token, got 0")
    offs = offsets_of(lens)
    total = int(offs[-1])
    if tb.arrays is not None:
        src = tb.arrays[0] if len(tb.arrays) == 1 else np.concatenate(tb.arrays, axis=0)
    elif total == len(tb.tokens) and np.array_equal(tb.starts, offs[:-1]):
        src = tb.tokens  # already packed: no copy
    else:
        # Padded or gapped input: one vectorised gather of the valid rows.
        idx = span_index(tb.starts, lens)
        src = tb.tokens[idx]
    if tb.dtype_code == DTYPE_CODES["bfloat16"]:
        src = (src.astype(np.uint32) << 16).view(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported as Inf below
        out = np.ascontiguousarray(src, dtype=target)
    _check_finite(out, offs, name, target)
    return out, lens


class TokenStore:
    """All documents' tokens, encoded by a :class:`~muvera.codecs.TokenCodec` and packed.

    Parameters
    ----------
    dimension : int
        Token vector dimension.
    codec : str or TokenCodec, default "float16"
        The token encoding (``"float16"``, ``"float32"``; see :mod:`muvera.codecs`). float16
        halves memory; Chamfer scores then differ from float32 ones by about 1e-3 relative.

    Notes
    -----
    ``len(store)`` counts rows (documents). The store is not locked: :class:`muvera.MuveraIndex`
    serialises writers.

    Examples
    --------
    >>> import numpy as np
    >>> store = TokenStore(4)
    >>> store.append([np.ones((3, 4)), np.ones((2, 4))]).tolist()
    [0, 1]
    >>> store.offsets.tolist()
    [0, 3, 5]
    """

    def __init__(self, dimension: int, codec: Union[str, "TokenCodec"] = "float16"):
        from .codecs import TokenCodec, make_codec  # noqa: PLC0415 (codecs import the extension)

        if isinstance(dimension, bool) or not isinstance(dimension, (int, np.integer)) or dimension < 1:
            raise ValueError(f"dimension: expected a positive int, got {dimension!r}")
        self._dim = int(dimension)
        if isinstance(codec, np.dtype) or (isinstance(codec, type) and issubclass(codec, np.generic)):
            codec = np.dtype(codec).name
        if isinstance(codec, TokenCodec):
            if codec.dimension != self._dim:
                raise ValueError(f"codec: built for dimension {codec.dimension}, the store has {self._dim}")
            self._codec = codec
        else:
            self._codec = make_codec(codec, self._dim)
        self._codes = Growable((self._codec.code_width,), self._codec.code_dtype)
        self._offsets = Growable((), np.int64, np.zeros(1, dtype=np.int64))
        # Each document's distinct centroid ids (residual codes only; see prune): derived from the
        # codes, kept in step with them, never saved.
        self._bags: Optional[Tuple[Growable, Growable]] = None

    @classmethod
    def from_arrays(cls, tokens: np.ndarray, offsets: np.ndarray,
                    codec: Union[str, "TokenCodec", None] = None) -> "TokenStore":
        """A store over existing code rows and offsets (no copy; read-only memory maps are fine).

        ``codec`` defaults to the float codec of ``tokens``' dtype.

        Raises
        ------
        ValueError
            If the arrays are inconsistent (offsets not 0..len(tokens), non-monotone, empty
            documents, a dtype or width other than the codec's).
        """
        if tokens.ndim != 2 or not tokens.flags.c_contiguous:
            raise ValueError(f"tokens: expected a C-contiguous 2-D array, got shape {tokens.shape}")
        if codec is None:
            codec = _as_dtype(tokens.dtype, "tokens").name
        store = cls(tokens.shape[1] if isinstance(codec, str) else codec.dimension, codec)
        c = store._codec
        if tokens.dtype != c.code_dtype or tokens.shape[1] != c.code_width:
            raise ValueError(f"tokens: expected {c.code_dtype.name} rows of {c.code_width} values for codec "
                             f"{c.name!r}, got {tokens.dtype.name} {tokens.shape}")
        offsets = np.asarray(offsets)
        if offsets.ndim != 1 or offsets.dtype != np.int64 or len(offsets) < 1:
            raise ValueError("offsets: expected a 1-D int64 array of n_documents + 1 values")
        if offsets[0] != 0 or offsets[-1] != len(tokens) or (np.diff(offsets) <= 0).any():
            raise ValueError(f"offsets: expected a strictly increasing sequence from 0 to {len(tokens)}")
        store._codes = Growable((c.code_width,), c.code_dtype, tokens)
        store._offsets = Growable((), np.int64, offsets)
        store._sync_bags()
        return store

    @classmethod
    def spilled(cls, dimension: int, codec: Union[str, "TokenCodec"], directory: Any) -> "TokenStore":
        """An empty store whose codes are appended to a temporary file in ``directory`` instead of
        RAM (read back through a memory map): for an exact tier larger than memory."""
        d = Path(os.fspath(directory))
        if not d.is_dir():
            raise ValueError(f"exact_spill_dir: {d} is not a directory")
        store = cls(dimension, codec)
        store._codes = _Spilled((store._codec.code_width,), store._codec.code_dtype, d)  # type: ignore[assignment]
        return store

    # -- properties ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __repr__(self) -> str:
        return (f"TokenStore(rows={len(self)}, tokens={self.num_tokens}, dimension={self._dim}, "
                f"codec={self._codec.name!r})")

    @property
    def dimension(self) -> int:
        """Token vector dimension."""
        return self._dim

    @property
    def codec(self) -> "TokenCodec":
        """The token encoding."""
        return self._codec

    @property
    def dtype(self) -> np.dtype:
        """dtype of the stored code rows (float16 or float32 for the float codecs)."""
        return self._codec.code_dtype

    @property
    def tokens(self) -> np.ndarray:
        """``(num_tokens, code_width)`` view of every stored code row (the tokens, for float codecs)."""
        return self._codes.view

    @property
    def offsets(self) -> np.ndarray:
        """``(len(self) + 1,)`` int64 view: row ``i`` owns ``tokens[offsets[i]:offsets[i+1]]``."""
        return self._offsets.view

    @property
    def lengths(self) -> np.ndarray:
        """``(len(self),)`` token counts per row."""
        return np.diff(self._offsets.view)

    @property
    def num_tokens(self) -> int:
        """Stored tokens."""
        return len(self._codes)

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffers (allocated capacity; a memory map counts its file size)."""
        bags = 0 if self._bags is None else self._bags[0].nbytes + self._bags[1].nbytes
        return self._codes.nbytes + self._offsets.nbytes + bags

    @property
    def is_memory_mapped(self) -> bool:
        """True while the codes are a read-only memory map (before the first append/compact)."""
        return self._codes.is_memmap

    # -- mutation ------------------------------------------------------------------------------
    @property
    def is_spilled(self) -> bool:
        """True when the codes live in a spill file (:meth:`spilled`)."""
        return isinstance(self._codes, _Spilled)

    def compacted_spill(self, keep: np.ndarray) -> "TokenStore":
        """A new spilled store (same directory) holding the rows where ``keep``, copied a few
        thousand rows at a time: compacting never reads the whole tier into memory."""
        if not isinstance(self._codes, _Spilled):
            raise ValueError("compacted_spill: the store is not spilled")
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (len(self),):
            raise ValueError(f"keep: expected {len(self)} flags, got shape {keep.shape}")
        out = TokenStore.spilled(self._dim, self._codec, self._codes.directory)
        rows, off, lens, codes = np.flatnonzero(keep), self.offsets, self.lengths, self.tokens
        for a in range(0, len(rows), 4096):
            r = rows[a: a + 4096]
            idx = span_index(off[r], lens[r])
            out.append_codes(codes[idx], lens[r])
        return out

    # -- the codec, owned: the index asks the store, never the codec ---------------------------
    @property
    def codec_name(self) -> str:
        return self._codec.name

    @property
    def codec_nbytes(self) -> int:
        """Bytes of the codec's learned tables (centroids, levels)."""
        return self._codec.state_nbytes

    @property
    def train_seconds(self) -> float:
        """Seconds the codec's training took (0 for codecs that learn nothing)."""
        return float(getattr(self._codec, "train_seconds", 0.0))

    @property
    def input_dtype(self) -> np.dtype:
        """The dtype tokens must be packed in for :meth:`encode` (the codec's)."""
        return self._codec.input_dtype

    @property
    def stores_tokens(self) -> bool:
        """The codes are the tokens themselves (float codecs): exact already."""
        return self._codec.stores_tokens

    @property
    def needs_training(self) -> bool:
        return self._codec.needs_training

    def training_tokens_wanted(self) -> Optional[int]:
        """Tokens a stream should gather to train the codec (None: the first batch will do)."""
        return self._codec.stream_training_tokens()

    def train(self, tokens: np.ndarray) -> bool:
        """Train the codec on ``tokens`` if it is untrained; returns whether it trained now (the
        caller's rollback then calls :meth:`untrain`)."""
        if not self._codec.needs_training:
            return False
        self._codec.train(tokens)
        return True

    def untrain(self) -> None:
        """Forget a training made by :meth:`train` (an add that failed after it)."""
        self._codec.untrain()

    def encode(self, tokens: np.ndarray) -> Tuple[np.ndarray, bool]:
        """Checked tokens (in :attr:`input_dtype`) -> ``(codes, trained_now)``: the first call
        trains the codec on them. Nothing is appended: :meth:`append_codes` commits."""
        trained = self.train(tokens)
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                codes = self._codec.encode(tokens)
            # Rounding to float16 can overflow what the input held (the exact tier of a coded store).
            if tokens.dtype != np.float16 and codes.dtype == np.float16 and not np.isfinite(codes).all():
                raise ValueError("documents: values beyond the float16 range (this store keeps float16 tokens)")
            return codes, trained
        except BaseException:
            if trained:
                self._codec.untrain()
            raise

    def fde_source(self, codes: np.ndarray) -> np.ndarray:
        """What FDEs are encoded from for these codes (float codecs: the codes themselves)."""
        return self._codec.fde_source(codes)

    def fde_sources(self, rows: np.ndarray, block: int = 4096) -> Iterator[Tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """``(position in rows, source tokens, starts, lengths)`` for the documents ``rows``, so
        their FDEs can be encoded again bit for bit: spans of the stored tokens, or (coded
        stores) the decoded tokens of ``block`` documents at a time."""
        codes, off, lens = self._codes.view, self._offsets.view, self.lengths
        rows = np.asarray(rows, dtype=np.int64)
        if self._codec.stores_tokens:
            yield 0, codes, off[rows], lens[rows]
            return
        for a in range(0, len(rows), block):
            r = rows[a: a + block]
            yield a, self._codec.fde_source(codes[span_index(off[r], lens[r])]), offsets_of(lens[r])[:-1], lens[r]

    @property
    def token_dtype(self) -> np.dtype:
        """The dtype :meth:`tokens_of` returns: the stored one for float codecs, else float32."""
        return np.dtype(self._codec.code_dtype) if self._codec.stores_tokens else np.dtype(np.float32)

    def tokens_of(self, rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(tokens, fde source, lengths)`` of the documents ``rows``, packed in that order: the
        stored tokens (float codecs) or the decoded ones, and what their FDEs were encoded from."""
        rows = np.asarray(rows)
        if rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
            raise TypeError(f"rows: expected a 1-D array of row numbers, got {rows.dtype} of shape {rows.shape}")
        rows = rows.astype(np.int64, copy=False)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise ValueError(f"rows: expected row numbers in [0, {len(self)}), got {rows.min()}..{rows.max()}")
        off, lens = self._offsets.view, self.lengths[rows]
        codes = self._codes.view[span_index(off[rows], lens)]
        tokens = codes if self._codec.stores_tokens else self._codec.decode(codes)
        return tokens, self._codec.fde_source(codes), lens

    def compacted(self, keep: np.ndarray) -> "TokenStore":
        """A new store of the rows where ``keep``, this one unchanged (spilled stays spilled)."""
        if self.is_spilled:
            return self.compacted_spill(keep)
        out = TokenStore.from_arrays(self.tokens, self.offsets, self._codec)
        out.compact(keep)
        return out

    def reserve(self, num_tokens: int, num_documents: int) -> None:
        """Make room for this many code rows and documents in all (no effect on a spilled or
        larger buffer): a build of known size then never holds two copies while growing."""
        if isinstance(self._codes, Growable):
            self._codes._reserve(max(num_tokens, len(self._codes)))
        self._offsets._reserve(max(num_documents + 1, len(self._offsets)))

    def append(self, batch: Any, *, lengths: Any = None, offsets: Any = None, mask: Any = None,
               name: str = "documents") -> np.ndarray:
        """Append documents in any batch form; returns their new rows ``(n,)`` int64.

        Nothing is appended if validation fails.

        Raises
        ------
        ValueError
            Wrong dimension, empty batch, a document with zero tokens (``documents[i]``),
            NaN/Inf values.
        """
        tokens, lens = pack_tokens(batch, self._dim, self._codec.input_dtype, lengths=lengths,
                                   offsets=offsets, mask=mask, name=name)
        return self.append_packed(tokens, lens)

    def append_packed(self, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Append tokens already checked by :func:`pack_tokens` (in the codec's input dtype),
        split by ``lengths``; returns the new rows."""
        return self.append_codes(self._codec.encode(tokens), lengths)

    def append_codes(self, codes: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Append code rows made by this store's codec, split by ``lengths``; returns the rows."""
        lens = np.asarray(lengths, dtype=np.int64)
        start = len(self)
        base = int(self._offsets.view[-1])
        self._codes.extend(codes)
        self._offsets.extend(base + np.cumsum(lens))
        self._sync_bags()
        return np.arange(start, start + len(lens), dtype=np.int64)

    def truncate(self, num_documents: int) -> None:
        """Keep the first ``num_documents`` rows (the rollback of a failed add)."""
        n = int(num_documents)
        if n >= len(self):
            return
        self._codes.truncate(int(self._offsets.view[n]))
        self._offsets.truncate(n + 1)
        self._sync_bags()

    def compact(self, keep: np.ndarray) -> np.ndarray:
        """Keep only rows where ``keep`` (bool, one per row) is true; returns ``mapping``
        ``(old_len,)`` int64: the new row or -1."""
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (len(self),):
            raise ValueError(f"keep: expected {len(self)} flags, got shape {keep.shape}")
        mapping = np.full(len(keep), -1, dtype=np.int64)
        mapping[keep] = np.arange(int(keep.sum()), dtype=np.int64)
        lens = self.lengths
        codes = self._codes.view[np.repeat(keep, lens)]  # one boolean gather, no per-row loop
        self._codes = Growable((self._codec.code_width,), self._codec.code_dtype, np.ascontiguousarray(codes))
        self._offsets = Growable((), np.int64, offsets_of(lens[keep]))
        self._bags = None
        self._sync_bags()
        return mapping

    def get(self, row: int) -> np.ndarray:
        """The ``(n_tokens, code_width)`` code rows of one document (a view)."""
        if not 0 <= row < len(self):
            raise IndexError(f"row: {row} outside [0, {len(self)})")
        off = self._offsets.view
        return self._codes.view[off[row]: off[row + 1]]

    def get_tokens(self, row: int) -> np.ndarray:
        """One document's tokens decoded to ``(n_tokens, dimension)`` float32."""
        return self._codec.decode(self.get(row))

    #: Hinted ranges closer than this are merged into one read-ahead request.
    PREFETCH_GAP = 1 << 16

    def prefetch(self, rows: np.ndarray) -> int:
        """Start reading the codes of documents ``rows`` from disk, all at once, when they live
        in a file (a memory-mapped index, a spilled exact tier): ``posix_fadvise(WILLNEED)`` per
        merged byte range. The rerank that follows then finds them in the page cache, or waits
        on reads already in flight, instead of faulting pages in one after another. Returns the
        number of ranges hinted (0: in memory, or no ``posix_fadvise``)."""
        fadvise = getattr(os, "posix_fadvise", None)
        if fadvise is None or len(self) == 0:
            return 0
        if isinstance(self._codes, _Spilled):
            fd, base, own = self._codes.fileno(), 0, False
        else:
            where = self._codes.file_location()
            if where is None:
                return 0
            try:
                fd, base, own = os.open(where[0], os.O_RDONLY), where[1], True
            except OSError:
                return 0
        try:
            row_bytes = self._codec.code_width * self._codec.code_dtype.itemsize
            off = self._offsets.view
            r = np.unique(np.asarray(rows, dtype=np.int64).ravel())
            r = r[(r >= 0) & (r < len(self))]
            if r.size == 0:
                return 0
            starts = base + off[r] * row_bytes
            ends = base + off[r + 1] * row_bytes
            # merge ranges whose gap is small (one request reads them together)
            brk = np.flatnonzero(starts[1:] - ends[:-1] > self.PREFETCH_GAP)
            first = np.r_[0, brk + 1]
            last = np.r_[brk, len(r) - 1]
            for a, b in zip(starts[first].tolist(), ends[last].tolist()):
                fadvise(fd, a, b - a, os.POSIX_FADV_WILLNEED)
            return len(first)
        except OSError:
            return 0  # a hint only: the rerank reads the codes anyway
        finally:
            if own:
                os.close(fd)

    # -- scoring -------------------------------------------------------------------------------
    def rerank(self, query_tokens: np.ndarray, query_offsets: np.ndarray, k: int,
               candidates: Optional[np.ndarray], allowed: Optional[np.ndarray],
               num_threads: int = 0) -> Tuple[np.ndarray, np.ndarray]:
        """Chamfer top-``k`` over candidate rows (see :meth:`TokenCodec.rerank`); queries packed
        float32, already checked."""
        return self._codec.rerank(query_tokens, query_offsets, self._codes.view, self._offsets.view, k,
                                  candidates, allowed, num_threads)

    # -- the centroid-interaction prune ---------------------------------------------------------
    @property
    def can_prune(self) -> bool:
        """Whether :meth:`prune` can cut candidates: the codes carry centroid ids (a trained
        residual codec) and every document has its bag."""
        return self._bags is not None

    def _sync_bags(self) -> None:
        """Bring the bags in step with the rows: appended documents add theirs (O(new tokens)),
        a truncation drops the tail; without centroid ids there are none."""
        codec = self._codec
        if getattr(codec, "kind", None) != "residual" or not getattr(codec, "num_centroids", 0):
            self._bags = None
            return
        if self._bags is None:
            self._bags = (Growable((), np.uint16), Growable((), np.int64, np.zeros(1, dtype=np.int64)))
        ids, boff = self._bags
        done, n = len(boff) - 1, len(self)
        if done > n:
            boff.truncate(n + 1)
            ids.truncate(int(boff.view[n]))
        elif done < n:
            off = self._offsets.view
            t0, t1 = int(off[done]), int(off[n])
            new_ids, lens = _core().centroid_bags(self._codes.view[t0:t1], off[done:n + 1] - t0, 0, n - done,
                                                  codec.num_centroids)
            ids.extend(new_ids)
            boff.extend(int(boff.view[-1]) + np.cumsum(lens))

    def prune(self, query_tokens: np.ndarray, query_offsets: np.ndarray, candidates: np.ndarray, keep: int,
              num_threads: int = 0) -> np.ndarray:
        """The ``keep`` best of each query's candidate rows by centroid interaction (PLAID's
        stage: a document scores ``sum_i max_{c in its bag} <q_i, c>``, every token moved to its
        centroid), best first, ``-1`` padded: ``(n_queries, keep)`` int64. Reads only the
        candidates' bags (about 1 byte per token) and the query x centroid dot products of the
        centroids they use. Needs :attr:`can_prune`."""
        rows, _ = self._prune_call(query_tokens, query_offsets, candidates, keep, 0, num_threads)
        return rows

    def prune_rerank(self, query_tokens: np.ndarray, query_offsets: np.ndarray, candidates: np.ndarray, keep: int,
                     k: int, num_threads: int = 0) -> Tuple[np.ndarray, np.ndarray]:
        """:meth:`prune` to ``keep`` rows, then their Chamfer top-``k`` on the codes (``(rows,
        scores)``, as :meth:`rerank` of the kept rows gives them), with one query x centroid
        table per query serving both."""
        return self._prune_call(query_tokens, query_offsets, candidates, keep, k, num_threads)

    def _prune_call(self, qtok: np.ndarray, qoff: np.ndarray, cand: np.ndarray, keep: int, k: int,
                    threads: int) -> Tuple[np.ndarray, np.ndarray]:
        if self._bags is None:
            raise ValueError(f"prune: the {self._codec.name!r} store has no centroid ids (residual codecs only)")
        q = np.asarray(qtok)
        if q.dtype.kind != "f" or not np.isfinite(q).all():
            raise ValueError("query_tokens: expected finite float values (no NaN or Inf)")
        ids, boff = self._bags
        c = self._codec
        return _core().residual_prune_topk(qtok, qoff, self._codes.view, self._offsets.view, cand, ids.view,
                                           boff.view, c.centroids, c.lo, c.step, c.nbits, int(keep), int(k),
                                           int(threads))

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: Path, prefix: str = "") -> Tuple[Dict[str, Any], Dict[str, Dict[str, Any]]]:
        """Write codes, offsets and the codec's state; returns ``(manifest fields, entries)``.

        ``prefix`` names a second store in the same directory (the index's exact tier).
        """
        d = Path(directory)
        tok, off = f"{prefix}tokens.npy", f"{prefix}offsets.npy"
        codes = self._codes
        files = {tok: (write_atomic(d / tok, codes.write_npy) if isinstance(codes, _Spilled)
                       else write_npy(d / tok, codes.view)),
                 off: write_npy(d / off, self._offsets.view)}
        if not prefix:
            files.update(self._codec.save(d))
        fields = {"token_codec": self._codec.name, "codec_state": self._codec.state_fields(),
                  "num_tokens": self.num_tokens}
        return fields, files

    @classmethod
    def load(cls, directory: Path, fields: Dict[str, Any], entries: Dict[str, Dict[str, Any]],
             dimension: int, num_rows: int, mmap: bool, prefix: str = "") -> "TokenStore":
        """Read what :meth:`save` wrote (files already checked against ``entries``)."""
        from .codecs import make_codec  # noqa: PLC0415
        from .index_format import expect, load_npy  # noqa: PLC0415

        d = Path(directory)
        tok, off = f"{prefix}tokens.npy", f"{prefix}offsets.npy"
        if tok not in entries or off not in entries:
            raise ValueError(f"manifest.json: {tok} / {off} are not listed")
        try:
            codec = make_codec(fields["token_codec"], dimension)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"manifest.json: token_codec: {exc}") from None
        if not prefix:
            codec.load(d, entries, mmap)
            saved_state = fields.get("codec_state") or {}
            if saved_state and saved_state != codec.state_fields():
                raise ValueError(f"manifest.json: codec_state {saved_state} disagrees with the codec files "
                                 f"({codec.state_fields()})")
        tokens = load_npy(d / tok, mmap)
        expect(tokens, tok, codec.code_dtype, (int(fields["num_tokens"]), codec.code_width))
        if not prefix:
            codec.check_codes(tokens)
        offsets = load_npy(d / off, False)
        expect(offsets, off, np.int64, (num_rows + 1,))
        try:
            return cls.from_arrays(tokens, offsets, codec)
        except ValueError as exc:
            raise ValueError(f"{off}: inconsistent with {tok} ({exc})") from None
