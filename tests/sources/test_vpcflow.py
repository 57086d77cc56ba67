"""VpcFlowReader: Elastic's VPC and Transit Gateway flow log fixtures and their planted
copies (SOURCES.md), the seed rule's detections on them exactly, custom formats with
header lines that change mid-file, triage, the sweep correlation and the converted SQL on
table ``aws.vpcflow``; sniffing; broken lines."""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from rpcwatch.sources.vpcflow import TGW_FIELDS, VPC_FIELDS, VPC_TABLE

from . import network_sources as net

pytestmark = pytest.mark.corpus

FOLDER = "network-sources/vpcflow"
#: SOURCES.md: per file, its records and the 1-based lines of its internet->TCP/135
#: records, with the outcome of each (ACCEPT, REJECT; Transit Gateway records have no action)
EXPECTED = {
    "test-extra-samples.log": (7, {}),
    "test-tcp-flag-sequence.log": (3, {}),
    "test-tgw-samples.log": (10, {}),
    "test-v5-all-fields.log": (1, {}),
    "planted/test-extra-samples.planted.log.gz": (10, {5: "established", 6: "blocked"}),
    "planted/test-tcp-flag-sequence.planted.log": (3, {2: "established"}),
    "planted/test-tgw-samples.planted.log": (10, {7: "unknown"}),
}
V2_HEADER = " ".join(VPC_FIELDS[:14])


def text_of(path: Path) -> str:
    return gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()


def by_line(path: Path, alerts) -> dict[int, object]:
    """The alerts by the 1-based line of the file whose record each one is (read here
    with the layouts SOURCES.md describes)."""
    lines, header = {}, None
    for number, line in enumerate(text_of(path).splitlines(), 1):
        values = line.split(" ")
        if values[0] == "version":
            header = values
            continue
        names = header or (TGW_FIELDS if values[3].startswith("tgw-") else VPC_FIELDS)
        record = dict(zip(names, values))
        lines[(record["srcaddr"], record["srcport"], record["dstaddr"], record["start"])] = number
    return {lines[(a.original["srcaddr"], str(a.original["srcport"]), a.original["dstaddr"],
                   str(a.original["start"]))]: a for a in alerts}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_file_raises_exactly_the_documented_detections(corpus, name):
    records, outcomes = EXPECTED[name]
    alerts, report = net.hunt([corpus / FOLDER / name])
    found = by_line(corpus / FOLDER / name, net.detections(alerts))
    assert len(found) == len(alerts)
    assert {number: alert.outcome for number, alert in found.items()} == outcomes
    [stats] = report.stats
    assert (stats.format, stats.records, stats.skipped_total, stats.warnings) == ("aws-vpcflow", records, 0, {})


def test_default_formats_name_their_fields_by_width(corpus):
    data = net.tables([corpus / FOLDER / "test-v5-all-fields.log", corpus / FOLDER / "test-tgw-samples.log"])[VPC_TABLE]
    v5 = next(row for row in data.to_pylist() if row["version"] == 5)
    assert {name: value for name, value in v5.items() if value is not None} == {
        "version": 5, "account-id": "64111117617", "interface-id": "eni-069xxxxxb7a490", "srcaddr": "89.160.20.156",
        "dstaddr": "10.200.0.0", "srcport": 50041, "dstport": 33004, "protocol": 17, "packets": 52, "bytes": 1,
        "start": 164000066, "end": 1640000297, "action": "REJECT", "log-status": "OK",
        "vpc-id": "vpc-09676f97xxxxxb8a7", "subnet-id": "subnet-02d645xxxxxxxdbc0", "instance-id": "i-0axxxxxx1ad77",
        "tcp-flags": 1, "type": "IPv4", "pkt-srcaddr": "89.160.20.156", "pkt-dstaddr": "10.200.0.80",
        "region": "us-east-1", "az-id": "use1-az5", "pkt-src-aws-service": "AMAZON",
        "pkt-dst-aws-service": "CLOUDFRONT", "flow-direction": "ingress", "traffic-path": 1}
    tgw = [row for row in data.to_pylist() if row["tgw-id"]]
    assert len(tgw) == 10 and {row["log-status"] for row in tgw} == {"OK", "NODATA", "SKIPDATA"}
    assert tgw[6]["dstport"] == 443 and tgw[6]["flow-direction"] == "ingress"


