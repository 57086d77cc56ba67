"""WindowsJsonReader: evtx_dump JSON (the Sigma regression exports and renderings of
corpus EVTX files), NXLog/Mordor NDJSON (OTRF) and Winlogbeat shapes generated from
corpus events; sniffing against Zeek JSON; broken input."""
from __future__ import annotations

import io
import json
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from rpcwatch.sources import sniff_reader
from rpcwatch.sources.base import ReadStats
from rpcwatch.sources.inputs import InputFile, open_decompressed
from rpcwatch.sources.winjson import WindowsJsonReader
from rpcwatch.sources.zeek import ZeekJsonReader

from .windows_corpus import parser_records, port_135_events, read, sigma_text
from .winlogbeat_fixtures import corpus_events, dotted, raw_winlogbeat, sysmon_module, write_ndjson

pytestmark = pytest.mark.corpus

HOST = "otrf-security-datasets/datasets/atomic/windows/lateral_movement/host"
SHARPSC = f"{HOST}/covenant_sharpsc_query_dcerpc_smb_svcctl_2020-08-06012009.json"
#: SOURCES.md: "port-135 events: 6" in the sharpsc recording (both ends of each connection)
SHARPSC_PORT_135 = sorted([
    (3, "172.18.39.5", 54358, "172.18.39.6", 135, "false", "svchost.exe"),
    (3, "172.18.39.5", 54358, "172.18.39.6", 135, "true", "grunthttp.exe"),
    (5156, "172.18.39.5", 54358, "172.18.39.6", 135, "%%14592", "svchost.exe"),
    (5156, "172.18.39.5", 54358, "172.18.39.6", 135, "%%14593", "grunthttp.exe"),
    (5156, "fe80::3816:b2ee:1b9b:324b", 64473, "fe80::3816:b2ee:1b9b:324b", 135, "%%14592", "svchost.exe"),
    (5156, "fe80::3816:b2ee:1b9b:324b", 64473, "fe80::3816:b2ee:1b9b:324b", 135, "%%14593", "dsregcmd.exe"),
])
PSEXEC = "evtx-attack-samples/Privilege Escalation/sysmon_privesc_psexec_dwell.evtx"
ROTTEN_POTATO = "evtx-attack-samples/Privilege Escalation/privesc_rotten_potato_from_webshell_metasploit_sysmon_1_8_3.evtx"
SYSMON_EID3_FILES = (
    PSEXEC, ROTTEN_POTATO,
    "evtx-attack-samples/Lateral Movement/LM_sysmon_remote_task_src_powershell.evtx",
    "evtx-attack-samples/Credential Access/babyshark_mimikatz_powershell.evtx",
    "evtx-attack-samples/Command and Control/DE_sysmon-3-rdp-tun.evtx",
    "hayabusa-sample-evtx/EVTX-ATTACK-SAMPLES/Lateral Movement/LM_5145_4674_SVCCTL.evtx",
)
RDP_TUNNEL = "evtx-attack-samples/Command and Control/DE_RDP_Tunnel_5156.evtx"
SYSTEM_LOG = "evtx-rs-samples/samples/sample-with-zero-data-size-event.evtx"
MIXED_TYPES = "field {} has values of different types (kept as text)"


def comparable(row: dict) -> dict:
    """A row as Sigma compares it: values as text, unset fields left out."""
    return {key: sigma_text(value) for key, value in row.items() if value is not None}


# --- evtx_dump JSON ------------------------------------------------------------------

