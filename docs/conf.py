"""Sphinx configuration of the spikecode documentation.

Build (from the repository root; the test suite runs the same command with ``-W``)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Everything is built offline: no intersphinx inventories, figures drawn at build time
from the bundled sample.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_DOCS = Path(__file__).resolve().parent
# The repository root first, so the docs describe this checkout even when another copy of
# spikecode is installed; _ext holds the project's own small Sphinx extension.
sys.path.insert(0, str(_DOCS.parent))
sys.path.insert(0, str(_DOCS / "_ext"))
os.environ.setdefault("MPLBACKEND", "Agg")

import spikecode  # noqa: E402

project = "spikecode"
author = "the spikecode authors"
copyright = "the spikecode authors, Apache-2.0"
version = release = spikecode.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_click",
    "matplotlib.sphinxext.plot_directive",
    "publicapi",
]

root_doc = "index"
# Smart quotes only: docutils would turn "--" into an en dash, so a flag such as --k-map
# rendered from --help (sphinx-click) would read "–k-map" and break copy and paste.
smartquotes_action = "qe"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

# --- HTML: alabaster ships with Sphinx; no internet at build time --------------------------
html_theme = "alabaster"
html_theme_options = {
    "description": "spike coding for SpikingBrain-style language models",
    "fixed_sidebar": True,
}
html_static_path: list[str] = []
# MathJax would be loaded from a CDN by the reader's browser, never by the build.

# --- autodoc / autosummary / numpydoc --------------------------------------------------------
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autosummary_generate = False
# numpydoc's own member tables would list every method a second time next to autodoc's
# entries; autodoc documents the members.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# --- matplotlib plot directive: figures drawn from the bundled sample at build time -------
plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 100)]
plot_rcparams = {"figure.dpi": 100}

# --- broken references -------------------------------------------------------------------
# Every reference to a spikecode name must resolve (a renamed or moved function breaks
# the build). Names of other projects (numpy, torch, click, ...) cannot resolve without
# intersphinx, which would fetch inventories from the internet, so only those are exempt.
nitpicky = True
nitpick_ignore_regex = [(r"py:.*", r"(?!spikecode\b).*")]
nitpick_ignore = [
    # A TypeVar in register_exporter's signature (the decorated function's own type),
    # rendered by autodoc as a class reference; it is not an object to document.
    ("py:class", "spikecode.exporters.registry.Exporter"),
]


# --- optional pages ------------------------------------------------------------------------
# Consumer recipes for the exported files live in export-consumers.rst when that page is
# part of the checkout; the export page lists it then, and only then (a toctree entry for
# a missing page is itself a warning).
def _add_optional_pages(app: object, docname: str, source: list[str]) -> None:
    if docname == "export" and (_DOCS / "export-consumers.rst").is_file():
        source[0] += "\n\n.. toctree::\n   :maxdepth: 1\n\n   export-consumers\n"


def setup(app: object) -> None:  # noqa: D103 - Sphinx's hook
    app.connect("source-read", _add_optional_pages)
