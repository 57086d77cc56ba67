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
from rpcwatch.sources import LogReading, expand_inputs
from rpcwatch.triage.evidence import EXECUTION_PROCESSES, EvidencePass
from rpcwatch.triage.incidents import IncidentBuilder, targets_of
from rpcwatch.triage.run import run_triage
from rpcwatch.triage.scope import AddressScope

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def triage(paths, config=None):
    config = config or Config()
    return run_triage(list(expand_inputs([str(p) for p in paths])), plan_hunt((), config), DuckDBEngine())


def stage(incident, number):
    return incident.stages[number - 1]


def uids(records):
    return sorted({e.record_id for e in records})


def operations(finding):
    return sorted({f"{e.rpc_interface} {e.rpc_operation}" for e in finding.evidence if e.rpc_operation})


# ---- the rita corpus: internet scanners, all refused ---------------------------------------

def test_rita_is_one_scanning_finding_and_no_incident(corpus):
    result = triage([corpus / "rita"])
    assert result.incidents == []
    [finding] = result.scanning
    assert finding.target == "64.225.56.201" and list(finding.hosts) == ["64.225.56.201"]
    assert finding.probes == 31 and len(finding.sources) == 29
    assert dict(finding.outcomes) == {"rejected": 31}
    assert finding.sources["83.97.73.157"] == 2 and finding.sources["172.104.242.173"] == 2
    assert (finding.first_seen, finding.last_seen) == ("2024-04-19T01:03:47.117664Z", "2024-04-21T22:27:04.430358Z")
    assert finding.alerts == 31 and finding.rules == ["Detect RPC from Internet"]
    assert len(finding.evidence) == 31 and {e.outcome for e in finding.evidence} == {"rejected"}
    assert result.exposure == []  # probed, never accepted


# ---- the bundled examples --------------------------------------------------------------------

@pytest.fixture(scope="module")
def examples():
    return triage([EXAMPLES])


def test_examples_attacker_reaches_stage_seven_with_stages_one_to_four_direct(examples):
    [incident] = examples.incidents
    assert (incident.id, incident.source) == ("INC-0001", "167.94.138.44")
    assert (incident.stage, incident.direct_stage, incident.severity, incident.risk_score) == (7, 4, "critical", 85)
    assert [stage(incident, n).strength for n in range(1, 8)] == ["direct"] * 4 + ["circumstantial"] * 3
    assert [(v.address, v.stage, v.direct_stage) for v in incident.victims] == [("10.20.0.12", 7, 4)]
    # the session on 135 in conn.log and in the victim's Sysmon log (event 3, record 48211): one session
    assert uids(stage(incident, 2).direct) == ["48211", "CJr3mV8eXq2bT5nK1w"]
    assert stage(incident, 2).summary == "1 established session(s) to TCP/135 on 10.20.0.12"
    assert stage(incident, 1).summary == "TCP/135 attempted on 1 internal host(s): 1 established"
    assert operations(stage(incident, 3)) == ["epmapper ept_map", "svcctl CreateServiceW", "svcctl OpenSCManagerW",
                                              "svcctl StartServiceW"]
    assert "CzA7bN1cQ4vL9eR2tY" in uids(stage(incident, 3).direct)  # the follow-on to 49667
    assert operations(stage(incident, 4)) == ["svcctl CreateServiceW", "svcctl StartServiceW"]
    # on the victim, services.exe started cmd.exe a third of a second after CreateServiceW
    [started] = [e for e in stage(incident, 4).direct if e.is_process]
    assert (started.record_id, started.parent_image, started.image) == (
        "48213", "C:\\Windows\\System32\\services.exe", "C:\\Windows\\System32\\cmd.exe")
    assert not stage(incident, 4).missing
    assert uids(stage(incident, 5).circumstantial) == ["CdF4gH7jK0lZ2xC5vB", "CqP2wE6rT8yU1iO3pA"]
    assert {e.destination_ip for e in stage(incident, 6).circumstantial} == {"10.20.0.30", "10.20.0.31"}
    assert uids(stage(incident, 7).circumstantial) == ["CnM8bV1cX4zL6kJ9hG"]
    assert "1 connection(s) back to 167.94.138.44" in stage(incident, 7).summary


