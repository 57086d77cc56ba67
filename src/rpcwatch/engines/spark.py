"""The Apache Spark engine: the compiled rules run as Spark SQL.

Rules print through :class:`~rpcwatch.sigma.sql.SparkDialect` in ``portable`` CIDR mode:
exact membership is a comparison of address keys computed in plain SQL, so executors
need neither Python nor rpcwatch, and the same query runs on a cluster. Batches from rpcwatch's readers arrive as Arrow tables (the
:class:`~rpcwatch.engines.query.SqlRuleEngine` contract); datasets Spark reads itself go
through :mod:`rpcwatch.engines.spark_scan`.
"""
from __future__ import annotations

import pyarrow as pa

from rpcwatch.engines.query import VIEW_NAME, SqlRuleEngine
from rpcwatch.sigma.sql import SparkDialect

DEFAULT_MASTER = "local[2]"


class SparkUnavailable(RuntimeError):
    """pyspark is not installed, or Spark could not start (no Java)."""


def spark_session(master: str | None = None, app_name: str = "rpcwatch"):
    """A Spark session for rpcwatch (an active one is reused; ``master`` then is ignored).
    Times are UTC so Sigma's time modifiers read the same parts on every engine."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SparkUnavailable("the Spark engine needs pyspark: pip install 'rpcwatch[spark]'") from None
    builder = SparkSession.builder.appName(app_name).config("spark.sql.session.timeZone", "UTC") \
        .config("spark.ui.showConsoleProgress", "false")
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

    def __init__(self, master: str | None = DEFAULT_MASTER, session=None):
        super().__init__(SparkDialect())
        self.session = session or spark_session(master)

    def execute(self, view: pa.Table, sql: str) -> pa.Table:
        self.session.createDataFrame(view).createOrReplaceTempView(VIEW_NAME)
        try:
            return self.session.sql(sql).toArrow()
        finally:
            self.session.catalog.dropTempView(VIEW_NAME)
