"""The `watch` command line: what it prints, its exit codes, sinks from the command line
and from rpcwatch.toml, secrets kept out of messages."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from rpcwatch.config import ConfigError, load_config
from rpcwatch.outputs.sinks import SinkSettings
from rpcwatch.watch import default_state_dir, sink_settings
from watch.processes import rpcwatch
from watch.zeek_writer import RPC_RULE, ConnLog, header

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def watch(*args, env=None, cwd=None):
    return subprocess.run(rpcwatch() + ["watch", *args], capture_output=True, text=True, timeout=120, env=env,
                          cwd=cwd)


def test_once_prints_json_lines_on_standard_output_by_default(tmp_path):
    log = ConnLog()
    (tmp_path / "conn.log").write_bytes(header() + log.lines(9))
    result = watch(str(tmp_path), "--once", "--state", str(tmp_path / "state"))
    assert result.returncode == 0, result.stderr
    alerts = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(a["original"]["uid"] for a in alerts if a["rule"]["name"] == RPC_RULE) == sorted(log.probes)
    assert f"rpcwatch: state in {tmp_path / 'state'}" in result.stderr
    assert "rpcwatch: delivering to stdout (at least once)" in result.stderr
    again = watch(str(tmp_path), "--once", "--state", str(tmp_path / "state"))
    assert again.returncode == 0 and again.stdout == ""  # nothing new since the checkpoint


def test_examples_give_the_alerts_hunt_gives(tmp_path):
    """Detections at once; each correlation once its episode can no longer grow: here once
    the logs have been quiet longer than the rule's timespan and the lateness allowed."""
    import sqlite3

    state, sink = tmp_path / "state", tmp_path / "a.jsonl"
    result = watch(str(EXAMPLES), "--once", "--state", str(state), "--to", f"file:{sink}")
    hunted = subprocess.run(rpcwatch() + ["hunt", str(EXAMPLES), "--format", "jsonl", "-q"], capture_output=True,
                            text=True, check=True)
    assert result.returncode == 0, result.stderr
    expected = [json.loads(line) for line in hunted.stdout.splitlines()]
    got = [json.loads(line) for line in sink.read_text().splitlines()]
    assert sorted(a["event"]["id"] for a in got) == \
        sorted(a["event"]["id"] for a in expected if a["event"]["dataset"] != "correlation")
    assert len(got) > 10
    with sqlite3.connect(state / "state.sqlite") as db:  # two hours without new lines
        newest, last_data = json.loads(db.execute("SELECT value FROM meta WHERE key = 'log_clock'").fetchone()[0])
        db.execute("UPDATE meta SET value = ? WHERE key = 'log_clock'", (json.dumps([newest, last_data - 7200]).encode(),))
    assert watch(str(EXAMPLES), "--once", "--state", str(state), "--to", f"file:{sink}").returncode == 0
    got = [json.loads(line) for line in sink.read_text().splitlines()]
    assert sorted(a["event"]["id"] for a in got) == sorted(a["event"]["id"] for a in expected)


def test_a_correlation_is_reported_when_no_later_record_can_extend_it(tmp_path):
    """A sweep's episode stays open while another probe could still extend it, and is
    reported once the logs have moved past its timespan and the lateness allowed."""
    def probe(ts: float, source: str, host: int) -> bytes:
        return "\t".join([f"{ts:.6f}", f"C{source[-1]}{host}", source, "40122", f"10.20.0.{host}", "135", "tcp", "-",
                          "0.000071", "0", "0", "REJ", "F", "T", "0", "Sr", "1", "44", "1", "40", "-"]).encode() + b"\n"

    start = 1717236000.0
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "conn.log").write_bytes(header() + b"".join(probe(start + host, "45.83.64.17", host)
                                                        for host in range(1, 7)))
    state, sink = tmp_path / "state", tmp_path / "a.jsonl"
    assert watch(str(logs), "--once", "--state", str(state), "--to", f"file:{sink}").returncode == 0
    first = [json.loads(line) for line in sink.read_text().splitlines()]
    assert len(first) == 6 and not any(a["event"]["dataset"] == "correlation" for a in first)
    (logs / "conn.later.log").write_bytes(header() + probe(start + 7200, "45.83.64.99", 1))
    assert watch(str(logs), "--once", "--state", str(state), "--to", f"file:{sink}").returncode == 0
    later = [json.loads(line) for line in sink.read_text().splitlines()][6:]
    assert sorted((a["rule"]["name"], (a.get("correlation") or {}).get("events_count")) for a in later) == [
        ("Detect RPC from Internet", None), ("RPC Sweep from Internet", 6)]


