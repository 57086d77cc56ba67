"""`Detect RPC from Internet - Windows` on real EVTX and JSON exports, and on real inbound
TCP/135 events whose remote address is rewritten to a public one."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from documents import documents
from sources.windows_corpus import parser_records

from rpcwatch.config import Config
from rpcwatch.engines.duckdb import DuckDBEngine
from rpcwatch.hunt import Hunt, plan_hunt
from rpcwatch.sources import expand_inputs

WINDOWS_RULE = "Detect RPC from Internet - Windows"
EVTX_INBOUND = {
    "evtx-attack-samples/Privilege Escalation/sysmon_privesc_psexec_dwell.evtx": 1,
    "evtx-attack-samples/Credential Access/babyshark_mimikatz_powershell.evtx": 1,
    "evtx-attack-samples/Discovery/dicovery_4661_net_group_domain_admins_target.evtx": 2,
}
OTRF_SHARPSC = ("otrf-security-datasets/datasets/atomic/windows/lateral_movement/host/"
                "covenant_sharpsc_query_dcerpc_smb_svcctl_2020-08-06012009.json")
ANY_INBOUND_135 = """
title: Any inbound TCP/135
logsource: {category: network_connection, product: windows}
detection:
    inbound: {Initiated: 'false', Protocol: tcp}
    local_first: {SourcePort: 135}
    remote_first: {DestinationPort: 135}
    condition: inbound and 1 of local_first, remote_first
