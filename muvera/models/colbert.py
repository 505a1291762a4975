"""ColBERT checkpoints through colbert-ai (``pip install colbert-ai``) as a multi-vector model.

colbert-ai is imported only when :class:`ColBERTEncoder` is built, and only
``colbert.modeling.checkpoint`` (the package's ``__init__`` still imports its trainer/indexer
modules, which takes a few seconds but compiles nothing). The CPU C++ extension that
``ColBERT.__init__`` would JIT-compile (``segmented_maxsim``, used for colbert-ai's own scoring,
never for encoding) is skipped unless ``load_extensions=True``.

Two module-level helpers turn colbert-ai's own outputs into batches that
:class:`muvera.FDEEncoder`-style ``encode_documents`` / ``encode_queries`` take:
:func:`colbert_padded_batch` (padded ``(n, L, dim)`` + mask) and :func:`colbert_packed_to_list`
(packed ``(total, dim)`` + ``doclens``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .base import TokenEncoder, module_digest, tokenizer_digest
from .._optional import require

__all__ = ["ColBERTEncoder", "colbert_padded_batch", "colbert_packed_to_list", "colbert_class_factory"]


def _to_numpy(x: Any) -> np.ndarray:
    """A NumPy array of x (a torch tensor on any device, or anything array-like)."""
    if type(x).__module__.startswith("torch") and hasattr(x, "detach"):
        import torch

        t = x.detach().cpu()
        if t.dtype in (torch.float16, torch.bfloat16):  # colbert-ai's GPU output; bfloat16 has no NumPy dtype
            t = t.float()
        return t.numpy()
    return np.asarray(x)


def colbert_padded_batch(D: Any, mask: Any = None) -> Tuple[np.ndarray, np.ndarray]:
    """colbert-ai's padded document output as ``(tokens, mask)`` for ``encode_documents(tokens, mask=mask)``.

    Parameters
    ----------
    D : (n, L, dim) tensor or array
        ``Checkpoint.docFromText(texts, keep_dims=True)``, or the first item of
        ``Checkpoint.doc(ids, mask, keep_dims="return_mask")``, or ``queryFromText(texts)``.
        float16/bfloat16 (colbert-ai's GPU output) is widened to float32.
    mask : (n, L) or (n, L, 1) tensor or array, optional
        The validity mask colbert-ai returns with ``keep_dims="return_mask"``. Without it, a token is
        valid where its vector is non-zero (colbert-ai zeroes masked tokens before normalising, so
        they stay exactly zero).

    Returns
    -------
    tokens : (n, L, dim) float32 ndarray
    mask : (n, L) bool ndarray
    """
    arr = np.ascontiguousarray(_to_numpy(D), dtype=np.float32)
    if arr.ndim != 3:
        raise ValueError(f"D: expected a padded (n, L, dim) array, got shape {arr.shape}")
    if mask is None:
        m = np.any(arr != 0, axis=2)
    else:
        m = _to_numpy(mask)
        if m.ndim == 3 and m.shape[2] == 1:
            m = m[:, :, 0]
        if m.shape != arr.shape[:2]:
            raise ValueError(f"mask: expected shape {arr.shape[:2]} to match D, got {m.shape}")
        m = m.astype(bool)
    return arr, np.ascontiguousarray(m)


def colbert_packed_to_list(D: Any, doclens: Sequence[int]) -> List[np.ndarray]:
    """colbert-ai's packed output (``docFromText(texts, keep_dims="flatten")``) as one float32
    ``(doclen_i, dim)`` array per document."""
    arr = np.ascontiguousarray(_to_numpy(D), dtype=np.float32)
    lens = np.asarray([int(x) for x in doclens], dtype=np.int64)
    if arr.ndim != 2:
        raise ValueError(f"D: expected a packed (total_tokens, dim) array, got shape {arr.shape}")
    if int(lens.sum()) != arr.shape[0] or (lens < 0).any():
        raise ValueError(f"doclens: they sum to {int(lens.sum())}, but D has {arr.shape[0]} rows")
    bounds = np.concatenate(([0], np.cumsum(lens)))
    return [arr[bounds[i]:bounds[i + 1]].copy() for i in range(len(lens))]


def colbert_class_factory(name_or_path: str) -> Any:
    """``colbert.modeling.hf_colbert.class_factory`` made to work with transformers >= 5.

    colbert-ai (<= 0.2.22) ends ``HF_ColBERT.__init__`` with ``self.init_weights()``; transformers 5
    needs ``post_init()`` there (it sets ``all_tied_weights_keys``, read by ``from_pretrained``), and
    loading fails with ``AttributeError: 'HF_ColBERT' object has no attribute
    'all_tied_weights_keys'``. The returned class runs ``post_init()`` in that case and is otherwise
    colbert-ai's own (same name, weights and ``save_pretrained`` layout).
    """
    from colbert.modeling import hf_colbert

    cls = hf_colbert.class_factory(name_or_path)
    if getattr(cls, "_muvera_patched", False):
        return cls

    def init_weights(self: Any) -> None:
        if hasattr(self, "get_expanded_tied_weights_keys") and not hasattr(self, "all_tied_weights_keys"):
            self.post_init()  # sets all_tied_weights_keys, then calls init_weights() again
        else:
            super(cls, self).init_weights()

    cls.init_weights = init_weights
    cls._muvera_patched = True
    return cls


def _install_class_factory_patch() -> None:
    """Make colbert-ai build models through :func:`colbert_class_factory` (idempotent)."""
    from colbert.modeling import base_colbert

    if getattr(base_colbert.class_factory, "_muvera_patched", False):
        return

    def class_factory(name_or_path: str) -> Any:
        return colbert_class_factory(name_or_path)

    class_factory._muvera_patched = True  # type: ignore[attr-defined]
    base_colbert.class_factory = class_factory


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence colbert-ai's CPU-only torch.cuda.amp deprecation/"CUDA not available" warnings."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp.*")
        warnings.filterwarnings("ignore", message=r".*CUDA is not available.*")
        yield


class ColBERTEncoder(TokenEncoder):
    """Token vectors of a ColBERT checkpoint, via colbert-ai's ``Checkpoint``.

    Documents come from ``docFromText(..., keep_dims="flatten")``: colbert-ai's doc mask drops
    padding and (with the checkpoint's ``mask_punctuation``) punctuation tokens; ``[CLS]``, the
    ``[D]`` marker and ``[SEP]`` are kept, as ColBERT scores them. Queries come from
    ``queryFromText`` and keep all ``query_maxlen`` tokens, the ``[MASK]`` query-augmentation
    tokens included (they take part in ColBERT's MaxSim). Vectors are L2-normalised by ColBERT.

    Parameters
    ----------
    checkpoint : str
        A local checkpoint directory (``config.json`` + weights + tokenizer + ``artifact.metadata``,
        as colbert-ai saves them) or a hub name such as ``colbert-ir/colbertv2.0`` (needs network).
    doc_maxlen, query_maxlen : int, optional
        Override the checkpoint's truncation lengths (in word pieces, markers included).
    device : str
        torch device of the model.
    batch_size : int
        Texts per forward pass.
    load_extensions : bool
        Let colbert-ai JIT-compile its CPU scoring extension (not needed for encoding).
    """

    def __init__(self, checkpoint: str, *, doc_maxlen: Optional[int] = None, query_maxlen: Optional[int] = None,
                 device: str = "cpu", batch_size: int = 32, load_extensions: bool = False):
        require("colbert", "colbert", "ColBERTEncoder (colbert-ai)")
        from colbert.infra.config import ColBERTConfig
        from colbert.modeling.checkpoint import Checkpoint
        from colbert.modeling.colbert import ColBERT

        _install_class_factory_patch()
        path = str(checkpoint)
        if os.path.isdir(path):
            # An absolute path never looks like a hub repo id, so colbert-ai does not try the hub.
            path = os.path.abspath(path)
        overrides: Dict[str, int] = {}
        if doc_maxlen is not None:
            overrides["doc_maxlen"] = int(doc_maxlen)
        if query_maxlen is not None:
            overrides["query_maxlen"] = int(query_maxlen)
        # ColBERT.__init__ reads total_visible_gpus from the config passed in: always pass one.
        config = ColBERTConfig(**overrides)

        skip_ext = not load_extensions and not hasattr(ColBERT, "loaded_extensions")
        if skip_ext:
            ColBERT.loaded_extensions = True  # type: ignore[attr-defined]
        try:
            with _quiet():
                self.checkpoint = Checkpoint(path, colbert_config=config, verbose=0)
        finally:
            if skip_ext:
                del ColBERT.loaded_extensions  # later colbert-ai users still get their extension
        self.checkpoint.model.to(device)
        self.checkpoint.eval()
        self.name = path
        self.device = device
        self.batch_size = int(batch_size)
        cfg = self.checkpoint.colbert_config
        self.doc_maxlen = int(cfg.doc_maxlen)
        self.query_maxlen = int(cfg.query_maxlen)
        self.dim = int(cfg.dim)

    def fingerprint(self) -> str:
        cached = getattr(self, "_fingerprint", None)
        if cached is not None:
            return cached
        cfg = self.checkpoint.colbert_config
        h = hashlib.sha256()
        h.update(f"colbert|{self.dim}|{self.doc_maxlen}|{self.query_maxlen}|{cfg.mask_punctuation}|"
                 f"{cfg.attend_to_mask_tokens}".encode())
        module_digest(h, self.checkpoint)  # the weights by content, not the directory's name
        tokenizer_digest(h, self.checkpoint.doc_tokenizer.tok)
        tokenizer_digest(h, self.checkpoint.query_tokenizer.tok)
        self._fingerprint: Optional[str] = h.hexdigest()[:16]
        return self._fingerprint

    @staticmethod
    def _texts(texts: Sequence[str]) -> List[str]:
        if isinstance(texts, str):
            raise TypeError("texts: expected a sequence of strings, got one string")
        return list(texts)

    def encode_documents(self, texts: Sequence[str]) -> List[np.ndarray]:
        texts = self._texts(texts)
        if not texts:
            return []
        with _quiet():
            D, doclens = self.checkpoint.docFromText(texts, bsize=self.batch_size, keep_dims="flatten",
                                                     to_cpu=True)[:2]
        return colbert_packed_to_list(D, doclens)

    def encode_queries(self, texts: Sequence[str]) -> List[np.ndarray]:
        texts = self._texts(texts)
        if not texts:
            return []
        with _quiet():
            Q = self.checkpoint.queryFromText(texts, bsize=self.batch_size, to_cpu=True)
        Q = np.asarray(_to_numpy(Q), dtype=np.float32)
        return [np.ascontiguousarray(q) for q in Q]
