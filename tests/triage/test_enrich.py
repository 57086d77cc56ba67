"""Every alert carries reason, risk_score, event.outcome, threat and the rule's guide."""
from __future__ import annotations

from pathlib import Path

import pytest
from test_hunt import hunt

from rpcwatch.config import Config
from rpcwatch.networks import address_spellings, parse_address
from rpcwatch.triage.enrich import AlertEnricher
from rpcwatch.triage.mitre import threat_of
from rpcwatch.triage.risk import alert_risk, incident_risk, severity_of_stage
from rpcwatch.triage.scope import AddressScope

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _check_enriched(alert: dict) -> None:
    assert isinstance(alert["reason"], str) and alert["reason"]
    assert 0 <= alert["risk_score"] <= 100
    assert alert["event"]["outcome"]
    assert alert["threat"]["tactic"]["name"] == ["Initial Access"]
    assert alert["threat"]["technique"]["id"] == ["T1133", "T1190"]
    # the guide is named, not repeated in every alert (hunt --with-guides adds it)
    assert alert["rule"]["reference"].startswith("rpcwatch/rules/") and "investigation_guide" not in alert["rule"]


def test_guides_only_when_asked():
    from documents import documents

    from rpcwatch.engines.duckdb import DuckDBEngine
    from rpcwatch.hunt import Hunt, plan_hunt
    from rpcwatch.sources import expand_inputs

    alerts = list(Hunt(list(expand_inputs([str(EXAMPLES)])), plan_hunt(), DuckDBEngine()))
    with_guides = documents(alerts, guides=True)
    assert all(d["rule"]["investigation_guide"].startswith("What to check") for d in with_guides
               if d["rule"]["name"] == "Detect RPC from Internet")
    assert not any("investigation_guide" in d["rule"] for d in documents(alerts))


def test_every_example_alert_is_enriched():
    alerts, _ = hunt([EXAMPLES])
    assert len(alerts) == 18
    for alert in alerts:
        assert alert["reason"] and 0 <= alert["risk_score"] <= 100 and alert["threat"]
        if alert["rule"]["name"] in ("Detect RPC from Internet", "DCE/RPC from Internet",
                                     "Detect RPC from Internet - Windows"):
            _check_enriched(alert)
    reasons = {a["reason"] for a in alerts}
    assert ("RPC Sweep from Internet: id.orig_h 45.83.64.17; value_count 5 (gte 5 of id.resp_h) within 10m, "
            "5 events from 2024-11-30T10:01:00.004411Z to 2024-11-30T10:01:00.407745Z") in reasons
    assert "TCP/135 from 45.83.64.17 (internet) to 10.20.0.10 (internal), rejected" in reasons
    assert ("DCE/RPC svcctl CreateServiceW on TCP/49667 from 167.94.138.44 (internet) to 10.20.0.12 "
            "(internal), established") in reasons
    assert ("TCP/135 from 167.94.138.44 (internet) to 10.20.0.12 (internal) on host FS-12.corp.example, "
            "established") in reasons


def test_every_rita_alert_is_enriched_and_the_sensor_counts_as_internal(corpus):
    alerts, _ = hunt([corpus / "rita"])
    for alert in alerts:
        _check_enriched(alert)
        # 64.225.56.201 is public: only Zeek's local_resp makes it internal
        assert alert["reason"] == (f"TCP/135 from {alert['source']['ip']} (internet) to 64.225.56.201 "
                                   "(internal), rejected")
        assert alert["risk_score"] == 35


def test_a_rejected_probe_scores_lower_than_an_established_session_with_data():
    alerts, _ = hunt([EXAMPLES])
    by_uid = {(a["rule"]["name"], a["original"].get("uid")): a["risk_score"] for a in alerts if "original" in a}
    probe = by_uid[("Detect RPC from Internet", "CBb8kaw3ZqRMm2AKxh")]
    session = by_uid[("Detect RPC from Internet", "CJr3mV8eXq2bT5nK1w")]
    assert probe < session
    assert alert_risk("high", "rejected", False) < alert_risk("high", "established", False) \
        < alert_risk("high", "established", True)
    assert alert_risk("critical", "established", True) == 100
    assert alert_risk(None, "unknown", False) == 45


def test_incident_risk_and_severity_rise_with_the_stage():
    assert [severity_of_stage(s) for s in range(1, 8)] == ["low", "medium", "high"] + ["critical"] * 4
    scores = [incident_risk(stage, [35]) for stage in range(1, 8)]
    assert scores == sorted(scores) and scores[-1] == 100
    assert incident_risk(1, [85]) == 85


@pytest.mark.parametrize("tags,tactics,techniques", [
    (("attack.initial_access", "attack.t1021.003"), ["TA0001"], [("T1021.003", "Distributed Component Object Model")]),
    (("attack.lateral-movement", "attack.t9999", "cve.2021-1675"), ["TA0008"], [("T9999", "")]),
])
def test_mitre_names_from_tags(tags, tactics, techniques):
    threat = threat_of(tags)
    assert threat["tactic"]["id"] == tactics
    assert list(zip(threat["technique"]["id"], threat["technique"]["name"])) == techniques


def test_no_attack_tags_no_threat():
    assert threat_of(("cve.2021-1675", "detection.threat-hunting")) is None


def test_scope_uses_configured_networks_and_the_sensor():
    scope = AddressScope(Config().with_internal(["10.0.0.0/8", "198.51.100.0/24"]))
    assert scope.of("198.51.100.7") == "internal"
    assert scope.of("192.168.1.1") == "non-routable"
    assert scope.of("64.225.56.201") == "internet"
    assert scope.of("64.225.56.201", True) == "internal"
    assert scope.of("::ffff:10.1.2.3") == "internal"
    assert scope.of("not an address") == "unknown"


def test_address_spellings_cover_what_logs_write():
    assert address_spellings(parse_address("::ffff:10.20.0.12")) == ("10.20.0.12",)
    assert address_spellings(parse_address("fe80::a00:27ff:fe1c:1")) == (
        "fe80::a00:27ff:fe1c:1", "fe80:0:0:0:a00:27ff:fe1c:1", "fe80:0000:0000:0000:0a00:27ff:fe1c:0001")


def test_an_event_without_a_connection_reads_as_event_host_process_user():
    enricher = AlertEnricher(Config())
    from rpcwatch.alerts import Alert, RuleRef

    def alert(name: str, fields: dict) -> Alert:
        return Alert(RuleRef("", name, "high"), "windows", None, "unknown", fields, event_id="x")

    plink = alert("Suspicious Plink Port Forwarding", {
        "host.name": "PC01.example.corp", "process.executable": "C:\\Users\\IEUser\\Desktop\\plink.exe",
        "user.name": "PC01\\IEUser", "event.code": 1})
    assert enricher.reason(plink) == ("Suspicious Plink Port Forwarding, event 1 on PC01.example.corp, "
                                      "process C:\\Users\\IEUser\\Desktop\\plink.exe, user PC01\\IEUser")
    assert enricher.reason(alert("Bare", {})) == "Bare, unknown"
