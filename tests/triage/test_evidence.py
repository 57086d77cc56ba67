"""The evidence pass: exact address matching, prefilter literals, baselines built while
streaming, candidates for stages 5-7, and the limits."""
from __future__ import annotations

import ipaddress

import pyarrow as pa
import pytest

from rpcwatch.config import Config
from rpcwatch.schema import Literal
from rpcwatch.triage.baseline import ANY_PORT, DYNAMIC_RPC_PORT
from rpcwatch.triage.chain import MICROS, attack_chain
from rpcwatch.triage.evidence import MAX_PREFILTER_LITERALS, SOURCE_RECORDS, EvidencePass, Targets, VictimWatch

CONN_TABLE = "zeek.conn"
HOUR = 3600 * MICROS
VICTIM = "10.0.0.7"


def conn(rows: list[tuple]) -> pa.Table:
    """(ts, orig, resp, resp port, conn_state[, orig bytes]) rows as a conn.log batch."""
    return pa.table({"ts": [float(r[0]) for r in rows], "uid": [f"C{i}" for i in range(len(rows))],
                     "id.orig_h": [r[1] for r in rows], "id.orig_p": [40000 + i for i in range(len(rows))],
                     "id.resp_h": [r[2] for r in rows], "id.resp_p": [r[3] for r in rows],
                     "proto": ["tcp"] * len(rows), "conn_state": [r[4] for r in rows],
                     "orig_bytes": [r[5] if len(r) > 5 else 100 for r in rows],
                     "resp_bytes": [100] * len(rows)})


def evidence_pass(sources=(), victims=None) -> EvidencePass:
    return EvidencePass(Targets(frozenset(sources), victims or {}), Config())


def test_addresses_match_in_any_spelling_and_only_exactly():
    found = evidence_pass(["45.83.64.17", "2a03:b0c0:3:d0::1f:7001"])
    table = conn([(1, a, "10.0.0.1", 135, "REJ") for a in
                  ["45.83.64.17", "::ffff:45.83.64.17", "45.83.64.170", "2A03:B0C0:3:D0:0:0:1F:7001",
                   "2a03:b0c0:3:d0::1f:7002"]])
    found.add(CONN_TABLE, table, "conn.log")
    records = found.finish().sources
    assert sorted(e.record_id for e in records) == ["C0", "C1", "C3"]
    assert {e.search for e in records} == {SOURCE_RECORDS} and {e.file for e in records} == {"conn.log"}


def test_prefilter_looks_for_the_spellings_until_there_are_too_many():
    few = evidence_pass(["45.83.64.17", "2a03:b0c0:3:d0::1f:7001"]).prefilter()
    literals = few.for_table(CONN_TABLE, "zeek-tsv").literals
    assert {Literal("45.83.64.17"), Literal("2a03:b0c0:3:d0::1f:7001"),
            Literal("2a03:b0c0:3:d0:0:0:1f:7001")} <= literals
    # processes and service installs: the parents' names and the event codes, besides the addresses
    windows = few.for_table("windows", "evtx-json").literals
    assert {Literal("services.exe"), Literal("wmiprvse.exe"), Literal("dcomlaunch"),
            Literal("7045", "number")} <= windows and Literal("45.83.64.17") in windows
    many = [str(ipaddress.IPv4Address(0x2D000000 + 7 * n)) for n in range(MAX_PREFILTER_LITERALS + 1)]
    assert evidence_pass(many).prefilter().for_table(CONN_TABLE, "zeek-tsv") is None
    # tables no search reads are not parsed at all
    assert evidence_pass(["45.83.64.17"]).prefilter().for_table("zeek.http", "zeek-tsv").literals == frozenset()


def test_thousands_of_sources_are_matched_exactly():
    addresses = [str(ipaddress.IPv4Address(0x2D000000 + 7 * n)) for n in range(3000)]
    found = evidence_pass(addresses)
    found.add(CONN_TABLE, conn([(1, a, "10.0.0.1", 135, "REJ") for a in addresses[::100] + ["45.0.0.1", "45.0.0.2"]]))
    assert len(found.finish().sources) == 30


