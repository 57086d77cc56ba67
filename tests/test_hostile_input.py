"""Hostile and damaged input, as an attacker would write it: one bad record never costs the
run; the good records around it still alert; the damage is named; the exit code is 0, 2
(bad options) or 3 (nothing readable), never 1 (docs/reliability.md)."""
from __future__ import annotations

import gzip
import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ZEEK_HEADER = ("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n"
               "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tconn_state\torig_bytes\n"
               "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tcount\n")
SEED_RULE = "Detect RPC from Internet"


def tsv_row(uid: str, ts: str = "1700000000.0", orig_p: str = "40000", orig_bytes: str = "0") -> str:
    return f"{ts}\t{uid}\t45.83.64.17\t{orig_p}\t10.0.0.5\t135\ttcp\tREJ\t{orig_bytes}\n"


def json_row(uid: str, ts: object = 1700000000.0, proto: str = "tcp") -> str:
    return json.dumps({"ts": ts, "uid": uid, "id.orig_h": "45.83.64.17", "id.orig_p": 40000,
                       "id.resp_h": "10.0.0.5", "id.resp_p": 135, "proto": proto, "conn_state": "REJ"})


def hunt(*args: str, config: Path | None = None) -> tuple[int, list[dict], str]:
    """``rpcwatch hunt`` as a user runs it: exit code, JSON alerts, the run summary."""
    command = [sys.executable, "-m", "rpcwatch", "hunt", *args, "--format", "jsonl", "--workers", "0"]
    if config is not None:
        command += ["--config", str(config)]
    # a wide console: the summary's table must not wrap the reasons the tests look for
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "500"})
    alerts = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return result.returncode, alerts, result.stderr


def seed_uids(alerts: list[dict]) -> list[str]:
    return sorted(a["original"]["uid"] for a in alerts if a["rule"]["name"] == SEED_RULE)


# ---- 1, 2: numbers and times no column type can hold ---------------------------------------

def test_a_zeek_count_or_port_above_int64_is_unset_and_counted(tmp_path):
    log = tmp_path / "conn.log"
    log.write_text(ZEEK_HEADER + tsv_row("Cgood") + tsv_row("Cbytes", orig_bytes="18446744073709551615")
                   + tsv_row("Cport", orig_p="18446744073709551615"))
    code, alerts, summary = hunt(str(log), "--no-prefilter")
    assert code == 0
    assert seed_uids(alerts) == ["Cbytes", "Cgood", "Cport"]  # the records are still judged
    assert "count value out of range in field orig_bytes" in summary
    assert "port value out of range in field id.orig_p" in summary


@pytest.mark.parametrize("ts", ["1e20", "-1e20", "1e300", "253402300800", "nan", "inf"])
def test_tsv_times_outside_the_calendar_are_unset_and_counted(tmp_path, ts):
    log = tmp_path / "conn.log"
    log.write_text(ZEEK_HEADER + tsv_row("Cgood") + tsv_row("Cbad", ts=ts))
    code, alerts, summary = hunt(str(log))
    assert code == 0 and seed_uids(alerts) == ["Cbad", "Cgood"]
    bad = next(a for a in alerts if a["original"]["uid"] == "Cbad")
    assert bad["@timestamp"] is None
    assert "ts is not a time in the years 1-9999" in summary


@pytest.mark.parametrize("ts", [1e20, "9999-12-31T23:59:59-01:00", "NaN"])
def test_json_times_outside_the_calendar_are_unset_and_counted(tmp_path, ts):
    log = tmp_path / "conn.json"
    text = json_row("Cgood") + "\n" + json_row("Cbad", ts=ts) + "\n"
    log.write_text(text.replace('"NaN"', "NaN"))
    code, alerts, summary = hunt(str(log))
    assert code == 0 and seed_uids(alerts) == ["Cbad", "Cgood"]
    assert next(a for a in alerts if a["original"]["uid"] == "Cbad")["@timestamp"] is None
    assert "not a time in the years 1-9999" in summary or "invalid ts value" in summary


