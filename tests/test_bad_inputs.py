"""Inputs that were silently wrong before 0.2.0 now give a clear error naming what is wrong."""

from __future__ import annotations

import json

import numpy as np
import pytest

import muvera
from muvera import FDEConfig, FDEEncoder, MuveraIndex, ball_carve
from muvera.distributed.encode import _documents_of_file, load_encoded
from muvera.index_format import write_manifest

D = 8
CFG = FDEConfig.preset("1280", dimension=D)


def test_encode_spans_refuses_float_starts_and_lengths():
    enc = FDEEncoder(CFG)
    tokens = np.random.default_rng(0).normal(size=(10, D)).astype(np.float32)
    with pytest.raises(TypeError, match="starts"):
        enc.encode_spans(tokens, np.array([0.0, 4.7]), np.array([4, 5]), is_document=True)
    with pytest.raises(TypeError, match="lengths"):
        enc.encode_spans(tokens, np.array([0, 4]), np.array([4.0, 5.9]), is_document=True)
    with pytest.raises(ValueError, match="starts/lengths"):
        enc.encode_spans(tokens, np.array([0, 4]), np.array([4]), is_document=True)


@pytest.mark.parametrize("offsets", [[0, 3, 2, 6], [1, 6], [0, 7], [0.0, 6.0], [[0, 6]]])
def test_ball_carve_refuses_bad_offsets(offsets):
    tokens = np.random.default_rng(0).normal(size=(6, D)).astype(np.float32)
    with pytest.raises(ValueError, match="offsets"):
        ball_carve(tokens, np.array(offsets), 0.7)


def test_masked_numpy_arrays_are_refused_not_misread():
    idx = MuveraIndex(CFG)
    docs = np.ma.masked_array(np.ones((2, 3, D), np.float32), mask=np.zeros((2, 3, D), bool))
    with pytest.raises(TypeError, match="masked arrays"):
        idx.add(docs)
    with pytest.raises(TypeError, match="masked arrays"):
        FDEEncoder(CFG).encode_documents([docs[0]])


def test_nan_and_negative_ids_refused():
    idx = MuveraIndex(CFG)
    docs = [np.ones((2, D), np.float32)]
    with pytest.raises(TypeError, match="ints or strings"):
        idx.add(docs, ids=[float("nan")])
    with pytest.raises(ValueError, match="2..63"):
        idx.add(docs, ids=[-1])
    with pytest.raises(ValueError, match="2..63"):
        idx.add(docs, ids=[2**63])
    assert len(idx) == 0


@pytest.mark.parametrize("key,value", [("offsets", [0, -2, 4]), ("offsets", [-1, 4]), ("lengths", [5, -1]),
                                       ("offsets", [0.0, 4.0]), ("lengths", [[4]])])
def test_npz_with_bad_offsets_or_lengths(tmp_path, key, value):
    path = tmp_path / "docs.npz"
    np.savez(path, tokens=np.ones((4, D), np.float32), **{key: np.array(value)})
    with pytest.raises(ValueError, match="lengths/offsets"):
        _documents_of_file(str(path), D)


@pytest.mark.parametrize("name", ["../outside.npy", "/etc/passwd", "fdes-00000.npy/../x", "manifest.json"])
def test_load_encoded_refuses_paths_outside_its_directory(tmp_path, name):
    root = tmp_path / "enc"
    root.mkdir()
    (tmp_path / "outside.npy").write_bytes(b"secret")
    entry = {"name": name, "bytes": 6, "sha256": "0" * 64}
    files = {"fdes": entry, "tokens": entry, "lengths": entry, "ids": entry}
    write_manifest(root, {"format": "muvera-encoded", "format_version": 2, "config": CFG.to_dict(),
                          "shards": [{"index": 0, "rows": 1, "tokens": 1, "files": files}]})
    with pytest.raises(ValueError, match="bad shard file name"):
        load_encoded(root)


