"""The pcap reader on the corpus captures: tshark's conversations, Zeek's dce_rpc baselines,
conn_state/history, damaged and compressed captures, link types, the internet case."""
from __future__ import annotations

import gzip
import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest

from rpcwatch.sources import LogReading, expand_inputs, sniff_reader
from rpcwatch.sources.base import ReadStats
from rpcwatch.sources.connections import TCP, Connection
from rpcwatch.sources.inputs import InputFile, open_decompressed
from rpcwatch.sources.pcap import PcapReader, address_text, track_capture
from rpcwatch.sources.zeek import ZeekTsvReader

from .capture_edit import cut_capture, rewrite_addresses
from .tshark import Conversation, corpus_tcp135_conversations, tshark_available, tshark_conversations
from .zeek_logs import read_baseline

pytestmark = pytest.mark.corpus

CORPUS = Path(os.environ.get("RPCWATCH_CORPUS", Path(__file__).resolve().parents[3] / "shared" / "corpus"))
CAPTURE_SUFFIXES = {".pcap", ".pcapng", ".cap"}
CAPTURES = sorted(str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*")
                  if p.suffix in CAPTURE_SUFFIXES) if CORPUS.exists() else []
ZEEK_TRACES = "zeek-zeek/testing/btest/Traces"
OTRF_NETWORK = "otrf-security-datasets/datasets/atomic/windows/lateral_movement/network"
PSEXEC_CLIENT_SIDE = f"{OTRF_NETWORK}/empire_psexec_dcerpc_tcp_svcctl_WORKSTATION5_2020-09-20121608.cap"


@dataclass
class Capture:
    """What the reader made of one capture."""

    tables: dict[str, pa.Table]
    stats: ReadStats
    connections: list[Connection]
    batches: int

    def rows(self, table: str) -> list[dict]:
        data = self.tables.get(table)
        return data.to_pylist() if data is not None else []


def read_capture(path: Path) -> Capture:
    stats = ReadStats(str(path))
    connections: list[Connection] = []
    _source, _head, stream = open_decompressed(InputFile(str(path), lambda: open(path, "rb")), stats)
    parts: dict[str, list[pa.Table]] = defaultdict(list)
    batches = 0
    with stream:
        for batch in track_capture(stream, stats, path=str(path), observer=connections.append):
            parts[batch.table].append(batch.data)
            batches += 1
    tables = {name: pa.concat_tables(tables) for name, tables in parts.items()}
    return Capture(tables, stats, connections, batches)


def tcp_connections_by_pair(capture: Capture) -> dict[frozenset, list[Connection]]:
    pairs: dict[frozenset, list[Connection]] = defaultdict(list)
    for conn in capture.connections:
        if conn.proto == TCP:
            key = conn.key
            pairs[frozenset(((address_text(key.orig_h), key.orig_p),
                             (address_text(key.resp_h), key.resp_p)))].append(conn)
    return pairs


def assert_matches_tshark(conversations: list[Conversation], connections: list[Connection]) -> None:
    """tshark keeps one conversation per address/port pair until a new SYN follows a close.
    Zeek (and this reader) end more of them: an unanswered attempt after 5 s (SYNs re-sent
    later start a new connection), a connection closed on either side at the next SYN
    (even a re-sent one, TCPSessionAdapter::IsReuse), a reset one 5 s after the reset.
    So one conversation may be several connections, each but the last one ended that way;
    frames and bytes per direction must add up exactly."""
    if len(connections) != len(conversations):
        assert len(conversations) == 1 and all(
            c.conn_state() == "S0" or c.orig.did_close or c.resp.did_close for c in connections[:-1]), connections
    for side in ("a", "b"):
        endpoint = getattr(conversations[0], side)
        frames = sum(getattr(conv, f"frames_from_{side}") for conv in conversations)
        sent = [c.orig if (address_text(c.key.orig_h), c.key.orig_p) == endpoint else c.resp
                for c in connections]
        assert sum(e.packets for e in sent) == frames
        if len(conversations) == 1:
            assert conversations[0].__getattribute__(f"bytes_from_{side}").matches(
                sum(e.wire_bytes for e in sent))