def test_header_lines_name_the_fields_of_the_lines_after_them(tmp_path):
    """A custom format, then another (concatenated S3 objects): each record is read by the
    header before it; a record of the wrong width is skipped and named."""
    log = tmp_path / "custom.log"
    log.write_text("\n".join([
        "version srcaddr dstaddr dstport protocol action start",
        "3 45.155.205.233 10.1.2.3 135 6 ACCEPT 1700000000",
        "3 45.155.205.233 10.1.2.4 135 6",
        "version start action protocol dstport dstaddr srcaddr srcport",
        "4 1700000060 REJECT 6 135 10.1.2.5 45.155.205.233 50000",
        "4 1700000060 REJECT 17 135 10.1.2.6 45.155.205.233 50001",
    ]) + "\n")
    alerts, report = net.hunt([log])
    assert sorted((a.destination_ip, a.outcome) for a in net.detections(alerts)) == [
        ("10.1.2.3", "established"), ("10.1.2.5", "blocked")]
    [stats] = report.stats
    assert stats.records == 4
    assert stats.skipped == {"wrong number of fields (the header names 7)": 1}




def test_triage_counts_accepted_flows_as_exposure(corpus):
    result = net.triage([corpus / FOLDER / "planted"])
    assert sorted(i.source for i in result.incidents) == ["52.213.180.42", "78.24.182.42", "89.160.20.112"]
    assert sorted((h.address, dict(h.sources)) for h in result.exposure) == [
        ("10.0.0.62", {"52.213.180.42": 1}), ("172.31.16.139", {"78.24.182.42": 1})]


def test_the_converted_sql_returns_the_hunted_records(corpus, spark_session):
    ends = ("srcaddr", "dstaddr", "dstport")
    assert len(net.check_converted_sql([corpus / FOLDER / "planted"], VPC_TABLE, ends, spark_session)) == 4


def test_the_prefilter_changes_nothing(corpus):
    assert len(net.detections(net.check_prefilter_changes_nothing([corpus / FOLDER / "planted"]))) == 4


def write_flows(folder: Path, records: list[tuple[str, str, int]]) -> Path:
    path = folder / "flows.log.gz"
    lines = [f"2 123456789010 eni-0a1b2c3d {src} {dst} {40000 + n} 135 6 1 44 {epoch} {epoch + 60} REJECT OK"
             for n, (src, dst, epoch) in enumerate(records)]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


def test_the_sweep_correlation_groups_by_the_source_column(tmp_path):
    alert = net.check_sweep(write_flows, tmp_path)
    assert alert.correlation["events_count"] == 5


def test_sniffing_picks_vpc_flow_logs_for_them_only(corpus, tmp_path):
    samples = {name: corpus / path for name, path in net.FORMAT_SAMPLES.items()}
    samples |= {name: corpus / FOLDER / name for name in EXPECTED}
    picked = {name: net.sniffed(path) for name, path in samples.items()}
    assert {name for name, fmt in picked.items() if fmt == "aws-vpcflow"} == set(EXPECTED)
    headerless_custom = tmp_path / "custom.log"
    headerless_custom.write_text("45.155.205.233 10.1.2.3 135 6 ACCEPT\n")
    assert net.sniffed(headerless_custom) is None


def test_header_line_only_with_known_names(tmp_path):
    log = tmp_path / "flows.log"
    log.write_text(f"{V2_HEADER}\nversion Bad:Name\n"
                   "2 1 eni-1 45.155.205.233 10.1.2.3 50000 135 6 1 44 1700000000 1700000060 ACCEPT OK\n")
    alerts, report = net.hunt([log])
    assert len(net.detections(alerts)) == 1
    assert list(report.stats[0].skipped) == [
        "header line with invalid field names (the lines after it are read by the header before it)"]


def test_a_followed_custom_format_log_reads_appended_records_with_its_header(tmp_path):
    """Live mode reads lines appended after its checkpoint with the header before them."""
    import json
    import subprocess
    import sys

    log, state, sink = tmp_path / "flows.log", tmp_path / "state", tmp_path / "alerts.jsonl"
    log.write_text("version start action protocol dstport dstaddr srcaddr srcport\n"
                   "4 1700000060 REJECT 6 135 10.1.2.5 45.155.205.233 50000\n")

    def watch_once():
        done = subprocess.run([sys.executable, "-m", "rpcwatch", "watch", str(log), "--once", "--state", str(state),
                               "--to", f"file:{sink}"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in sink.read_text().splitlines()]

    assert [a["destination"]["ip"] for a in watch_once()] == ["10.1.2.5"]
    with log.open("a") as out:
        out.write("4 1700000070 ACCEPT 6 135 10.1.2.7 45.155.205.233 50002\n")
    alerts = watch_once()
    assert [(a["destination"]["ip"], a["event"]["outcome"]) for a in alerts] == [
        ("10.1.2.5", "blocked"), ("10.1.2.7", "established")]
