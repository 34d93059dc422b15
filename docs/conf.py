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

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "sphinx_copybutton",
]
templates_path: list[str] = []
exclude_patterns = ["_build", "_static/*.rst", "_inventories"]

# Furo: a theme that fits code and phones, with previous/next links.
html_theme = "furo"
html_title = f"trio_heartbeat {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
pygments_style = "friendly"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}

# Links to Trio's and Python's documentation, from inventories shipped in
# docs/_inventories (python docs/make_inventories.py): CI builds offline.
intersphinx_mapping = {
    "trio": ("https://trio.readthedocs.io/en/stable/", "_inventories/trio.inv"),
    "python": ("https://docs.python.org/3/", "_inventories/python.inv"),
}

# The copy button copies commands, not prompts or their output.
copybutton_prompt_text = r"\$ |>>> |\.\.\. "
copybutton_prompt_is_regexp = True
copybutton_only_copy_prompt_lines = True


# ---------------------------------------------------------------- attrs fields
#
# The settings classes document each field with a ``#:`` comment in the source.
# autodoc lists the parameters of an attrs class without them; this adds each
# field's comment to the class's docstring as a ``:param:`` entry, so that the
# reference says what every parameter means (one source: the comments).


def _attrs_field_docs(
    app: object, what: str, name: str, obj: object, options: object, lines: list[str]
) -> None:
    import attrs
    from sphinx.pycode import ModuleAnalyzer

    if what != "class" or not attrs.has(obj):  # type: ignore[arg-type]
        return
    # The public path hides the defining module (trio_heartbeat._config...).
    qualname = obj.__qualname__  # type: ignore[attr-defined]
    defining = [
        name
        for name, module in sys.modules.items()
        if name.startswith("trio_heartbeat._")
        and getattr(module, qualname, None) is obj
    ]
    if not defining:
        return
    docs = ModuleAnalyzer.for_module(min(defining, key=len)).find_attr_docs()
    entries = []
    for field in attrs.fields(obj):  # type: ignore[arg-type]
        comment = docs.get((qualname, field.name))
        if comment:
            text = " ".join(line.strip() for line in comment if line.strip())
            entries.append(f":param {field.name}: {text}")
    if entries:
        lines.extend(["", *entries])


def setup(app: object) -> None:
    app.connect("autodoc-process-docstring", _attrs_field_docs)  # type: ignore[attr-defined]
