"""What the tests of the network-connection readers (Suricata EVE, VPC flow logs,
netfilter, ECS) share: the bundled rules hunted, triaged and converted on their tables,
and which reader content sniffing picks for every sample format."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import duckdb
import pyarrow as pa

from rpcwatch.alerts import Alert
from rpcwatch.config import Config
from rpcwatch.engines.duckdb import DuckDBEngine
from rpcwatch.hunt import Hunt, HuntReport, plan_hunt
from rpcwatch.sigma.convert import convert, view_name
from rpcwatch.sources import LogReading, expand_inputs, sniff_reader
from rpcwatch.sources.base import ReadStats
from rpcwatch.sources.inputs import open_decompressed
from rpcwatch.sources.jsonlines import as_string_column
from rpcwatch.triage.run import TriageResult, run_triage

RPC = "Detect RPC from Internet"
SWEEP = "RPC Sweep from Internet"
NETWORK_SOURCES = "network-sources"
#: one sample per format content sniffing tells apart (corpus paths)
FORMAT_SAMPLES = {
    "zeek-json": "zat/data/json/conn.log",
    "zeek-tsv": "rita/test_data/missing_host/2024-04-19/conn.00:00:00-01:00:00.log.gz",
    "evtx-json": "sigmahq-sigma/regression_data/rules-threat-hunting/windows/image_load/"
                 "image_load_win_werfaultsecure_dbgcore_dbghelp_load/8a2f4b1c-3d5e-4f7a-9b2c-1e4f6d8a9c2b.json",
    "ndjson-flat": "otrf-security-datasets/datasets/atomic/windows/lateral_movement/host/"
                   "covenant_sharpsc_query_dcerpc_smb_svcctl_2020-08-06012009.json",
    "suricata-eve": "network-sources/suricata/test-eve-small.log",
    "suricata-eve planted": "network-sources/suricata/planted/test-eve-small.planted.log",
}


def paths_of(paths: Iterable[Path | str]) -> list:
    return list(expand_inputs([str(p) for p in paths]))


def hunt(paths: Iterable[Path | str], prefilter: bool = True, config: Config | None = None,
         rules: Iterable[str] = ()) -> tuple[list[Alert], HuntReport]:
    run = Hunt(paths_of(paths), plan_hunt(rules, config, prefilter=prefilter), DuckDBEngine())
    return list(run), run.report


def triage(paths: Iterable[Path | str]) -> TriageResult:
    return run_triage(paths_of(paths), plan_hunt(), DuckDBEngine())


def detections(alerts: Iterable[Alert]) -> list[Alert]:
    return [a for a in alerts if a.rule.name == RPC]


def sniffed(path: Path) -> str | None:
    """The format name of the reader content sniffing picks for a file."""
    stats = ReadStats(str(path))
    [source] = paths_of([path])
    _, head, stream = open_decompressed(source, stats)
    stream.close()
    reader = sniff_reader(head)
    return None if reader is None else reader.format_name


def tables(paths: Iterable[Path | str]) -> dict[str, pa.Table]:
    """The readers' tables (no prefilter: every record), one per table name."""
    parts: dict[str, list[pa.Table]] = {}
    for batch in LogReading(paths_of(paths)).batches():
        parts.setdefault(batch.table, []).append(batch.data)
    return {table: _concatenated(data) for table, data in parts.items()}


def _concatenated(parts: list[pa.Table]) -> pa.Table:
    """One table; a field typed differently by different blocks as text (as Sigma compares)."""
    kinds: dict[str, set] = {}
    for part in parts:
        for field in part.schema:
            kinds.setdefault(field.name, set()).add(field.type)
    mixed = {name for name, types in kinds.items() if len(types - {pa.null()}) > 1}
    parts = [pa.table([as_string_column(part.column(name)) if name in mixed else part.column(name)
                       for name in part.column_names], names=part.column_names) for part in parts]
    return pa.concat_tables(parts, promote_options="permissive")


def seed_query(target: str, table: str) -> tuple[tuple[str, ...], str]:
    """The prelude and the query ``rules convert`` prints for the seed rule on ``table``."""
    result = convert([], target)
    [conversion] = [c for c in result.conversions if c.title == RPC]
    [query] = [q for q in conversion.queries if f" FROM {view_name(table)} " in q]
    return result.prelude, query


def duckdb_rows(table: str, data: pa.Table) -> list[dict]:
    prelude, query = seed_query("duckdb", table)
    con = duckdb.connect()
    for statement in prelude:
        con.execute(statement)
    con.register(view_name(table), data)
    return con.sql(query).to_arrow_table().to_pylist()


def spark_rows(spark, table: str, data: pa.Table) -> list[dict]:
    prelude, query = seed_query("spark-sql", table)
    for statement in prelude:
        spark.sql(statement)
    columns = [c.cast(pa.string()) if pa.types.is_null(c.type) else c for c in data.columns]
    spark.createDataFrame(pa.table(columns, names=data.column_names)).createOrReplaceTempView(view_name(table))
    return spark.sql(query).toArrow().to_pylist()


def endpoints(records: Iterable[dict], source: str, destination: str, port: str) -> list[tuple]:
    """(source, destination, port) of rows or alert records, sorted, in native names."""
    return sorted((r[source], r[destination], int(r[port])) for r in records)


def sweep(alerts: Iterable[Alert]) -> list[Alert]:
    return [a for a in alerts if a.rule.name == SWEEP]


def check_sweep(write: Callable[[Path, list[tuple[str, str, int]]], Path], folder: Path) -> Alert:
    """One internet source reaching TCP/135 on five internal hosts a minute apart (and a
    sixth source on four): exactly one sweep alert, grouped by the seed rule's
    ``id.orig_h`` as the table names it. ``write(path, [(src, dst, epoch)])`` writes the
    records in the format under test."""
    base = 1_700_000_000
    records = [("45.155.205.233", f"10.0.0.{host}", base + 60 * host) for host in range(1, 6)]
    records += [("193.163.125.10", f"10.0.1.{host}", base + 60 * host) for host in range(1, 5)]
    alerts, _ = hunt([write(folder, records)])
    assert len(detections(alerts)) == 9
    [found] = sweep(alerts)
    assert found.correlation["group"] == {"id.orig_h": "45.155.205.233"}
    assert found.source_ip == "45.155.205.233"
    assert found.correlation["value"] == 5
    return found


def check_prefilter_changes_nothing(paths: Iterable[Path | str]) -> list[Alert]:
    """The same alerts with and without the prefilter; the alerts."""
    with_filter, _ = hunt(paths)
    without, _ = hunt(paths, prefilter=False)
    assert sorted(a.event_id for a in with_filter) == sorted(a.event_id for a in without)
    return with_filter


def check_converted_sql(paths: Iterable[Path | str], table: str, ends: tuple[str, str, str], spark) -> list[tuple]:
    """The seed rule's converted SQL, run by DuckDB and Spark on the reader's table, returns
    the records the hunt alerted on; their (source, destination, port) in native names."""
    data = tables(paths)[table]
    alerts, _ = hunt(paths)
    expected = endpoints([a.original for a in detections(alerts)], *ends)
    assert endpoints(duckdb_rows(table, data), *ends) == expected
    assert endpoints(spark_rows(spark, table, data), *ends) == expected
    return expected
