"""Internet scanning folded per target: a host, or the smallest octet-aligned network over
the probed hosts within their internal network."""
from __future__ import annotations

from rpcwatch.config import Config
from rpcwatch.triage.evidence import Evidence
from rpcwatch.triage.flows import Flow
from rpcwatch.triage.scanning import fold_scanning

SECOND = 1_000_000


def probe(source: str, target: str, seconds: float, outcome: str = "rejected", port: int = 40000,
          record: str | None = None) -> tuple[str, Flow]:
    evidence = Evidence("s", "zeek.conn", int(seconds * SECOND), "conn.log", record or f"C{source}{target}{seconds}",
                        source, port, target, 135, "tcp", outcome)
    return source, Flow(evidence, source, target, 135, "internet", "internal", port)


def targets(probes, config=None) -> list[tuple[str, int, int]]:
    config = config or Config()
    return [(f.target, f.probes, len(f.sources)) for f in fold_scanning(probes, {}, config)]


def test_one_host_is_its_own_target():
    assert targets([probe("45.1.1.1", "10.20.0.5", 1), probe("45.1.1.2", "10.20.0.5", 2)]) == [("10.20.0.5", 2, 2)]


def test_hosts_of_one_network_fold_into_the_smallest_octet_aligned_network():
    assert targets([probe("45.1.1.1", f"10.20.0.{n}", n) for n in range(1, 6)]) == [("10.20.0.0/24", 5, 1)]
    assert targets([probe("45.1.1.1", "10.20.0.5", 1), probe("45.1.1.1", "10.20.7.5", 2)]) == [("10.20.0.0/16", 2, 1)]
    assert targets([probe("45.1.1.1", "10.20.0.5", 1), probe("45.1.1.1", "10.99.7.5", 2)]) == [("10.0.0.0/8", 2, 1)]


def test_a_network_never_grows_past_the_internal_network_it_is_in():
    # 172.16.0.0/12: an /8 would cover the internet around it
    assert targets([probe("45.1.1.1", "172.16.0.5", 1), probe("45.1.1.1", "172.31.0.5", 2)]) == [
        ("172.16.0.0/12", 2, 1)]


def test_separate_internal_networks_are_separate_findings():
    found = targets([probe("45.1.1.1", "10.20.0.5", 1), probe("45.1.1.2", "192.168.1.5", 2),
                     probe("45.1.1.2", "192.168.1.6", 3)])
    assert found == [("192.168.1.0/24", 2, 1), ("10.20.0.5", 1, 1)]


def test_hosts_only_the_sensor_calls_local_group_by_their_16_or_48():
    found = targets([probe("45.1.1.1", "64.225.56.201", 1), probe("45.1.1.1", "64.225.9.9", 2),
                     probe("45.1.1.1", "64.226.0.1", 3), probe("45.1.1.1", "2001:db9:1:2::5", 4),
                     probe("45.1.1.1", "2001:db9:1:3::5", 5)])
    assert found == [("2001:db9:1::/48", 2, 1), ("64.225.0.0/16", 2, 1), ("64.226.0.1", 1, 1)]


def test_a_probe_seen_by_several_logs_counts_once_with_its_outcomes():
    _, zeek = probe("45.1.1.1", "10.20.0.5", 1.0, "no-reply", record="C1")
    _, sysmon = probe("45.1.1.1", "10.20.0.5", 1.2, "blocked", record="7")
    [finding] = fold_scanning([("45.1.1.1", zeek), ("45.1.1.1", sysmon)], {}, Config())
    assert finding.probes == 1 and dict(finding.outcomes) == {"no-reply": 1} and len(finding.evidence) == 2
    record = finding.to_dict()
    assert record["kind"] == "scanning" and record["id"] == "SCAN-0001"
    assert record["first_seen"] == "1970-01-01T00:00:01.000000Z" and record["last_seen"] == "1970-01-01T00:00:01.200000Z"
    assert record["top_sources"] == [{"address": "45.1.1.1", "probes": 1}]
