"""Restart & Run All in a real kernel: every cached cell and call hits, Bunch-likes too.

A value restored by a hit must key as the value the run produced (issue 6), or the cells
and cached functions reading it recompute once after every restart. The class is defined
in a plain cell, as in a notebook, and is defined again by the rerun.
"""

from __future__ import annotations

import re

import pytest

from funcache_ipy.demo import KernelSession
from tests.kernel_helpers import execute

pytestmark = pytest.mark.kernel

NOTEBOOK = [
    "%load_ext funcache_ipy",
    """
import funcache_ipy
import numpy as np

class BunchLike(dict):
    def __init__(self, **items):
        super().__init__(items)
        self.__dict__["_warnings"] = {}

    def __setstate__(self, state):
        pass

class Box:
    __slots__ = ("size",)

    def __init__(self, size):
        self.size = size

@funcache_ipy.cache
def load(n):
    print("ran load")
    return BunchLike(data=np.arange(n))

@funcache_ipy.cache
def total(bunch):
    print("ran total")
    return int(bunch["data"].sum())
""",
    "%%funcache\ndigits = BunchLike(data=np.arange(6))\nbox = Box(3)\nprint('ran cell load')",
    # Reads only the class: storing ``box`` pickled an instance, which made copyreg cache
    # ``__slotnames__`` on Box; after the restart nothing has pickled one yet.
    "%%funcache\nunit = Box(1).size\nprint('ran cell unit')",
    "%%funcache\nsize = len(digits['data'])\nprint('ran cell size')",
    "loaded = load(5)\nsummed = total(loaded)",
    "print(size, summed, unit)",
]


def test_restart_and_run_all_hits_everywhere(kernel: KernelSession) -> None:
    first = [execute(kernel, cell) for cell in NOTEBOOK]
    assert first[-1].stdout == "6 10 1\n", first[-1].stdout
    assert "ran total" in first[5].stdout

    kernel.restart()
    again = [execute(kernel, cell) for cell in NOTEBOOK]
    assert again[-1].stdout == "6 10 1\n", f"expected 6 10 1, got {again[-1].stdout!r}"
    hits = r"funcache: load hit \(saved [^)]+\)\nfuncache: total hit \(saved [^)]+\)\n"
    assert re.fullmatch(hits, again[5].stdout), (
        f"a cached call ran after the restart: {again[5].stdout!r}"
    )
    info = execute(kernel, "%funcache info").text
    assert "0 misses" in info, f"every cell should have hit after the restart:\n{info}"
