"""SuricataEveReader: Elastic's EVE fixture and its planted copy (SOURCES.md), the seed
rule's detections on them exactly, triage, the sweep correlation and the converted SQL on
table ``suricata.eve``; sniffing against the other JSON formats; broken lines."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rpcwatch.sources.suricata import SURICATA_TABLE

from . import network_sources as net

pytestmark = pytest.mark.corpus

ORIGINAL = "network-sources/suricata/test-eve-small.log"
PLANTED = "network-sources/suricata/planted/test-eve-small.planted.log"
#: SOURCES.md: "4 (L2, L8, L13, L15)" of 21 records, with the outcome of each (flow.state
#: of flow events: L8 new, L13 closed; alert and netflow events have none)
PLANTED_OUTCOMES = {2: "unknown", 8: "no-reply", 13: "established", 15: "unknown"}


def by_line(path: Path, alerts) -> dict[int, object]:
    """The alerts by the 1-based line of the file whose event each one is."""
    lines = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        event = json.loads(line)
        lines[(event["timestamp"], event["event_type"], event.get("src_ip"), event.get("src_port"))] = number
    return {lines[(a.original["timestamp"], a.original["event_type"], a.original["src_ip"],
                   a.original["src_port"])]: a for a in alerts}


def test_the_planted_file_raises_exactly_the_documented_detections(corpus):
    alerts, report = net.hunt([corpus / PLANTED])
    found = by_line(corpus / PLANTED, net.detections(alerts))
    assert len(net.detections(alerts)) == len(found)
    assert {number: alert.outcome for number, alert in found.items()} == PLANTED_OUTCOMES
    assert {a.transport for a in found.values()} == {"tcp"}
    [stats] = report.stats
    assert (stats.format, stats.records, stats.skipped_total, stats.warnings) == ("suricata-eve", 21, 0, {})


def test_the_original_fixture_has_no_detection_and_reads_whole(corpus):
    alerts, report = net.hunt([corpus / ORIGINAL])
    assert alerts == []
    assert report.stats[0].records == 12 and report.stats[0].skipped_total == 0




def test_an_alert_reads_the_event_through_the_table_roles(corpus):
    alerts, _ = net.hunt([corpus / PLANTED])
    flow = next(a for a in alerts if a.original["event_type"] == "flow" and a.outcome == "established")
    document = flow.to_dict()
    assert document["source"] == {"ip": "45.155.205.233", "port": 55641, "packets": 6, "bytes": 1012}
    assert document["destination"] == {"ip": "192.168.156.70", "port": 135, "packets": 5, "bytes": 768}
    assert document["network"] == {"transport": "tcp", "protocol": "dcerpc"}
    assert document["event"]["dataset"] == SURICATA_TABLE
    assert document["@timestamp"] == "2018-07-05T19:09:20.000000Z"
    assert flow.record_id == "904992230150281"
    assert "stats.uptime" not in flow.original and "dns.rrname" not in flow.original


def test_triage_places_the_sources_and_the_exposed_host(corpus):
    result = net.triage([corpus / PLANTED])
    assert sorted(i.source for i in result.incidents) == ["193.163.125.10", "2a06:4880:1000::42", "45.155.205.233"]
    assert [(h.address, dict(h.sources)) for h in result.exposure] == [("192.168.156.70", {"45.155.205.233": 1})]
    assert result.evidence.tables_seen == {SURICATA_TABLE}


def test_the_converted_sql_returns_the_hunted_events(corpus, spark_session):
    ends = ("src_ip", "dest_ip", "dest_port")
    assert len(net.check_converted_sql([corpus / PLANTED], SURICATA_TABLE, ends, spark_session)) == 4


def test_the_prefilter_changes_nothing(corpus):
    assert len(net.detections(net.check_prefilter_changes_nothing([corpus / PLANTED]))) == 4


def write_eve(folder: Path, records: list[tuple[str, str, int]]) -> Path:
    path = folder / "eve.json"
    with path.open("w") as out:
        for number, (src, dst, epoch) in enumerate(records):
            stamp = f"2023-11-14T{(epoch // 3600) % 24:02d}:{(epoch // 60) % 60:02d}:{epoch % 60:02d}.000000+0000"
            out.write(json.dumps({"timestamp": stamp, "flow_id": number, "event_type": "flow", "src_ip": src,
                                  "src_port": 40000 + number, "dest_ip": dst, "dest_port": 135, "proto": "TCP",
                                  "flow": {"pkts_toserver": 1, "pkts_toclient": 0, "state": "new"}}) + "\n")
    return path


def test_the_sweep_correlation_groups_by_the_source_column(tmp_path):
    alert = net.check_sweep(write_eve, tmp_path)
    assert [e["record"] for e in alert.correlation["events"]] == [0, 1, 2, 3, 4]


def test_sniffing_picks_eve_for_eve_only(corpus):
    picked = {name: net.sniffed(corpus / path) for name, path in net.FORMAT_SAMPLES.items()}
    assert {name for name, fmt in picked.items() if fmt == "suricata-eve"} == {"suricata-eve", "suricata-eve planted"}


def test_ecs_documents_of_suricata_events_are_not_eve(tmp_path):
    """Filebeat's Suricata module nests EVE under suricata.eve and writes @timestamp."""
    document = {"@timestamp": "2018-07-05T19:07:20.910Z", "source": {"ip": "45.155.205.233"},
                "suricata": {"eve": {"event_type": "alert", "timestamp": "2018-07-05T15:07:20.910626-0400"}}}
    path = tmp_path / "ecs.ndjson"
    path.write_text(json.dumps(document) + "\n")
    assert net.sniffed(path) != "suricata-eve"


def test_broken_lines_are_skipped_and_named(corpus, tmp_path):
    lines = (corpus / PLANTED).read_text().splitlines()
    broken = tmp_path / "eve.json"
    broken.write_text("\n".join(lines[:3] + ['{"timestamp": "2018-07-05T15:09:20', "not json at all"] + lines[3:])
                      + "\n")
    alerts, report = net.hunt([broken])
    assert len(net.detections(alerts)) == 4
    [stats] = report.stats
    assert stats.skipped == {"not a JSON object (malformed line)": 2}
    assert stats.records == 23
