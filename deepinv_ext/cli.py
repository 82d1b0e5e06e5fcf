r"""The ``deepinv-ext`` command: ``deepinv-ext plugins`` lists the installed plugins, ``deepinv-ext run CONFIG``
runs a recipe config (see :mod:`deepinv_ext.runner`)."""

from __future__ import annotations

import argparse
import os
import sys

from deepinv_ext.plugins import KINDS, available

__all__ = ["main", "plugin_table"]


def plugin_table(kind: str | None = None) -> str:
    """The installed plugins as a plain-text table (kind, name, target, distribution)."""
    rows = [("kind", "name", "target", "distribution")]
    rows += [(p.kind, p.name, p.target, p.distribution) for p in available(kind)]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="deepinv-ext", description="List the installed deepinv-ext plugins, or run a recipe config.",
        epilog="examples:\n  deepinv-ext plugins --kind prior\n  deepinv-ext run config.yaml --output runs/example\n"
               "  torchrun --nproc_per_node 2 -m deepinv_ext.cli run config.yaml  # data-parallel",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    plugins = commands.add_parser("plugins", help="list the installed plugins")
    plugins.add_argument("--kind", choices=KINDS, help="only plugins of this kind")
    run = commands.add_parser("run", help="build and run a recipe config (JSON or YAML)")
    run.add_argument("config", help="path of the config file")
    run.add_argument("--output", help="output folder (default: the config's output_dir)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    if args.command == "plugins":
        print(plugin_table(args.kind))
    else:
        from deepinv_ext.runner import ConfigError, run_config

        try:
            results = run_config(args.config, output_dir=args.output, verbose=not args.quiet)
        except ConfigError as err:  # a config that cannot run as written: one line, status 2 (bugs keep a traceback)
            run.exit(2, f"deepinv-ext run: error: {err}\n")
        if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone prints
            for key, value in results.items():
                print(f"{key}: {value:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
