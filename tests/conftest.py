"""Suite-wide settings."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator

import pytest
from hypothesis import settings

# Hypothesis' per-example deadline (200 ms) is a performance check, and on a
# loaded machine it fails examples that are merely slow. Performance is measured
# in benchmarks/, not here.
settings.register_profile("default", deadline=None)
settings.load_profile("default")


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect after each test, so that a resource one leaks (an unclosed
    socket's ResourceWarning, an error under filterwarnings) is reported
    against that test and not whichever test the collector next runs in."""
    yield
    gc.collect()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Undo what the command line's ``main()`` set up: its handler writes to
    the sys.stderr of the test that called it (pytest's capture, closed after
    that test), and a later test that logs without ``main()`` would hit it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
