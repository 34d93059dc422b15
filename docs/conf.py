"""Sphinx configuration for trio_heartbeat's documentation."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio_heartbeat

project = "trio_heartbeat"
author = "trio_heartbeat developers"
copyright = "2026, trio_heartbeat developers"
release = version = trio_heartbeat.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.viewcode"]
templates_path: list[str] = []
exclude_patterns = ["_build", "_static/*.rst"]  # _static/*.rst are included pieces
html_theme = "alabaster"
html_static_path = ["_static"]
html_theme_options = {
    "description": "Liveness for long-lived connections on Trio",
    "fixed_sidebar": True,
}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# No intersphinx: the build must work offline, as CI does.
