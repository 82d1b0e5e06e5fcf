r"""Run every benchmark of this folder in a fresh process and rewrite the table of their latest figures in
``benchmarks/README.md``.

Each benchmark prints its own tables and one machine-readable summary line per part (``_summary.py``). This script
runs each at the arguments of ``SPECS`` (its defaults, or a smaller size where the default is too slow or too large
for a 2-core CPU: the spec says why, and so does the row) under a time limit, one thread a process, in ``--log-dir``
(its log and any file it writes); collects the summaries; and rewrites the table between the two markers of the
README:

- a part that ran replaces its row, and the benchmark's other rows on that kind of device go (parts no longer
  printed);
- a part that could not run here (a GPU part on a CPU, the authors' code absent) keeps an earlier row with figures,
  with that row's machine and source, or else is listed as "not run here: needs ...";
- a benchmark that fails or runs out of time gets a row saying so, beside its earlier rows;
- rows of benchmarks not run (``--only``) stay as they are.

Usage::

    python benchmarks/run_all.py                          # every benchmark on the CPU: 15-25 min on 2 shared cores
    python benchmarks/run_all.py --only mri spectral      # some of them
    python benchmarks/run_all.py --device cuda            # the GPU runs, on a machine with CUDA
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from _summary import machine, parse

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
START = "<!-- the table below is rewritten by benchmarks/run_all.py -->"
END = "<!-- end of the table -->"
COLUMNS = ("benchmark", "what", "anchor", "ratio", "machine", "command", "source")
NOT_RUN = "not run here"
TORCHRUN = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node")


@dataclass(frozen=True)
class Spec:
    """How one benchmark is run: its arguments on the CPU and on a GPU (``None``: not run on that device),
    ``processes`` > 0 to run it under ``torchrun`` with that many processes, and why the CPU arguments are not the
    benchmark's defaults."""

    cpu: tuple[str, ...] | None = ()
    cuda: tuple[str, ...] | None = None
    processes: int = 0
    why: str = ""


SPECS = {
    "bilevel_hypergradient": Spec(cpu=("--device", "cpu"), cuda=("--device", "cuda", "--size", "128", "--iters", "200")),
    "ct_operator": Spec(cpu=("--reps", "2"), cuda=("--device", "cuda"),
                        why="the median of 2 calls instead of 5: deepinv's Tomography takes 5 s (A) and 10 s (A^T) "
                            "a call on one thread, and the run 7 min"),
    "data_parallel": Spec(),
    "gs_pnp": Spec(),
    "maid": Spec(),
    "mri": Spec(),
    "prior_in_deepinv_algorithms": Spec(cpu=("--algorithms", "PGD"),
                                        why="PGD alone, not FISTA too: on one loaded thread PGD takes 3.5 min and "
                                            "FISTA 5"),
    "retune": Spec(cpu=("--device", "cpu"), cuda=("--device", "cuda")),
    "solver_memory": Spec(cpu=("--size", "128", "--iters", "2"),
                          why="128x128 and one budget of 2 iterations, 10 fresh processes instead of 18: at "
                              "256x256 the previous defaults peak at 9 GiB, and the runs take 5 min on 2 idle cores"),
    "spectral": Spec(),
    "split_ct_operator": Spec(cpu=("--device", "cpu"), processes=2),  # GPUs: one process each, by hand
    "tdv": Spec(cpu=("--device", "cpu"), cuda=("--device", "cuda")),
}


def argv_of(name: str, args: tuple[str, ...], processes: int) -> list[str]:
    """The arguments of ``python`` that run benchmark ``name``."""
    launcher = [*TORCHRUN, str(processes)] if processes else []
    return [*launcher, str(HERE / f"{name}.py"), *args]


def shown(argv: list[str], threads: int) -> str:
    """The command as a user types it from the repository's root."""
    torchrun = argv[:2] == list(TORCHRUN[:2])
    rest = [a.replace(str(HERE.parent) + os.sep, "") for a in (argv[2:] if torchrun else argv)]
    return f"OMP_NUM_THREADS={threads} {'torchrun' if torchrun else 'python'} {' '.join(rest)}"