def test_examples_circumstantial_stages_say_why(examples):
    [incident] = examples.incidents
    [why] = stage(incident, 5).judgement
    assert why.startswith("10.20.0.12: 2 first contact(s) with other internal hosts")
    assert "no baseline or later traffic shows this host's usual rate, and the source used RPC on it directly " \
           "(stage 4): counted" in why
    assert incident.victims[0].baseline == {"covers_from": None, "covers_to": "2024-11-30T10:01:40.512377Z",
                                            "seconds": 0, "records": 0, "contacts": 0, "too_short": True,
                                            "capped": False}
    assert incident.severity_reason == (
        "critical: the source's own records show stage 4 (remote execution) directly; stage 7 rests on "
        "circumstantial evidence only (what the victim did afterwards), which raises severity to at most medium")


def test_examples_sweep_and_ipv6_probe_are_scanning(examples):
    sweep, ipv6 = examples.scanning
    assert (sweep.id, sweep.target, sweep.probes, dict(sweep.outcomes)) == (
        "SCAN-0001", "10.20.0.0/24", 5, {"rejected": 4, "no-reply": 1})
    assert sorted(sweep.hosts) == [f"10.20.0.{n}" for n in range(10, 15)] and list(sweep.sources) == ["45.83.64.17"]
    assert sweep.rules == ["Detect RPC from Internet", "RPC Sweep from Internet"]
    assert "CmXz6c5VbR1cL7wY3q" not in uids(sweep.evidence)  # the UDP/135 probe
    assert (ipv6.target, list(ipv6.sources)) == ("fd12:3456:789a:1::20", ["2a03:b0c0:3:d0::1f:7001"])


def test_examples_exposure_is_the_victim(examples):
    assert [(h.address, dict(h.sources)) for h in examples.exposure] == [("10.20.0.12", {"167.94.138.44": 1})]
    assert examples.exposure[0].first_seen == "2024-11-30T10:01:40.512377Z"


def test_without_windows_logs_the_chain_says_what_is_missing():
    [incident] = triage([EXAMPLES / "zeek"]).incidents
    assert (incident.stage, incident.direct_stage) == (7, 4)
    assert any("no Windows event logs" in m for m in stage(incident, 4).missing)


def test_without_dce_rpc_log_the_chain_says_what_is_missing(tmp_path):
    shutil.copy(EXAMPLES / "zeek" / "conn.log", tmp_path / "conn.log")
    [incident] = triage([tmp_path]).incidents
    assert uids(stage(incident, 3).direct) == ["CzA7bN1cQ4vL9eR2tY"]  # the follow-on connection still shows
    assert not stage(incident, 4).reached
    assert any("remote-execution operations" in m for m in stage(incident, 4).missing)
    assert (incident.stage, incident.direct_stage, incident.severity) == (7, 3, "high")


def test_without_conn_log_the_victims_own_traffic_is_missing(tmp_path):
    shutil.copy(EXAMPLES / "zeek" / "dce_rpc.log", tmp_path / "dce_rpc.log")
    [incident] = triage([tmp_path]).incidents
    assert incident.stage == 5  # the victim's ept_lookup to 10.20.0.31 is in dce_rpc.log
    assert stage(incident, 2).reached  # the answered call on 135 proves the session
    assert any("no conn.log among the inputs" in m for m in stage(incident, 3).missing)
    assert any("no conn.log and no Windows network events" in m for m in stage(incident, 7).missing)


def test_a_shorter_window_leaves_out_what_came_later(tmp_path):
    """--evidence-window: the victim's connections 30 s or more after the last direct
    evidence no longer count (recon 30 s after StartServiceW, the callback after 89 s)."""
    from rpcwatch.triage.chain import attack_chain

    chain = attack_chain().with_window(20)
    result = run_triage(list(expand_inputs([str(EXAMPLES)])), plan_hunt((), Config()), DuckDBEngine(), chain=chain)
    [incident] = result.incidents
    assert (incident.stage, incident.direct_stage) == (4, 4)
    assert not any(stage(incident, n).reached for n in (5, 6, 7))


