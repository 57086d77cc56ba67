"""EvtxReader on the corpus EVTX files: record counts against the evtx parser itself,
corrupt and cut files, the port-135 events SOURCES.md lists, and the table's shape."""
from __future__ import annotations

import gzip
import io
import json
import os
import sys
import zipfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from rpcwatch.sources import evtx as evtx_reader
from rpcwatch.sources.prefilter import Literal, PrefilterPlan
from rpcwatch.sources.windows import SYSTEM_FIELD_TYPES, WINDOWS_TABLE

from .windows_corpus import parser_records, port_135_events, read, sigma_text

pytestmark = pytest.mark.corpus

EVTX_GROUPS = ("evtx-attack-samples", "hayabusa-sample-evtx", "evtx-rs-samples", "sigmahq-sigma/regression_data")
RDP_TUNNEL = "evtx-attack-samples/Command and Control/DE_RDP_Tunnel_5156.evtx"
DISCOVERY = "evtx-attack-samples/Discovery/dicovery_4661_net_group_domain_admins_target.evtx"
RS_SAMPLES = "evtx-rs-samples/samples"

#: SOURCES.md, "port-135 events" per EVTX file: (EventID, source, source port, destination,
#: destination port, Initiated / Direction, image). Every other EVTX file has none.
PORT_135_EVENTS = {
    "evtx-attack-samples/Privilege Escalation/sysmon_privesc_psexec_dwell.evtx": [
        (3, "10.0.2.17", 50336, "10.0.2.15", 135, "false", "svchost.exe")],
    "evtx-attack-samples/Lateral Movement/LM_sysmon_remote_task_src_powershell.evtx": [
        (3, "10.0.2.15", 50007, "10.0.2.17", 135, "true", "powershell.exe")],
    "evtx-attack-samples/Privilege Escalation/privesc_rotten_potato_from_webshell_metasploit_sysmon_1_8_3.evtx": [
        (3, "127.0.0.1", port, "127.0.0.1", 135, "true", "notepad.exe") for port in (49166, 49169, 49171)],
    "evtx-attack-samples/Credential Access/babyshark_mimikatz_powershell.evtx": [
        (3, "fe80:0:0:0:80ac:4126:fa58:1b81", 49158, "fe80:0:0:0:80ac:4126:fa58:1b81", 135, "false", "mmc.exe")],
    "hayabusa-sample-evtx/EVTX-ATTACK-SAMPLES/Lateral Movement/LM_5145_4674_SVCCTL.evtx": [
        (3, "fe80:0:0:0:d10f:138c:e3cb:b4e5", 55079, "fe80:0:0:0:d10f:138c:e3cb:b4e5", 135, "true", "mmc.exe")],
    RDP_TUNNEL: [
        (5156, "10.0.2.17", 49267, "10.0.2.15", 135, "%%14593", "lsass.exe"),
        (5156, "10.0.2.17", 49272, "10.0.2.15", 135, "%%14593", "lsass.exe")],
    DISCOVERY: [
        (5156, "10.0.2.15", 135, "10.0.2.17", 49223, "%%14592", "svchost.exe"),
        (5156, "fe80::79bf:8ee2:433c:2567", 135, "fe80::79bf:8ee2:433c:2567", 55874, "%%14592", "svchost.exe"),
        (5156, "fe80::79bf:8ee2:433c:2567", 55874, "fe80::79bf:8ee2:433c:2567", 135, "%%14593", "lsass.exe")],
}


def evtx_files(corpus: Path) -> list[Path]:
    return sorted(path for group in EVTX_GROUPS for path in (corpus / group).rglob("*.evtx"))


def test_every_corpus_evtx_yields_what_the_parser_yields(corpus):
    files = evtx_files(corpus)
    ours = {str(p.relative_to(corpus)): read(p).stats.records for p in files}
    parser = {str(p.relative_to(corpus)): len(parser_records(p)) for p in files}
    assert ours == parser
    assert len(files) == 221
    assert sum(ours.values()) == 1550


