"""Incidents along the attack chain, on the corpus, the examples and real recordings."""
from __future__ import annotations

import shutil
from pathlib import Path

import otrf_psexec
import pyarrow as pa
import pytest

from rpcwatch.config import Config
from rpcwatch.engines.duckdb import DuckDBEngine
from rpcwatch.hunt import plan_hunt
from rpcwatch.sources import expand_inputs
from rpcwatch.triage.evidence import EXECUTION_PROCESSES, EvidenceSearch
from rpcwatch.triage.incidents import IncidentBuilder
from rpcwatch.triage.run import run_triage

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def triage(paths, config=None):
    config = config or Config()
    return run_triage(list(expand_inputs([str(p) for p in paths])), plan_hunt((), config), DuckDBEngine())


def stage(incident, number):
    return incident.stages[number - 1]


def uids(finding):
    return sorted({e.record_id for e in finding.evidence})


def operations(finding):
    return sorted({f"{e.rpc_interface} {e.rpc_operation}" for e in finding.evidence if e.rpc_operation})


# ---- the rita corpus: internet scanners, all refused ---------------------------------------

def test_rita_sources_become_stage_one_incidents(corpus):
    result = triage([corpus / "rita"])
    expected_sources = {a.source_ip for a in result.alerts}
    assert len(expected_sources) == 29
    assert {i.source for i in result.incidents} == expected_sources
    assert len(result.incidents) == 29
    for incident in result.incidents:
        assert incident.stage == 1 and incident.severity == "low"
        assert [v.address for v in incident.victims] == ["64.225.56.201"]
        probes = stage(incident, 1).evidence
        assert probes and {e.outcome for e in probes} == {"rejected"}
        assert {e.destination_port for e in probes} == {135}
        assert not any(stage(incident, n).reached for n in range(2, 8))
        assert any("no dce_rpc.log" in m for m in stage(incident, 3).missing)
    twice = next(i for i in result.incidents if i.source == "83.97.73.157")
    assert len(stage(twice, 1).evidence) == 2 and twice.alerts == 2
    assert result.exposure == []  # probed, never accepted


# ---- the bundled examples --------------------------------------------------------------------

@pytest.fixture(scope="module")
def examples():
    return triage([EXAMPLES])


def test_examples_attacker_reaches_stage_seven(examples):
    incident = next(i for i in examples.incidents if i.source == "167.94.138.44")
    assert incident.id == "INC-0001" and incident.stage == 7 and incident.severity == "critical"
    assert incident.risk_score == 100
    assert [(v.address, v.stage) for v in incident.victims] == [("10.20.0.12", 7)]
    # the session on 135 in conn.log and in the victim's Sysmon log (event 3, record 48211)
    assert uids(stage(incident, 2)) == ["48211", "CJr3mV8eXq2bT5nK1w"]
    assert operations(stage(incident, 3)) == ["epmapper ept_map", "svcctl CreateServiceW", "svcctl OpenSCManagerW",
                                              "svcctl StartServiceW"]
    assert "CzA7bN1cQ4vL9eR2tY" in uids(stage(incident, 3))  # the follow-on to 49667
    assert operations(stage(incident, 4)) == ["svcctl CreateServiceW", "svcctl StartServiceW"]
    # on the victim, services.exe started cmd.exe a third of a second after CreateServiceW
    [started] = [e for e in stage(incident, 4).evidence if e.is_process]
    assert (started.record_id, started.parent_image, started.image) == (
        "48213", "C:\\Windows\\System32\\services.exe", "C:\\Windows\\System32\\cmd.exe")
    assert not stage(incident, 4).missing
    assert uids(stage(incident, 5)) == ["CdF4gH7jK0lZ2xC5vB", "CqP2wE6rT8yU1iO3pA"]
    assert {e.destination_ip for e in stage(incident, 6).evidence} == {"10.20.0.30", "10.20.0.31"}
    assert uids(stage(incident, 7)) == ["CnM8bV1cX4zL6kJ9hG"]
    assert "1 connection(s) back to 167.94.138.44" in stage(incident, 7).summary


def test_examples_sweep_and_ipv6_probe_stay_at_stage_one(examples):
    sweep = next(i for i in examples.incidents if i.source == "45.83.64.17")
    assert sweep.stage == 1
    assert [v.address for v in sweep.victims] == [f"10.20.0.{n}" for n in range(10, 15)]
    assert stage(sweep, 1).summary == "TCP/135 attempted on 5 internal host(s): 4 rejected, 1 no-reply"
    assert "CmXz6c5VbR1cL7wY3q" not in uids(stage(sweep, 1))  # the UDP/135 probe
    ipv6 = next(i for i in examples.incidents if ":" in i.source)
    assert ipv6.stage == 1 and ipv6.victims[0].address == "fd12:3456:789a:1::20"
    assert len(examples.incidents) == 3


def test_examples_exposure_is_the_victim(examples):
    assert [(h.address, dict(h.sources)) for h in examples.exposure] == [("10.20.0.12", {"167.94.138.44": 1})]
    assert examples.exposure[0].first_seen == "2024-11-30T10:01:40.512377Z"


def test_without_windows_logs_the_chain_says_what_is_missing():
    incident = next(i for i in triage([EXAMPLES / "zeek"]).incidents if i.source == "167.94.138.44")
    assert incident.stage == 7
    assert any("no Windows event logs" in m for m in stage(incident, 4).missing)


