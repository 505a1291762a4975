"""faiss factory strings and search parameters are checked before faiss sees them: malformed ones
that abort the process inside faiss (``HNSW0``, ``PQ1280x0``, ``IVF0,Flat``) raise ValueError.

The fuzz loop runs in a subprocess so that a crash is reported as a failed test (with the
string that caused it) instead of taking the test session down."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from muvera import FDEConfig, MuveraIndex  # noqa: E402
from muvera.backends import check_factory, make_backend  # noqa: E402

_HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("spec", ["HNSW0", "PQ1280x0", "IVF0,Flat", "PQ0", "HNSW32,PQ0", "IVF16,PQ8x0",
                                  "IVF99999999999,Flat", "PQ8x99", "IVF16,PQ8x8fs", "SQ3", "HNSW5000",
                                  "OPQ0,PQ8", "Flat,,", "  ,", "PQ4096", "\x00", "x" * 300])
def test_known_crashers_raise_value_error(spec):
    with pytest.raises(ValueError, match="backend"):
        make_backend(spec, 128)
    with pytest.raises(ValueError):
        MuveraIndex(FDEConfig.preset("1280", dimension=8), backend=spec)


@pytest.mark.parametrize("params", [{"efSearch": 0}, {"efSearch": -5}, {"efSearch": 10**9}, {"nprobe": 0},
                                    {"nprobe": -1}, {"nprobe": 17}, {"nprobe": 2**40}])
def test_bad_search_parameters_raise_value_error(params):
    spec = "HNSW8" if "efSearch" in params else "IVF16,Flat"
    b = make_backend(spec, 8)
    b.add(np.random.default_rng(0).normal(size=(400, 8)).astype(np.float32))
    with pytest.raises(ValueError, match="params"):
        b.search(np.ones((1, 8), np.float32), 3, params=params)


def test_good_strings_pass_the_check():
    for spec in ("Flat", "HNSW32", "IVF1024,PQ1280x8", "IVF256,PQ640x4fs", "PQ1280x8", "SQfp16", "SQ8",
                 "HNSW32,SQ8", "IVF64,Flat", "OPQ16,IVF64,PQ16", "PCA64,Flat"):
        assert check_factory(spec, 10240) == spec


_FUZZ = r"""
import json, sys, numpy as np
from muvera.backends import make_backend
rng = np.random.default_rng(int(sys.argv[1]))
parts = ["Flat", "HNSW", "IVF", "PQ", "OPQ", "SQ", "PCA", "RFlat", "Refine", "IDMap", "x", "fs", "np", ",",
         "_", "(", ")", "fp16", "bf16", "LSH", "RQ", "LSQ", "NSG", "Pad", "L2norm"]
numbers = ["0", "1", "2", "4", "8", "16", "31", "64", "4096", "99999999999", "-1", ""]
out = {"ok": 0, "value_error": 0}
for i in range(int(sys.argv[2])):
    spec = "".join(str(rng.choice(parts)) + str(rng.choice(numbers)) for _ in range(rng.integers(1, 4)))
    print(repr(spec), file=sys.stderr, flush=True)  # the last one printed is the culprit of a crash
    try:
        b = make_backend(spec, 32)
        if not b.needs_training:
            b.add(rng.normal(size=(64, 32)).astype(np.float32))
            b.search(rng.normal(size=(2, 32)).astype(np.float32), 5)
        out["ok"] += 1
    except ValueError:
        out["value_error"] += 1
print(json.dumps(out))
"""


def test_fuzz_factory_strings_never_crash():
    proc = subprocess.run([sys.executable, "-c", _FUZZ, "1", "400"], cwd=_HERE, capture_output=True,
                          text=True, timeout=600)
    last = proc.stderr.strip().splitlines()[-1:] if proc.stderr else []
    assert proc.returncode == 0, f"crashed (rc {proc.returncode}) on {last}: {proc.stderr[-2000:]}"
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert counts["ok"] + counts["value_error"] == 400 and counts["value_error"] > 0
