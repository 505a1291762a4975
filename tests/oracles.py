"""Shared oracles of the FDE tests: the golden vectors in shared/golden and the reference C++
(PyPI `muvfde`, a binding of google/graph-mining's FDE code) as a live oracle."""

import json
import os
from pathlib import Path

import numpy as np
import pytest


def _golden_dir() -> Path:
    env = os.environ.get("MUVERA_GOLDEN_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    # The copy the package ships (muvera/data/golden: a clone, or an installed wheel, tests
    # exactness on its own), else a shared/ folder in or beside the checkout.
    import muvera

    shipped = Path(muvera.__file__).resolve().parent / "data" / "golden"
    for cand in (shipped, here.parent / "muvera" / "data" / "golden", here.parent / "shared" / "golden",
                 here.parent.parent / "shared" / "golden"):
        if (cand / "manifest.json").exists():
            return cand
    return here.parent / "shared" / "golden"


GOLDEN = _golden_dir()
HAVE_GOLDEN = (GOLDEN / "manifest.json").exists() and (GOLDEN / "muvfde_golden.npz").exists()
GOLDEN_CASES = json.loads((GOLDEN / "manifest.json").read_text())["cases"] if HAVE_GOLDEN else []


def muvfde_encode(x: np.ndarray, k: int, R: int, seed: int, doc: bool, fill: bool, proj, final) -> np.ndarray:
    """Encode one point set with muvfde; skips the calling test where muvfde is not installed."""
    muvfde = pytest.importorskip("muvfde")
    ext = muvfde.muvfde_ext
    c = (ext.fixed_dimensional_encoding_config()
         .set_num_repetitions(R)
         .set_num_simhash_projections(k)
         .set_seed(seed)
         .set_encoding_type(ext.encoding_type.AVERAGE if doc else ext.encoding_type.DEFAULT_SUM))
    if fill:
        c = c.enable_fill_empty(True)
    if proj:
        c = c.set_projection_type(ext.projection_type.AMS_SKETCH).set_projection_dimension(proj)
    if final:
        c = c.set_final_projection_dimension(final)
    return np.asarray(muvfde.generate_fixed_dimensional_encoding(np.ascontiguousarray(x, np.float32), c))


#: Configurations compared live against muvfde: k = 0, extreme and negative seeds, fill,
#: AMS, final projections down to one dimension.
LIVE_CASES = [
    # (n, d, k, R, seed, doc, fill, proj, final)
    (7, 16, 0, 2, 1, True, False, None, None),
    (9, 16, 2, 3, 2**31 - 1, False, False, None, None),
    (17, 24, 4, 3, -7, True, True, None, None),
    (3, 10, 6, 2, 11, True, True, None, None),
    (25, 20, 5, 2, 123, True, False, None, 64),
    (12, 16, 3, 2, 77, False, False, None, 1),
    (14, 48, 4, 3, 5, True, True, 8, None),
    (11, 40, 3, 2, -100, False, False, 12, 37),
    (33, 128, 5, 4, 42, True, True, 16, 500),
]