def test_records_read_are_rows_delivered(corpus):
    for path in evtx_files(corpus):
        reading = read(path)
        assert reading.stats.format == "evtx"
        assert len(reading.rows) == reading.stats.records, path
        assert reading.stats.bytes_read == path.stat().st_size


@pytest.mark.parametrize("name, records, corrupt_regions, stops_at_without_resume", [
    ("sysmon.evtx", 358, 8, 358),
    ("sample_with_a_bad_chunk_magic.evtx", 270, 2, 14),
    ("sample-with-zero-data-size-event.evtx", 335, 1, 2),
    ("Security_short_selected.evtx", 7, 0, 7),
])
def test_corrupt_samples_keep_every_readable_record(corpus, name, records, corrupt_regions, stops_at_without_resume):
    path = corpus / RS_SAMPLES / name
    reading = read(path)
    assert reading.stats.records == records == len(reading.rows)
    assert dict(reading.stats.skipped) == ({evtx_reader.CORRUPT_DATA: corrupt_regions} if corrupt_regions else {})
    assert reading.stats.error is None
    # every record a parser that does not resume yields before it stops is among ours
    import evtx
    first = []
    with pytest.raises(RuntimeError) if corrupt_regions else _no_error():
        for record in evtx.PyEvtxParser(str(path)).records_json():
            first.append(json.loads(record["data"])["Event"]["System"]["EventRecordID"])
    assert len(first) == stops_at_without_resume
    assert not Counter(first) - Counter(row["EventRecordID"] for row in reading.rows)


class _no_error:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_port_135_events_are_found_with_their_fields(corpus):
    found = {}
    for path in evtx_files(corpus):
        events = port_135_events(read(path).rows)
        if events:
            found[str(path.relative_to(corpus))] = events
    assert found == {name: sorted(events) for name, events in PORT_135_EVENTS.items()}
    assert sum(len(events) for events in found.values()) == 12


def test_inbound_port_135_events_read_as_inbound(corpus):
    """Inbound = Sysmon Initiated false / WFP Direction %%14592, whichever end holds 135."""
    inbound = [event for events in PORT_135_EVENTS.values() for event in events if event[5] in ("false", "%%14592")]
    found = []
    for name in PORT_135_EVENTS:
        for row in read(corpus / name).rows:
            direction = sigma_text(row.get("Initiated") if row["EventID"] == 3 else row.get("Direction"))
            ports = {sigma_text(row.get(key)) for key in ("SourcePort", "DestinationPort", "DestPort")}
            if direction in ("false", "%%14592") and "135" in ports:
                found.append(row)
    assert len(found) == len(inbound) == 4
    psexec = next(row for row in found if row["EventID"] == 3 and row["SourceIp"] == "10.0.2.17")
    assert (psexec["Initiated"], psexec["DestinationPort"], psexec["Protocol"]) == (False, 135, "tcp")
    assert psexec["Image"] == "C:\\Windows\\system32\\svchost.exe"
    assert psexec["User"] == "NT AUTHORITY\\NETWORK SERVICE"


def test_system_fields_have_fixed_types_in_every_batch(corpus):
    for path in evtx_files(corpus):
        for table in read(path).batches:
            for name, wanted in SYSTEM_FIELD_TYPES.items():
                assert table.schema.field(name).type == wanted, (path, name)


