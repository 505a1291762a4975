#!/usr/bin/env bash
# Builds the wheel from this checkout, installs it into a fresh virtual environment with only
# its own dependencies, and runs a smoke test from outside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
python -m pip wheel . --no-deps -w "$out/dist" -q
python -m venv "$out/venv"
"$out/venv/bin/pip" install -q "$out"/dist/muvera_toolkit-*.whl
cd "$out"
"$out/venv/bin/python" - <<'PY'
import numpy as np, muvera
from importlib import metadata
assert metadata.version("muvera-toolkit") == muvera.__version__
files = {str(f) for f in metadata.files("muvera-toolkit")}
assert any(f.endswith("py.typed") for f in files) and any("LICENSE" in f for f in files), sorted(files)[:20]
cfg = muvera.FDEConfig.preset("1280", dimension=16)
docs = [np.random.default_rng(i).normal(size=(5 + i, 16)).astype(np.float32) for i in range(20)]
index = muvera.MuveraIndex(cfg)
index.add(docs)
ids, _ = index.search(docs[:3], k=2, candidates=10)
assert ids[:, 0].tolist() == [0, 1, 2], ids
print("wheel smoke test ok:", muvera.__version__, muvera.active_isa())
PY
rm -rf "$out"
