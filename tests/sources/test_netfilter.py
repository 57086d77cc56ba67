"""NetfilterReader: Elastic's iptables fixture and its planted copy (SOURCES.md) as syslog
text and as a journald JSON export, the seed rule's detections on them exactly, the outer
header of ICMP errors, prefixes, times, triage, the sweep correlation and the converted
SQL on table ``netfilter``; sniffing; lines that are not packet lines."""
from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rpcwatch.sources.netfilter import NETFILTER_TABLE, NOT_A_PACKET

from . import network_sources as net

pytestmark = pytest.mark.corpus

ORIGINAL = "network-sources/iptables/test-iptables-raw.log"
PLANTED = "network-sources/iptables/planted/test-iptables-raw.planted.log"
#: SOURCES.md: "3 (L1, L5, L27)" of 27 records
PLANTED_LINES = [1, 5, 27]


def by_line(path: Path, alerts) -> list[int]:
    """The 1-based lines of the file whose packets the alerts are."""
    lines = path.read_text().splitlines()
    return sorted(next(n for n, line in enumerate(lines, 1)
                       if f"SRC={a.original['SRC']} DST={a.original['DST']} " in line and f"SPT={a.original['SPT']} "
                       in line) for a in alerts)


def test_the_planted_file_raises_exactly_the_documented_detections(corpus):
    alerts, report = net.hunt([corpus / PLANTED])
    assert by_line(corpus / PLANTED, net.detections(alerts)) == PLANTED_LINES
    assert {a.outcome for a in alerts} == {"unknown"}
    assert sorted(a.to_dict()["event"]["action"] for a in alerts) == ["[nft-drop-in]", "[wan-lan-default-D]",
                                                                     "iptables DROP_INPUT"]
    [stats] = report.stats
    assert (stats.format, stats.records, stats.skipped_total, stats.warnings) == ("netfilter", 27, 0, {})


def test_the_original_fixture_has_no_detection(corpus):
    alerts, report = net.hunt([corpus / ORIGINAL])
    assert alerts == [] and report.stats[0].records == 24


def test_an_icmp_error_is_read_by_its_outer_header(corpus):
    data = net.tables([corpus / PLANTED])[NETFILTER_TABLE].to_pylist()
    icmp = data[3]
    assert (icmp["SRC"], icmp["DST"], icmp["PROTO"], icmp["TYPE"], icmp["CODE"], icmp["DPT"]) == \
        ("192.168.2.71", "192.168.2.83", "ICMP", 3, 3, None)


def test_prefix_host_time_and_flags(corpus):
    data = net.tables([corpus / PLANTED])[NETFILTER_TABLE].to_pylist()
    written = (corpus / PLANTED).stat().st_mtime
    year = datetime.fromtimestamp(written, UTC).year
    january = datetime(year, 1, 8, 3, 37, 9, tzinfo=UTC)
    if january.timestamp() > written + 86_400:  # a file written in the first week of a year
        january = january.replace(year=year - 1)
    picked = [(row["host"], row["action"], row["IN"], row["OUT"], row["flags"]) for row in data]
    assert picked[0] == ("Hostname", "[wan-lan-default-D]", "eth0", None, "ACK")
    assert picked[3] == (None, "DENY", "eth0", None, None)
    assert picked[4] == ("example-host", "iptables DROP_INPUT", "eth0", None, "SYN")
    assert picked[14] == ("ubuntu-bionic", None, None, "lo", None)  # the kernel's uptime stamp is no prefix
    assert picked[17] == ("MainFirewall", "[WAN_OUT-2000-A]", "eth0", "eth2", "ACK PSH")
    assert picked[22] == ("Abc-A1", "[SOMETHING-1234-A]", "abc.123", "abc.123", None)
    assert data[1]["timestamp"] == datetime(2021, 3, 12, 14, 10, 18, tzinfo=UTC).timestamp()
    assert data[4]["timestamp"] == january.timestamp()
    assert data[15]["SRC"] == "fe80:0000:0000:0000:0084:88ff:feae:790a"


def test_a_date_without_year_is_the_latest_not_after_the_log_was_written(tmp_path):
    log = tmp_path / "kern.log"
    log.write_text("Dec 31 23:59:00 gw kernel: DROP IN=eth0 OUT= SRC=45.155.205.233 DST=10.0.0.1 LEN=40 "
                   "PROTO=TCP SPT=1 DPT=135 SYN \n"
                   "Jan  2 00:00:01 gw kernel: DROP IN=eth0 OUT= SRC=45.155.205.233 DST=10.0.0.2 LEN=40 "
                   "PROTO=TCP SPT=2 DPT=135 SYN \n")
    written = datetime(2024, 1, 5, tzinfo=UTC).timestamp()
    os.utime(log, (written, written))
    alerts, _ = net.hunt([log])
    assert sorted(a.timestamp for a in alerts) == ["2023-12-31T23:59:00.000000Z", "2024-01-02T00:00:01.000000Z"]


