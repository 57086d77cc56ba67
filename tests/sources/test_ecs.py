"""EcsReader: Elastic's ECS test documents, the planted NDJSON and search response
(SOURCES.md), the seed rule's detections on them exactly, JSON texts cut into documents
at any block boundary, triage, the sweep correlation and the converted SQL on table
``ecs``; sniffing against Winlogbeat, EVE and journal exports."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from rpcwatch.sources import ecs
from rpcwatch.sources.ecs import ECS_TABLE, DocumentStream, container_of

from . import network_sources as net

pytestmark = pytest.mark.corpus

FOLDER = "network-sources/ecs"
EXPECTED_WRAPPER = f"{FOLDER}/aws-vpcflow-test-extra-samples.log-expected.json"
PLANTED = f"{FOLDER}/planted/aws-vpcflow-test-extra-samples.planted.ndjson"
SEARCH = f"{FOLDER}/planted/search-response.planted.json"
#: SOURCES.md: "5 (L4, L5, L8, L9, L12)" of 12 documents, with the outcome of each
#: (event.outcome allow/deny/failure; none written: unknown)
PLANTED_OUTCOMES = {4: "established", 5: "blocked", 8: "blocked", 9: "unknown", 12: "unknown"}
#: SOURCES.md: "2 (hit0, hit2)" of 3
SEARCH_HITS = ["h0", "h2"]


def source_of(document: dict) -> dict:
    return document.get("_source", document)


def by_line(path: Path, alerts) -> dict[int, object]:
    lines = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        document = source_of(json.loads(line))
        source = document.get("source") or {"ip": document.get("source.ip"), "port": document.get("source.port")}
        lines[(source.get("ip"), str(source.get("port")))] = number
    return {lines[(a.original["source.ip"], str(a.original["source.port"]))]: a for a in alerts}


def test_the_planted_documents_raise_exactly_the_documented_detections(corpus):
    alerts, report = net.hunt([corpus / PLANTED])
    found = by_line(corpus / PLANTED, net.detections(alerts))
    assert len(found) == len(alerts)
    assert {number: alert.outcome for number, alert in found.items()} == PLANTED_OUTCOMES
    assert {a.transport for a in alerts} == {"tcp"}  # L4, L5 carry only network.iana_number "6"
    [stats] = report.stats
    assert (stats.format, stats.records, stats.skipped_total) == ("ecs-json", 12, 0)


def test_a_search_response_raises_exactly_the_documented_detections(corpus):
    alerts, report = net.hunt([corpus / SEARCH])
    assert sorted(a.record_id for a in net.detections(alerts)) == SEARCH_HITS
    assert {a.original["_index"] for a in alerts} == {".ds-logs-suricata.eve-default-2018.07.05-000001"}
    [stats] = report.stats
    assert (stats.format, stats.records, stats.skipped_total) == ("ecs-json-text", 3, 0)


def test_the_test_file_wrapper_reads_its_documents(corpus):
    alerts, report = net.hunt([corpus / EXPECTED_WRAPPER])
    assert alerts == []
    data = net.tables([corpus / EXPECTED_WRAPPER])[ECS_TABLE]
    assert data.num_rows == 7 == report.stats[0].records
    assert data.column("network.transport").to_pylist() == ["tcp", None, None, "tcp", "tcp", "icmp", "icmp"]
    assert data.column("event.outcome").to_pylist() == ["allow", None, None, "allow", "deny", "allow", "deny"]


def documents_of(text: bytes, block: int, monkeypatch) -> list:
    monkeypatch.setattr(ecs, "SCAN_BLOCK", block)
    stripped = text.lstrip()
    framed = io.BufferedReader(DocumentStream(io.BytesIO(text), container_of(stripped[:1 << 16]),
                                              len(text) - len(stripped))).read()
    return [json.loads(line) for line in framed.splitlines()]


TRICKY = [{"a": "}{][", "b": "quote \" and \\\\ and \\\" end", "c": [{"d": "x\\"}, []]},
          {"e": "\\\\\\\"}", "f": {"g": {"h": []}}}, {"multi": "line\\nbreak"}]


@pytest.mark.parametrize("shape", ["array", "expected", "search", "pretty", "compact search"])
@pytest.mark.parametrize("block", [1, 2, 3, 5, 7, 64, 1 << 20])
def test_json_texts_become_their_documents_at_any_block_boundary(shape, block, monkeypatch):
    hits = [{"_index": "i", "_id": str(n), "_source": d} for n, d in enumerate(TRICKY)]
    texts = {
        "array": json.dumps(TRICKY, indent=2),
        "expected": "  \n" + json.dumps({"expected": TRICKY}, indent=4),
        "search": json.dumps({"took": 1, "_shards": {"total": 1, "hits": [9]},
                              "hits": {"total": {"value": 3}, "hits": hits}, "aggregations": {"x": [{"y": 1}]}},
                             indent=2),
        "pretty": "".join(json.dumps(d, indent=1) + "\n" for d in TRICKY),
        "compact search": json.dumps({"took": 1, "hits": {"hits": hits}}),
    }
    expected = hits if "search" in shape else TRICKY
    assert documents_of(texts[shape].encode(), block, monkeypatch) == expected


def test_a_truncated_text_keeps_its_whole_documents_and_counts_the_cut_one(tmp_path):
    hits = [{"_id": str(n), "_source": {"source": {"ip": "45.155.205.233", "port": 50000 + n},
                                        "destination": {"ip": f"10.0.0.{n}", "port": 135},
                                        "network": {"transport": "tcp"}, "@timestamp": "2024-01-08T03:39:00Z"}}
            for n in range(1, 4)]
    text = json.dumps({"took": 2, "hits": {"hits": hits}}, indent=2)
    path = tmp_path / "cut.json"
    path.write_text(text[:text.rindex('"port": 135')])
    alerts, report = net.hunt([path])
    assert sorted(a.destination_ip for a in alerts) == ["10.0.0.1", "10.0.0.2"]
    assert report.stats[0].skipped == {"not a JSON object (malformed line)": 1}


def test_triage_places_the_sources_and_the_allowed_flow(corpus):
    result = net.triage([corpus / PLANTED])
    assert sorted(i.source for i in result.incidents) == ["193.163.125.10", "45.155.205.233", "78.24.182.42",
                                                          "81.2.69.143"]
    assert [(h.address, dict(h.sources)) for h in result.exposure] == [("172.31.16.139", {"78.24.182.42": 1})]


def test_the_converted_sql_returns_the_hunted_documents(corpus, spark_session):
    ends = ("source.ip", "destination.ip", "destination.port")
    assert len(net.check_converted_sql([corpus / PLANTED, corpus / SEARCH], ECS_TABLE, ends, spark_session)) == 7


def test_the_prefilter_changes_nothing(corpus):
    assert len(net.detections(net.check_prefilter_changes_nothing([corpus / PLANTED, corpus / SEARCH]))) == 7


def write_documents(folder: Path, records: list[tuple[str, str, int]]) -> Path:
    path = folder / "flows.ndjson"
    with path.open("w") as out:
        for number, (src, dst, epoch) in enumerate(records):
            out.write(json.dumps({"@timestamp": f"2023-11-14T{(epoch // 3600) % 24:02d}:{(epoch // 60) % 60:02d}:"
                                                f"{epoch % 60:02d}Z", "_id": str(number),
                                  "source.ip": src, "source.port": 40000 + number, "destination.ip": dst,
                                  "destination.port": 135, "network.iana_number": "6"}) + "\n")
    return path


def test_the_sweep_correlation_groups_by_the_source_column(tmp_path):
    alert = net.check_sweep(write_documents, tmp_path)
    assert [e["record"] for e in alert.correlation["events"]] == ["0", "1", "2", "3", "4"]


def test_sniffing_picks_ecs_for_ecs_documents_only(corpus, tmp_path):
    samples = {name: corpus / path for name, path in net.FORMAT_SAMPLES.items()}
    samples |= {"wrapper": corpus / EXPECTED_WRAPPER, "planted": corpus / PLANTED, "search": corpus / SEARCH}
    picked = {name: net.sniffed(path) for name, path in samples.items()}
    assert {name for name, fmt in picked.items() if fmt == "ecs-json"} == {"wrapper", "planted", "search"}
    winlogbeat = tmp_path / "winlogbeat.ndjson"
    winlogbeat.write_text(json.dumps({"@timestamp": "2024-01-08T03:39:00Z", "source": {"ip": "45.155.205.233"},
                                      "winlog": {"channel": "Security", "event_id": "5156"}}) + "\n")
    assert net.sniffed(winlogbeat) == "windows-json"
