"""SigmaHQ rules on Windows events as their authors meant them: Defender's field names with
spaces, product-only rules, Security-log equivalents of Sysmon categories (pySigma's
windows-audit mappings) and empty EVTX values as ``null``.

Where the corpus lacks the event, it is written here as ``evtx_dump`` JSON with the field
values of the real record."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rpcwatch.engines.duckdb import DuckDBEngine
from rpcwatch.hunt import Hunt, plan_hunt
from rpcwatch.sources import expand_inputs

RULES = "sigmahq-sigma/rules"
SECURITY_CHANNEL = "Security"
SYSMON_CHANNEL = "Microsoft-Windows-Sysmon/Operational"
DEFENDER_CHANNEL = "Microsoft-Windows-Windows Defender/Operational"


def evtx_dump_event(channel: str, event_id: int, record: int, data: dict, computer: str = "WIN10") -> dict:
    """One event as ``evtx_dump -o json`` writes it."""
    return {"Event": {"#attributes": {"xmlns": "http://schemas.microsoft.com/win/2004/08/events/event"},
                      "System": {"Provider": {"#attributes": {"Name": channel.split("/")[0]}},
                                 "EventID": event_id, "Level": 0, "Task": 0, "Opcode": 0,
                                 "Keywords": "0x8020000000000000",
                                 "TimeCreated": {"#attributes": {"SystemTime": "2020-06-09T16:10:22.101536Z"}},
                                 "EventRecordID": record, "Channel": channel, "Computer": computer},
                      "EventData": data}}


def hunt(tmp_path: Path, rules: list[Path], events: list[dict]) -> list[dict]:
    log = tmp_path / "events.json"
    log.write_text("".join(json.dumps(event) + "\n" for event in events), encoding="utf-8")
    plan = plan_hunt([str(rule) for rule in rules], bundled=False)
    assert plan.problems == []
    return [a.to_dict() for a in Hunt(list(expand_inputs([str(log)])), plan, DuckDBEngine())]


def records(alerts: list[dict]) -> list[tuple[str, int]]:
    return sorted((alert["rule"]["id"], alert["original"]["EventRecordID"]) for alert in alerts)


# --- 1. Defender's field names with spaces -------------------------------------------

@pytest.mark.corpus
def test_redsun_matches_defender_event_1119_record_542(corpus):
    rule = corpus / "sigmahq-sigma/rules-emerging-threats/2026/Exploits/RedSun" \
        / "win_defender_exploit_redsun_tiering_engine_detected_as_eicar.yml"
    sample = next((corpus / "sigmahq-sigma/regression_data").rglob("a7c3e5f2-8b1d-4e9a-b6c2-3d7f5e8a9b4c.evtx"))
    plan = plan_hunt([str(rule)], bundled=False)
    alerts = [a.to_dict() for a in Hunt(list(expand_inputs([str(sample), str(sample.with_suffix(".json"))])), plan,
                                        DuckDBEngine())]
    assert records(alerts) == [("a7c3e5f2-8b1d-4e9a-b6c2-3d7f5e8a9b4c", 542)] * 2
    for alert in alerts:  # the rule's names and the names the event was written with
        assert alert["original"]["SourceName"] == alert["original"]["Source Name"] == "Real-Time Protection"
        assert alert["original"]["ThreatName"] == "Tool:Win32/EICAR_Test_File"


@pytest.mark.corpus
def test_defender_exclusion_rule_reads_new_value(corpus, tmp_path):
    rule = corpus / RULES / "windows/builtin/windefend/win_defender_config_change_exclusion_added.yml"
    change = {"Product Name": "Microsoft Defender Antivirus", "Old Value": "",
              "New Value": r"HKLM\SOFTWARE\Microsoft\Windows Defender\Exclusions\Paths\C:\Temp = 0x0"}
    other = dict(change, **{"New Value": r"HKLM\SOFTWARE\Microsoft\Windows Defender\Features\TamperProtection = 0x5"})
    alerts = hunt(tmp_path, [rule], [evtx_dump_event(DEFENDER_CHANNEL, 5007, 10, change),
                                     evtx_dump_event(DEFENDER_CHANNEL, 5007, 11, other)])
    assert records(alerts) == [("1321dc4e-a1fe-481d-a016-52c45f0c8b4f", 10)]


# --- 2. logsource with product only ------------------------------------------------------

@pytest.mark.corpus
def test_product_only_rule_reads_every_windows_event(corpus, tmp_path):
    rule = corpus / RULES / "windows/builtin/win_alert_mimikatz_keywords.yml"
    events = [
        evtx_dump_event(SECURITY_CHANNEL, 4688, 1, {"NewProcessName": r"C:\Temp\m.exe",
                                                    "CommandLine": "m.exe privilege::debug sekurlsa::logonpasswords"}),
        evtx_dump_event("System", 7045, 2, {"ServiceName": "mimidrv", "ImagePath": r"C:\Temp\mimidrv.sys"}),
        evtx_dump_event(SYSMON_CHANNEL, 15, 3, {"TargetFilename": r"C:\rules\sekurlsa::x.yml"}),  # filtered
        evtx_dump_event(SYSMON_CHANNEL, 1, 4, {"Image": r"C:\Windows\notepad.exe", "CommandLine": "notepad"}),
    ]
    assert records(hunt(tmp_path, [rule], events)) == [("06d71506-7beb-4f22-8888-e2e5e2ca7fd8", 1),
                                                       ("06d71506-7beb-4f22-8888-e2e5e2ca7fd8", 2)]


def test_rules_of_unread_categories_are_still_refused():
    from rpcwatch.sigma.logsources import routes_for

    assert routes_for({"product": "windows", "category": "file_access"}) == ()
    assert [r.where for r in routes_for({"product": "windows"})] == [None]


# --- 3. Security-log equivalents (pySigma windows-audit) -----------------------------------

#: Security 4688 of NTLM2SelfRelay-med0x2e-security_4624_4688.evtx, record 21374: a process
#: started by WmiPrvSE.exe under a user's logon session
WMIPRVSE_CHILD = {
    "SubjectUserSid": "S-1-5-20", "SubjectUserName": "OFFSEC-DC$", "SubjectDomainName": "OFFSEC",
    "SubjectLogonId": "0x4e07b3", "NewProcessId": "0xd8c",
    "NewProcessName": r"C:\Windows\System32\cmd.exe", "TokenElevationType": "%%1936", "ProcessId": "0x9f4",
    "CommandLine": "", "TargetUserSid": "S-1-0-0", "TargetUserName": "-", "TargetDomainName": "-",
    "TargetLogonId": "0x0", "ParentProcessName": r"C:\Windows\System32\wbem\WmiPrvSE.exe",
    "MandatoryLabel": "S-1-16-12288"}


@pytest.mark.corpus
def test_wmiprvse_child_on_security_4688_reads_subject_logon_id(corpus, tmp_path):
    rule = corpus / RULES / "windows/process_creation/proc_creation_win_wmiprvse_spawning_process.yml"
    system = dict(WMIPRVSE_CHILD, SubjectLogonId="0x3e7")  # the rule's SYSTEM filter
    werfault = dict(WMIPRVSE_CHILD, NewProcessName=r"C:\Windows\System32\WerFault.exe")
    events = [evtx_dump_event(SECURITY_CHANNEL, 4688, 21374, WMIPRVSE_CHILD, "offsec-dc.offsec.lan"),
              evtx_dump_event(SECURITY_CHANNEL, 4688, 21375, system),
              evtx_dump_event(SECURITY_CHANNEL, 4688, 21376, werfault)]
    assert records(hunt(tmp_path, [rule], events)) == [("d21374ff-f574-44a7-9998-4a8c8bf33d7d", 21374)]


REGISTRY_RULE = """
title: Run key written
id: 5b7a6c2e-1d0f-4b3a-9e8d-7c6b5a4f3e2d
logsource: {category: registry_set, product: windows}
detection:
    selection:
        TargetObject|contains: '\\CurrentVersion\\Run\\'
        Image|endswith: '\\powershell.exe'
    condition: selection