def test_without_dce_rpc_log_the_chain_says_what_is_missing(tmp_path):
    shutil.copy(EXAMPLES / "zeek" / "conn.log", tmp_path / "conn.log")
    incident = next(i for i in triage([tmp_path]).incidents if i.source == "167.94.138.44")
    assert uids(stage(incident, 3)) == ["CzA7bN1cQ4vL9eR2tY"]  # the follow-on connection still shows
    assert not stage(incident, 4).reached
    assert any("remote-execution operations" in m for m in stage(incident, 4).missing)
    assert incident.stage == 7


def test_without_conn_log_the_victims_own_traffic_is_missing(tmp_path):
    shutil.copy(EXAMPLES / "zeek" / "dce_rpc.log", tmp_path / "dce_rpc.log")
    incident = next(i for i in triage([tmp_path]).incidents if i.source == "167.94.138.44")
    assert incident.stage == 5  # the victim's ept_lookup to 10.20.0.31 is in dce_rpc.log
    assert stage(incident, 2).reached  # the answered call on 135 proves the session
    assert any("no conn.log among the inputs" in m for m in stage(incident, 3).missing)
    assert any("no conn.log and no Windows network events" in m for m in stage(incident, 7).missing)


# ---- OTRF Empire PsExec, the client moved to the internet ------------------------------------

@pytest.fixture(scope="module")
def psexec(corpus, tmp_path_factory):
    folder = tmp_path_factory.mktemp("psexec")
    otrf_psexec.write_zeek_logs(corpus, folder)
    return triage([folder]), otrf_psexec.windows_table(corpus)


def test_psexec_network_reaches_remote_execution_with_svcctl(psexec):
    result, _ = psexec
    [incident] = result.incidents
    assert incident.source == otrf_psexec.INTERNET_CLIENT
    assert incident.stage == 4 and incident.severity == "critical"
    assert operations(stage(incident, 4)) == ["svcctl CreateServiceA", "svcctl StartServiceA"]
    assert "epmapper ept_map" in operations(stage(incident, 3))
    assert [h.address for h in result.exposure] == [otrf_psexec.VICTIM]


def test_psexec_host_logs_add_the_service_process(psexec):
    """The Windows side, once the table exists: services.exe started cmd.exe on WORKSTATION6."""
    result, windows = psexec
    search = EvidenceSearch(*_entities(result), Config())
    engine = DuckDBEngine()
    rules = [b for b in search.bound_rules() if b.table == "windows"]
    for bound, rows in engine.match(windows, rules):
        result.evidence.add_rows(bound, rows)
    result.evidence.tables_seen.add("windows")
    [incident] = IncidentBuilder(Config(), result.alerts, result.evidence).build()
    victim = incident.victims[0]
    assert victim.hosts == [otrf_psexec.VICTIM_HOST]
    processes = [e for e in stage(incident, 4).evidence if e.search == EXECUTION_PROCESSES]
    assert {(e.event_code, e.image, e.parent_image) for e in processes} >= {
        (1, "C:\\Windows\\System32\\cmd.exe", "C:\\Windows\\System32\\services.exe")}
    assert all(e.host == otrf_psexec.VICTIM_HOST for e in processes)
    assert not any("Windows" in m for m in stage(incident, 4).missing)


def test_windows_inbound_logged_with_the_local_host_as_source(psexec):
    """Sysmon 3 written the JPCERT way (Source = the local listener on 135) still orients."""
    result, _ = psexec
    flipped = pa.Table.from_pylist([{
        "EventID": 3, "EventRecordID": 7, "Computer": "SRV01.example", "Initiated": "false",
        "SourceIp": "10.9.8.7", "SourcePort": "135", "DestinationIp": otrf_psexec.INTERNET_CLIENT,
        "DestinationPort": "50123", "Image": "C:\\Windows\\System32\\svchost.exe",
        "TimeCreated_SystemTime": "2020-09-20T16:16:57.000Z"}])
    search = EvidenceSearch([otrf_psexec.INTERNET_CLIENT], [], Config())
    rules = [b for b in search.bound_rules() if b.table == "windows"]
    for bound, rows in DuckDBEngine().match(flipped, rules):
        result.evidence.add_rows(bound, rows)
    [incident] = IncidentBuilder(Config(), result.alerts, result.evidence).build()
    victims = {v.address: v for v in incident.victims}
    assert victims["10.9.8.7"].stage == 2 and victims["10.9.8.7"].hosts == ["SRV01.example"]


def _entities(result):
    from rpcwatch.triage.incidents import entities
    from rpcwatch.triage.scope import AddressScope
    return entities(result.alerts, AddressScope(Config()))


def test_rows_and_alerts_make_the_same_evidence(examples):
    """The second pass builds evidence from columns, alerts from dictionaries: a record
    seen both ways must be the same evidence, or it would count twice."""
    from dataclasses import replace

    from rpcwatch.triage.evidence import evidence_from_alert
    found = {e.identity: e for records in examples.evidence.found.values() for e in records}
    for alert in (a for a in examples.alerts if a.original is not None):  # correlations have no record
        from_alert = evidence_from_alert(alert, "alerts")
        assert replace(found[from_alert.identity], search="alerts") == from_alert
