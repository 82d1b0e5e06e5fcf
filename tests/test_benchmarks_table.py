"""The table of ``benchmarks/README.md``: it parses, every benchmark has a row, and ``run_all``'s reading of a
benchmark's summary and its merge of old and new rows work on a tiny fake."""

import importlib
import sys
import textwrap
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def run_all():
    sys.path.insert(0, str(BENCHMARKS))  # run_all imports _summary as a script of its folder does
    try:
        yield importlib.import_module("run_all")
    finally:
        sys.path.remove(str(BENCHMARKS))


def _benchmark_names():
    return sorted(p.stem for p in BENCHMARKS.glob("*.py") if not p.stem.startswith("_") and p.stem != "run_all")


def test_the_table_parses_and_names_every_benchmark(run_all):
    rows = run_all.read_table((BENCHMARKS / "README.md").read_text())
    assert rows and all(set(r) == set(run_all.COLUMNS) and all(r.values()) for r in rows)
    named = {run_all._name(r["benchmark"]) for r in rows}
    assert set(_benchmark_names()) <= named, f"benchmarks without a row: {set(_benchmark_names()) - named}"
    assert sorted(run_all.SPECS) == _benchmark_names()  # run_all runs every benchmark
    assert {run_all._kind(r["benchmark"]) for r in rows} <= {"CPU", "GPU"}


def test_a_fake_benchmark_summary_becomes_rows_and_merges(run_all, tmp_path):
    script = tmp_path / "fake.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(BENCHMARKS)!r})
        from _summary import emit
        print("the benchmark's own table")
        emit("", "A of a fake operator, 8x8", "the anchor", {{"A": 2.0, "A^T": 0.5}}, "anchor time / ours",
             "exact | adjoint")
        emit("grad", "a GPU part", "the authors' code", {{}}, device="cuda", needs="a CUDA GPU")
    """))
    output, failure = run_all.run("fake", [str(script)], tmp_path / "fake.log", timeout=60, threads=1)
    assert failure == "" and (tmp_path / "fake.log").read_text() == output
    new = run_all.rows_of("fake", run_all.parse(output), "python fake.py", "today")
    assert [r["benchmark"] for r in new] == ["fake (CPU)", "fake (grad, GPU)"]
    assert new[0]["ratio"] == "A 2x; A^T 0.5x (anchor time / ours); exact | adjoint"
    assert new[1]["ratio"] == "not run here: needs a CUDA GPU" and new[1]["machine"] == "-"

    old = [dict(zip(run_all.COLUMNS, (key, "w", "a", ratio, "m", "`c`", "issue 1")))
           for key, ratio in (("fake (CPU)", "A 1x"), ("fake (old part, CPU)", "A 1x"),
                              ("fake (grad, GPU)", "ours 3x"), ("other (CPU)", "B 1x"))]
    merged = {r["benchmark"]: r for r in run_all.merge(old, new, completed={"fake"})}
    assert merged["fake (CPU)"] is new[0]  # replaced
    assert "fake (old part, CPU)" not in merged  # a part the completed benchmark no longer prints
    assert merged["fake (grad, GPU)"]["ratio"] == "ours 3x"  # kept: the part could not run here
    assert merged["other (CPU)"]["ratio"] == "B 1x"  # not run

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{run_all.START}\n| x |\n{run_all.END}\nafter\n")
    readme.write_text(run_all.write_table(readme.read_text(), list(merged.values())))
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("after\n")
    assert run_all.read_table(text) == list(merged.values())  # "|" inside a cell survives the round trip


def test_commands_are_shown_as_typed_from_the_root(run_all):
    assert run_all.shown(run_all.argv_of("mri", ("--smoke",), 0), 1) == "OMP_NUM_THREADS=1 python benchmarks/mri.py --smoke"
    assert (run_all.shown(run_all.argv_of("split_ct_operator", (), 2), 1)
            == "OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 benchmarks/split_ct_operator.py")


def test_a_failed_run_is_a_row_beside_the_earlier_ones(run_all, tmp_path):
    script = tmp_path / "slow.py"
    script.write_text("import time\nprint('started', flush=True)\ntime.sleep(30)\n")
    output, failure = run_all.run("slow", [str(script)], tmp_path / "slow.log", timeout=1, threads=1)
    assert failure == "timed out after 1 s" and "started" in output
    row = run_all.failure_row("slow", "cpu", failure, "python slow.py", "today", tmp_path / "slow.log")
    old = [dict(zip(run_all.COLUMNS, ("slow (CPU)", "w", "a", "A 1x", "m", "`c`", "s")))]
    merged = run_all.merge(old, [row], completed=set())
    assert [r["benchmark"] for r in merged] == ["slow (CPU)", "slow (run failed, CPU)"]
