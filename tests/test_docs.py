"""The documentation covers the public API: every public object has its page, every parameter its ``:param`` line,
every class and function a doctested example, every reference a citation of ``docs/source/refs.bib``."""

from __future__ import annotations

import re
from pathlib import Path

from docs_api import plain_references, public_objects, undocumented, without_example

API = Path(__file__).resolve().parents[1] / "docs" / "source" / "api"


def test_every_public_object_has_an_api_page():
    listed = {line.strip() for page in API.glob("*.rst") for line in page.read_text().splitlines()
              if re.fullmatch(r"\s+deepinv_ext\.[\w.]+", line)}
    missing = sorted(name for name, _ in public_objects() if name not in listed)
    assert not missing, f"public objects missing from docs/source/api: {missing}"


def test_every_parameter_is_documented():
    missing = undocumented()
    assert not missing, "parameters without a :param line: " + "; ".join(f"{k}: {v}" for k, v in missing.items())


def test_every_public_object_has_a_doctested_example():
    missing = without_example()
    assert not missing, f"public objects without a doctested example: {missing}"


def test_references_are_citations():
    found = plain_references()
    assert not found, f"plain-text references (use :footcite: and docs/source/refs.bib): {found}"
