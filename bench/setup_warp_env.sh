#!/usr/bin/env bash
# Create (idempotently) the virtual environment that runs the WARP baseline (bench/warp_runner.py).
#
# WARP (PyPI `xtr-warp-rs`, the Rust implementation of XTR-WARP with Python bindings) pins its own
# torch (xtr-warp-rs 2.1.0.2110 requires torch>=2.11,<2.12; the last four digits of its version
# name the torch it was built against). It is therefore kept in its own venv and driven through a
# subprocess (bench/warp_baseline.py); nothing is installed into the interpreter that runs muvera.
#
# Usage:   bash bench/setup_warp_env.sh            # prints the venv's python on the last line
# Env:     MUVERA_WARP_VENV   venv folder (default ~/.cache/muvera/warp-venv)
#          MUVERA_WARP_PYTHON interpreter used to create it (default python3.11)
#
# torch 2.11 from PyPI is the CUDA build on Linux x86_64 (several GB with its nvidia-* wheels);
# WARP runs on the CPU with it all the same (device="cpu"), no GPU needed.
set -euo pipefail

WARP_VERSION="2.1.0.2110"
TORCH_VERSION="2.11.0"
VENV="${MUVERA_WARP_VENV:-$HOME/.cache/muvera/warp-venv}"
PYTHON="${MUVERA_WARP_PYTHON:-python3.11}"

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "setup_warp_env.sh: $PYTHON not found (set MUVERA_WARP_PYTHON to a python >= 3.10)" >&2
    exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating venv $VENV with $("$PYTHON" --version 2>&1)" >&2
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
fi

# Already complete? (the exact versions importable) -> nothing to do.
if "$VENV/bin/python" - "$WARP_VERSION" "$TORCH_VERSION" >/dev/null 2>&1 <<'EOF'
import sys
from importlib.metadata import version
import numpy, torch, xtr_warp  # noqa: F401
assert version("xtr-warp-rs") == sys.argv[1], version("xtr-warp-rs")
assert torch.__version__.split("+")[0] == sys.argv[2], torch.__version__
EOF
then
    echo "WARP venv ready: xtr-warp-rs $WARP_VERSION, torch $TORCH_VERSION" >&2
else
    echo "installing xtr-warp-rs==$WARP_VERSION torch==$TORCH_VERSION numpy into $VENV" >&2
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q --upgrade pip >&2
    "$VENV/bin/python" -m pip install --disable-pip-version-check \
        "xtr-warp-rs==$WARP_VERSION" "torch==$TORCH_VERSION" numpy >&2
    "$VENV/bin/python" -c "import xtr_warp, torch, numpy; print('xtr_warp', xtr_warp.__version__, 'torch', torch.__version__, 'numpy', numpy.__version__)" >&2
fi

echo "$VENV/bin/python"
