"""The input policy over the whole plugin registry: every case of :func:`deepinv_ext.testing.bad_input_cases` on
every registered plugin (a new plugin is fuzzed the moment it is registered)."""

from __future__ import annotations

import collections

import pytest

from deepinv_ext import plugins, testing

# Arguments whose generic bad values are valid for them (each with its reason).
EXEMPT: dict[str, tuple[str, ...]] = {}

CASES = [case for info in plugins.available()
         for case in testing.bad_input_cases(info, exempt=EXEMPT.get(info.key, ()))]


def test_the_suite_is_large_enough():
    per_kind = collections.Counter(case.kind for case in CASES)
    assert len(CASES) >= 300, per_kind
    assert set(per_kind) == set(plugins.KINDS), per_kind


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input(case):
    testing.check_bad_input(case)
