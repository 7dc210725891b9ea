"""Command line entry point: ``python -m funcache_ipy demo`` and ``python -m funcache_ipy key``.

A newcomer should see what the package is for in ten seconds, without opening Jupyter:
``demo`` runs the bundled quickstart notebook twice in a real kernel, restarting it in
between, and prints how much the cache saved per cell. ``key`` prints this user's public
signing key, the one line a teammate adds to ``FUNCACHE_IPY_TRUST`` to accept the
entries this user shares.
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
    key = commands.add_parser(
        "key",
        help="print your public signing key (for your team's FUNCACHE_IPY_TRUST)",
        description=(
            "Print the public half of your signing key as one line (creating the key, "
            "owner-only, beside your secret key on first use). Teammates who add it to "
            "FUNCACHE_IPY_TRUST accept the shared-cache entries you sign. Needs the s3 "
            'extra: pip install "funcache_ipy[s3]".'
        ),
    )
    key.set_defaults(run=_key)
    return parser


def _demo() -> int:
    # Imported here so ``--help`` does not pay for jupyter_client.
    from funcache_ipy.demo import run_demo

    return run_demo()


def _key() -> int:
    from funcache_ipy.signing import Signer

    try:
        signer = Signer.load()
    except (ImportError, OSError) as exc:
        print(f"funcache_ipy: {exc}", file=sys.stderr)
        return 1
    print(signer.public.text())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the process exit status."""
    args = build_parser().parse_args(argv)
    status: int = args.run()
    return status


if __name__ == "__main__":
    sys.exit(main())
