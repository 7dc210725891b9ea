"""A function whose entry was stored by funcache_ipy with key schema 2 (tests/data)."""

import funcache_ipy


@funcache_ipy.cache
def total(values):
    return sum(values)
