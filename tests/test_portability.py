"""The C++ core builds for aarch64 with only the generic kernels (the manylinux aarch64 wheel's
configuration), checked with Debian's cross compiler where it is installed (CI installs it)."""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CXX = shutil.which("aarch64-linux-gnu-g++")


@pytest.mark.skipif(CXX is None, reason="g++-aarch64-linux-gnu is not installed")
def test_core_compiles_and_links_for_aarch64(tmp_path):
    objs = []
    for src in ("fde.cc", "fde_fastembed.cc", "chamfer.cc", "dispatch.cc", "kernels_generic.cc", "residual.cc",
                "residual_generic.cc", "parallel.cc", "datasync.cc"):
        obj = tmp_path / f"{src}.o"
        flags = ["-ffp-contract=off"] if src in ("fde.cc", "residual.cc", "residual_generic.cc") else []
        subprocess.run([CXX, "-std=c++17", "-O2", "-fPIC", "-Wall", "-Wextra", "-Werror", *flags,
                        "-I", str(ROOT / "cpp"), "-c", str(ROOT / "cpp" / src), "-o", str(obj)], check=True)
        objs.append(str(obj))
    # No undefined symbol may remain (e.g. an AVX kernel referenced outside the x86 guards).
    subprocess.run([CXX, "-shared", "-fPIC", "-Wl,-z,defs", *objs, "-o", str(tmp_path / "core.so")], check=True)
    out = subprocess.run(["file", str(tmp_path / "core.so")], capture_output=True, text=True).stdout
    assert "aarch64" in out or "ARM" in out or not shutil.which("file")


@pytest.mark.skipif(CXX is None, reason="g++-aarch64-linux-gnu is not installed")
def test_bindings_parse_for_aarch64():
    pybind11 = pytest.importorskip("pybind11")
    subprocess.run([CXX, "-std=c++17", "-fsyntax-only", "-I", str(ROOT / "cpp"),
                    "-I", sysconfig.get_paths()["include"], "-I", pybind11.get_include(),
                    str(ROOT / "cpp" / "bindings.cc")], check=True)


def test_wheel_metadata_files_exist():
    for rel in ("LICENSE", "CHANGELOG.md", "muvera/py.typed", "muvera/data/scifact-sample/LICENSE"):
        assert (ROOT / rel).is_file(), rel
    text = (ROOT / "pyproject.toml").read_text()
    for key in ("classifiers", "[tool.cibuildwheel]", 'license = "Apache-2.0"'):
        assert key in text, key
    # No project address until one exists (the package is not on PyPI yet: a Homepage pointing
    # at a PyPI page that does not exist sent users nowhere).
    assert "pypi.org/project/muvera-toolkit" not in text
