"""``rpcwatch export-parquet``: logs read by rpcwatch's readers, written as a Parquet
dataset partitioned by table and day (``table=zeek.conn/date=2024-04-19/...``), so that a
cluster reads typed columns instead of parsing text again. Each record keeps the log it
came from in ``__file__`` (alerts name it as ``log.file.path``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from rpcwatch.schema import FILE_COLUMN, RAW_COLUMN, table_info
from rpcwatch.sources import LogReading, ReadStats
from rpcwatch.sources.inputs import InputFile
from rpcwatch.sources.windows import WINDOWS_TABLE, with_text_event_data

#: partition columns; the table name is kept as Spark and Hive write it (key=value)
PARTITIONS = ("table", "date")
UNDATED = "unknown"


@dataclass
class ParquetExport:
    rows: int = 0
    files: int = 0
    stats: list[ReadStats] = field(default_factory=list)


def export_parquet(inputs: list[InputFile], directory: Path) -> ParquetExport:
    """Write every record of ``inputs`` under ``directory``; one write per batch, files
    named by the batch so repeated exports into one directory add rather than overwrite."""
    export = ParquetExport()
    reading = LogReading(inputs)
    export.stats = reading.stats
    prefix = f"part-{datetime.now(UTC):%Y%m%dT%H%M%S%f}"
    for number, batch in enumerate(reading.batches()):
        data = batch.data.drop_columns([c for c in (RAW_COLUMN,) if c in batch.data.column_names])
        if batch.table == WINDOWS_TABLE:  # one schema for all producers' event data
            data = with_text_event_data(data)
        data = _partitioned(data, batch.table, batch.path)
        # No file_visitor: Arrow calls it on its I/O threads and can drop its reference to
        # the Python callable there after write_dataset returned; if the interpreter is
        # exiting by then, that thread is stopped inside C++ and the process aborts
        # ("terminate called without an active exception", apache/arrow#36980). Files
        # are counted by their names instead.
        ds.write_dataset(data, directory, format="parquet", partitioning=list(PARTITIONS),
                         partitioning_flavor="hive", existing_data_behavior="overwrite_or_ignore",
                         basename_template=f"{prefix}-{number}-{{i}}.parquet")
        export.rows += data.num_rows
    export.files = sum(1 for _ in directory.rglob(f"{prefix}-*.parquet"))
    return export


def _partitioned(data: pa.Table, table: str, path: str) -> pa.Table:
    data = data.append_column(FILE_COLUMN, pa.array([path] * data.num_rows, pa.string()))
    data = data.append_column("table", pa.array([table] * data.num_rows, pa.string()))
    return data.append_column("date", _dates(data, table))


def _dates(data: pa.Table, table: str) -> pa.Array:
    """The UTC day of each record from the table's time column (epoch seconds or ISO text)."""
    column = table_info(table).time
    if column is None or column not in data.column_names:
        return pa.array([UNDATED] * data.num_rows, pa.string())
    values = data.column(column).combine_chunks()
    if pa.types.is_floating(values.type) or pa.types.is_integer(values.type):
        micros = pc.cast(pc.multiply(pc.cast(values, pa.float64()), 1e6), pa.int64(), safe=False)
        days = pc.strftime(micros.cast(pa.timestamp("us")), format="%Y-%m-%d")
    else:  # ISO-8601 text (Windows SystemTime): the date is its first ten characters
        days = pc.utf8_slice_codeunits(pc.cast(values, pa.string()), 0, 10)
        days = pc.if_else(pc.match_substring_regex(days, r"^\d{4}-\d{2}-\d{2}$"), days, pa.scalar(None, pa.string()))
    return pc.fill_null(days, UNDATED)
