"""rules convert: golden query text per SIEM, parsers where PyPI has one, and the SQL
targets executed on corpus logs against the alerts rpcwatch hunt raises."""
from __future__ import annotations

import io
import os
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
import sqlglot
from luqum.parser import parser as lucene_parser

from rpcwatch.config import Config
from rpcwatch.engines.duckdb import DuckDBEngine
from rpcwatch.hunt import Hunt, plan_hunt
from rpcwatch.outputs.conversion import write_conversion
from rpcwatch.sigma.convert import convert, view_name
from rpcwatch.sources import LogReading, expand_inputs
from rpcwatch.sources.windows import WINDOWS_TABLE, with_text_event_data

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "convert"
SIEM_TARGETS = ("splunk", "lucene", "esql", "kusto")
#: golden files are rewritten instead of compared when this is set
UPDATE = os.environ.get("RPCWATCH_UPDATE_GOLDEN") == "1"


def converted_text(target: str, pipeline: str | None = None) -> str:
    stream = io.StringIO()
    write_conversion(convert([], target, pipeline), stream)
    return stream.getvalue()


@pytest.mark.parametrize("target", SIEM_TARGETS)
def test_bundled_rules_convert_to_the_golden_query_text(target):
    golden = GOLDEN / f"{target}.txt"
    text = converted_text(target)
    if UPDATE:
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")


def test_every_bundled_detection_rule_converts_for_every_target():
    for target in (*SIEM_TARGETS, "duckdb", "spark-sql"):
        result = convert([], target)
        converted = {c.title for c in result.conversions if c.queries}
        assert {"Detect RPC from Internet", "Detect RPC from Internet - Windows"} <= converted, target


def test_rules_that_correlations_reference_are_complete_queries_too():
    """pySigma leaves a referenced rule unfinalized; each rule must stand on its own."""
    for conversion in convert([], "esql").conversions:
        assert all(query.startswith("from ") for query in conversion.queries), conversion.title


def test_kusto_quotes_dotted_names_and_uses_ipv6_ranges_for_ipv6_networks():
    text = converted_text("kusto", "native")
    assert "['id.resp_p'] == 135" in text and "ipv4_is_in_range(['id.resp_h'], \"10.0.0.0/8\")" in text
    assert 'ipv6_is_in_range([\'id.resp_h\'], "fc00::/7")' in text
    assert 'ipv4_is_in_range(id.resp_h' not in text and "'id.resp_p' ==" not in text.replace("['id.resp_p']", "")


def test_configured_networks_reach_every_target():
    config = Config().with_internal(["198.51.100.0/24", "2001:db8:1::/48"])
    for target in SIEM_TARGETS:
        text = "\n".join(q for c in convert([], target, config=config).conversions for q in c.queries)
        text = text.replace("\\", "")  # Lucene escapes / and :
        assert "198.51.100.0/24" in text and "2001:db8:1::/48" in text, target
    sql = "\n".join(q for c in convert([], "duckdb", config=config).conversions for q in c.queries)
    assert "'00000000000000000000ffffc6336400' AND '00000000000000000000ffffc63364ff'" in sql


def test_lucene_queries_parse():
    for conversion in convert([], "lucene").conversions:
        for query in conversion.queries:
            lucene_parser.parse(query)


@pytest.mark.parametrize("pipeline", ["sentinel", "native"])
def test_kql_queries_parse(pipeline):
    """An ANTLR KQL grammar (kusto-query-language-parser); it checks syntax only: the
    backend's quoted 'id.resp_p' is valid KQL that compares a string literal."""
    from antlr4 import InputStream
    from kusto_query_language_parser.parser.kql_traverse import KqlTraverse

    queries = [q for c in convert([], "kusto", pipeline).conversions for q in c.queries]
    assert queries
    for query in queries:
        KqlTraverse().parse(InputStream(query))


@pytest.mark.parametrize("target,dialect", [("duckdb", "duckdb"), ("spark-sql", "spark")])
def test_sql_queries_parse(target, dialect):
    result = convert([], target)
    for statement in [*result.prelude, *(q for c in result.conversions for q in c.queries)]:
        sqlglot.parse_one(statement, read=dialect)


def corpus_tables(paths) -> dict[str, pa.Table]:
    """The readers' tables in the shape docs/siem.md gives the SQL targets: one view per
    table; Windows event data as text (producers write it with differing types)."""
    batches: dict[str, list[pa.Table]] = {}
    for batch in LogReading(list(expand_inputs([str(p) for p in paths]))).batches():
        data = with_text_event_data(batch.data) if batch.table == WINDOWS_TABLE else batch.data
        batches.setdefault(batch.table, []).append(data)
    return {table: pa.concat_tables(parts, promote_options="permissive") for table, parts in batches.items()}


def hunt_keys(paths) -> Counter:
    alerts = Hunt(list(expand_inputs([str(p) for p in paths])), plan_hunt(), DuckDBEngine())
    return Counter((a.rule.name, a.record_id) for a in alerts if a.original is not None)


def sql_keys(target: str, tables: dict[str, pa.Table], run) -> Counter:
    """Run every converted query whose table exists; (rule, record id) of each row."""
    keys: Counter = Counter()
    result = convert([], target)
    for conversion in result.conversions:
        for query in conversion.queries:
            table = next((t for t in tables if f" FROM {view_name(t)} " in query), None)
            if table is not None:
                for row in run(query):
                    keys[(conversion.title, str(row.get("uid") or row.get("EventRecordID")))] += 1
    return keys


CORPUS_LOGS = ("rita/test_data/missing_host", "otrf-security-datasets/datasets/atomic/windows/lateral_movement/host",
               "evtx-attack-samples/Lateral Movement")


@pytest.mark.slow
def test_duckdb_sql_returns_exactly_the_hunt_alerts(corpus):
    paths = [corpus / p for p in CORPUS_LOGS] + [Path(__file__).resolve().parents[2] / "examples"]
    tables = corpus_tables(paths)
    con = duckdb.connect()
    for statement in convert([], "duckdb").prelude:
        con.execute(statement)
    for table, data in tables.items():
        con.register(view_name(table), data)
    expected = hunt_keys(paths)
    assert expected
    assert sql_keys("duckdb", tables, lambda q: con.sql(q).to_arrow_table().to_pylist()) == expected


@pytest.mark.slow
def test_spark_sql_returns_exactly_the_hunt_alerts(corpus, spark_session):
    paths = [corpus / p for p in CORPUS_LOGS] + [Path(__file__).resolve().parents[2] / "examples"]
    tables = corpus_tables(paths)
    for statement in convert([], "spark-sql").prelude:
        spark_session.sql(statement)
    for table, data in tables.items():
        spark_session.createDataFrame(_spark_ready(data)).createOrReplaceTempView(view_name(table))
    expected = hunt_keys(paths)
    assert sql_keys("spark-sql", tables, lambda q: spark_session.sql(q).toArrow().to_pylist()) == expected


def _spark_ready(data: pa.Table) -> pa.Table:
    """Spark takes no dictionary or null-typed columns from Arrow: as text."""
    columns = [c.cast(pa.string()) if pa.types.is_null(c.type) or pa.types.is_dictionary(c.type) else c
               for c in data.columns]
    return pa.table(columns, names=data.column_names)
