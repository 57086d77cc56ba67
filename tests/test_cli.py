"""Golden tests of the installed console script on real files."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"
REPO = Path(__file__).resolve().parent.parent


def rpcwatch_command() -> list[str]:
    script = shutil.which("rpcwatch", path=str(Path(sys.executable).parent)) or shutil.which("rpcwatch")
    if script is None:
        pytest.fail("the rpcwatch console script is not installed (pip install -e .)")
    return [script]


def run(*args, cwd=None):
    return subprocess.run(rpcwatch_command() + list(args), cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, timeout=120)


HOSTILE_LOG = "\n".join(json.dumps(r) for r in [
    {"ts": 1713488627.1, "uid": "=HYPERLINK(\"http://evil\")", "id.orig_h": "45.83.64.17", "id.orig_p": 1,
     "id.resp_h": "10.0.0.5", "id.resp_p": 135, "proto": "tcp", "conn_state": "S0"},
    {"ts": 1713488628.1, "uid": "[red]x[/red]\u001b[2J<script>alert(1)</script>", "id.orig_h": "45.83.64.17",
     "id.orig_p": 2, "id.resp_h": "10.0.0.6", "id.resp_p": 135, "proto": "tcp", "conn_state": "REJ"},
]) + "\n"


def test_jsonl_golden_on_rita(corpus):
    result = run("hunt", "rita", "--format", "jsonl", "-q", cwd=corpus)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    got = [json.loads(line) for line in result.stdout.splitlines()]
    expected = [json.loads(line) for line in (GOLDEN / "rita.jsonl").read_text().splitlines()]
    assert got == expected


def test_jsonl_is_the_default_when_piped(corpus):
    result = run("hunt", "rita", "-q", cwd=corpus)
    assert len(result.stdout.splitlines()) == 31
    json.loads(result.stdout.splitlines()[0])


def test_summary_on_stderr(corpus):
    result = run("hunt", "rita", "--format", "jsonl", cwd=corpus)
    assert "records read     103,284" in result.stderr
    assert "31 Detect RPC from Internet" in result.stderr
    assert "not a supported log format" in result.stderr  # rita/test_data/missing_host/README


def test_csv_neutralises_formulas(tmp_path):
    (tmp_path / "conn.log").write_text(HOSTILE_LOG)
    (tmp_path / "=cmd.log").write_text(HOSTILE_LOG)
    result = run("hunt", ".", "--format", "csv", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 4
    assert {r["record"] for r in rows} >= {"'=HYPERLINK(\"http://evil\")"}
    assert {r["log.file.path"] for r in rows} == {"'=cmd.log", "conn.log"}
    assert not any(value.startswith(("=", "+", "-", "@")) for r in rows for value in r.values())


def test_table_shows_log_values_as_text(tmp_path):
    (tmp_path / "conn.log").write_text(HOSTILE_LOG)
    result = run("hunt", "conn.log", "--format", "table", "-q", cwd=tmp_path)
    assert result.returncode == 0
    assert "\x1b" not in result.stdout
    assert "[red]x[/red]\\x1b[2J" in result.stdout.replace("\n", "").replace("│", "").replace(" ", "")


def test_output_file_and_stdin(tmp_path, corpus):
    log = corpus / "rita/test_data/missing_host/2024-04-21/conn.05:00:00-06:00:00.log.gz"
    with open(log, "rb") as gzipped:
        result = subprocess.run(rpcwatch_command() + ["hunt", "-", "-o", str(tmp_path / "out.jsonl"), "-q"],
                                stdin=gzipped, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert {json.loads(line)["source"]["ip"] for line in lines} == {"198.235.24.73", "83.97.73.157"}
    assert {json.loads(line)["log"]["file"]["path"] for line in lines} == {"-"}


def test_config_file_and_internal_flag(tmp_path):
    (tmp_path / "conn.log").write_text(HOSTILE_LOG)
    assert len(run("hunt", "conn.log", "-q", cwd=tmp_path).stdout.splitlines()) == 2
    (tmp_path / "rpcwatch.toml").write_text('[networks]\ninternal = ["10.0.0.5/32"]\n')
    assert len(run("hunt", "conn.log", "-q", cwd=tmp_path).stdout.splitlines()) == 1
    assert len(run("hunt", "conn.log", "-q", "--internal", "10.0.0.0/24", cwd=tmp_path).stdout.splitlines()) == 2


@pytest.mark.parametrize("args,code,message", [
    (["hunt", "nope.log"], 2, "nope.log: no such file or directory"),
    (["hunt", "conn.log", "--internal", "10.0.0.1/8"], 2, "did you mean 10.0.0.0/8"),
    (["hunt", "conn.log", "--rules", "missing.yml"], 2, "--rules missing.yml: no such file"),
    (["hunt", "conn.log", "--format", "xml"], 2, "invalid choice"),
    (["hunt", "notes.txt"], 3, "not a supported log format"),
    (["hunt", "conn.log", "--config", "bad.toml"], 2, "not valid TOML"),
])
def test_exit_codes(tmp_path, args, code, message):
    (tmp_path / "conn.log").write_text(HOSTILE_LOG)
    (tmp_path / "notes.txt").write_text("just some notes\n")
    (tmp_path / "bad.toml").write_text("[networks\n")
    result = run(*args, cwd=tmp_path)
    assert result.returncode == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_broken_user_rule_is_listed_and_the_others_run(tmp_path):
    (tmp_path / "conn.log").write_text(HOSTILE_LOG)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "broken.yml").write_text("title: Broken\nlogsource: {product: zeek, service: conn}\n"
                                      "detection:\n  sel: {proto: tcp}\n  condition: sel and nope\n")
    (rules / "good.yml").write_text("title: Any REJ\nlogsource: {product: zeek, service: conn}\n"
                                    "detection:\n  sel: {conn_state: REJ}\n  condition: sel\n")
    result = run("hunt", "conn.log", "--rules", "rules", cwd=tmp_path)
    assert result.returncode == 0
    names = [json.loads(line)["rule"]["name"] for line in result.stdout.splitlines()]
    assert sorted(names) == ["Any REJ", "Detect RPC from Internet", "Detect RPC from Internet"]
    assert "rule not runnable: Broken" in result.stderr


def test_examples_from_the_readme():
    result = run("hunt", "examples/", "--format", "jsonl", cwd=REPO)
    assert result.returncode == 0
    names = Counter(json.loads(line)["rule"]["name"] for line in result.stdout.splitlines())
    assert names == {"Detect RPC from Internet": 7, "DCE/RPC from Internet": 6,
                     "Remote Execution over DCE/RPC from Internet": 2, "Detect RPC from Internet - Windows": 1,
                     "RPC Sweep from Internet": 1, "RPC from Internet Followed by Remote Execution": 1}


# ---- triage commands ------------------------------------------------------------------------

def test_triage_json_on_the_examples():
    result = run("triage", "examples/", "--format", "json", "-q", cwd=REPO)
    assert result.returncode == 0, result.stderr
    incidents = json.loads(result.stdout)
    assert [(i["id"], i["source"], i["stage"]) for i in incidents] == [
        ("INC-0001", "167.94.138.44", 7), ("INC-0002", "45.83.64.17", 1), ("INC-0003", "2a03:b0c0:3:d0::1f:7001", 1)]
    stage4 = incidents[0]["stages"][3]
    # the svcctl calls from Zeek and, from the victim's Sysmon log, cmd.exe started by services.exe
    assert stage4["reached"] and {e["record_id"] for e in stage4["evidence"]} == {"CzA7bN1cQ4vL9eR2tY", "48213"}
    assert all({"time", "file", "record_id"} <= set(e) for s in incidents[0]["stages"] for e in s["evidence"])


def test_hunt_incidents_is_triage():
    triage = run("triage", "examples/", "--format", "jsonl", "-q", cwd=REPO)
    hunt = run("hunt", "examples/", "--incidents", "--format", "jsonl", "-q", cwd=REPO)
    assert hunt.returncode == 0 and hunt.stdout == triage.stdout
    assert len(hunt.stdout.splitlines()) == 3


def test_triage_summary_and_table():
    result = run("triage", "examples/", "--format", "table", cwd=REPO)
    assert result.returncode == 0
    assert "incidents        3 (by stage reached: 2 at 1, 1 at 7)" in result.stderr
    assert "exposed hosts    1" in result.stderr
    assert "INC-0001" in result.stdout and "attack chain" in result.stdout


def test_triage_reads_standard_input_twice(tmp_path):
    with open(REPO / "examples" / "zeek" / "conn.log", "rb") as conn:
        result = subprocess.run(rpcwatch_command() + ["triage", "-", str(REPO / "examples/zeek/dce_rpc.log"),
                                                      "--format", "json", "-q"],
                                stdin=conn, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    incidents = json.loads(result.stdout)
    assert incidents[0]["stage"] == 7
    assert "-" in {e["file"] for s in incidents[0]["stages"] for e in s["evidence"]}


def test_exposure_is_empty_on_rita(corpus):
    result = run("exposure", "rita", "--format", "json", "-q", cwd=corpus)
    assert result.returncode == 0 and json.loads(result.stdout) == []
    table = run("exposure", "rita", "--format", "table", "-q", cwd=corpus)
    assert "No internal host accepted TCP/135 from the internet." in table.stdout


def test_exposure_on_the_examples():
    result = run("exposure", "examples/", "--format", "json", "-q", cwd=REPO)
    [host] = json.loads(result.stdout)
    assert host["address"] == "10.20.0.12" and host["hosts"] == ["FS-12.corp.example"]
    # one session, seen by Zeek (conn, dce_rpc) and by the victim's Sysmon (event 3)
    assert host["sessions"] == 1 and host["sources"] == [{"address": "167.94.138.44", "sessions": 1}]
    assert {e["record_id"] for e in host["evidence"]} == {"CJr3mV8eXq2bT5nK1w", "48211"}
    table = run("exposure", "examples/", "--format", "table", "-q", cwd=REPO)
    assert "10.20.0.12" in table.stdout


def test_hunt_suppress(corpus):
    result = run("hunt", "rita", "--suppress", "source.ip", "--window", "1d", "--format", "jsonl", "-q", cwd=corpus)
    assert result.returncode == 0, result.stderr
    alerts = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(alerts) == 29 and sum(a["count"] for a in alerts) == 31
    assert all(a["first_seen"] <= a["last_seen"] for a in alerts)


@pytest.mark.parametrize("args,message", [
    (["hunt", "conn.log", "--window", "5m"], "--window needs --suppress"),
    (["hunt", "conn.log", "--suppress", "a,b,c,d"], "at most 3"),
    (["hunt", "conn.log", "--suppress", "source.ip", "--window", "later"], "expected a duration"),
    (["hunt", "conn.log", "--incidents", "--format", "csv"], "not csv"),
    (["report", "conn.log"], "-o/--output"),
])
def test_triage_usage_errors(tmp_path, args, message):
    (tmp_path / "conn.log").write_text(HOSTILE_LOG)
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr


def test_workers_option(tmp_path):
    (tmp_path / "conn.log").write_text(HOSTILE_LOG)
    default = run("hunt", "conn.log", "--format", "jsonl", "-q", cwd=tmp_path)
    in_process = run("hunt", "conn.log", "--format", "jsonl", "-q", "--workers", "0", cwd=tmp_path)
    assert default.returncode == in_process.returncode == 0
    assert len(in_process.stdout.splitlines()) == 2 and in_process.stdout == default.stdout
    wrong = run("hunt", "conn.log", "--workers", "two", cwd=tmp_path)
    assert wrong.returncode == 2 and "not a number of processes: 'two'" in wrong.stderr
