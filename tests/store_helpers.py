"""Store plumbing shared by the store tests: more Stores on one directory, and metadata.

``reopen`` stands for another process opening the same cache. The Stores it opens are
closed after each test (a pytest plugin, see ``conftest.py``): Python 3.13 warns about
SQLite connections left to the garbage collector.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from funcache_ipy.store import EntryMeta, Store

_reopened: list[Store] = []


def reopen(directory: Path) -> Store:
    """Another Store on the same directory (a new process, as far as the cache can tell)."""
    store = Store(directory)
    _reopened.append(store)
    return store


@pytest.fixture(autouse=True)
def close_reopened() -> Iterator[None]:
    yield
    while _reopened:
        _reopened.pop().close()


def meta(name: str = "nb.f") -> EntryMeta:
    """Metadata of an entry stored now by a function called ``name``."""
    return EntryMeta(name, time.time(), 0.5, 0, {"x": ["00ff", "3"]})