def test_progress_counts_every_byte_of_both_passes():
    """The progress bar's total is PASSES times the inputs' size: both reads report every byte."""
    from rpcwatch.triage.run import PASSES

    inputs = list(expand_inputs([str(EXAMPLES)]))
    read: list[int] = []
    run_triage(inputs, plan_hunt((), Config()), DuckDBEngine(), on_bytes=read.append)
    assert sum(read) == PASSES * sum(i.size for i in inputs) > 0
    exposure_only: list[int] = []
    run_triage(inputs, plan_hunt((), Config()), DuckDBEngine(), incidents=False, on_bytes=exposure_only.append)
    assert sum(exposure_only) == sum(i.size for i in inputs)


# ---- OTRF Empire PsExec, the client moved to the internet ------------------------------------

@pytest.fixture(scope="module")
def psexec(corpus, tmp_path_factory):
    folder = tmp_path_factory.mktemp("psexec")
    otrf_psexec.write_zeek_logs(corpus, folder)
    return triage([folder]), otrf_psexec.windows_table(corpus), folder


def test_psexec_network_reaches_remote_execution_with_svcctl(psexec):
    result, _, _ = psexec
    [incident] = result.incidents
    assert incident.source == otrf_psexec.INTERNET_CLIENT
    assert (incident.stage, incident.direct_stage, incident.severity) == (4, 4, "critical")
    assert operations(stage(incident, 4)) == ["svcctl CreateServiceA", "svcctl StartServiceA"]
    assert "epmapper ept_map" in operations(stage(incident, 3))
    assert [h.address for h in result.exposure] == [otrf_psexec.VICTIM]


def _with_windows(result, folder, windows, config=None):
    """The evidence pass over the Zeek logs and the host recording's table."""
    config = config or Config()
    evidence = EvidencePass(targets_of(result.alerts, AddressScope(config)), config)
    for batch in LogReading(list(expand_inputs([str(folder)]))).batches():
        evidence.add(batch.table, batch.data, batch.path)
    evidence.add("windows", windows, "host.json")
    found = evidence.finish()
    found.tables_seen = {"zeek.conn", "zeek.dce_rpc", "windows"}
    return IncidentBuilder(config, result.alerts, found).build()


def test_psexec_host_logs_add_the_service_process(psexec):
    """The Windows side, once the table exists: services.exe started cmd.exe on WORKSTATION6."""
    result, windows, folder = psexec
    [incident] = _with_windows(result, folder, windows).incidents
    victim = incident.victims[0]
    assert victim.hosts == [otrf_psexec.VICTIM_HOST]
    processes = [e for e in stage(incident, 4).direct if e.search == EXECUTION_PROCESSES]
    assert {(e.event_code, e.image, e.parent_image) for e in processes} >= {
        (1, "C:\\Windows\\System32\\cmd.exe", "C:\\Windows\\System32\\services.exe")}
    assert all(e.host == otrf_psexec.VICTIM_HOST for e in processes)
    assert not any("Windows" in m for m in stage(incident, 4).missing)


def test_windows_inbound_logged_with_the_local_host_as_source(psexec):
    """Sysmon 3 written the JPCERT way (Source = the local listener on 135) still orients."""
    result, _, folder = psexec
    flipped = pa.Table.from_pylist([{
        "EventID": 3, "EventRecordID": 7, "Computer": "SRV01.example", "Initiated": "false",
        "SourceIp": "10.9.8.7", "SourcePort": "135", "DestinationIp": otrf_psexec.INTERNET_CLIENT,
        "DestinationPort": "50123", "Image": "C:\\Windows\\System32\\svchost.exe",
        "TimeCreated_SystemTime": "2020-09-20T16:16:57.000Z"}])
    [incident] = _with_windows(result, folder, flipped).incidents
    victims = {v.address: v for v in incident.victims}
    assert victims["10.9.8.7"].stage == 2 and victims["10.9.8.7"].hosts == ["SRV01.example"]


def test_rows_and_alerts_make_the_same_evidence(examples):
    """The second pass builds evidence from columns, alerts from dictionaries: a record
    seen both ways must be the same evidence, or it would count twice."""
    from dataclasses import replace

    from rpcwatch.triage.evidence import evidence_from_alert
    found = {e.identity: e for e in examples.evidence.records()}
    for alert in (a for a in examples.alerts if a.original is not None):  # correlations have no record
        from_alert = evidence_from_alert(alert, "alerts")
        assert replace(found[from_alert.identity], search="alerts") == from_alert
