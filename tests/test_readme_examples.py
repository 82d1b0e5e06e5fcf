"""Every ```python block of the README runs as written (issue 29).

Each block runs by itself, in a fresh namespace, on one torch thread (``conftest.one_torch_thread``), in a temporary
working directory that holds the repository's shipped test data at ``tests/data`` (the README's paths are relative
to the repository's root, where a user runs them). A block that needs ASTRA is skipped where ASTRA does not import.
A block too expensive for the suite runs with the textual substitutions of :data:`REDUCED`, each with its reason;
every other character runs verbatim, and a substitution whose text left the README fails the test.
"""

from __future__ import annotations

import os
import re
import traceback
import warnings
from pathlib import Path

import pytest
import torch

from deepinv_ext.algorithms import NotConvergedWarning

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
BLOCKS = [(README.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in BLOCK.finditer(README)]

#: README text -> (what the test runs instead, why); each text must occur in exactly one block
REDUCED = {
    "epochs=6,": ("epochs=1,", "ACR training: one epoch of the six (the README states the full run's time)"),
    "RandomEllipsesDataset(256, 64)": ("RandomEllipsesDataset(16, 64)", "ACR training: 2 batches of 8 phantoms, not 32"),
    "tol=1e-4)(y, physics)": ("tol=1e-4, max_iter=10)(y, physics)",
                              "ACR solve: at most 10 iterations (the critic of 2 batches runs to the 200 default)"),
}

#: a name in a block -> the module it needs (skipped where that module does not import)
NEEDS = {"AstraCT": "astra"}


def first_line(source: str) -> str:
    return source.strip().splitlines()[0]


def reduced(source: str) -> str:
    for old, (new, _) in REDUCED.items():
        source = source.replace(old, new)
    return source


def run_block(source: str, line: int) -> None:
    """Execute ``source`` (the block starting at README line ``line``) in a fresh namespace; on an error, fail with
    the block's first line, the README line that raised and the error."""
    name = f"README.md block at line {line}"
    try:
        exec(compile(source, name, "exec"), {"__name__": "__readme__"})
    except Exception as err:
        frames = [f.lineno for f in traceback.extract_tb(err.__traceback__) if f.filename == name]
        where = (f", at README line {line + frames[-1] - 1}: {source.splitlines()[frames[-1] - 1].strip()}"
                 if frames else "")
        message = f"{name} (`{first_line(source)}`) failed{where}\n{type(err).__name__}: {err}"
    else:
        return
    pytest.fail(message, pytrace=False)


def test_substitutions_apply_once():
    assert len(BLOCKS) >= 9, f"found {len(BLOCKS)} python blocks in the README"
    for old in REDUCED:
        hits = [line for line, source in BLOCKS if old in source]
        assert len(hits) == 1 and README.count(old) == 1, f"REDUCED key {old!r} occurs in README blocks {hits}"


@pytest.mark.parametrize(("line", "source"), BLOCKS, ids=[f"line{line}" for line, _ in BLOCKS])
def test_readme_block_runs(line, source, tmp_path, monkeypatch):
    for name, module in NEEDS.items():
        if name in source:
            pytest.importorskip(module, reason=f"the README block at line {line} needs {module}")
    (tmp_path / "tests").mkdir()
    os.symlink(ROOT / "tests" / "data", tmp_path / "tests" / "data")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("DEEPINV_EXT_CACHE", str(tmp_path / "cache"))  # no sparse CT matrix in the user's cache
    with warnings.catch_warnings(), torch.random.fork_rng():  # the blocks seed torch: the next tests see no change
        if reduced(source) != source:  # the reduced budgets are ours: their not-converged warnings are no news
            warnings.simplefilter("ignore", NotConvergedWarning)
        run_block(reduced(source), line)
