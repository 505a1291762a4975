"""The Python blocks of README and the guides in docs/, run in order in one session as a reader
pastes them (README first, then the guides in the order README lists them), stay true."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
GUIDES = ["docs/search.md", "docs/scale.md", "docs/text-and-beir.md", "docs/distributed.md", "docs/integrations.md",
          "docs/serving.md"]


def _blocks_of(path: Path):
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), flags=re.S | re.M)


def _blocks():
    return _blocks_of(README) + [b for g in GUIDES for b in _blocks_of(ROOT / g)]


def test_readme_has_python_blocks():
    assert len(_blocks_of(README)) >= 1 and len(_blocks()) >= 8


def test_readme_links_every_guide_and_stays_short():
    text = README.read_text(encoding="utf-8")
    assert all(f"]({g})" in text or f"]({g}#" in text for g in GUIDES)
    assert len(text.splitlines()) <= 300
    for g in GUIDES:  # every relative link in the guides points at a file that exists
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", (ROOT / g).read_text(encoding="utf-8")):
            assert (ROOT / g).parent.joinpath(target).exists(), (g, target)


def test_readme_python_blocks_run_as_pasted(tmp_path):
    pytest.importorskip("faiss")
    pytest.importorskip("ray")
    code = "\n".join(_blocks())
    # A fresh interpreter outside the checkout (whose muvera/ folder would shadow the install).
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