"""
PUBLIC_V4, PUBLIC_V6 = "203.0.114.7", "2a01:4f8:c17:1::7"


def hunt(paths, rules=(), bundled=True):
    plan = plan_hunt([str(r) for r in rules], bundled=bundled)
    assert not plan.problems, plan.problems
    return documents(Hunt(list(expand_inputs([str(p) for p in paths])), plan, DuckDBEngine()))


@pytest.fixture
def inbound_rule(tmp_path):
    path = tmp_path / "inbound.yml"
    path.write_text(ANY_INBOUND_135.replace("1 of local_first, remote_first", "(local_first or remote_first)"))
    return path


def test_lab_recordings_raise_no_internet_alerts(corpus):
    paths = [corpus / "evtx-attack-samples", corpus / "hayabusa-sample-evtx", corpus / OTRF_SHARPSC]
    alerts = hunt(paths)
    assert [a for a in alerts if a["rule"]["name"] == WINDOWS_RULE] == []


def test_every_inbound_tcp_135_event_is_found_as_inbound(corpus, inbound_rule):
    alerts = hunt([corpus / p for p in EVTX_INBOUND] + [corpus / OTRF_SHARPSC], [inbound_rule], bundled=False)
    by_file = Counter(Path(a["log"]["file"]["path"]).relative_to(corpus).as_posix() for a in alerts)
    assert by_file == {**EVTX_INBOUND, OTRF_SHARPSC: 3}
    # whichever way Windows logged it, the alert shows the listener as destination:135
    assert {a["destination"]["port"] for a in alerts} == {135}
    assert Counter(a["event"]["code"] for a in alerts) == {3: 3, 5156: 4}


def rewritten(record: dict, public: str) -> dict:
    """A real inbound event with its remote address replaced (either orientation)."""
    data = record["Event"]["EventData"]
    if "SourceIp" in data:  # Sysmon 3
        remote = "SourceIp" if str(data["DestinationPort"]) == "135" else "DestinationIp"
    else:  # Security 5156/5157
        remote = "SourceAddress" if str(data["DestPort"]) == "135" else "DestAddress"
    data[remote] = public
    return record


def inbound_records(path: Path) -> list[dict]:
    records = [json.loads(r["data"]) for r in parser_records(path)]
    inbound = []
    for record in records:
        system, data = record["Event"]["System"], record["Event"].get("EventData") or {}
        ports = {str(data.get(k)) for k in ("SourcePort", "DestinationPort", "DestPort")}
        if system["EventID"] in (3, 5156) and "135" in ports and \
                str(data.get("Initiated", data.get("Direction"))).lower() in ("false", "%%14592"):
            inbound.append(record)
    return inbound


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_rewritten_inbound_events_alert_with_the_remote_side_as_source(corpus, tmp_path):
    records = [r for p in EVTX_INBOUND for r in inbound_records(corpus / p)]
    assert len(records) == 4
    public = [rewritten(r, PUBLIC_V6 if ":" in str(r["Event"]["EventData"].get("SourceIp", r["Event"]["EventData"]
                                                                                 .get("SourceAddress"))) else PUBLIC_V4)
              for r in records]
    alerts = [a for a in hunt([write_jsonl(tmp_path / "inbound.json", public)]) if a["rule"]["name"] == WINDOWS_RULE]
    assert len(alerts) == 4
    assert sorted((a["source"]["ip"], a["destination"]["port"], a["event"]["code"]) for a in alerts) == [
        (PUBLIC_V4, 135, 3), (PUBLIC_V4, 135, 5156), (PUBLIC_V6, 135, 3), (PUBLIC_V6, 135, 5156)]
    for alert in alerts:
        assert alert["event"]["outcome"] == "established"
        assert alert["network"]["transport"] == "tcp"
        assert alert["host"]["name"] and alert["process"]["executable"].lower().endswith(("svchost.exe", "mmc.exe"))
        assert isinstance(alert["original"]["EventRecordID"], int)  # the record, with its native names
        assert alert["original"]["Computer"] == alert["host"]["name"]


def test_blocked_connections_alert_as_blocked(corpus, tmp_path):
    records = inbound_records(corpus / "evtx-attack-samples/Discovery/dicovery_4661_net_group_domain_admins_target.evtx")
    blocked = []
    for record in records:
        record["Event"]["System"]["EventID"] = 5157
        blocked.append(rewritten(record, PUBLIC_V4))
    alerts = [a for a in hunt([write_jsonl(tmp_path / "blocked.json", blocked)]) if a["rule"]["name"] == WINDOWS_RULE]
    assert [a["event"]["outcome"] for a in alerts] == ["blocked", "blocked"]


def test_rewritten_nxlog_events(corpus, tmp_path):
    lines = []
    for line in (corpus / OTRF_SHARPSC).read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        inbound = str(event.get("Initiated", event.get("Direction"))).lower() in ("false", "%%14592")
        port = str(event.get("DestinationPort", event.get("DestPort")))
        if event.get("EventID") in (3, 5156) and inbound and port == "135":
            key = "SourceIp" if "SourceIp" in event else "SourceAddress"
            event[key] = PUBLIC_V6 if ":" in event[key] else PUBLIC_V4
        lines.append(json.dumps(event))
    (tmp_path / "sharpsc.json").write_text("\n".join(lines) + "\n")
    alerts = [a for a in hunt([tmp_path / "sharpsc.json"]) if a["rule"]["name"] == WINDOWS_RULE]
    assert sorted((a["event"]["code"], a["source"]["ip"], a["host"]["name"]) for a in alerts) == [
        (3, PUBLIC_V4, "WORKSTATION6.theshire.local"), (5156, PUBLIC_V4, "WORKSTATION6.theshire.local"),
        (5156, PUBLIC_V6, "MORDORDC.theshire.local")]


def test_internal_networks_apply_to_windows_too(corpus, tmp_path):
    records = [rewritten(r, PUBLIC_V4) for r in inbound_records(
        corpus / "evtx-attack-samples/Privilege Escalation/sysmon_privesc_psexec_dwell.evtx")]
    path = write_jsonl(tmp_path / "inbound.json", records)
    plan = plan_hunt(config=Config().with_internal(["10.0.0.0/8", "203.0.114.0/24"]))
    alerts = list(Hunt(list(expand_inputs([str(path)])), plan, DuckDBEngine()))
    assert [a for a in alerts if a["rule"]["name"] == WINDOWS_RULE] == []