# -- tshark ------------------------------------------------------------------------------

def test_every_capture_of_the_corpus_manifest_is_compared(corpus: Path) -> None:
    """The captures compared with tshark (found by their suffix) are exactly the files of
    the corpus manifest that are captures by their content: none is left out by its name."""
    listed = [entry["local"] for entry in json.loads((corpus / "MANIFEST.json").read_text())]
    assert all((corpus / path).is_file() for path in listed)
    by_content = [path for path in listed if sniff_reader(first_bytes(corpus / path)) is PcapReader]
    assert CAPTURES == sorted(by_content)


def first_bytes(path: Path) -> bytes:
    with open(path, "rb") as stream:
        return stream.read(64)


@pytest.mark.parametrize("listed", sorted(corpus_tcp135_conversations(
    CORPUS / "PCAP_TCP135_CONVERSATIONS.txt").items()) if CORPUS.exists() else [], ids=lambda item: item[0])
def test_tcp135_conversations_match_the_corpus_listing(corpus: Path, listed) -> None:
    path, conversations = listed
    pairs = tcp_connections_by_pair(read_capture(corpus / path))
    ours = {pair: conns for pair, conns in pairs.items() if any(port == 135 for _, port in pair)}
    by_pair: dict[frozenset, list[Conversation]] = defaultdict(list)
    for conversation in conversations:
        by_pair[conversation.pair].append(conversation)
    assert set(ours) == set(by_pair)
    for pair, listed_rows in by_pair.items():
        assert_matches_tshark(listed_rows, ours[pair])


@pytest.mark.slow
@pytest.mark.skipif(not tshark_available(), reason="tshark is not installed (.ci/install-tshark installs it)")
@pytest.mark.parametrize("relative", CAPTURES)
def test_every_tcp_conversation_matches_tshark(corpus: Path, relative: str) -> None:
    capture = read_capture(corpus / relative)
    pairs = tcp_connections_by_pair(capture)
    by_pair: dict[frozenset, list[Conversation]] = defaultdict(list)
    for conversation in tshark_conversations(corpus / relative):
        by_pair[conversation.pair].append(conversation)
    assert set(pairs) == set(by_pair)
    for pair, conversations in by_pair.items():
        assert_matches_tshark(conversations, pairs[pair])


def test_unanswered_syn_resent_after_five_seconds_is_a_new_attempt(corpus: Path) -> None:
    capture = read_capture(corpus / f"{OTRF_NETWORK}/covenant_sharpsc_query_dcerpc_smb_svcctl_2020-08-06012009.cap")
    attempts = [r for r in capture.rows("zeek.conn") if r["id.resp_p"] == 50115]
    assert [(r["conn_state"], r["history"], r["orig_pkts"]) for r in attempts] == [
        ("S0", "S", 3), ("S0", "S", 1), ("S0", "S", 1)]


# -- Zeek dce_rpc baselines --------------------------------------------------------------

