"""Suite-wide settings."""

from __future__ import annotations

from hypothesis import settings

# Hypothesis' per-example deadline (200 ms) is a performance check, and on a
# loaded machine it fails examples that are merely slow. Performance is measured
# in benchmarks/, not here.
settings.register_profile("default", deadline=None)
settings.load_profile("default")
