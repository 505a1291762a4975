#!/usr/bin/env bash
# Builds the extension once with AddressSanitizer + UndefinedBehaviorSanitizer and runs the tests
# that reach C++ against it (the sanitizer runtime is preloaded into the interpreter; leak
# detection stays off because CPython itself does not free everything at exit).
set -euo pipefail
cd "$(dirname "$0")/.."
build=build/asan
python -m pip install "pybind11>=2.12" >/dev/null  # the wheel build had it only in its isolated env
pkg=build/asan-pkg
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMUVERA_SANITIZE=ON \
  -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v python)" >/dev/null
cmake --build "$build" -j 2 >/dev/null
rm -rf "$pkg" && mkdir -p "$pkg"
cp -r muvera "$pkg/"
find "$pkg" -name '_core*.so' -delete
cp "$build"/_core*.so "$pkg/muvera/"
# A development checkout may hold an editable install whose import hook would win over
# PYTHONPATH: drop such hooks so the sanitized build is the one imported (conftest.py checks).
cat > "$pkg/sitecustomize.py" <<'PY'
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "ScikitBuild" not in type(f).__name__]
for name in [m for m in sys.modules if m == "muvera" or m.startswith("muvera.")]:
    del sys.modules[name]
PY
export LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
# alloc_dealloc_mismatch is off because a third-party extension (pytrec_eval, used through
# ir-measures by the CLI tests) frees with free() what it allocated with new.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:alloc_dealloc_mismatch=0
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export PYTHONPATH="$PWD/$pkg"
export MUVERA_ASAN=1
export MUVERA_ASAN_PKG="$PWD/$pkg"
# The C++-facing tests; hypothesis example counts are reduced under the sanitizer (conftest.py).
python -P -m pytest -q -p no:cacheprovider "$@"
