"""Inputs at URIs Spark's Hadoop configuration reads (HDFS, S3, ABFS, ``file://``).

A Parquet dataset that ``rpcwatch export-parquet`` wrote (``table=<table>/date=<day>/``,
each record's source log in ``__file__``) is scanned where it lives: one Spark SQL query
per table over all its files; only matched rows, with the rules they matched, come back
to the driver, where alerts, correlations and the run summary are made as for any input.

Any other file at a URI (Zeek logs, EVTX, Windows JSON; gzip) is streamed through Hadoop's
file system to rpcwatch's own readers on the driver, so every format reads exactly as a
local file does.
"""
from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from rpcwatch.engines.query import rules_query
from rpcwatch.engines.spark import SparkEngine
from rpcwatch.schema import FILE_COLUMN
from rpcwatch.sigma.logsources import BoundRule
from rpcwatch.sigma.sql import lowered_name
from rpcwatch.sources import ReadStats, TableBatch
from rpcwatch.sources.inputs import InputError, InputFile

TABLE_PARTITION = "table="
DATE_PARTITION = "date"
FORMAT = "parquet-dataset"
#: bytes asked of a Hadoop stream per call (each call is one round trip to the JVM)
CHUNK = 8 << 20


def is_uri(path: str) -> bool:
    return "://" in path


def is_dataset(path: str, session=None) -> bool:
    """An export-parquet directory: local, or at a URI (listed through ``session``)."""
    if session is not None:
        return bool(_table_partitions(session, path))
    local = Path(path)
    return not is_uri(path) and local.is_dir() and any(
        child.name.startswith(TABLE_PARTITION) for child in local.iterdir())


def uri_inputs(session, uri: str) -> list[InputFile]:
    """The files under a URI (recursively, sorted, hidden entries skipped) as inputs for
    rpcwatch's readers."""
    filesystem, root = _filesystem(session, uri)
    if not filesystem.exists(root):
        raise InputError(f"{uri}: no such file or directory")
    files = []
    iterator = filesystem.listFiles(root, True)
    while iterator.hasNext():
        status = iterator.next()
        path = status.getPath()
        relative = path.toString()[len(root.toString()):]
        if not any(part.startswith((".", "_")) for part in relative.split("/") if part):
            files.append((path.toString(), status.getLen()))
    return [InputFile(name, partial(HadoopStream, session, name), size=size) for name, size in sorted(files)]


class HadoopStream(io.RawIOBase):
    """A file read through Hadoop's file system in the JVM, as a Python binary stream."""

    def __init__(self, session, uri: str):
        filesystem, path = _filesystem(session, uri)
        self._stream = filesystem.open(path)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        wanted = CHUNK if size is None or size < 0 else min(size, CHUNK)
        return bytes(self._stream.readNBytes(wanted))

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()


def _filesystem(session, uri: str):
    jvm = session.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return path.getFileSystem(session.sparkContext._jsc.hadoopConfiguration()), path


def _table_partitions(session, dataset: str) -> list[tuple[str, str]]:
    """``(table, location)`` of each table partition, listed through Hadoop's file
    system so every URI scheme Spark is configured for works."""
    filesystem, root = _filesystem(session, dataset)
    if not filesystem.exists(root) or not filesystem.getFileStatus(root).isDirectory():
        return []
    return sorted((status.getPath().getName()[len(TABLE_PARTITION):], status.getPath().toString())
                  for status in filesystem.listStatus(root)
                  if status.isDirectory() and status.getPath().getName().startswith(TABLE_PARTITION))


class SparkDatasetScan:
    """A :class:`~rpcwatch.hunt.BatchSource`: matched rows of each dataset, per source log."""

    def __init__(self, engine: SparkEngine, datasets: Sequence[str], by_table: dict[str, list[BoundRule]]):
        self.engine = engine
        self.datasets = list(datasets)
        self.by_table = by_table

    def batches(self, stats: list[ReadStats]) -> Iterator[TableBatch]:
        for dataset in self.datasets:
            tables = _table_partitions(self.engine.session, dataset)
            if not tables:
                stats.append(ReadStats(dataset, FORMAT, error="not an export-parquet dataset (no table=... folder)"))
                continue
            for table, location in tables:
                yield from self._scan(table, location, self.by_table.get(table, []), stats)

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