def test_regression_exports_give_the_records_of_their_evtx(corpus):
    """Every Sigma regression .json against its .evtx: same records, same field values
    once typed alike. The exports were made by another tool that trims trailing spaces
    (91 values; 92 columns, as Defender's ``Source Name`` is also ``SourceName``); one
    export was made from a different rendering of its event."""
    pairs = sorted((corpus / "sigmahq-sigma/regression_data").rglob("*.evtx"))
    assert len(pairs) == 204
    trimmed, differing = 0, {}
    for evtx_path in pairs:
        from_evtx = sorted(read(evtx_path).rows, key=lambda row: row["EventRecordID"])
        from_json = read(evtx_path.with_suffix(".json"))
        assert from_json.stats.format == "evtx-json"
        exported = sorted(from_json.rows, key=lambda row: row["EventRecordID"])
        assert [r["EventID"] for r in from_evtx] == [r["EventID"] for r in exported]
        for ours, theirs in zip(map(comparable, from_evtx), map(comparable, exported)):
            assert ours.keys() == theirs.keys()
            for key in ours:
                if ours[key] != theirs[key] and ours[key].rstrip() == theirs[key]:
                    trimmed += 1
                elif ours[key] != theirs[key]:
                    differing[(evtx_path.parent.name, key)] = (ours[key], theirs[key])
    assert trimmed == 92
    assert differing == {
        ("proc_creation_win_susp_right_to_left_override", "TimeCreated_SystemTime"):
            ("2026-03-20T08:31:26.751156Z", "2026-03-20T08:31:26.751156500Z"),
        ("proc_creation_win_susp_right_to_left_override", "ParentCommandLine"):
            ("C:\\Windows\\Explorer.EXE", "C:\\Windows\\Explorer.exe"),
    }


def evtx_dump_renderings(path: Path) -> dict[str, str]:
    """The parser's own JSON of a corpus file written the ways evtx_dump writes it."""
    records = parser_records(path)
    pretty = [json.dumps(json.loads(record["data"]), indent=2) for record in records]
    with_attributes_apart = [record["data"] for record in parser_records(path, separate_json_attributes=True)]
    return {
        "jsonl": "".join(record["data"] + "\n" for record in records),
        "pretty": "\n".join(pretty) + "\n",
        "pretty with Record lines": "".join(f"Record {r['event_record_id']}\n{p}\n" for r, p in zip(records, pretty)),
        "separate attributes": "\n".join(with_attributes_apart),
    }


@pytest.mark.parametrize("name", [PSEXEC, RDP_TUNNEL, SYSTEM_LOG])
def test_evtx_dump_renderings_give_the_evtx_records(corpus, tmp_path, name):
    expected = read(corpus / name).rows
    for label, text in evtx_dump_renderings(corpus / name).items():
        path = tmp_path / "export.json"
        path.write_text(text)
        reading = read(path)
        assert (reading.stats.format, reading.stats.records) == ("evtx-json", len(expected)), label
        assert list(map(comparable, reading.rows)) == list(map(comparable, expected)), label
        assert not reading.stats.skipped, label


