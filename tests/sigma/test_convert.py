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
import yaml
from luqum.parser import parser as lucene_parser

from rpcwatch.config import Config
from rpcwatch.engines.duckdb import DuckDBEngine
from rpcwatch.hunt import Hunt, plan_hunt
from rpcwatch.outputs.conversion import write_conversion
from rpcwatch.sigma.convert import convert, view_name
from rpcwatch.sources import LogReading, expand_inputs
from rpcwatch.sources.windows import WINDOWS_TABLE, with_text_event_data

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "convert"
#: every pySigma backend the test environment installs (the [siem] extra), found by discovery
SIEM_TARGETS = ("elastalert", "eql", "esql", "kusto", "lucene", "splunk", "splunk_spl2")
WINDOWS_RULE = "Detect RPC from Internet - Windows"
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


def test_the_siem_targets_are_the_installed_backends():
    from rpcwatch.sigma.targets import targets

    assert sorted(targets()) == sorted({*SIEM_TARGETS, "duckdb", "spark-sql"})


def test_every_bundled_detection_rule_converts_for_every_target():
    for target in (*SIEM_TARGETS, "duckdb", "spark-sql"):
        result = convert([], target)
        converted = {c.title for c in result.conversions if c.queries}
        assert {"Detect RPC from Internet", WINDOWS_RULE} <= converted, target


@pytest.mark.parametrize("target", [*SIEM_TARGETS, "duckdb", "spark-sql"])
def test_windows_rule_covers_sysmon_3_and_security_5156_5157_in_every_target(target):
    [windows] = [c for c in convert([], target).conversions if c.title == WINDOWS_RULE]
    assert windows.problem is None and len(windows.queries) == 2
    sysmon, security = (query_text(target, query).lower() for query in windows.queries)
    assert "sysmon" in sysmon and "5156" not in sysmon
    assert "5156" in security and "5157" in security and "sysmon" not in security


def query_text(target: str, query: str) -> str:
    """The query itself (an ElastAlert rule is YAML around it, with the rule's description)."""
    return str(yaml.safe_load(query)["filter"]) if target == "elastalert" else query


@pytest.mark.parametrize("target", SIEM_TARGETS)
def test_private_ranges_are_named_once_per_list(target):
    """The internal and non-routable lists are OR-ed and the private ranges are in both:
    each query names them once in its NOT list and once in its other list (the Windows
    rule's second orientation, the Zeek rule's internal destination)."""
    for conversion in convert([], target).conversions:
        if conversion.title in (WINDOWS_RULE, "Detect RPC from Internet"):
            for query in conversion.queries:
                text = query_text(target, query).replace("\\", "")
                assert text.count("192.168.0.0/16") == text.count("10.0.0.0/8") == 2, (target, conversion.title)


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


def test_without_the_siem_extra_convert_names_the_extra_and_exits_2(monkeypatch, capsys):
    from rpcwatch import cli
    from rpcwatch.sigma import targets

    monkeypatch.setattr(targets, "installed_backends", lambda: {})
    assert cli.main(["rules", "convert", "--target", "splunk"]) == 2
    assert "target splunk needs pySigma's SIEM backends, which are not installed: pip install 'rpcwatch[siem]'" \
        in capsys.readouterr().err
    assert cli.main(["rules", "convert", "--target", "qradar"]) == 2
    assert "unknown target 'qradar' (available here: duckdb, spark-sql)" in capsys.readouterr().err
    assert cli.main(["rules", "convert", "--target", "duckdb"]) == 0
    assert "SELECT * FROM windows WHERE" in capsys.readouterr().out
