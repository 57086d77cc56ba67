"""Exposure inventory: one session per connection, however many logs show it."""
from __future__ import annotations

from rpcwatch.triage.evidence import Evidence
from rpcwatch.triage.exposure import exposure_inventory
from rpcwatch.triage.flows import Flow

SOURCE, VICTIM = "167.94.138.44", "10.20.0.12"
SECOND = 1_000_000


def flow(table: str, seconds: float, record_id: str | None, client_port: int | None, **extra) -> Flow:
    record = Evidence("s", table, int(seconds * SECOND), "f", record_id, SOURCE, client_port, VICTIM, 135,
                      "tcp", "established", **extra)
    return Flow(record, SOURCE, VICTIM, 135, "internet", "internal", client_port)


def sessions(*flows: Flow) -> int:
    [host] = exposure_inventory(flows, {})
    assert host.to_dict()["sources"][0]["address"] == SOURCE
    return host.to_dict()["sessions"]


def test_a_connection_seen_by_zeek_and_by_the_victims_sysmon_is_one_session():
    assert sessions(flow("zeek.conn", 100, "CJr3", 49876), flow("zeek.dce_rpc", 100.1, "CJr3", 49876),
                    flow("windows", 100.02, "48211", 49876, host="FS-12", initiated=False)) == 1


def test_other_ports_or_a_port_reused_much_later_are_other_sessions():
    assert sessions(flow("zeek.conn", 100, "A", 49876), flow("zeek.conn", 101, "B", 49877)) == 2
    assert sessions(flow("zeek.conn", 100, "A", 49876), flow("zeek.conn", 100 + 3600, "B", 49876)) == 2


def test_a_long_connection_keeps_its_calls_by_its_record_id():
    assert sessions(flow("zeek.conn", 100, "A", 49876), flow("zeek.dce_rpc", 100 + 3600, "A", 49876)) == 1


def test_records_without_ports_count_by_record_id():
    assert sessions(flow("windows", 100, "1", None), flow("windows", 100, "1", None),
                    flow("windows", 101, "2", None)) == 2
