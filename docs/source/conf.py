"""Sphinx configuration of deepinv-ext's documentation, on deepinv's own stack and conventions (autosummary pages
from the docstrings, sphinx-gallery examples, footnote citations from ``refs.bib``, the pydata theme).

Build (warnings are errors; the gallery runs every example)::

    python -m sphinx -W --keep-going -b html docs/source docs/_build/html
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import version as package_version
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")  # small examples run fastest on one thread

project = "deepinv-ext"
author = "deepinv-ext developers"
copyright = "2026, deepinv-ext developers"
release = package_version("deepinv-ext")

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx_gallery.gen_gallery",
    "sphinx_copybutton",
    "sphinx_design",
    "sphinxcontrib.bibtex",
    "myst_parser",  # the changelog and the recipe notes are Markdown
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
default_role = "code"  # `x` is code, as in deepinv
add_module_names = True

# API pages: one autosummary page per public object, types from the annotations into the parameter list
autosummary_generate = True
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = False
autodoc_member_order = "bysource"
napoleon_custom_sections = [("Reference", "params_style")]

# references: :footcite:`key` in a docstring or example, entries in refs.bib
bibtex_bibfiles = ["refs.bib"]
bibtex_default_style = "plain"
bibtex_foot_reference_style = "foot"
bibtex_footbibliography_backrefs = True

# the gallery: every examples/*/demo_*.py is run, its figures captured, and linked from the API pages
sphinx_gallery_conf = {
    "examples_dirs": [str(ROOT / "examples")],
    "gallery_dirs": ["auto_examples"],
    "filename_pattern": r"/demo_",
    "backreferences_dir": "gen_modules/backreferences",
    "doc_module": ("deepinv_ext",),
    "reference_url": {"deepinv_ext": None},
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "min_reported_time": 0,
    "show_memory": False,
    "download_all_examples": False,
    "within_subsection_order": "FileNameSortKey",
}

html_theme = "pydata_sphinx_theme"
html_title = f"deepinv-ext {release}"
html_theme_options = {
    "logo": {"text": "deepinv-ext"},
    "secondary_sidebar_items": {"**": ["page-toc", "sourcelink", "sg_download_links"]},
    "navigation_with_keys": False,
}
html_sidebars = {"changelog": [], "index": []}

rst_prolog = """
.. |sep| raw:: html

   <hr />

"""


def add_references(app, what, name, obj, options, lines):
    """A docstring that cites (``:footcite:``) ends with its references, as in deepinv."""
    if any(":footcite:" in line for line in lines) and not any(".. footbibliography::" in line for line in lines):
        lines += ["", "|sep|", "", ":References:", "", ".. footbibliography::", ""]


def setup(app):
    app.connect("autodoc-process-docstring", add_references, priority=10)
