"""The Apache Spark engine: the compiled rules run as Spark SQL.

Rules print through :class:`~rpcwatch.sigma.sql.SparkDialect` in ``portable`` CIDR mode:
exact membership is a comparison of address keys computed in plain SQL, so executors
need neither Python nor rpcwatch, and the same query runs on a cluster. Batches from
rpcwatch's readers arrive as Arrow tables (the
:class:`~rpcwatch.engines.query.SqlRuleEngine` contract); Parquet datasets Spark reads
itself go through :mod:`rpcwatch.engines.spark_scan`.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from rpcwatch.engines import EngineUnavailable
from rpcwatch.engines.query import RULES_COLUMN, VIEW_NAME, SqlRuleEngine, precomputed_rows_by_rule
from rpcwatch.sigma.logsources import BoundRule
from rpcwatch.sigma.sql import SparkDialect

#: where Spark runs unless --master says otherwise (or spark-submit already decided)
DEFAULT_MASTER = "local[2]"


class SparkUnavailable(EngineUnavailable):
    """pyspark is not installed, or Spark could not start (no Java)."""


def spark_session(master: str | None = None, app_name: str = "rpcwatch"):
    """A Spark session for rpcwatch: on ``master``, else on the cluster spark-submit chose,
    else on :data:`DEFAULT_MASTER` (an active session is reused; ``master`` then is ignored).
    Times are UTC so Sigma's time modifiers read the same parts on every engine; column
    names are case-sensitive because logs have fields that differ only in case (Windows
    event data ``Port`` and ``port``), and the printer names each column exactly."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SparkUnavailable("the Spark engine needs pyspark: pip install 'rpcwatch[spark]'") from None
    builder = SparkSession.builder.appName(app_name).config("spark.sql.session.timeZone", "UTC") \
        .config("spark.sql.caseSensitive", "true").config("spark.ui.showConsoleProgress", "false")
    if master is None and "PYSPARK_GATEWAY_PORT" not in os.environ:  # not under spark-submit
        master = DEFAULT_MASTER
    if master:
        builder = builder.master(master)
    try:
        session = builder.getOrCreate()
    except Exception as exc:  # the JVM did not start: Java missing or misconfigured
        raise SparkUnavailable(f"Spark could not start ({exc}); it needs Java 17 or later") from None
    session.sparkContext.setLogLevel("ERROR")
    return session


class SparkEngine(SqlRuleEngine):
    """Runs bound rules with Spark SQL; each Arrow batch becomes a temporary view."""

    name = "spark"

    def __init__(self, master: str | None = None, session=None):
        super().__init__(SparkDialect())
        self.session = session or spark_session(master)

    def match(self, data: pa.Table, rules: Sequence[BoundRule]) -> Iterator[tuple[BoundRule, pa.Table]]:
        """Rows a dataset scan already matched (:mod:`rpcwatch.engines.spark_scan`) carry
        their rules; the others run here."""
        if RULES_COLUMN not in data.column_names:
            yield from super().match(data, rules)
            return
        scanned = pc.is_valid(data.column(RULES_COLUMN))
        yield from precomputed_rows_by_rule(data.filter(scanned), rules)
        yield from super().match(data.filter(pc.invert(scanned)).drop_columns([RULES_COLUMN]), rules)

    def execute(self, view: pa.Table, sql: str) -> pa.Table:
        self.session.createDataFrame(view).createOrReplaceTempView(VIEW_NAME)
        try:
            return self.session.sql(sql).toArrow()
        finally:
            self.session.catalog.dropTempView(VIEW_NAME)


def open_engine(master: str | None = None) -> SparkEngine:
    return SparkEngine(master=master)
