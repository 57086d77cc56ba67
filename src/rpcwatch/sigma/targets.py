"""The query languages ``rules convert`` writes, as data.

Kept apart from :mod:`rpcwatch.sigma.convert` so that the command line can list them
without importing the converters (pySigma's backends take a tenth of a second to import,
which every rpcwatch command would otherwise pay at start-up).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """A query language: how to convert to it and which pipelines it accepts."""

    name: str
    description: str
    #: pipeline name -> file in pipelines/ (``native`` keeps the log's own field names)
    pipelines: dict[str, str | None]
    #: the pySigma backend (a key of ``sigma.backends.BACKENDS``), or
    backend: str | None = None
    #: rpcwatch's own SQL printer: ``duckdb`` or ``spark``
    dialect: str | None = None

    @property
    def default_pipeline(self) -> str:
        return next(iter(self.pipelines))


TARGETS: dict[str, Target] = {target.name: target for target in (
    Target("splunk", "Splunk SPL", {"splunk": "splunk.yml", "native": None}, backend="splunk"),
    Target("lucene", "Elasticsearch Lucene query string", {"ecs": "ecs.yml", "native": None}, backend="lucene"),
    Target("esql", "Elasticsearch ES|QL", {"ecs": "ecs.yml", "native": None}, backend="esql"),
    Target("kusto", "Microsoft Sentinel / Kusto KQL", {"sentinel": "sentinel.yml", "native": None},
           backend="kusto"),
    Target("spark-sql", "Spark SQL over a view per table", {"native": None}, dialect="spark"),
    Target("duckdb", "DuckDB SQL over a view per table", {"native": None}, dialect="duckdb"),
)}
