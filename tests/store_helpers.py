"""Store plumbing shared by the store tests: more Stores on one directory, and metadata.

``reopen`` stands for another process opening the same cache. The Stores it opens are
closed after each test (a pytest plugin, see ``conftest.py``): Python 3.13 warns about
SQLite connections left to the garbage collector.
"""

from __future__ import annotations

import contextlib
import sqlite3
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


@contextlib.contextmanager
def database(directory: Path) -> Iterator[sqlite3.Connection]:
    """A raw connection to the store's SQLite file, as an attacker would use it."""
    with contextlib.closing(sqlite3.connect(directory / "cache.db")) as connection, connection:
        yield connection


def value_file(directory: Path, key: str) -> Path:
    """The file holding ``key``'s value, as the database names it."""
    with database(directory) as db:
        (filename,) = db.execute("SELECT filename FROM Cache WHERE key = ?", (key,)).fetchone()
    return directory / filename


def meta(name: str = "nb.f") -> EntryMeta:
    """Metadata of an entry stored now by a function called ``name``."""
    return EntryMeta(name, time.time(), 0.5, 0, {"x": ["00ff", "3"]})
