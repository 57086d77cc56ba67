"""Spark hunts a Parquet dataset where it lives (HDFS, S3, any URI Spark is configured for).

The dataset is what ``rpcwatch export-parquet`` writes: ``table=<table>/date=<day>/*.parquet``
with each record's source log in ``__file__``. Each table runs as one Spark SQL query
over all its files; only matched rows, with the rules they matched, come back to the
driver, where alerts, correlations and the run summary are made as for any input.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from rpcwatch.alerts import FILE_COLUMN
from rpcwatch.engines.query import rules_query
from rpcwatch.engines.spark import SparkEngine
from rpcwatch.sigma.logsources import BoundRule
from rpcwatch.sigma.sql import lowered_name
from rpcwatch.sources import ReadStats, TableBatch

TABLE_PARTITION = "table="
DATE_PARTITION = "date"
FORMAT = "parquet-dataset"


def is_dataset(path: str) -> bool:
    """A URI (``hdfs://``, ``s3a://``, ``file://``) or a local export-parquet directory."""
    if "://" in path:
        return True
    local = Path(path)
    return local.is_dir() and any(child.name.startswith(TABLE_PARTITION) for child in local.iterdir())


class SparkDatasetScan:
    """A :class:`~rpcwatch.hunt.BatchSource`: matched rows of each dataset, per source log."""

    def __init__(self, engine: SparkEngine, datasets: Sequence[str], by_table: dict[str, list[BoundRule]]):
        self.engine = engine
        self.datasets = list(datasets)
        self.by_table = by_table

    def batches(self, stats: list[ReadStats]) -> Iterator[TableBatch]:
        for dataset in self.datasets:
            tables = self._tables(dataset)
            if tables is None:
                stats.append(ReadStats(dataset, FORMAT, error="not an export-parquet dataset (no table=... folder)"))
                continue
            for table, location in tables:
                yield from self._scan(table, location, self.by_table.get(table, []), stats)

    def _tables(self, dataset: str) -> list[tuple[str, str]] | None:
        """``(table, location)`` of each table partition, listed through Hadoop's file
        system so every URI scheme Spark is configured for works."""
        session = self.engine.session
        jvm = session.sparkContext._jvm
        root = jvm.org.apache.hadoop.fs.Path(dataset)
        filesystem = root.getFileSystem(session.sparkContext._jsc.hadoopConfiguration())
        if not filesystem.exists(root):
            return None
        found = [(status.getPath().getName()[len(TABLE_PARTITION):], status.getPath().toString())
                 for status in filesystem.listStatus(root)
                 if status.isDirectory() and status.getPath().getName().startswith(TABLE_PARTITION)]
        return sorted(found) or None

    def _scan(self, table: str, location: str, rules: list[BoundRule],
              stats: list[ReadStats]) -> Iterator[TableBatch]:
        """Count every table's records per source log (Parquet answers from its metadata);
        run the rules of the tables that have some."""
        from pyspark.sql.pandas.types import to_arrow_schema

        session = self.engine.session
        frame = session.read.option("mergeSchema", "true").parquet(location)
        view = "rpcw_" + table.replace(".", "_")
        frame.createOrReplaceTempView(view)
        records = {row[0]: row[1] for row in
                   session.sql(f"SELECT {FILE_COLUMN}, count(*) FROM {view} GROUP BY 1").collect()}
        stats.extend(ReadStats(path, FORMAT, records=count) for path, count in sorted(records.items()))
        if not rules:
            return
        columns = [name for name in frame.columns if name != DATE_PARTITION]
        sql = rules_query(to_arrow_schema(frame.schema), rules, self.engine.dialect, view,
                          self.engine.problems, columns=columns)
        if sql is None:
            return
        matched = session.sql(sql).toArrow()
        matched = matched.drop_columns([n for n in matched.column_names if n.endswith(lowered_name(""))])
        for path in pc.unique(matched.column(FILE_COLUMN)).to_pylist():
            part = matched.filter(pc.equal(matched.column(FILE_COLUMN), pa.scalar(path)))
            yield TableBatch(table, part.drop_columns([FILE_COLUMN]), path, FORMAT)