def victim_day(start_hour: float = 10) -> tuple[EvidencePass, int]:
    """A victim with a day of traffic: its DC on 389 and 445 all day, the internet on 443;
    a first internet session at ``start_hour``."""
    start = int(start_hour * HOUR)
    found = evidence_pass(["45.83.64.17"], {VICTIM: VictimWatch(start, (start,))})
    rows = []
    for hour in range(24):
        rows += [(hour * 3600 + 10, VICTIM, "10.0.0.10", 445, "SF"), (hour * 3600 + 20, VICTIM, "10.0.0.10", 389, "SF"),
                 (hour * 3600 + 30, VICTIM, "151.101.1.69", 443, "SF"),
                 (hour * 3600 + 40, "10.0.0.99", "10.0.0.10", 445, "SF")]  # another host: not the victim's
    rows += [(start_hour * 3600 + 60, VICTIM, "10.0.0.20", 135, "REJ"),   # a first contact, in the window
             (start_hour * 3600 + 70, VICTIM, "10.0.0.20", 49668, "SF"),  # a dynamic port (no RPC: not a contact)
             (start_hour * 3600 + 80, VICTIM, "185.1.2.3", 443, "SF", 1100),
             (start_hour * 3600 + 140, VICTIM, "185.1.2.3", 443, "SF", 1100),
             (start_hour * 3600 + 200, VICTIM, "ff02::fb", 5353, "S0")]   # multicast: neither kind of contact
    found.add(CONN_TABLE, conn(rows), "conn.log")
    return found, start


def test_the_baseline_is_what_the_victim_did_before_its_first_internet_session():
    found, start = victim_day(10)
    baseline = found.finish().baselines[VICTIM]
    assert baseline.start == start and baseline.first_record == 10 * MICROS
    assert baseline.span == start - 10 * MICROS and baseline.records == 30  # 10 hours x 3 connections
    assert baseline.known_contacts == 2  # its DC on 445 and the web site (389 is not a lateral port)


def test_contacts_are_hosts_by_port_internally_and_addresses_on_the_internet():
    found, start = victim_day(10)
    evidence = found.finish()
    baseline, number = evidence.baselines[VICTIM], evidence.peers
    dc, web, new_host, c2 = (number[a] for a in ("10.0.0.10", "151.101.1.69", "10.0.0.20", "185.1.2.3"))
    stats = baseline.stats([(dc, 445), (web, ANY_PORT), (new_host, 135), (c2, ANY_PORT), (new_host, DYNAMIC_RPC_PORT),
                            (dc, 389)])
    assert stats[(dc, 445)].count == 24 and stats[(dc, 445)].first == 10 * MICROS
    assert stats[(web, ANY_PORT)].first < start and stats[(c2, ANY_PORT)].first > start
    assert stats[(new_host, 135)].count == 1
    assert (new_host, DYNAMIC_RPC_PORT) not in stats and (dc, 389) not in stats
    times, sent = baseline.connection_times(c2)
    assert list(times) == [(start + 80 * MICROS) / MICROS, (start + 140 * MICROS) / MICROS]
    assert list(sent) == [1100.0, 1100.0]
    # contacts known before the session leave no connection times behind
    assert len(baseline.connection_times(web)[0]) == 0


