"""README's Python blocks, run in order in one session as a reader pastes them, stay true."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks():
    return re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_readme_has_python_blocks():
    assert len(_blocks()) >= 3


def test_readme_python_blocks_run_as_pasted(tmp_path):
    pytest.importorskip("faiss")
    pytest.importorskip("ray")
    code = "\n".join(_blocks())
    # A fresh interpreter outside the checkout (whose muvera/ folder would shadow the install).
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