#: baseline directory -> the trace its btest reads (see zeek/zeek testing/btest/scripts/
#: base/protocols/dce-rpc/*.zeek); smb1-transaction-dcerpc is DCE/RPC over SMB, not parsed
BASELINE_TRACES = {
    "scripts.base.protocols.dce-rpc.mapi": "dce-rpc/mapi.pcap",
    "scripts.base.protocols.dce-rpc.context": "dce-rpc/cs_window7-join_stream092.pcap",
    "scripts.base.protocols.dce-rpc.dce_rpc_netlogon": "dce-rpc/dce_rpc_netlogon.pcapng",
}
CALL_FIELDS = ("id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "named_pipe", "endpoint", "operation")


def _call(row: dict) -> tuple:
    return (*(str(row[f]) for f in CALL_FIELDS), f"{float(row['rtt']):.6f}")


@pytest.mark.parametrize("baseline,trace", sorted(BASELINE_TRACES.items()))
def test_dce_rpc_calls_match_zeek_baseline(corpus: Path, baseline: str, trace: str) -> None:
    expected = read_baseline(corpus / f"zeek-zeek/testing/btest/Baseline/{baseline}/dce_rpc.log")
    capture = read_capture(corpus / ZEEK_TRACES / trace)
    assert Counter(map(_call, capture.rows("zeek.dce_rpc"))) == Counter(map(_call, expected))


def test_dce_rpc_rows_join_their_connection(corpus: Path) -> None:
    capture = read_capture(corpus / ZEEK_TRACES / "dce-rpc/mapi.pcap")
    services = {r["uid"]: r["service"] for r in capture.rows("zeek.conn")}
    assert {services[r["uid"]] for r in capture.rows("zeek.dce_rpc")} == {"dce_rpc"}
    assert len(set(services)) == len(services) == 29


def test_uids_are_stable_for_a_capture(corpus: Path) -> None:
    first, second = (read_capture(corpus / ZEEK_TRACES / "dce-rpc/mapi.pcap") for _ in range(2))
    assert first.tables["zeek.conn"].column("uid") == second.tables["zeek.conn"].column("uid")
    assert all(uid.startswith("C") and 15 <= len(uid) <= 18
               for uid in first.tables["zeek.conn"].column("uid").to_pylist())


# -- the internet case -------------------------------------------------------------------

PUBLIC_CLIENT = "203.0.114.7"


def test_rewritten_psexec_capture_shows_public_client_calls(corpus: Path, tmp_path: Path) -> None:
    rewritten = tmp_path / "psexec_public_client.pcap"
    assert rewrite_addresses(corpus / PSEXEC_CLIENT_SIDE, rewritten, {"172.18.39.5": PUBLIC_CLIENT}) > 0
    calls = [(r["id.orig_h"], r["id.resp_p"], r["endpoint"], r["operation"])
             for r in read_capture(rewritten).rows("zeek.dce_rpc")]
    assert calls == [
        (PUBLIC_CLIENT, 135, "epmapper", "ept_map"),
        # svcctl over ncacn_ip_tcp on the port ept_map returned; Empire uses the ANSI calls
        (PUBLIC_CLIENT, 49726, "svcctl", "unknown-64"),  # ROpenSCManager2: Zeek has no name
        (PUBLIC_CLIENT, 49726, "svcctl", "CreateServiceA"),
        (PUBLIC_CLIENT, 49726, "svcctl", "CloseServiceHandle"),
        (PUBLIC_CLIENT, 49726, "svcctl", "OpenServiceA"),
        (PUBLIC_CLIENT, 49726, "svcctl", "StartServiceA"),
        (PUBLIC_CLIENT, 49726, "svcctl", "DeleteService"),
        (PUBLIC_CLIENT, 49726, "svcctl", "CloseServiceHandle"),
        (PUBLIC_CLIENT, 49726, "svcctl", "CloseServiceHandle"),
    ]
    inbound = [(r["conn_state"], r["service"]) for r in read_capture(rewritten).rows("zeek.conn")
               if r["id.orig_h"] == PUBLIC_CLIENT and r["id.resp_p"] in (135, 49726)]
    assert inbound == [("SF", "dce_rpc"), ("SF", "dce_rpc")]


# -- conn_state and history --------------------------------------------------------------

CONN_CASES = [
    # a SYN answered by a RST
    ("markofu-pcaps/EvilFingers/RPC_SCAN.pcap", (36939, 21), ("REJ", "Sr", 1, 1)),
    # nmap's half-open probe: SYN, SYN-ACK, the originator resets
    ("markofu-pcaps/EvilFingers/RPC_SCAN.pcap", (36939, 135), ("RSTO", "ShR", 2, 1)),
    ("chrissanders-packets/synscan.pcapng", (36050, 135), ("S0", "S", 1, 0)),
    (f"{ZEEK_TRACES}/dce-rpc/mapi.pcap", (1066, 135), ("SF", "ShADdFaf", 6, 5)),
    (f"{ZEEK_TRACES}/dce-rpc/mapi.pcap", (1072, 135), ("S1", "ShADd", 4, 3)),
    ("suricata-verify/tests/dcerpc/dcerpc-ctxids/input.pcap", (49725, 135), ("RSTO", "ShADdR", 6, 3)),
    (PSEXEC_CLIENT_SIDE, (56609, 88), ("RSTR", "ShADadFr", 5, 6)),
    # capture starts mid-stream: no SYN seen, the client is still the originator
    ("suricata-verify/tests/bug-5133/input.pcap", (50058, 135), ("OTH", "Dd", 2, 2)),
    # a lone SYN-ACK (the originator is whoever sent the SYN)
    ("chrissanders-packets/activeosfingerprinting.pcapng", (53802, 135), ("OTH", "^h", 0, 1)),
]


@pytest.mark.parametrize("path,ports,expected", CONN_CASES)
def test_conn_state_and_history(corpus: Path, path: str, ports: tuple, expected: tuple) -> None:
    assert conn_rows(corpus / path, ports) == [expected]


def conn_rows(path: Path, ports: tuple[int, int]) -> list[tuple]:
    rows = [r for r in read_capture(path).rows("zeek.conn") if (r["id.orig_p"], r["id.resp_p"]) == ports]
    return [(r["conn_state"], r["history"], r["orig_pkts"], r["resp_pkts"]) for r in rows]


def test_syn_fin_probes_repeated_on_one_port_are_one_connection_each(corpus: Path) -> None:
    """nmap sends the same SYN+FIN probe four times from one port: the first closes its
    side, so each later SYN starts a new connection (Zeek's IsReuse needs no new ISN once a
    side has closed)."""
    rows = conn_rows(corpus / "chrissanders-packets/activeosfingerprinting.pcapng", (53951, 135))
    assert rows == [("SH", "Q", 1, 0)] * 4


def test_port_scan_states(corpus: Path) -> None:
    rows = read_capture(corpus / "markofu-pcaps/EvilFingers/RPC_SCAN.pcap").rows("zeek.conn")
    assert Counter(r["conn_state"] for r in rows if r["proto"] == "tcp") == Counter(
        {"REJ": 995, "RSTO": 5, "SF": 5})


def test_single_packet_connection_has_no_duration_or_sizes(corpus: Path) -> None:
    row, = read_capture(corpus / "chrissanders-packets/synscan.pcapng").rows("zeek.conn")[:1] or [None]
    assert row["duration"] is None and row["orig_bytes"] is None and row["resp_bytes"] is None


def test_sizes_come_from_sequence_numbers(corpus: Path) -> None:
    row, = [r for r in read_capture(corpus / ZEEK_TRACES / "dce-rpc/mapi.pcap").rows("zeek.conn")
            if (r["id.orig_p"], r["id.resp_p"]) == (1066, 135)]
    assert (row["orig_bytes"], row["resp_bytes"], row["orig_ip_bytes"], row["resp_ip_bytes"]) == (228, 212, 476, 416)
    assert row["duration"] == pytest.approx(0.003248, abs=1e-6)


# -- link types, IPv6, ICMP --------------------------------------------------------------

def test_vlan_tagged_frames(corpus: Path) -> None:
    rows = read_capture(corpus / ZEEK_TRACES / "http-vlan-0.pcap").rows("zeek.conn")
    assert [(r["id.orig_h"], r["id.resp_p"], r["conn_state"], r["history"], r["orig_pkts"]) for r in rows] == [
        ("141.142.228.5", 80, "SF", "ShADadFf", 7)]


def test_linux_sll2(corpus: Path) -> None:
    capture = read_capture(corpus / ZEEK_TRACES / "linux_dlt_sll2.pcap")
    assert capture.stats.records == 6 and not capture.stats.skipped
    # a ping to itself over IPv4 and IPv6; ARP and RARP are counted, not tracked
    assert sorted((r["proto"], r["id.orig_p"], r["id.resp_p"], r["orig_pkts"], r["resp_pkts"])
                  for r in capture.rows("zeek.conn")) == [("icmp", 8, 0, 1, 1), ("icmp", 128, 129, 1, 1)]
    assert sum(capture.stats.warnings.values()) == 2


def test_ipv6_dce_rpc(corpus: Path) -> None:
    rows = read_capture(corpus / "arkime/tests/pcap/ntlm_synthetic.pcap").rows("zeek.conn")
    row, = [r for r in rows if r["id.resp_h"] == "2001:db8:90::1"]
    assert (row["id.orig_h"], row["id.resp_p"], row["service"], row["conn_state"]) == (
        "2001:db8:90::100", 135, "dce_rpc", "SF")


def test_icmp6_neighbour_solicitation_uses_type_and_counterpart(corpus: Path) -> None:
    row, = read_capture(corpus / ZEEK_TRACES / "icmp/icmp6-neighbor-solicit.pcap").rows("zeek.conn")
    assert (row["proto"], row["id.orig_p"], row["id.resp_p"], row["conn_state"], row["history"]) == (
        "icmp", 135, 136, "OTH", None)


# -- damaged and compressed captures ------------------------------------------------------

def test_trailing_partial_record_is_counted(corpus: Path) -> None:
    capture = read_capture(corpus / f"{OTRF_NETWORK}/covenant_sharpwmi_create_dcerpc_wmi_2020-08-06035621.cap")
    assert dict(capture.stats.skipped) == {"truncated capture (partial last packet header)": 1}
    assert capture.stats.records > 0 and capture.rows("zeek.dce_rpc")


@pytest.mark.parametrize("path,cut,reason", [
    (f"{ZEEK_TRACES}/dce-rpc/mapi.pcap", 100, "truncated capture (partial last packet)"),
    (f"{ZEEK_TRACES}/dce-rpc/kerberos135_auth.pcapng", 300, "truncated capture (partial last block)"),
])
def test_capture_cut_short_keeps_what_came_before(corpus: Path, tmp_path: Path, path: str, cut: int,
                                                 reason: str) -> None:
    source = corpus / path
    whole = read_capture(source)
    cut_file = cut_capture(source, tmp_path / source.name, source.stat().st_size - cut)
    damaged = read_capture(cut_file)
    assert dict(damaged.stats.skipped) == {reason: 1}
    assert 0 < damaged.stats.records < whole.stats.records


def test_corrupt_record_header_costs_only_that_record(corpus: Path, tmp_path: Path) -> None:
    source = corpus / ZEEK_TRACES / "dce-rpc/mapi.pcap"
    data = bytearray(source.read_bytes())
    data[24 + 8:24 + 12] = (0xFFFFFFFF).to_bytes(4, "little")  # first record's captured length
    broken = tmp_path / "broken.pcap"
    broken.write_bytes(bytes(data))
    capture, whole = read_capture(broken), read_capture(source)
    first_record = 16 + int.from_bytes(source.read_bytes()[24 + 8:24 + 12], "little")
    assert capture.stats.records == whole.stats.records - 1 and not capture.stats.skipped
    assert capture.stats.lost == [f"corrupt packet header: {first_record} bytes passed over to the next "
                                  f"readable packet (captured length 4294967295 at byte 24)"]
    assert len(capture.rows("zeek.dce_rpc")) == len(whole.rows("zeek.dce_rpc"))


def test_snaplen_cut_payload_is_counted(corpus: Path, tmp_path: Path) -> None:
    """Cut every frame to 80 bytes: connections are still built from the headers, DCE/RPC
    payloads are missing and that is reported."""
    source = corpus / ZEEK_TRACES / "dce-rpc/mapi.pcap"
    data = source.read_bytes()
    out, pos = [data[:24]], 24
    while pos < len(data):
        header = bytearray(data[pos:pos + 16])
        captured = int.from_bytes(header[8:12], "little")
        keep = min(captured, 80)
        header[8:12] = keep.to_bytes(4, "little")
        out += [bytes(header), data[pos + 16:pos + 16 + keep]]
        pos += 16 + captured
    cut = tmp_path / "snaplen80.pcap"
    cut.write_bytes(b"".join(out))
    whole, short = read_capture(source), read_capture(cut)
    assert short.stats.records == whole.stats.records
    def sizes(capture: Capture) -> list[tuple]:
        return sorted((r["id.orig_p"], r["orig_ip_bytes"], r["resp_ip_bytes"]) for r in capture.rows("zeek.conn"))

    assert sizes(short) == sizes(whole)
    assert short.stats.warnings["payload cut by snaplen (DCE/RPC analysis of that direction stopped)"] > 0
    assert sum(r["missed_bytes"] for r in short.rows("zeek.conn")) > 0


def test_gzip_capture_reads_like_the_plain_one(corpus: Path, tmp_path: Path) -> None:
    source = corpus / ZEEK_TRACES / "dce-rpc/mapi.pcap"
    packed = tmp_path / "mapi.pcap.gz"
    packed.write_bytes(gzip.compress(source.read_bytes()))
    reading = LogReading(list(expand_inputs([str(packed)])))
    tables = defaultdict(list)
    for batch in reading.batches():
        assert batch.format == "pcap"
        tables[batch.table].append(batch.data)
    plain = read_capture(source)
    for name in ("zeek.conn", "zeek.dce_rpc"):
        assert pa.concat_tables(tables[name]).equals(plain.tables[name])


# -- the interface -----------------------------------------------------------------------

@pytest.mark.parametrize("magic", ["d4c3b2a1", "a1b2c3d4", "4d3cb2a1", "a1b23c4d"])
def test_sniffs_pcap_of_either_byte_order_and_resolution(magic: str) -> None:
    assert sniff_reader(bytes.fromhex(magic) + bytes(20)) is PcapReader


def test_sniffs_pcapng(corpus: Path) -> None:
    head = (corpus / "chrissanders-packets/synscan.pcapng").read_bytes()[:64]
    assert sniff_reader(head) is PcapReader
    assert not PcapReader.sniff(b"#separator \\x09\n#fields\tts\tuid\n")


def test_columns_and_types_are_those_of_zeek_logs(corpus: Path) -> None:
    capture = read_capture(corpus / ZEEK_TRACES / "dce-rpc/mapi.pcap")
    for table, baseline in (("zeek.dce_rpc", "scripts.base.protocols.dce-rpc.mapi/dce_rpc.log"),
                            ("zeek.conn", "core.pppoe/conn.log")):
        path = corpus / "zeek-zeek/testing/btest/Baseline" / baseline
        stats = ReadStats(str(path))
        with open(path, "rb") as stream:
            zeek_schema = next(ZeekTsvReader().read(InputFile(str(path), lambda: None), stream, stats)).data.schema
        ours = capture.tables[table].schema
        shared = [name for name in zeek_schema.names if name in ours.names]
        assert shared == [n for n in ours.names if n in zeek_schema.names]
        assert set(ours.names) - set(zeek_schema.names) <= set()
        for name in shared:
            assert ours.field(name).type == zeek_schema.field(name).type, name


def test_batches_stay_bounded(corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rpcwatch.sources.pcap.BATCH_ROWS", 500)
    capture = read_capture(corpus / "chrissanders-packets/synscan.pcapng")
    assert capture.tables["zeek.conn"].num_rows == 1994
    assert capture.batches == 4


def test_worker_processes_give_the_same_rows(corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large captures on disk are tracked by worker processes, each for a share of the
    host pairs; the rows (uids included) are those of a single-process read."""
    path = corpus / ZEEK_TRACES / "dce-rpc/mapi.pcap"
    monkeypatch.setattr("rpcwatch.sources.pcap.PARALLEL_MIN_SIZE", 0)
    reading = LogReading(list(expand_inputs([str(path)])))
    rows = defaultdict(list)
    for batch in reading.batches():
        rows[batch.table].extend(batch.data.to_pylist())
    single = read_capture(path)
    def key(row: dict) -> tuple:
        return row["uid"], row["ts"]

    for table in ("zeek.conn", "zeek.dce_rpc"):
        assert sorted(rows[table], key=key) == sorted(single.rows(table), key=key)
    stats, = reading.stats
    assert (stats.records, stats.bytes_read, stats.warnings) == (
        single.stats.records, single.stats.bytes_read, single.stats.warnings)
