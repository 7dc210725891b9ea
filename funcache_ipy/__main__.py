"""Command line entry point: ``python -m funcache_ipy demo``.

A newcomer should see what the package is for in ten seconds, without opening Jupyter:
``demo`` runs the bundled quickstart notebook twice in a real kernel, restarting it in
between, and prints how much the cache saved per cell.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m funcache_ipy`` argument parser (one sub-command per action)."""
    parser = argparse.ArgumentParser(
        prog="python -m funcache_ipy",
        description="Code-aware, durable memoization for Jupyter notebooks.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run the quickstart notebook twice through a kernel and show the cache hits",
        description=(
            "Run the bundled quickstart notebook in a fresh Jupyter kernel (this Python), "
            "restart the kernel, run it again, and print a per-cell table of both run "
            "times and cache hits. Works from any directory; the cache lives in a "
            "temporary directory that is removed afterwards. Exits with status 1 if a "
            "cell fails or a cached cell misses on the second run."
        ),
    )
    demo.set_defaults(run=_demo)
    return parser


def _demo() -> int:
    # Imported here so ``--help`` does not pay for jupyter_client.
    from funcache_ipy.demo import run_demo

    return run_demo()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the process exit status."""
    args = build_parser().parse_args(argv)
    status: int = args.run()
    return status


if __name__ == "__main__":
    sys.exit(main())