def test_a_windows_time_after_year_9999_in_utc(tmp_path):
    event = {"Event": {"System": {"Provider": {"#attributes": {"Name": "Microsoft-Windows-Sysmon"}},
                                  "EventID": 3, "EventRecordID": 7, "Channel": "Microsoft-Windows-Sysmon/Operational",
                                  "Computer": "FS-1", "TimeCreated": {"#attributes": {
                                      "SystemTime": "9999-12-31T23:00:00-05:00"}}},
                       "EventData": {"Protocol": "tcp", "Initiated": False, "SourceIp": "45.83.64.17",
                                     "SourcePort": 40000, "DestinationIp": "10.0.0.5", "DestinationPort": 135,
                                     "Image": "C:\\Windows\\System32\\svchost.exe"}}}
    log = tmp_path / "sysmon.json"
    log.write_text(json.dumps(event) + "\n")
    code, alerts, _ = hunt(str(log))
    assert code == 0
    assert [a["rule"]["name"] for a in alerts] == ["Detect RPC from Internet - Windows"]
    assert alerts[0]["@timestamp"] is None


# ---- 3, 4: JSON that breaks parsers -------------------------------------------------------------

@pytest.mark.parametrize("nested", ["[" * 3000 + "]" * 3000, '{"a":' * 1000 + "1" + "}" * 1000])
def test_deeply_nested_json_is_skipped_and_its_neighbours_alert(tmp_path, nested):
    log = tmp_path / "conn.json"
    deep = '{"ts":1,"uid":"Cdeep","id.resp_p":135,"a":' + nested + "}"
    log.write_text("\n".join([json_row("Cbefore"), deep, json_row("Cafter")]) + "\n")
    for prefilter in ([], ["--no-prefilter"]):
        code, alerts, summary = hunt(str(log), *prefilter)
        assert code == 0 and seed_uids(alerts) == ["Cafter", "Cbefore"]
        assert "JSON nested deeper than 64 levels" in summary


def test_a_lone_surrogate_escape_is_kept_as_text(tmp_path):
    log = tmp_path / "conn.json"
    log.write_text(json_row("Cgood") + "\n" + json_row("Csurrogate").replace('"REJ"', '"REJ\\ud800"') + "\n")
    code, alerts, summary = hunt(str(log), "--no-prefilter")
    assert code == 0 and seed_uids(alerts) == ["Cgood", "Csurrogate"]
    assert next(a for a in alerts if a["original"]["uid"] == "Csurrogate")["original"]["conn_state"] == "REJ\\ud800"
    assert "lone UTF-16 surrogate escape" in summary


# ---- 5: unusable headers and configurations -------------------------------------------------------

@pytest.mark.parametrize("separator", ["ab", "\\x00", "\\xff"])
def test_an_unusable_separator_skips_its_block_not_the_file(tmp_path, separator):
    log = tmp_path / "conn.log"
    log.write_text(ZEEK_HEADER.replace("#separator \\x09", "#separator " + separator) + tsv_row("Clost")
                   + ZEEK_HEADER + tsv_row("Ckept"))
    code, alerts, summary = hunt(str(log))
    assert code == 0 and seed_uids(alerts) == ["Ckept"]
    assert "1 skipped" in summary and "data line under a #separator that" in summary


