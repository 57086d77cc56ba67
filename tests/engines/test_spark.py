"""The Spark engine against the DuckDB engine: the same alerts from the same inputs."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from documents import documents

from rpcwatch.engines.duckdb import DuckDBEngine
from rpcwatch.hunt import Hunt, plan_hunt
from rpcwatch.sources import expand_inputs

BROAD_RULES = Path(__file__).parent / "rules"
#: the Zeek and Windows kinds of corpus file SOURCES.md lists (pcaps are converted to Zeek
#: tables by rpcwatch's own reader, so they add nothing engine-specific)
KINDS = ("Zeek TSV", "Zeek JSON", "EVTX", "NDJSON", "zip: covenant_dcom_registerxll_2020-09-18145959.json",
         "zip: covenant_sharpsc_query", "zip: covenant_sharpwmi_create_dcerpc_wmi_2020-08-06035621.json",
         "zip: empire_psexec_dcerpc_tcp_svcctl_2020")


def corpus_log_files(corpus: Path) -> list[Path]:
    files = []
    for line in (corpus / "SOURCES.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) > 6 and cells[2].startswith("`") and cells[5].startswith(KINDS) and ".cap" not in cells[5]:
            files.append(corpus / cells[2].strip("`"))
    return files


def alert_keys(paths, engine, rules=(BROAD_RULES,)) -> Counter:
    """(rule, record id, input) of each alert; correlations by their first event time."""
    plan = plan_hunt([str(r) for r in rules])
    alerts = documents(Hunt(list(expand_inputs([str(p) for p in paths])), plan, engine))
    return Counter((a["rule"]["name"], str(_record_id(a)), (a.get("log") or {}).get("file", {}).get("path"))
                   for a in alerts)


def _record_id(alert: dict):
    original = alert.get("original") or {}
    return original.get("uid") or original.get("EventRecordID") or alert.get("correlation", {}).get("first_seen")


@pytest.fixture(scope="module")
def spark_engine(spark_session):
    from rpcwatch.engines.spark import SparkEngine

    return SparkEngine(session=spark_session)


@pytest.mark.slow
def test_spark_and_duckdb_raise_the_same_alerts_on_every_corpus_log(corpus, spark_engine):
    files = corpus_log_files(corpus)
    assert len(files) >= 100
    expected = alert_keys(files, DuckDBEngine())
    assert sum(expected.values()) > 1000  # the broad rules make the comparison meaningful
    assert len({name for name, _, _ in expected}) >= 6
    assert alert_keys(files, spark_engine) == expected


def test_spark_and_duckdb_agree_on_the_examples(spark_engine):
    examples = Path(__file__).resolve().parents[2] / "examples"
    expected = alert_keys([examples], DuckDBEngine(), rules=())
    assert expected
    assert alert_keys([examples], spark_engine, rules=()) == expected


@pytest.mark.slow
def test_a_parquet_dataset_hunted_by_spark_raises_the_alerts_of_its_logs(corpus, spark_engine, tmp_path):
    from rpcwatch.engines.spark_scan import SparkDatasetScan
    from rpcwatch.outputs.parquet import export_parquet

    files = corpus_log_files(corpus)
    export = export_parquet(list(expand_inputs([str(p) for p in files])), tmp_path / "dataset")
    assert export.rows > 100_000
    plan = plan_hunt([str(BROAD_RULES)])
    hunt = Hunt([], plan, spark_engine, sources=[SparkDatasetScan(spark_engine, [str(tmp_path / "dataset")],
                                                                    plan.by_table)])
    scanned = Counter((a["rule"]["name"], str(_record_id(a)), (a.get("log") or {}).get("file", {}).get("path"))
                      for a in documents(hunt))
    assert scanned == alert_keys(files, DuckDBEngine())
    assert sum(s.records for s in hunt.report.stats) == export.rows


@pytest.mark.slow
def test_spark_and_duckdb_build_the_same_incidents(corpus, spark_engine):
    """Triage's second pass (the evidence search) runs on the same engine as the hunt."""
    from rpcwatch.triage.run import run_triage

    examples = Path(__file__).resolve().parents[2] / "examples"
    paths = [str(examples), str(corpus / "rita")]

    def incidents(engine) -> list[dict]:
        result = run_triage(list(expand_inputs(paths)), plan_hunt(), engine)
        return [incident.to_dict() for incident in result.incidents]

    expected = incidents(DuckDBEngine())
    assert len(expected) > 10
    assert incidents(spark_engine) == expected
