"""Shared test settings: fewer hypothesis examples under the sanitizer build (it runs ~10x slower)."""

import os

from hypothesis import settings

settings.register_profile("asan", max_examples=8, deadline=None)
if os.environ.get("MUVERA_ASAN"):
    settings.load_profile("asan")
    import muvera._core

    # The sanitizer run must exercise the sanitized extension, not an installed one.
    assert os.environ["MUVERA_ASAN_PKG"] in muvera._core.__file__, muvera._core.__file__