@pytest.mark.parametrize("content,message", [
    (b'[networks]\ninternal = ["10.0.0.0/8"]\n# \xff\xfe\n', "not UTF-8 text"),
    (b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
    (b"[limits]\nmax_line_bytes = -1\n", "must be a positive whole number"),
    (b"[limits]\nmax_lines = 5\n", "unknown limit"),
])
def test_a_bad_configuration_is_a_usage_error(tmp_path, content, message):
    config = tmp_path / "rpcwatch.toml"
    config.write_bytes(content)
    code, _, summary = hunt(str(tmp_path), config=config)
    assert code == 2 and message in summary and "internal error" not in summary


# ---- 9, 10, 11: good records next to damage ---------------------------------------------------

def test_records_inflated_before_gzip_damage_are_kept(tmp_path):
    rows = "".join(tsv_row(f"C{i}", ts=f"{1700000000 + i}.0") for i in range(60000))
    data = bytearray(gzip.compress((ZEEK_HEADER + rows).encode(), compresslevel=6))
    at = len(data) // 2
    data[at] ^= 0xFF
    data[at + 1] ^= 0x55
    log = tmp_path / "conn.log.gz"
    log.write_bytes(bytes(data))
    code, alerts, summary = hunt(str(log))
    assert code == 0 and "corrupt gzip data" in summary
    intact = set(seed_uids(alerts))
    # every record before the damage alerts: the longest prefix C0..Cn is there
    prefix = next(i for i in range(60000) if f"C{i}" not in intact)
    # the damage is in the middle of the compressed data; at most one line next to it is lost
    assert prefix >= 29000, prefix


def test_an_oversized_line_costs_only_itself(tmp_path):
    config = tmp_path / "rpcwatch.toml"
    config.write_text("[limits]\nmax_line_bytes = 65536\n")
    rows = [tsv_row(f"C{i}") for i in range(2000)]
    rows.insert(1000, "1700000000.0\tChuge\t" + "x" * 300_000 + "\n")
    log = tmp_path / "conn.log"
    log.write_text(ZEEK_HEADER + "".join(rows))
    code, alerts, summary = hunt(str(log), config=config)
    assert code == 0 and len(seed_uids(alerts)) == 2000
    assert "1 skipped" in summary and "line longer than the limit" in summary


def test_a_carriage_return_inside_a_tsv_line_costs_that_line(tmp_path):
    log = tmp_path / "conn.log"
    log.write_text(ZEEK_HEADER + tsv_row("Cbefore") + tsv_row("x\r@SUM(1+1)") + tsv_row("Cafter"), newline="")
    code, alerts, summary = hunt(str(log), "--no-prefilter")
    assert code == 0 and seed_uids(alerts) == ["Cafter", "Cbefore"]
    assert "1 skipped" in summary and "carriage return inside a line" in summary
    crlf = tmp_path / "crlf.log"  # a whole file with CRLF line ends is read
    crlf.write_text((ZEEK_HEADER + tsv_row("C1")).replace("\n", "\r\n"), newline="")
    code, alerts, _ = hunt(str(crlf))
    assert code == 0 and seed_uids(alerts) == ["C1"]


def test_a_byte_order_mark_does_not_hide_a_log(tmp_path):
    log = tmp_path / "conn.json"
    log.write_bytes(b"\xef\xbb\xbf" + (json_row("Cbom") + "\n").encode())
    code, alerts, _ = hunt(str(log))
    assert code == 0 and seed_uids(alerts) == ["Cbom"]


# ---- 14: CSV cells ---------------------------------------------------------------------------------

def test_a_csv_cell_cannot_start_a_formula_row(tmp_path):
    import csv

    log = tmp_path / "conn.json"
    log.write_text(json_row("x\r@SUM(1+1)") + "\n" + json_row("=cmd|' /C calc'!A0") + "\n")
    result = subprocess.run([sys.executable, "-m", "rpcwatch", "hunt", str(log), "--format", "csv", "-q"],
                            capture_output=True, timeout=120)
    assert result.returncode == 0
    # read as a spreadsheet would: bytes as written, no newline translation
    rows = list(csv.reader(io.StringIO(result.stdout.decode("utf-8"), newline="")))
    assert len(rows) == 3  # the header and one row per alert: a CR inside a cell starts no row
    records = sorted(row[-1] for row in rows[1:])
    assert records == ["'=cmd|' /C calc'!A0", "x\r@SUM(1+1)"]
    assert not any(cell.startswith(("=", "@", "+", "-")) for row in rows[1:] for cell in row)


# ---- 15: output paths --------------------------------------------------------------------------

def test_unsafe_output_paths_are_refused_before_anything_is_read(tmp_path):
    log = tmp_path / "conn.log"
    log.write_text(ZEEK_HEADER + tsv_row("C1"))
    before = log.read_bytes()
    code, _, summary = hunt(str(log), "-o", str(log))
    assert code == 2 and "is an input of this run" in summary and log.read_bytes() == before
    code, _, summary = hunt(str(tmp_path), "-o", str(log))  # inside an input directory
    assert code == 2 and log.read_bytes() == before
    target = tmp_path / "precious.txt"
    target.write_text("keep")
    link = tmp_path / "alerts.jsonl"
    link.symlink_to(target)
    code, _, summary = hunt(str(log), "-o", str(link))
    assert code == 2 and "symbolic link" in summary and target.read_text() == "keep"
    code, _, _ = hunt(str(log), "-o", str(link), "--force")
    assert code == 0 and json.loads(target.read_text().splitlines()[0])["original"]["uid"] == "C1"
    code, _, summary = hunt(str(log), "-o", str(tmp_path / "missing" / "alerts.jsonl"))
    assert code == 2 and "no such directory" in summary


# ---- 16: what a directory holds ---------------------------------------------------------------------

def test_a_fifo_in_a_log_directory_is_skipped_not_waited_for(tmp_path):
    (tmp_path / "conn.log").write_text(ZEEK_HEADER + tsv_row("C1"))
    os.mkfifo(tmp_path / "pipe")
    code, alerts, summary = hunt(str(tmp_path))
    assert code == 0 and seed_uids(alerts) == ["C1"]
    assert "not a regular file (FIFO)" in summary


def test_an_empty_directory_is_named_and_nothing_read_is_exit_3(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, alerts, summary = hunt(str(empty))
    assert code == 3 and alerts == [] and "directory holds no files" in summary


def test_an_unreadable_directory_is_named(tmp_path, monkeypatch):
    from rpcwatch.sources import expand_inputs

    locked = tmp_path / "locked"
    locked.mkdir()
    (tmp_path / "conn.log").write_text(ZEEK_HEADER + tsv_row("C1"))
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    inputs = {Path(i.path).name: i for i in expand_inputs([str(tmp_path)])}
    assert set(inputs) == {"conn.log", "locked"}
    with pytest.raises(PermissionError):
        inputs["locked"].open_raw()


# ---- 17: suppression keys ------------------------------------------------------------------------

def test_suppress_on_a_field_no_alert_has_is_a_usage_error(tmp_path):
    (tmp_path / "conn.log").write_text(ZEEK_HEADER + tsv_row("C1"))
    code, _, summary = hunt(str(tmp_path), "--suppress", "src.ip")
    assert code == 2 and "no alert has the field" in summary


def test_directories_are_walked_without_following_special_files(tmp_path):
    """A socket is as much a trap as a FIFO."""
    import socket

    (tmp_path / "conn.log").write_text(ZEEK_HEADER + tsv_row("C1"))
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(tmp_path / "sock"))
        assert stat.S_ISSOCK(os.stat(tmp_path / "sock").st_mode)
        code, alerts, summary = hunt(str(tmp_path))
    finally:
        server.close()
    assert code == 0 and seed_uids(alerts) == ["C1"] and "not a regular file (socket)" in summary


@pytest.mark.corpus
def test_an_evtx_with_a_zeroed_header_is_read_from_its_chunks(corpus, tmp_path):
    from rpcwatch.sources import LogReading, expand_inputs

    original = corpus / "evtx-attack-samples" / "Command and Control" / "DE_RDP_Tunnel_5156.evtx"
    damaged = tmp_path / "damaged.evtx"
    data = bytearray(original.read_bytes())
    data[:4096] = bytes(4096)
    damaged.write_bytes(bytes(data))

    def record_ids(path):
        reading = LogReading(list(expand_inputs([str(path)])))
        ids = sorted(i for batch in reading.batches() for i in batch.data.column("EventRecordID").to_pylist())
        return ids, reading.stats[0]

    expected, _ = record_ids(original)
    found, stats = record_ids(damaged)
    assert found == expected and len(found) == 101
    assert stats.warnings["EVTX file header damaged: rebuilt from its chunks"] == 1 and stats.error is None