def test_sysmon_event_fields_and_types(corpus):
    row = next(r for r in read(corpus / next(iter(PORT_135_EVENTS))).rows if r["DestinationPort"] == 135)
    assert {key: row[key] for key in ("EventID", "Channel", "Computer", "Provider_Name", "Provider_Guid",
                                      "EventRecordID", "TimeCreated_SystemTime", "Execution_ProcessID",
                                      "Execution_ThreadID", "Security_UserID", "Level", "Task", "Opcode",
                                      "Keywords", "Version")} == {
        "EventID": 3, "Channel": "Microsoft-Windows-Sysmon/Operational", "Computer": "MSEDGEWIN10",
        "Provider_Name": "Microsoft-Windows-Sysmon", "Provider_Guid": "5770385F-C22A-43E0-BF4C-06F5698FFBD9",
        "EventRecordID": 549485, "TimeCreated_SystemTime": "2020-12-09T16:52:42.934144Z",
        "Execution_ProcessID": 3572, "Execution_ThreadID": 4444, "Security_UserID": "S-1-5-18",
        "Level": 4, "Task": 3, "Opcode": 0, "Keywords": "0x8000000000000000", "Version": 5}
    assert row["DestinationPortName"] == "epmap"
    # namespaces and the empty <Correlation /> element leave no column behind
    assert "xmlns" not in " ".join(row) and "Correlation" not in row


def test_qualified_event_ids_split_into_event_id_and_qualifiers(corpus):
    rows = read(corpus / RS_SAMPLES / "sample-with-zero-data-size-event.evtx").rows
    qualified = [row for row in rows if row.get("EventID_Qualifiers") is not None]
    assert {(row["EventID"], row["EventID_Qualifiers"]) for row in qualified} >= {(6009, 32768), (6011, 32768)}
    assert all(isinstance(row["EventID"], int) for row in rows)


def test_user_data_payload_fields_take_their_own_names(corpus):
    rows = read(corpus / RDP_TUNNEL).rows
    cleared = [row for row in rows if row["EventID"] == 1102]
    assert [(row["SubjectUserName"], row["SubjectDomainName"]) for row in cleared] == [("admin01", "EXAMPLE")]
    # EventData fields of the same name in the other events share the column
    assert Counter(row["SubjectUserName"] for row in rows if row["EventID"] == 4624) == {"PC01$": 3, "-": 2}
    wmi = read(next((corpus / "sigmahq-sigma/regression_data").rglob(
        "win_wmi_activity_nteventlogfile_cleareventlog/*.evtx"))).rows
    assert wmi[0]["EventID"] == 5858
    assert "Win32_NTEventlogFile" in wmi[0]["Operation"] and wmi[0]["ClientProcessId"] == 25920


def test_attributes_of_event_data_keep_the_section_name(corpus):
    rows = read(next((corpus / "sigmahq-sigma/regression_data").rglob(
        "win_taskscheduler_susp_schtasks_delete_or_disable/*.evtx"))).rows
    assert (rows[0]["EventData_Name"], rows[0]["TaskName"]) == ("TaskDisabled", "\\Microsoft\\Windows\\SystemRestore\\SR")


def test_field_with_mixed_types_in_a_batch_becomes_text(corpus):
    """Security 5158 writes ProcessId as a number, 4688 as hex text."""
    reading = read(corpus / RDP_TUNNEL)
    assert reading.stats.warnings == {"field ProcessId has values of different types (kept as text)": 1}
    assert all(table.schema.field("ProcessId").type == pa.string() for table in reading.batches)
    assert {row["ProcessId"] for row in reading.rows if row["EventID"] == 5158} == {"1280", "984"}
    assert {row["ProcessId"] for row in reading.rows if row["EventID"] == 4688} >= {"0x278", "0xe60"}


def test_batches_stay_bounded(corpus, monkeypatch):
    monkeypatch.setattr(evtx_reader, "BATCH_RECORDS", 10)
    reading = read(corpus / RDP_TUNNEL)
    assert [table.num_rows for table in reading.batches] == [10] * 10 + [1]
    assert reading.stats.records == 101


def test_prefilter_keeps_port_135_records_and_counts_all(corpus):
    plan = PrefilterPlan({WINDOWS_TABLE: frozenset({Literal("135", "number")})})
    reading = read(corpus / DISCOVERY, prefilter=plan)
    assert reading.stats.records == 63
    assert port_135_events(reading.rows) == sorted(PORT_135_EVENTS[DISCOVERY])
    assert 3 <= len(reading.rows) < 63


