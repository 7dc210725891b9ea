"""The store's in-memory hot layer: verified bytes of recent small entries.

A warm hit should not touch SQLite or re-verify an HMAC, yet it must return an object the
caller may mutate freely. So the layer keeps pickle streams and buffers (already verified),
not objects, and :func:`thaw` unpickles a new object from them at every hit.
"""

from __future__ import annotations

import collections
import pickle
import threading

__all__ = ["Hot", "HotBytes", "thaw"]

Hot = tuple[bytes, tuple[bytes, ...]]


class HotBytes:
    """LRU of verified pickle streams and buffers of small entries, bounded in bytes.

    Holding bytes rather than objects is what makes a hit return a fresh object: each
    hit unpickles anew (with fresh writable buffers), so a caller mutating its result
    can never change what the next hit returns.
    """

    def __init__(self, limit: int) -> None:
        self._entries: collections.OrderedDict[str, tuple[Hot, int]] = collections.OrderedDict()
        self._total = 0
        self._limit = limit
        self._lock = threading.Lock()

    def lookup(self, key: str) -> Hot | None:
        with self._lock:
            item = self._entries.get(key)
            if item is None:
                return None
            self._entries.move_to_end(key)
            return item[0]

    def put(self, key: str, hot: Hot, size: int) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            self._total += size - (old[1] if old else 0)
            self._entries[key] = (hot, size)
            while self._total > self._limit:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._total -= evicted

    def discard(self, key: str) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            self._total -= old[1] if old else 0

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._total = 0


def thaw(hot: Hot) -> object:
    """Unpickle a hot entry into a brand-new object (buffers copied into bytearrays)."""
    stream, buffers = hot
    if buffers:
        return pickle.loads(stream, buffers=[bytearray(buffer) for buffer in buffers])
    return pickle.loads(stream)