def journal(path: Path, lines: list[str]) -> Path:
    """``journalctl -o json`` entries of syslog lines: the kernel's message after ``kernel:``."""
    with path.open("w") as out:
        for number, line in enumerate(lines):
            message = line.split("kernel: ", 1)[-1].split(" ", 3)[-1] if "kernel: " not in line \
                else line.split("kernel: ", 1)[1]
            out.write(json.dumps({"__CURSOR": f"s={number}", "__REALTIME_TIMESTAMP": str(1704685029000000 + number),
                                  "_TRANSPORT": "kernel", "SYSLOG_IDENTIFIER": "kernel", "_HOSTNAME": "gw",
                                  "MESSAGE": message}) + "\n")
            out.write(json.dumps({"__CURSOR": f"t={number}", "__REALTIME_TIMESTAMP": "1704685029000000",
                                  "_TRANSPORT": "syslog", "SYSLOG_IDENTIFIER": "sshd", "_HOSTNAME": "gw",
                                  "MESSAGE": "Accepted publickey for root from 45.155.205.233 port 135"}) + "\n")
    return path


def test_a_journal_export_gives_the_same_detections(corpus, tmp_path):
    lines = [line for line in (corpus / PLANTED).read_text().splitlines() if "kernel: " in line]
    path = journal(tmp_path / "journal.json", lines)
    assert net.sniffed(path) == "netfilter"
    alerts, report = net.hunt([path])
    assert sorted((a.source_ip, a.destination_ip) for a in net.detections(alerts)) == [
        ("2a06:4880:1000::42", "fd00:10:20::5"), ("67.43.156.15", "10.4.0.5"), ("81.2.69.143", "172.16.54.114")]
    assert {a.original["host"] for a in alerts} == {"gw"}
    assert sorted(a.original["action"] for a in alerts) == ["[nft-drop-in]", "[wan-lan-default-D]",
                                                            "iptables DROP_INPUT"]
    [stats] = report.stats
    assert stats.format == "netfilter-journal-json"
    assert stats.skipped == {NOT_A_PACKET: len(lines)}


def test_other_syslog_messages_are_counted_whether_or_not_the_prefilter_runs(corpus, tmp_path):
    lines = (corpus / PLANTED).read_text().splitlines()
    mixed = tmp_path / "syslog"
    mixed.write_text("\n".join(lines[:3] + ["Jan  8 03:37:10 example-host sshd[135]: Accepted password for root",
                                            "Jan  8 03:37:11 example-host CRON[99]: (root) CMD (run-parts)"]
                               + lines[3:]) + "\n")
    for prefilter in (True, False):
        alerts, report = net.hunt([mixed], prefilter=prefilter)
        assert len(net.detections(alerts)) == 3
        assert report.stats[0].skipped == {NOT_A_PACKET: 2}




def test_triage_places_the_sources_without_claiming_exposure(corpus):
    result = net.triage([corpus / PLANTED])
    assert sorted(i.source for i in result.incidents) == ["2a06:4880:1000::42", "67.43.156.15", "81.2.69.143"]
    assert result.exposure == []  # a packet log says nothing of whether the host answered


def test_the_converted_sql_returns_the_hunted_packets(corpus, spark_session):
    ends = ("SRC", "DST", "DPT")
    assert len(net.check_converted_sql([corpus / PLANTED], NETFILTER_TABLE, ends, spark_session)) == 3


def test_the_prefilter_changes_nothing(corpus):
    assert len(net.detections(net.check_prefilter_changes_nothing([corpus / PLANTED]))) == 3


def write_log(folder: Path, records: list[tuple[str, str, int]]) -> Path:
    path = folder / "kern.log"
    with path.open("w") as out:
        for number, (src, dst, epoch) in enumerate(records):
            stamp = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            out.write(f"{stamp} gw kernel: [DROP] IN=eth0 OUT= SRC={src} DST={dst} LEN=60 TTL=50 ID={number} "
                      f"PROTO=TCP SPT={40000 + number} DPT=135 WINDOW=64240 RES=0x00 SYN URGP=0 \n")
    return path


def test_the_sweep_correlation_groups_by_the_source_column(tmp_path):
    alert = net.check_sweep(write_log, tmp_path)
    assert alert.correlation["first_seen"] == "2023-11-14T22:14:20.000000Z"


def test_sniffing_picks_netfilter_for_packet_logs_only(corpus, tmp_path):
    samples = {name: corpus / path for name, path in net.FORMAT_SAMPLES.items()}
    samples |= {"original": corpus / ORIGINAL, "planted": corpus / PLANTED}
    picked = {name: net.sniffed(path) for name, path in samples.items()}
    assert {name for name, fmt in picked.items() if fmt == "netfilter"} == {"original", "planted"}
    line = (corpus / PLANTED).read_text().splitlines()[4]
    document = tmp_path / "iptables-ecs.ndjson"
    document.write_text(json.dumps({"@timestamp": "2024-01-08T03:37:09Z", "event": {"original": line}}) + "\n")
    assert net.sniffed(document) != "netfilter"