def test_stdin(corpus, monkeypatch):
    data = (corpus / RDP_TUNNEL).read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    reading = read("-")
    assert (reading.stats.records, reading.stats.bytes_read) == (101, len(data))
    assert port_135_events(reading.rows) == PORT_135_EVENTS[RDP_TUNNEL]


def test_gzip_and_zip_member_are_spooled(corpus, tmp_path):
    data = (corpus / DISCOVERY).read_bytes()
    gzipped = tmp_path / "discovery.evtx.gz"
    gzipped.write_bytes(gzip.compress(data))
    archive = tmp_path / "logs.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("Security.evtx", data)
    for path in (gzipped, archive):
        reading = read(path)
        assert (reading.stats.format, reading.stats.records, reading.stats.bytes_read) == ("evtx", 63, len(data))
        assert port_135_events(reading.rows) == sorted(PORT_135_EVENTS[DISCOVERY])
    assert read(archive).stats.path == f"{archive}!Security.evtx"


def test_file_cut_inside_a_chunk_loses_that_chunk_only(corpus, tmp_path):
    """The discovery sample has records 1-50 in chunk 0 and 51-63 in chunk 1."""
    cut = tmp_path / "cut.evtx"
    cut.write_bytes((corpus / DISCOVERY).read_bytes()[: evtx_reader.FILE_HEADER_SIZE + evtx_reader.CHUNK_SIZE + 1000])
    reading = read(cut)
    assert reading.stats.records == len(parser_records(cut)) == 50
    assert dict(reading.stats.skipped) == {evtx_reader.INCOMPLETE_CHUNK: 1}


@pytest.mark.parametrize("garbage, skipped, warned", [
    (1000, {}, {evtx_reader.TRAILING_BYTES: 1}),
    (evtx_reader.CHUNK_SIZE + 1000, {evtx_reader.CORRUPT_DATA: 1}, {evtx_reader.TRAILING_BYTES: 1}),
])
def test_garbage_appended_is_reported_and_records_kept(corpus, tmp_path, garbage, skipped, warned):
    path = tmp_path / "garbage.evtx"
    path.write_bytes((corpus / RDP_TUNNEL).read_bytes() + os.urandom(garbage))
    reading = read(path)
    assert reading.stats.records == 101
    assert dict(reading.stats.skipped) == skipped
    assert dict(reading.stats.warnings) == warned | {"field ProcessId has values of different types (kept as text)": 1}


def test_file_too_short_for_a_header_is_an_error_not_an_exception(corpus, tmp_path):
    path = tmp_path / "header.evtx"
    path.write_bytes((corpus / RDP_TUNNEL).read_bytes()[:4000])
    reading = read(path)
    assert reading.rows == [] and reading.stats.records == 0
    assert reading.stats.error.startswith("unreadable EVTX file (")


def test_error_the_parser_cannot_resume_after_keeps_earlier_records(corpus, monkeypatch):
    """No corpus file makes the parser give up with skip_errors on; a parser that
    yields the real records of a file and then fails stands in for one."""
    real = parser_records(corpus / RDP_TUNNEL)

    class FailingParser:
        def __init__(self, *args, **kwargs):
            pass

        def records_json(self):
            yield from real[:40]
            raise RuntimeError("Failed to parse chunk number 1: stand-in failure")

    monkeypatch.setattr(evtx_reader.evtx_parser, "PyEvtxParser", FailingParser)
    monkeypatch.setattr(evtx_reader, "TAKE_STEP", 30)
    reading = read(corpus / RDP_TUNNEL)
    assert reading.stats.records == len(reading.rows) == 40
    assert dict(reading.stats.skipped) == {evtx_reader.UNREADABLE_REST: 1}
    assert reading.stats.examples[evtx_reader.UNREADABLE_REST] == ["Failed to parse chunk number 1: stand-in failure"]