def test_broken_record_in_pretty_export_is_skipped_alone(corpus, tmp_path):
    text = evtx_dump_renderings(corpus / PSEXEC)["pretty"]
    records = text.split("\n{")
    records[5] = records[5][: len(records[5]) // 2]  # cut the sixth record in the middle
    path = tmp_path / "cut.json"
    path.write_text("\n{".join(records))
    reading = read(path)
    assert reading.stats.records == 12
    assert dict(reading.stats.skipped) == {"not a JSON object (malformed line)": 1}
    expected = [row for index, row in enumerate(read(corpus / PSEXEC).rows) if index != 5]
    assert list(map(comparable, reading.rows)) == list(map(comparable, expected))


# --- NXLog / Mordor flat NDJSON -----------------------------------------------------

def test_otrf_sharpsc_events_and_network_event_counts(corpus):
    reading = read(corpus / SHARPSC)
    assert (reading.stats.format, reading.stats.records, len(reading.rows)) == ("ndjson-flat", 349, 349)
    assert not reading.stats.skipped and not reading.stats.warnings
    network = Counter((row["Channel"], row["EventID"]) for row in reading.rows
                      if row["EventID"] in (3, 5156, 5157, 5158))
    assert network == {("Security", 5156): 53, ("Security", 5158): 22,
                       ("Microsoft-Windows-Sysmon/Operational", 3): 12, ("Security", 5157): 5}
    assert port_135_events(reading.rows) == SHARPSC_PORT_135


def test_otrf_system_fields_get_sigma_names_and_types(corpus):
    row = next(row for row in read(corpus / SHARPSC).rows
               if row["EventID"] == 3 and sigma_text(row["DestinationPort"]) == "135" and row["Initiated"] == "false")
    assert {key: row[key] for key in ("EventID", "Channel", "Computer", "Provider_Name", "Provider_Guid",
                                      "EventRecordID", "Execution_ProcessID", "Execution_ThreadID",
                                      "Security_UserID", "Keywords", "Opcode", "Task", "Version")} == {
        "EventID": 3, "Channel": "Microsoft-Windows-Sysmon/Operational", "Computer": "WORKSTATION6.theshire.local",
        "Provider_Name": "Microsoft-Windows-Sysmon", "Provider_Guid": "{5770385F-C22A-43E0-BF4C-06F5698FFBD9}",
        "EventRecordID": 297836, "Execution_ProcessID": 3432, "Execution_ThreadID": 4512,
        "Security_UserID": "S-1-5-18", "Keywords": "0x8000000000000000", "Opcode": 0, "Task": 3, "Version": 5}
    # producer types kept: NXLog wrote Initiated and ports as strings
    assert (row["Initiated"], row["DestinationPort"], row["Image"]) == ("false", "135", "C:\\Windows\\System32\\svchost.exe")
    assert row["TimeCreated_SystemTime"] is None and row["EventTime"] == "2020-08-06 01:20:25"
    security = next(row for row in read(corpus / SHARPSC).rows if row["EventID"] == 5156)
    assert (security["Opcode"], security["RenderingInfo_Opcode"], security["Keywords"]) == (0, "Info", "0x8020000000000000")


def test_nxlog_xml_escapes_are_undone_except_in_message(corpus):
    rows = read(corpus / SHARPSC).rows
    pipes = Counter(row["PipeName"] for row in rows if row.get("PipeName"))
    assert pipes["<Anonymous Pipe>"] > 0 and not any("&lt;" in pipe for pipe in pipes)
    assert all("&lt;" not in str(value) and "&amp;" not in str(value)
               for row in rows for key, value in row.items() if key != "Message")
    raw_lines = (corpus / SHARPSC).read_text().splitlines()
    assert sum("&lt;Anonymous Pipe&gt;" in line for line in raw_lines) == pipes["<Anonymous Pipe>"]


def test_zipped_otrf_host_recordings(corpus):
    """Read through expand_inputs as zip members; counts from json.loads of each member."""
    for archive in sorted((corpus / HOST).glob("*.zip")):
        reading = read(archive)
        assert reading.stats.path.startswith(f"{archive}!")
        assert reading.stats.format == "ndjson-flat"
        assert not reading.stats.skipped
        assert reading.stats.records == len(reading.rows)
    counts = {archive.name: read(archive).stats.records for archive in (corpus / HOST).glob("*.zip")}
    assert counts == {"covenant_dcom_registerxll.zip": 5504, "covenant_sharpsc_query_dcerpc_smb_svcctl.zip": 349,
                      "covenant_sharpwmi_create_dcerpc_wmi.zip": 2343, "empire_psexec_dcerpc_tcp_svcctl.zip": 4348}


def test_lowercase_security_channel_is_kept_as_written(corpus):
    channels = Counter(row["Channel"] for archive in (corpus / HOST).glob("*.zip") for row in read(archive).rows)
    assert channels["security"] == 862 and channels["Security"] == 3253


def test_mixed_types_in_one_batch_become_text_with_a_warning(corpus, tmp_path):
    """Initiated written as a boolean and ports as numbers on some lines only."""
    lines = []
    for index, line in enumerate((corpus / SHARPSC).read_text().splitlines()):
        event = json.loads(line)
        if event["EventID"] == 3 and index % 2:
            event["Initiated"] = event["Initiated"] == "true"
            event["DestinationPort"] = int(event["DestinationPort"])
        lines.append(json.dumps(event))
    path = tmp_path / "mixed.json"
    path.write_text("\n".join(lines) + "\n")
    reading = read(path)
    assert dict(reading.stats.warnings) == {MIXED_TYPES.format("DestinationPort"): 1, MIXED_TYPES.format("Initiated"): 1}
    assert [table.schema.field("Initiated").type for table in reading.batches] == [pa.string()]
    assert Counter(row["Initiated"] for row in reading.rows if row["EventID"] == 3) == {"true": 6, "false": 6}
    assert port_135_events(reading.rows) == SHARPSC_PORT_135


def test_malformed_lines_are_skipped_and_counted(corpus, tmp_path):
    lines = (corpus / SHARPSC).read_text().splitlines()
    lines[10:10] = ["not json at all", '{"EventID": 3, "Channel": "Secur', "[1, 2]", ""]
    path = tmp_path / "broken.json"
    path.write_text("\n".join(lines) + "\n")
    reading = read(path)
    assert len(reading.rows) == 349
    assert reading.stats.records == 352  # record-like lines seen; blank lines are not records
    assert dict(reading.stats.skipped) == {"not a JSON object (malformed line)": 3}
    assert port_135_events(reading.rows) == SHARPSC_PORT_135


def test_stdin(corpus, monkeypatch):
    data = (corpus / SHARPSC).read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    reading = read("-")
    assert (reading.stats.format, reading.stats.records, reading.stats.bytes_read) == ("ndjson-flat", 349, len(data))


# --- Winlogbeat ----------------------------------------------------------------------

SYSTEM_COMPARED = ("EventID", "Channel", "Computer", "Provider_Name", "EventRecordID", "Execution_ProcessID",
                   "Execution_ThreadID", "Security_UserID", "Version", "TimeCreated_SystemTime")


def test_raw_winlogbeat_gives_the_evtx_fields(corpus, tmp_path):
    events = corpus_events(corpus / RDP_TUNNEL) + corpus_events(corpus / PSEXEC)
    reading = read(write_ndjson(tmp_path / "winlogbeat.json", [raw_winlogbeat(event) for event in events]))
    assert (reading.stats.format, reading.stats.records) == ("winlogbeat", 113)
    expected = read(corpus / RDP_TUNNEL).rows + read(corpus / PSEXEC).rows
    for ours, evtx_row, event in zip(reading.rows, expected, events):
        fields = SYSTEM_COMPARED + tuple(event.get("EventData") or ())
        assert {key: sigma_text(ours.get(key)) for key in fields} == \
               {key: sigma_text(evtx_row.get(key)) or "" if key in (event.get("EventData") or ()) else
                sigma_text(evtx_row.get(key)) for key in fields}
    assert {row["Provider_Guid"] for row in reading.rows if row["EventID"] == 5156} == {
        "{54849625-5478-4994-A5BA-3E3B0328C30D}"}
    assert port_135_events(reading.rows) == port_135_events(expected)


@pytest.mark.parametrize("directions", [("egress", "ingress"), ("outbound", "inbound")])
@pytest.mark.parametrize("layout", ["nested", "dotted keys"])
def test_sysmon_module_renames_are_undone(corpus, tmp_path, directions, layout):
    events = [event for name in SYSMON_EID3_FILES for event in corpus_events(corpus / name)]
    documents = [sysmon_module(raw_winlogbeat(event), directions) for event in events]
    if layout == "dotted keys":
        documents = [dotted(document) for document in documents]
    reading = read(write_ndjson(tmp_path / "sysmon.json", documents))
    assert (reading.stats.format, reading.stats.records) == ("winlogbeat", len(events))
    expected = [row for name in SYSMON_EID3_FILES for row in read(corpus / name).rows]
    network = ("Image", "ProcessId", "ProcessGuid", "Protocol", "SourceIp", "SourceHostname", "SourcePort",
               "DestinationIp", "DestinationHostname", "DestinationPort", "DestinationPortName", "Initiated",
               "SourceIsIpv6", "DestinationIsIpv6", "User", "RuleName") + SYSTEM_COMPARED
    access = ("SourceImage", "SourceProcessId", "SourceProcessGUID", "SourceThreadId", "TargetImage",
              "GrantedAccess") + SYSTEM_COMPARED
    # Sysmon 4's own Version must not clash with the System Version
    state_change = ("State", "EventData_Version") + SYSTEM_COMPARED
    compared = Counter()
    for ours, evtx_row in zip(reading.rows, expected):
        fields = {3: network, 10: access, 4: state_change}.get(evtx_row["EventID"], SYSTEM_COMPARED)
        assert {key: sigma_text(ours.get(key)) for key in fields} == \
               {key: sigma_text(evtx_row.get(key)) for key in fields}
        compared[evtx_row["EventID"]] += 1
        if evtx_row["EventID"] == 10:
            assert ours["Image"] is None  # process.executable came from SourceImage here
    assert (compared[3], compared[10], compared[4]) == (56, 4, 1)
    assert port_135_events(reading.rows) == port_135_events(expected)
    assert len(port_135_events(reading.rows)) == 7


# --- sniffing ------------------------------------------------------------------------

def head(path: Path) -> bytes:
    """The decompressed first bytes the readers are sniffed with."""
    _, first, stream = open_decompressed(InputFile(str(path), lambda: open(path, "rb")), ReadStats(str(path)))
    stream.close()
    return first


def sniffed(path: Path) -> type | None:
    return sniff_reader(head(path))


def test_zeek_json_and_windows_json_are_told_apart(corpus, tmp_path):
    zeek_json = [corpus / name for name in (
        "zat/data/json/conn.log", "zat/data/json/dce_rpc.log", "slips/dataset/port-scans/vertical/conn.log",
        "slips/dataset/test9-mixed-zeek-dir/conn.log", "rita/test_data/json_with_all_fields/conn.log",
        "zed-sample-data/zeek-json/dce_rpc.json.gz")]
    assert {path.name: sniffed(path) for path in zeek_json} == {path.name: ZeekJsonReader for path in zeek_json}
    windows_json = [corpus / SHARPSC, *sorted((corpus / "sigmahq-sigma/regression_data").rglob("*.json"))]
    beat = write_ndjson(tmp_path / "beat.json", [raw_winlogbeat(e) for e in corpus_events(corpus / PSEXEC)])
    windows_json += [beat, write_ndjson(tmp_path / "beat_dotted.json",
                                        [dotted(json.loads(line)) for line in beat.read_text().splitlines()])]
    assert {str(path): sniffed(path) for path in windows_json} == {str(path): WindowsJsonReader for path in windows_json}
    # and neither claims the other's files whatever the registration order
    assert not any(ZeekJsonReader.sniff(head(path)) for path in windows_json)
    assert not any(WindowsJsonReader.sniff(head(path)) for path in zeek_json)


def test_only_lines_nested_too_deep_are_taken_out_of_a_block():
    from rpcwatch.sources.base import ReadStats
    from rpcwatch.sources.jsonlines import shallow_lines

    deep = b'{"a":' * 70 + b"1" + b"}" * 70 + b"\n"
    many_braces_in_a_string = b'{"s":"' + b"{" * 80 + b'","b":[[[1]]]}\n'
    fine = b'{"x":1}\n'
    stats = ReadStats("block")
    kept = shallow_lines(fine + deep + many_braces_in_a_string + fine + deep + b'{"y":2}', stats)
    assert kept == fine + many_braces_in_a_string + fine + b'{"y":2}'
    assert stats.skipped == {"JSON nested deeper than 64 levels": 2}
    assert shallow_lines(deep.rstrip(b"\n"), ReadStats("last")) == b""