def test_the_victims_connections_after_an_alert_are_kept_as_columns():
    found, start = victim_day(10)
    evidence = found.finish()
    later = evidence.later.of(0)
    slack = attack_chain().window_micros + attack_chain().execution_micros
    assert later["micros"].min() >= start and later["micros"].max() <= start + slack
    records = evidence.later_records(later.ids)
    # within the window and the execution window (70 minutes) after the alert at 10:00
    assert sorted((e.destination_ip, e.destination_port, (e.micros - start) // MICROS) for e in records) == [
        ("10.0.0.10", 445, 10), ("10.0.0.10", 445, 3610), ("10.0.0.20", 135, 60), ("151.101.1.69", 443, 30),
        ("151.101.1.69", 443, 3630), ("185.1.2.3", 443, 80), ("185.1.2.3", 443, 140)]
    names = {number: address for address, number in evidence.peers.items()}
    internet = {names[p] for p in later["peer"][later["internet"]]}
    recon = {names[p] for p in later["peer"][later["recon"]]}
    assert internet == {"151.101.1.69", "185.1.2.3"} and recon == {"10.0.0.10", "10.0.0.20"}


def test_a_victim_past_the_contact_limit_is_named_and_its_baseline_capped(monkeypatch):
    chain = attack_chain()
    limits = type(chain.limits)(contacts_per_victim=5, candidates_per_victim=2, beacon_times=10)
    monkeypatch.setattr("rpcwatch.triage.baseline.MERGE_ROWS", 1)
    found = EvidencePass(Targets(frozenset({"45.83.64.17"}), {VICTIM: VictimWatch(0, (0,))}), Config(),
                         chain=type(chain)(**{**chain.__dict__, "limits": limits}))
    found.add(CONN_TABLE, conn([(n, VICTIM, f"151.101.1.{n}", 443, "SF") for n in range(1, 10)]))
    evidence = found.finish()
    assert evidence.baselines[VICTIM].capped
    assert len(evidence.later.of(0)) == 2
    assert any(message.startswith(f"{VICTIM}: more than 5 distinct peers") for message in evidence.limits)
    assert any(message.startswith(f"{VICTIM}: more than 2 connections") for message in evidence.limits)


@pytest.mark.parametrize("initiated,kept", [("true", True), ("false", False)])
def test_a_hosts_own_log_counts_only_connections_it_opened(initiated, kept):
    found = evidence_pass(["45.83.64.17"], {VICTIM: VictimWatch(0, (0,))})
    found.add("windows", pa.Table.from_pylist([{
        "EventID": 3, "EventRecordID": 9, "Computer": "WS7", "Initiated": initiated, "SourceIp": VICTIM,
        "SourcePort": "50000", "DestinationIp": "151.101.1.69", "DestinationPort": "443",
        "TimeCreated_SystemTime": "1970-01-01T00:10:00Z"}]))
    evidence = found.finish()
    assert (evidence.later.of(0) is not None) is kept
    assert (evidence.hosts.get(VICTIM) == {"WS7"}) is kept


def test_reading_ahead_keeps_order_and_hands_errors_over():
    from rpcwatch.triage.evidence import read_ahead

    assert list(read_ahead(iter(range(100)), depth=2)) == list(range(100))

    def broken():
        yield 1
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in read_ahead(broken()):
            got.append(item)
    assert got == [1]


def test_reading_ahead_runs_in_the_callers_run_context():
    from rpcwatch.context import Limits, RunContext, current
    from rpcwatch.triage.evidence import read_ahead

    def limits():
        yield current().limits.max_line_bytes

    with RunContext(limits=Limits(max_line_bytes=1234)):
        assert list(read_ahead(limits())) == [1234]


def test_the_pass_parses_only_the_columns_it_looks_at(tmp_path):
    plan = evidence_pass(["45.83.64.17"]).prefilter()
    assert plan.columns_for(CONN_TABLE) == {"ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto",
                                            "service", "orig_bytes", "resp_bytes", "orig_pkts", "resp_pkts",
                                            "community_id", "conn_state", "local_orig", "local_resp"}
    assert {"operation", "endpoint"} <= plan.columns_for("zeek.dce_rpc")


def test_ipv4_classified_column_wise_as_the_parser_classifies_each():
    """Canonical IPv4 spellings take a column-wise path; it must agree with the exact parser
    on every address, at the edges of internal and non-routable networks too."""
    import random

    found = evidence_pass(["45.83.64.17", "198.51.100.7"], {VICTIM: VictimWatch(0, ())})
    rng = random.Random(5)
    edges = [str(ipaddress.IPv4Address(int(net.network_address) + offset))
             for net in [*Config().internal.networks, *Config().non_routable.networks] if net.version == 4
             for offset in (-1, 0, net.num_addresses - 1, net.num_addresses) if 0 <= int(net.network_address) + offset < 1 << 32]
    spellings = ["45.83.64.17", "198.51.100.7", VICTIM, "::ffff:10.0.0.7", " 10.0.0.7", "010.0.0.7", "fd00::1", "-",
                 "", None, *edges, *(str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(2000))]
    column = found._addresses.column(pa.array(spellings, pa.string()), len(spellings))
    for row, text in enumerate(spellings):
        address, victim, source, scope = found._classify(text) if text is not None else (None, -1, False, 0)
        expected_number = found._addresses.numbers[address] if address is not None else -1
        assert (column.number[row], column.victim[row], column.is_source[row], column.scope[row]) == (
            expected_number, victim, source, scope), text
