"""A function whose entry was stored by funcache_ipy with key schema 1 (tests/data)."""

import funcache_ipy


@funcache_ipy.cache
def double(x):
    return 2 * x
