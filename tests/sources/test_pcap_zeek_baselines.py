"""The pcap reader against Zeek's own regression baselines, field by field, and the cases
of Zeek's connection handling each of those traces was chosen for."""
from __future__ import annotations

from pathlib import Path

import pytest

from .zeek_btest import CONN_FIELDS, DCE_RPC_FIELDS, HISTORY_FIELDS, Pair, baseline_pairs, compare, reader_rows

pytestmark = pytest.mark.corpus

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"
PAIRS = baseline_pairs(CORPUS) if (CORPUS / "zeek-btest" / "pairs.tsv").exists() else []
BTEST_TRACES = "zeek-btest/testing/btest/Traces"


def rows(corpus: Path, trace: str) -> list[dict]:
    return reader_rows(corpus / BTEST_TRACES / trace, "zeek.conn")


def summary(row: dict, *fields: str) -> tuple:
    return tuple(row[f] for f in fields)


def test_every_baseline_of_the_corpus_is_compared(corpus: Path) -> None:
    assert [pair.kind for pair in PAIRS] == ["conn", "conn", "hist:1", "hist:2", "hist:3", "hist:4",
                                             "conn", "conn", "conn", "conn", "dce_rpc", "dce_rpc", "dce_rpc"]
    assert all(pair.trace.exists() and pair.baseline.exists() for pair in PAIRS)


@pytest.mark.parametrize("pair", PAIRS, ids=lambda pair: pair.id)
def test_every_field_equals_zeeks_baseline(corpus: Path, pair: Pair) -> None:
    """conn_state, history, sizes, packets, IP bytes, duration and missed_bytes of every
    conn row (history and conn_state of the printed ones), and the dce_rpc fields."""
    compared, differences = compare(pair)
    assert compared > 0
    assert set(pair.fields) <= set(CONN_FIELDS) | set(HISTORY_FIELDS) | set(DCE_RPC_FIELDS)
    assert differences == []


def test_a_syn_after_a_reset_starts_a_new_connection(corpus: Path) -> None:
    """pop3.pcap: the client's SYNs to two servers are each answered by a RST and re-sent
    twice with the same initial sequence number; Zeek logs every attempt (IsReuse: a SYN
    once a side has closed starts a new connection)."""
    found = rows(corpus, "pop3/pop3.pcap")
    refused = [summary(r, "id.orig_p", "conn_state", "history", "orig_pkts", "resp_pkts")
               for r in found if r["conn_state"] == "REJ"]
    assert sorted(refused) == [(26242, "REJ", "Sr", 1, 1)] * 3 + [(26245, "REJ", "Sr", 1, 1)] * 3
    assert len(found) == 11


def test_traffic_after_a_reset_is_a_connection_of_its_own(corpus: Path) -> None:
    """An internet scanner on 502/tcp: SYN, SYN-ACK, RST from the scanner, then data 15.6 s
    later answered by a RST. The port answered: Zeek logs RSTO ``ShR``, then the late data
    as RSTRH ``Dr`` (the reset connection was removed 5 s after the reset)."""
    scanner = [summary(r, "conn_state", "history", "orig_pkts", "resp_pkts", "orig_bytes")
               for r in rows(corpus, "modbus/modbus-and-non-modbus-p502.pcap") if r["id.orig_p"] == 60293]
    assert scanner == [("RSTO", "ShR", 2, 1, 0), ("RSTRH", "Dr", 1, 1, 109)]


def test_a_hole_filled_by_a_reordered_segment_is_not_missed(corpus: Path) -> None:
    """concurrent-range-requests: the server's segment at relative sequence 8449 arrives
    65 ms after the one behind it; Zeek's reassembler fills the hole, missed_bytes 0."""
    found = rows(corpus, "http/concurrent-range-requests.pcap")
    assert sorted(summary(r, "id.orig_p", "history", "missed_bytes") for r in found) == [
        (58716, "ShADadFf", 0), (58718, "ShADadtFf", 0), (58720, "ShADadFf", 0)]


def test_data_acknowledged_but_never_seen_is_missed(corpus: Path) -> None:
    """miss_end_data: none of the responder's 2902 bytes was captured, only its FIN; the
    originator's acknowledgement of the FIN reveals the gap (history ``g``)."""
    row, = rows(corpus, "tcp/miss_end_data.pcap")
    assert summary(row, "conn_state", "history", "resp_bytes", "missed_bytes") == ("SF", "ShADafgF", 2902, 2902)


def test_dhcp_replies_are_turned_round_to_the_client_port(corpus: Path) -> None:
    """68/udp is DHCP's client port: the server's replies from 67 to 68 are logged with the
    client as originator (``^``); a reply to the broadcast address is not turned round."""
    found = {summary(r, "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p"): summary(r, "conn_state", "history")
             for r in rows(corpus, "dhcp/dhcp.pcap")}
    assert found == {
        ("0.0.0.0", 68, "255.255.255.255", 67): ("S0", "D"),
        ("128.2.6.97", 68, "128.2.6.152", 67): ("SHR", "^d"),
        ("128.2.6.189", 68, "128.2.6.152", 67): ("SHR", "^d"),
        ("128.2.6.152", 67, "255.255.255.255", 68): ("S0", "D"),
    }


def test_mpls_frames_are_decoded(corpus: Path) -> None:
    """mixed-vlan-mpls: 11 frames carry 10.1.2.1:11001 -> 10.34.0.1:23 under an MPLS label."""
    found = rows(corpus, "mixed-vlan-mpls.pcap")
    mpls, = [r for r in found if r["id.resp_p"] == 23]
    assert summary(mpls, "conn_state", "history", "orig_pkts", "orig_ip_bytes", "orig_bytes") == (
        "SH", "SADF", 11, 470, 26)
    assert len(found) == 3
