"""The machine-readable summary every benchmark prints last, one line per part, read by ``run_all.py``.

A part is one comparison of a benchmark on one kind of device (``"CPU"`` or ``"GPU"``): what is measured, its
anchor, the ratios, and the machine. A part that could not run here says what it needs instead of ratios. The line
is ``BENCHMARK-SUMMARY`` followed by one JSON object; the benchmark's own table stays the human-readable output.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

PREFIX = "BENCHMARK-SUMMARY "


def machine(device: str = "cpu") -> str:
    """The GPU's name for a CUDA ``device``, else the CPU's model, its cores and torch's threads."""
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
             if line.startswith("model name")]
    threads = torch.get_num_threads()
    return (f"{names[0] if names else 'CPU'}, {os.cpu_count()} cores, {threads} torch thread{'s' * (threads > 1)}")


def emit(part: str, what: str, anchor: str, ratios: dict[str, float], ratio_is: str = "", note: str = "",
         device: str = "cpu", needs: str = "") -> None:
    """Print the summary line of one part (``needs``: the part did not run, for want of this)."""
    record = {"part": part, "device": "GPU" if str(device).startswith("cuda") else "CPU", "what": what,
              "anchor": anchor, "ratios": {k: float(v) for k, v in ratios.items()}, "ratio_is": ratio_is,
              "note": note, "needs": needs, "machine": "" if needs else machine(device)}
    print(PREFIX + json.dumps(record), flush=True)


def parse(text: str) -> list[dict]:
    """The summaries printed in ``text`` (a benchmark's standard output), in order."""
    return [json.loads(line[len(PREFIX):]) for line in text.splitlines() if line.startswith(PREFIX)]