def run(name: str, argv: list[str], log: Path, timeout: float, threads: int) -> tuple[str, str]:
    """Run one benchmark in the folder of ``log``, its output into ``log``; (output, failure or "")."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, *argv], cwd=log.parent, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code, failure = proc.wait(timeout=timeout), ""
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # with its children (torchrun's workers, fresh-process runs)
            proc.wait()
            code, failure = None, f"timed out after {timeout:.0f} s"
    failure = failure or (f"exit status {code}" if code else "")
    return log.read_text(), failure


def rows_of(name: str, summaries: list[dict], command: str, source: str, why: str = "") -> list[dict]:
    """The table rows of one benchmark's summaries (``why``: why it ran at other arguments than its defaults)."""
    rows = []
    for s in summaries:
        if s["needs"]:
            ratio = f"{NOT_RUN}: needs {s['needs']}"
        else:
            ratio = "; ".join(f"{k} {v:.3g}x" for k, v in s["ratios"].items())
            ratio += f" ({s['ratio_is']})" if ratio and s["ratio_is"] else ""
            ratio = "; ".join(filter(None, (ratio, s["note"])))
        label = ", ".join(filter(None, (s["part"], s["device"])))
        what = f"{s['what']} (smaller than the default: {why})" if why else s["what"]
        rows.append(dict(zip(COLUMNS, (f"{name} ({label})", what, s["anchor"], ratio or "-",
                                       s["machine"] or "-", f"`{command}`", source))))
    return rows


def failure_row(name: str, device: str, failure: str, command: str, source: str, log: Path) -> dict:
    kind = "GPU" if device == "cuda" else "CPU"
    return dict(zip(COLUMNS, (f"{name} (run failed, {kind})", "-", "-", f"{failure}; its log: {log.name}",
                              machine(device), f"`{command}`", source)))


def merge(old: list[dict], new: list[dict], completed: set[str]) -> list[dict]:
    """The table after a run: ``new`` rows replace rows of the same benchmark and part; a completed benchmark's
    earlier rows on the device kinds it reported go; a "not run here" row keeps an earlier row with figures."""
    rows = {r["benchmark"]: r for r in old}
    kinds = {(_name(r["benchmark"]), _kind(r["benchmark"])) for r in new if _name(r["benchmark"]) in completed}
    stale = {k: rows.pop(k) for k in list(rows) if (_name(k), _kind(k)) in kinds}
    for r in new:
        before = stale.get(r["benchmark"]) or rows.get(r["benchmark"])
        keep = r["ratio"].startswith(NOT_RUN) and before and not before["ratio"].startswith(NOT_RUN)
        rows[r["benchmark"]] = before if keep else r
    return sorted(rows.values(), key=lambda r: r["benchmark"])


def _name(key: str) -> str:
    return key.split(" (")[0]


def _kind(key: str) -> str:
    return key.rstrip(")").rsplit(", ", 1)[-1].rsplit("(", 1)[-1]


def read_table(text: str) -> list[dict]:
    """The rows of the table between the markers of ``text`` (the README)."""
    body = text.split(START, 1)[1].split(END, 1)[0]
    lines = [line.strip() for line in body.splitlines() if line.strip().startswith("|")]
    rows = []
    for line in lines[2:]:  # after the header and the separator
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line[1:-1])]
        if len(cells) != len(COLUMNS):
            raise ValueError(f"a row of {len(cells)} cells, not {len(COLUMNS)}: {line}")
        rows.append(dict(zip(COLUMNS, cells)))
    return rows


def write_table(text: str, rows: list[dict]) -> str:
    """``text`` with the table between its markers replaced by ``rows``."""
    def line(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    table = "\n".join([line(COLUMNS), line(["---"] * len(COLUMNS)), *(line(r[c] for c in COLUMNS) for r in rows)])
    head, rest = text.split(START, 1)
    return f"{head}{START}\n{table}\n{END}{rest.split(END, 1)[1]}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", nargs="+", choices=sorted(SPECS), default=sorted(SPECS), metavar="NAME")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--timeout", type=float, default=600, help="seconds a benchmark may run (default 600)")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each benchmark (default 1)")
    p.add_argument("--log-dir", type=Path, default=HERE.parent / "runs" / "benchmarks")
    p.add_argument("--readme", type=Path, default=README)
    args = p.parse_args(argv)
    args.log_dir.mkdir(parents=True, exist_ok=True)
    source = f"run_all.py, {datetime.date.today().isoformat()}"
    new, completed = [], set()
    for name in args.only:
        spec = SPECS[name]
        extra = spec.cpu if args.device == "cpu" else spec.cuda
        if extra is None:
            print(f"{name}: no {args.device} run", flush=True)
            continue
        command = argv_of(name, extra, spec.processes)
        start = time.perf_counter()
        output, failure = run(name, command, args.log_dir / f"{name}.log", args.timeout, args.threads)
        rows = rows_of(name, parse(output), shown(command, args.threads), source,
                       spec.why if args.device == "cpu" else "")
        if failure:
            rows.append(failure_row(name, args.device, failure, shown(command, args.threads), source,
                                    args.log_dir / f"{name}.log"))
        else:
            completed.add(name)
        new += rows
        print(f"{name}: {failure or 'done'} in {time.perf_counter() - start:.0f} s, {len(rows)} row(s)", flush=True)
    text = args.readme.read_text()
    args.readme.write_text(write_table(text, merge(read_table(text), new, completed)))
    print(f"rewrote the table of {args.readme}")


if __name__ == "__main__":
    main()
