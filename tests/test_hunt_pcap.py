"""`rpcwatch hunt` on packet captures: the same rules and alerts as on Zeek logs."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from sources.capture_edit import rewrite_addresses
from test_cli import run

pytestmark = pytest.mark.corpus

PSEXEC = ("otrf-security-datasets/datasets/atomic/windows/lateral_movement/network/"
          "empire_psexec_dcerpc_tcp_svcctl_WORKSTATION5_2020-09-20121608.cap")
PUBLIC_CLIENT = "203.0.114.7"


def hunt(capture: Path) -> list[dict]:
    result = run("hunt", str(capture), "--format", "jsonl", "-q")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_psexec_from_a_public_address_raises_the_rpc_alerts(corpus: Path, tmp_path: Path) -> None:
    capture = tmp_path / "psexec_public_client.pcap"
    rewrite_addresses(corpus / PSEXEC, capture, {"172.18.39.5": PUBLIC_CLIENT})
    alerts = hunt(capture)
    assert Counter(a["rule"]["name"] for a in alerts) == Counter({
        "DCE/RPC from Internet": 11, "Remote Execution over DCE/RPC from Internet": 2,
        "Detect RPC from Internet": 1, "RPC from Internet Followed by Remote Execution": 1})
    assert {a["source"]["ip"] for a in alerts} == {PUBLIC_CLIENT}
    calls = [(a["destination"]["port"], a["original"]["endpoint"], a["original"]["operation"])
             for a in alerts if a["rule"]["name"] == "DCE/RPC from Internet" and "operation" in a["original"]]
    assert calls[:3] == [(135, "epmapper", "ept_map"), (49726, "svcctl", "unknown-64"),
                         (49726, "svcctl", "CreateServiceA")]
    execution = [a["original"]["operation"] for a in alerts
                 if a["rule"]["name"] == "Remote Execution over DCE/RPC from Internet"]
    assert execution == ["CreateServiceA", "StartServiceA"]


def test_the_original_lab_capture_raises_nothing(corpus: Path) -> None:
    assert hunt(corpus / PSEXEC) == []


def test_a_port_135_that_answered_is_not_reported_as_rejected(tmp_path: Path) -> None:
    """An internet scanner: SYN, the server's SYN-ACK, the scanner's RST, and data on the
    same ports 15 s later that the server resets. Zeek logs the answered probe (RSTO, an
    established outcome) and the late data as a connection of its own; a reader that kept
    them together would call the exposed endpoint mapper a rejected attempt."""
    from sources.frames import ACK, PUSH, RST, SYN, ethernet, tcp, write_pcap

    scanner, server = "203.0.114.9", "10.1.1.5"
    packets = [(0.0, tcp(scanner, 40011, server, 135, SYN, 100)),
               (0.1, tcp(server, 135, scanner, 40011, SYN | ACK, 900, 101)),
               (0.11, tcp(scanner, 40011, server, 135, RST, 101)),
               (15.7, tcp(scanner, 40011, server, 135, PUSH | ACK, 101, 901, b"\x05\x00\x0b\x03" + bytes(12))),
               (15.8, tcp(server, 135, scanner, 40011, RST, 901))]
    capture = write_pcap(tmp_path / "probe.pcap", [(1_700_000_000 + ts, ethernet(p)) for ts, p in packets])
    alerts = hunt(capture)
    assert [(a["rule"]["name"], a["event"]["outcome"], a["original"]["conn_state"], a["original"]["history"])
            for a in alerts] == [("Detect RPC from Internet", "established", "RSTO", "ShR"),
                                 ("Detect RPC from Internet", "reset", "RSTRH", "Dr")]


def test_a_pcapng_with_times_past_year_9999_is_hunted(tmp_path: Path) -> None:
    """Timestamps with the high word 0xffffffff ended the run with OverflowError before:
    they are replaced (and counted) and the alert is raised."""
    from sources.frames import ethernet, handshake_to, pcapng

    frames = [ethernet(packet) for _, packet in handshake_to("203.0.114.9", "10.1.1.5")]
    capture = tmp_path / "future.pcapng"
    capture.write_bytes(pcapng([((0xFFFFFFFF << 32) | n, frame) for n, frame in enumerate(frames)]))
    alerts = hunt(capture)
    assert sorted((a["rule"]["name"], a["original"]["conn_state"]) for a in alerts) == [
        ("DCE/RPC from Internet", "SF"), ("Detect RPC from Internet", "SF")]
    export = run("export-parquet", str(capture), "-o", str(tmp_path / "out"))
    assert export.returncode == 0, export.stderr
    assert "1 rows in 1 files" in export.stderr
