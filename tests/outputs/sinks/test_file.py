"""The file sink's recovery protocol: what a crash left after the last committed size is
removed; a failed batch leaves nothing behind; SIGHUP reopens after logrotate."""
from __future__ import annotations

import json
import os

import pytest

from rpcwatch.outputs.sinks import SinkSettings, SinkUnavailable, make_sink


def file_sink(path):
    return make_sink(SinkSettings(f"file:{path}"))


def written(path, alerts):
    """An open file sink that wrote and flushed ``alerts``."""
    sink = file_sink(path)
    sink.open()
    sink.write(alerts)
    assert sink.flush() == []
    return sink


def test_appends_and_reports_its_committed_size(tmp_path, alerts):
    path = tmp_path / "alerts.jsonl"
    sink = written(path, alerts[:2])
    assert [json.loads(line) for line in path.read_text().splitlines()] == alerts[:2]
    info = os.stat(path)
    assert sink.recovery() == {"dev": info.st_dev, "ino": info.st_ino, "size": info.st_size}
    assert sink.guarantee == "no duplicates"


def test_recovery_truncates_what_a_crash_left_after_the_commit(tmp_path, alerts):
    path = tmp_path / "alerts.jsonl"
    sink = written(path, alerts[:2])
    committed = sink.recovery()
    sink.write(alerts[2:])  # written and fsync'd, then the process dies before its commit
    sink.flush()
    sink.close()
    crashed = path.stat().st_size
    again = file_sink(path)
    again.open(committed)
    assert again.truncated == crashed - committed["size"] > 0
    assert [json.loads(line) for line in path.read_text().splitlines()] == alerts[:2]


def test_a_replaced_file_is_not_touched(tmp_path, alerts):
    path = tmp_path / "alerts.jsonl"
    sink = written(path, alerts)
    committed = {**sink.recovery(), "size": 10}
    sink.close()
    os.rename(path, tmp_path / "alerts.jsonl.1")  # logrotate while stopped
    path.write_text("someone else's line\n")
    again = file_sink(path)
    again.open(committed)
    assert path.read_text() == "someone else's line\n" and again.truncated == 0


def test_reopen_follows_logrotate(tmp_path, alerts):
    path = tmp_path / "alerts.jsonl"
    sink = written(path, alerts[:1])
    os.rename(path, tmp_path / "alerts.jsonl.1")
    sink.reopen()
    sink.write(alerts[1:2])
    sink.flush()
    assert json.loads((tmp_path / "alerts.jsonl.1").read_text()) == alerts[0]
    assert json.loads(path.read_text()) == alerts[1]


def test_a_full_disk_is_unavailable_not_fatal(alerts):
    sink = file_sink("/dev/full")
    sink.open()
    sink.write(alerts)
    with pytest.raises(SinkUnavailable, match="file:/dev/full: No space left on device"):
        sink.flush()