def test_k_and_candidates_are_bounded_and_named():
    idx = MuveraIndex(CFG)
    idx.add([np.ones((2, D), np.float32)] * 3)
    q = [np.ones((2, D), np.float32)]
    assert idx.search(q, k=10**9, candidates=10**9)[0].shape == (1, 3)
    for bad, exc in ((0, ValueError), (-1, ValueError), (2.5, TypeError), ("3", TypeError)):
        with pytest.raises(exc, match="candidates"):
            idx.search(q, k=1, candidates=bad)
    with pytest.raises(ValueError, match="num_threads"):
        MuveraIndex(CFG, num_threads=10**6)
    with pytest.raises(TypeError, match="params"):
        MuveraIndex(CFG, backend="HNSW8").search(q, params=[("efSearch", 3)])


def test_no_raw_errors_escape_public_calls():
    """KeyError/IndexError/ZeroDivisionError or pybind signature dumps are bugs, not messages."""
    idx = MuveraIndex(CFG)
    idx.add([np.ones((2, D), np.float32)])
    calls = [lambda: idx.search("not tokens"), lambda: idx.search([np.ones((2, D + 1))]),
             lambda: idx.add([np.ones((2, D))], ids=[[1]]), lambda: idx.search(np.ones((2, D)), lengths=[3]),
             lambda: idx.search_exact([np.ones((2, D))], k="3"), lambda: idx.remove([]),
             lambda: muvera.chamfer(np.ones(3), np.ones((2, 3))), lambda: idx.get_tokens("x")]
    for call in calls:
        try:
            call()
        except KeyError as exc:
            assert "not in the index" in str(exc)
        except (ValueError, TypeError) as exc:
            text = str(exc)
            assert "incompatible function arguments" not in text and "invalid literal" not in text, text
            assert ":" in text  # "argument: what was expected"


def test_loaded_json_manifest_is_not_trusted_for_paths(tmp_path):
    idx = MuveraIndex(CFG)
    idx.add([np.ones((2, D), np.float32)])
    idx.save(tmp_path / "i")
    m = json.loads((tmp_path / "i" / "manifest.json").read_text())
    m.pop("checksum")
    m["files"]["../escape.npy"] = {"bytes": 1, "sha256": "0" * 64}
    write_manifest(tmp_path / "i", m)
    with pytest.raises(ValueError, match="bad file name"):
        MuveraIndex.load(tmp_path / "i")


def test_source_folder_without_extension_says_what_to_do(tmp_path):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    src = Path(muvera.__file__).resolve().parent
    shutil.copytree(src, tmp_path / "muvera", ignore=shutil.ignore_patterns("_core*", "__pycache__"))
    proc = subprocess.run([sys.executable, "-c", "import muvera"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "muvera._core" in proc.stderr and "pip install -e ." in proc.stderr


def test_unknown_isa_warns():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", "import muvera"],
                          env={**__import__("os").environ, "MUVERA_ISA": "sse9"}, capture_output=True, text=True,
                          cwd="/")
    assert proc.returncode != 0 and "MUVERA_ISA='sse9' is ignored" in proc.stderr


@pytest.mark.parametrize("module,extra,call", [
    ("ir_measures", "eval", lambda: __import__("muvera.eval.metrics", fromlist=["evaluate"]).evaluate({}, {})),
    ("transformers", "models", lambda: __import__("muvera.models", fromlist=["HFTokenEncoder"]).HFTokenEncoder()),
    ("onnxruntime", "onnx", lambda: __import__("muvera.models", fromlist=["x"]).OnnxMiniLMEncoder()),
])
def test_missing_optional_dependency_names_the_extra(monkeypatch, module, extra, call):
    import sys

    monkeypatch.setitem(sys.modules, module, None)  # import of it now fails
    with pytest.raises(ImportError, match=rf'muvera-toolkit\[{extra}\]'):
        call()
