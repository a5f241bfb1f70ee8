"""Sphinx configuration of the roteq-param documentation site (``make docs``).

The field's convention: the pydata theme, numpydoc docstrings (the code uses them), MyST markdown for
the pages and sphinx-gallery for the examples, which the build executes (``examples/``, one thread
each). ``make docs`` turns every warning into an error, so a broken reference, a malformed docstring or
a failing example fails the build.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# escnn orders its kernel bases by string hashing: the examples load models reproducibly only with a
# fixed seed (the Makefile exports it; a direct sphinx-build call gets the same here for child code)
os.environ.setdefault("PYTHONHASHSEED", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")

project = "roteq-param"
author = "the roteq-param developers"
copyright = "2026, the roteq-param developers"
release = "0.3.0"
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "auto_examples/*.ipynb", "auto_examples/*.py",
                    "auto_examples/*.zip", "auto_examples/*.json", "sg_execution_times.rst"]
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# API reference: the docstrings, in numpydoc form; members are listed by autodoc, not numpydoc's
# autosummary tables (which would want a stub page for every method)
autodoc_default_options = {"members": True, "member-order": "bysource", "undoc-members": False}
autodoc_typehints = "none"
autodoc_mock_imports: list[str] = []
numpydoc_show_class_members = False
numpydoc_validation_checks: set[str] = set()

sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    # run every example, not only plot_*.py: each is a user's script and must keep working
    "filename_pattern": r".*\.py$",
    "ignore_pattern": r"__init__\.py|_helpers\.py",
    "abort_on_example_error": True,
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "show_memory": False,
    "matplotlib_animations": False,
    "reset_modules": ("matplotlib",),
}

html_theme = "pydata_sphinx_theme"
html_title = "roteq-param"
html_static_path = ["_static"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_show_sourcelink = False