@pytest.mark.parametrize(("sink", "message"), [
    ("kafka://broker:9092", "unknown sink 'kafka' (known: elasticsearch+http, elasticsearch+https, file,"),
    ("elasticsearch+https://elastic:s3cr3t@es.example:9200/idx", "a password in the URL is not accepted"),
    ("elasticsearch+https://es.example:9200", "name one index or data stream in the URL"),
    ("syslog+tcp://siem.example", "give a host and a port"),
])
def test_bad_sinks_are_usage_errors(tmp_path, sink, message):
    result = watch(str(tmp_path), "--once", "--state", str(tmp_path / "s"), "--to", sink)
    assert result.returncode == 2
    assert message in result.stderr and "s3cr3t" not in result.stderr


def test_missing_path_is_a_usage_error(tmp_path):
    result = watch(str(tmp_path / "nowhere"), "--once")
    assert result.returncode == 2 and "no such file or directory" in result.stderr


def test_sinks_from_the_configuration_and_the_command_line(tmp_path):
    config = tmp_path / "rpcwatch.toml"
    config.write_text('[watch]\nstate = "/var/lib/rpcwatch"\npoll = 1\n\n'
                      '[[sinks]]\nurl = "splunk-hec+https://splunk.example:8088"\ntoken_env = "HEC"\nindex = "sec"\n\n'
                      '[[sinks]]\nurl = "syslog+tls://siem.example:6514"\n')
    loaded = load_config(config)
    assert loaded.watch.state == "/var/lib/rpcwatch" and loaded.watch.poll == 1.0
    assert sink_settings(loaded, [], None) == [
        SinkSettings("splunk-hec+https://splunk.example:8088", {"token_env": "HEC", "index": "sec"}, str(config)),
        SinkSettings("syslog+tls://siem.example:6514", {}, str(config))]
    # --to replaces the list; a URL the file names keeps its options; --syslog-format applies
    assert sink_settings(loaded, ["splunk-hec+https://splunk.example:8088", "syslog+tcp://h:514"], "cef") == [
        SinkSettings("splunk-hec+https://splunk.example:8088", {"token_env": "HEC", "index": "sec"}, "--to"),
        SinkSettings("syslog+tcp://h:514", {"format": "cef"}, "--to")]


@pytest.mark.parametrize(("text", "message"), [
    ("[[sinks]]\nindex = 'x'\n", "each [[sinks]] table needs a url"),
    ("[watch]\npoll = 0\n", "watch.poll must be a positive number"),
    ("[watch]\nfollow = true\n", "unknown key(s) in [watch]: follow"),
])
def test_bad_watch_configuration(tmp_path, text, message):
    (tmp_path / "rpcwatch.toml").write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", "\\[").replace("(", "\\(").replace(")", "\\)")):
        load_config(tmp_path / "rpcwatch.toml")


def test_unknown_sink_option_is_named(tmp_path):
    (tmp_path / "rpcwatch.toml").write_text('[[sinks]]\nurl = "file:a.jsonl"\nfsync = false\n')
    result = watch(str(tmp_path), "--once", "--config", str(tmp_path / "rpcwatch.toml"), "--state",
                   str(tmp_path / "s"))
    assert result.returncode == 2 and "unknown option(s) fsync" in result.stderr


def test_default_state_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/rpcwatch")
    assert default_state_dir() == Path("/var/lib/rpcwatch")
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / "rpcwatch"


def test_one_watcher_per_state_directory(tmp_path):
    from rpcwatch.watch.state import StateInUse, StateStore

    first = StateStore(tmp_path / "state")
    with pytest.raises(StateInUse, match="is in use by another rpcwatch watch"):
        StateStore(tmp_path / "state")
    result = watch(str(tmp_path), "--once", "--state", str(tmp_path / "state"))
    assert result.returncode == 2 and "is in use by another rpcwatch watch" in result.stderr
    first.close()
    assert watch(str(tmp_path), "--once", "--state", str(tmp_path / "state")).returncode == 0


def test_a_file_sink_that_cannot_open_is_a_usage_error(tmp_path):
    (tmp_path / "taken").write_text("a file, not a directory")
    result = watch(str(tmp_path), "--once", "--state", str(tmp_path / "s"), "--to", f"file:{tmp_path}/taken/a.jsonl")
    assert result.returncode == 2 and "cannot open: " in result.stderr