level: medium
"""


def test_registry_set_rule_reads_security_4657_with_its_names(tmp_path):
    rule = tmp_path / "registry.yml"
    rule.write_text(REGISTRY_RULE, encoding="utf-8")
    modified = {"SubjectLogonId": "0x2c5d1", "ObjectName": r"\REGISTRY\MACHINE\SOFTWARE\Microsoft\Windows"
                r"\CurrentVersion\Run\updater", "ObjectValueName": "updater", "OperationType": "%%1905",
                "NewValue": r"C:\Temp\u.exe", "ProcessName": r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"}
    created = dict(modified, OperationType="%%1904")  # registry_set is "modified" only
    sysmon = {"EventType": "SetValue", "TargetObject": modified["ObjectName"].replace(r"\REGISTRY\MACHINE", "HKLM"),
              "Image": modified["ProcessName"], "Details": r"C:\Temp\u.exe"}
    events = [evtx_dump_event(SECURITY_CHANNEL, 4657, 1, modified), evtx_dump_event(SECURITY_CHANNEL, 4657, 2, created),
              evtx_dump_event(SYSMON_CHANNEL, 13, 3, sysmon)]
    assert records(hunt(tmp_path, [rule], events)) == [("5b7a6c2e-1d0f-4b3a-9e8d-7c6b5a4f3e2d", 1),
                                                       ("5b7a6c2e-1d0f-4b3a-9e8d-7c6b5a4f3e2d", 3)]


def test_rule_reading_a_field_4657_lacks_runs_on_sysmon_only():
    from sigma.rule import SigmaRule

    from rpcwatch.sigma.compiler import compile_rule
    from rpcwatch.sigma.logsources import bind

    rule = SigmaRule.from_yaml(REGISTRY_RULE.replace("Image|endswith", "User|contains"))
    bound = bind(compile_rule(rule))
    assert len(bound) == 1 and "Sysmon" in str(bound[0].where)


# --- 4. null and empty values -------------------------------------------------------------

#: Sysmon 8 of sideloading_uacbypass_rundll32_injection_c2.evtx, record 417082: a thread
#: started in memory no module backs, so StartModule is an empty element
INJECTED_THREAD = {
    "RuleName": "", "UtcTime": "2020-06-09 16:10:22.101", "SourceProcessGuid": "{747f3d96-b4fe-5edf-6b03-000000000f00}",
    "SourceProcessId": "3052", "SourceImage": r"C:\Windows\System32\wscript.exe",
    "TargetProcessGuid": "{747f3d96-b4fe-5edf-6c03-000000000f00}", "TargetProcessId": "4224",
    "TargetImage": r"C:\Windows\SysWOW64\rundll32.exe", "NewThreadId": "4532",
    "StartAddress": "0x0000000000B90000", "StartModule": "", "StartFunction": ""}


@pytest.mark.corpus
def test_cactustorch_matches_an_empty_start_module(corpus, tmp_path):
    rule = corpus / RULES / "windows/create_remote_thread/create_remote_thread_win_hktl_cactustorch.yml"
    backed = dict(INJECTED_THREAD, StartModule=r"C:\Windows\SysWOW64\ntdll.dll", StartFunction="RtlUserThreadStart")
    events = [evtx_dump_event(SYSMON_CHANNEL, 8, 417082, INJECTED_THREAD),
              evtx_dump_event(SYSMON_CHANNEL, 8, 417083, backed)]
    assert records(hunt(tmp_path, [rule], events)) == [("2e4e488a-6164-4811-9ea1-f960c7359c40", 417082)]


NULL_RULE = """
title: No value
id: 0e0c5f3a-3c1d-4f7a-8a47-1f1b6a0d2c9e
logsource: {product: windows, service: sysmon}
detection:
    selection: {EventID: 1}
    no_value: {ParentCommandLine: null}
    blank: {ParentCommandLine: ''}
    condition: selection and no_value and {condition}
level: low
"""


@pytest.mark.parametrize("condition,expected", [("blank", [2]), ("not blank", [1, 3])])
def test_null_is_an_absent_unset_or_empty_value_and_empty_only_empty(tmp_path, condition, expected):
    rule = tmp_path / "null.yml"
    rule.write_text(NULL_RULE.replace("{condition}", condition), encoding="utf-8")
    events = [evtx_dump_event(SYSMON_CHANNEL, 1, 1, {"Image": "a.exe"}),
              evtx_dump_event(SYSMON_CHANNEL, 1, 2, {"Image": "b.exe", "ParentCommandLine": ""}),
              evtx_dump_event(SYSMON_CHANNEL, 1, 3, {"Image": "c.exe", "ParentCommandLine": None}),
              evtx_dump_event(SYSMON_CHANNEL, 1, 4, {"Image": "d.exe", "ParentCommandLine": "explorer.exe"})]
    assert [record for _, record in records(hunt(tmp_path, [rule], events))] == expected
