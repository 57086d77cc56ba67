"""Terminal output: tables readable at 80 columns with no address broken across lines, a
plain-text run summary with one problem per line, and log or rule text never read as
markup or terminal control."""
from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess

from test_cli import REPO, rpcwatch_command

#: an address as a whole word: IPv4, or IPv6 with at least two colons
ADDRESS = re.compile(r"(?<![\w:.])(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9a-fA-F]{0,4}(?::[0-9a-fA-F]{0,4}){2,7})(?![\w:.])")
BOX = "│┃║"


def run80(*args, cwd=REPO):
    return subprocess.run(rpcwatch_command() + list(args), cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "80"}, timeout=120)


def addresses_in(text: str) -> set[str]:
    found = set()
    for word in ADDRESS.findall(text):
        try:
            found.add(str(ipaddress.ip_address(word)))
        except ValueError:
            continue
    return found


def assert_fits_80_and_keeps_addresses_whole(output: str, expected: set[str]) -> None:
    lines = output.splitlines()
    assert max(len(line) for line in lines) <= 80
    # every address the output should show appears whole on one line
    shown = addresses_in(output)
    assert expected <= shown, expected - shown


def test_hunt_table_at_80_columns_shows_reason_and_risk():
    result = run80("hunt", "examples/", "--format", "table", "-q")
    assert result.returncode == 0
    out = result.stdout
    assert_fits_80_and_keeps_addresses_whole(out, {"45.83.64.17", "167.94.138.44", "10.20.0.12", "10.20.0.14",
                                                   "2a03:b0c0:3:d0::1f:7001", "fd12:3456:789a:1::20"})
    header = next(line for line in out.splitlines() if "reason" in line)
    assert header.split() == ["time", "(UTC)", "risk", "rule", "reason"]
    assert "TCP/135 from 45.83.64.17 (internet) to" in out and "10.20.0.10 (internal), rejected" in out
    assert re.search(r"2024-11-30\s+35\s+Detect RPC", out)  # the risk of a refused probe


def test_long_ipv6_addresses_are_never_split(tmp_path):
    source, victim = "2a03:b0c0:ffff:ffff:ffff:ffff:ffff:7001", "fd12:3456:789a:ffff:ffff:ffff:ffff:20"
    record = {"ts": 1732961010.3, "uid": "CrT6", "id.orig_h": source, "id.orig_p": 53344, "id.resp_h": victim,
              "id.resp_p": 135, "proto": "tcp", "conn_state": "REJ"}
    (tmp_path / "conn.log").write_text(json.dumps(record) + "\n")
    result = run80("hunt", "conn.log", "--format", "table", "-q", cwd=tmp_path)
    assert_fits_80_and_keeps_addresses_whole(result.stdout, {source, victim})


def test_triage_exposure_tables_at_80_columns():
    triage = run80("triage", "examples/", "--format", "table", "-q")
    assert triage.returncode == 0
    assert_fits_80_and_keeps_addresses_whole(triage.stdout, {"167.94.138.44", "10.20.0.12", "10.20.0.30",
                                                             "45.83.64.17", "2a03:b0c0:3:d0::1f:7001",
                                                             "fd12:3456:789a:1::20"})
    assert "INC-0001" in triage.stdout and "SCAN-0001" in triage.stdout and "10.20.0.0/24" in triage.stdout
    assert "circumstantial" in triage.stdout and "why: 10.20.0.12:" in triage.stdout
    exposure = run80("exposure", "examples/", "--format", "table", "-q")
    assert_fits_80_and_keeps_addresses_whole(exposure.stdout, {"10.20.0.12", "167.94.138.44"})
    assert "FS-12.corp.example" in exposure.stdout


def test_summary_is_plain_text_one_problem_per_line_with_the_full_path(tmp_path):
    deep = tmp_path / "a-rather-long-directory-name-for-rotated-logs" / "2024-04-19" / "sensor-east-01"
    deep.mkdir(parents=True)
    (deep / "conn.00:00:00-01:00:00.log").write_text(
        "#separator \\x09\n#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tconn_state\n"
        "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\n"
        "1713488627.1\tC1\t45.83.64.17\t1\t10.0.0.5\t135\ttcp\tS0\nnot\ta\tgood\tline\n")
    (deep / "notes.txt").write_text("just some notes\n")
    result = run80("hunt", str(tmp_path), "--format", "jsonl", cwd=tmp_path)
    assert "\x1b" not in result.stderr and not set(BOX) & set(result.stderr)
    lines = result.stderr.splitlines()
    assert any(line.startswith(f"{deep / 'notes.txt'}: not read: not a supported log format") for line in lines)
    [skipped] = [line for line in lines if "skipped" in line and "conn.00" in line]
    assert skipped.startswith(f"{deep / 'conn.00:00:00-01:00:00.log'}: 1 skipped: wrong number of fields")
    assert "records skipped  1" in lines


def test_rule_titles_and_paths_are_shown_never_interpreted(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    title = "[bold red]x[/bold red] \x1b[2J evil"
    (rules / "broken.yml").write_text(json.dumps({"title": title, "logsource": {"product": "zeek", "service": "conn"},
                                                   "detection": {"sel": {"proto": "tcp"}, "condition": "sel and nope"}}))
    (tmp_path / "[bold]conn.log").write_text(
        json.dumps({"ts": 1.5, "uid": "C1", "id.orig_h": "45.83.64.17", "id.orig_p": 1, "id.resp_h": "10.0.0.5",
                    "id.resp_p": 135, "proto": "tcp", "conn_state": "S0"}) + "\n" + "{broken\n")
    result = run80("hunt", ".", "--rules", "rules", "--format", "jsonl", cwd=tmp_path)
    assert "\x1b" not in result.stderr
    assert "rule not runnable: [bold red]x[/bold red] \\x1b[2J evil" in result.stderr
    assert any(line.startswith("[bold]conn.log: 1 skipped: ") for line in result.stderr.splitlines())
