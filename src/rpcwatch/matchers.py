"""Hyperscan databases, compiled once for a set of patterns and kept in the rule cache.

Thousands of rules make databases of thousands of literals: the prefilter's line matcher
(Unicode case folding) takes 3-4 s to compile for SigmaHQ's Windows rules, the rule index's
per-field literal databases about half a second, and worker processes compile the
prefilter's again. A compiled database is serialized (``hyperscan.dumpb``) into the same
HMAC-verified store as compiled rule sets (:mod:`rpcwatch.sigma.rulecache`), keyed by its
patterns, flags and the library's version, so a repeated run loads it in milliseconds.
"""
from __future__ import annotations

from collections.abc import Callable

import hyperscan

from rpcwatch.sigma import rulecache

#: serialized databases are for the library build that wrote them
_VERSION = str(getattr(hyperscan, "__version__", ""))


def cached_databases(kind: str, key: object, compile_all: Callable[[], dict[str, hyperscan.Database]]
                     ) -> dict[str, hyperscan.Database]:
    """``compile_all()``'s databases, from the cache when ``key`` (whose ``repr`` names every
    pattern and flag) was compiled before; a database that cannot be loaded (another build
    of the library) is compiled again."""
    if not rulecache.enabled():
        return compile_all()
    name = rulecache.content_key(kind, _VERSION, repr(key))
    stored = rulecache.load(name)
    if isinstance(stored, dict) and all(isinstance(value, bytes) for value in stored.values()):
        try:
            return {part: _loaded(serialized) for part, serialized in stored.items()}
        except (hyperscan.error, TypeError):
            pass
    databases = compile_all()
    rulecache.store(name, {part: hyperscan.dumpb(database) for part, database in databases.items()})
    return databases


def _loaded(serialized: bytes) -> hyperscan.Database:
    database = hyperscan.loadb(serialized, hyperscan.HS_MODE_BLOCK)
    database.scratch = hyperscan.Scratch(database)
    return database
