"""Where compiled rules run: DuckDB embedded (the default) or Apache Spark.

Adding an engine: a module here with a class taking ``master`` (or ignoring it) whose
``match(table, bound_rules)`` yields each rule with its rows (a :class:`SqlRuleEngine`
subclass gets that from ``execute(view, sql)``), a ``Dialect`` in ``sigma/sql.py`` for its
SQL, and a line in :data:`ENGINES`."""
from __future__ import annotations

from rpcwatch.registry import Registry

ENGINES = Registry("engine", {
    "duckdb": "rpcwatch.engines.duckdb:open_engine",
    "spark": "rpcwatch.engines.spark:open_engine",
})


class EngineUnavailable(RuntimeError):
    """The engine cannot run here (a missing package, no Java, a bad option)."""


def open_engine(name: str, master: str | None = None):
    """The engine called ``name``; raises :class:`EngineUnavailable` with the reason."""
    return ENGINES.load(name)(master)
