"""Growth and rotation, with the watcher running and with it stopped while the files
change: every probe line raises exactly one alert at the file sink, never two."""
from __future__ import annotations

import gzip
import os
import shutil
import time

import pytest

from rpcwatch.hunt import Hunt, plan_hunt
from rpcwatch.sources import expand_inputs
from watch.zeek_writer import RPC_RULE, ConnLog, header

MODES = ("running", "stopped")


def change(live, mode):
    """What happens to the files between two batches: the watcher keeps running, or it is
    stopped and started again (a new process would see the same: only the state store)."""
    if mode == "stopped":
        live.stop()

    class Resume:
        def __enter__(self):
            return None

        def __exit__(self, *exc):
            if mode == "stopped":
                live.start()
            live.run()

    return Resume()


def test_growth_reads_complete_lines_once(live):
    log, path = live.begin(10)
    assert live.uids(RPC_RULE) == sorted(log.probes) and len(log.probes) == 4
    more = log.lines(3)  # lines 10, 11 and 12; line 12 is a probe, still being written
    with open(path, "ab") as fh:
        fh.write(more[:-20])
    live.run()
    assert live.uids(RPC_RULE) == sorted(log.probes[:-1])
    with open(path, "ab") as fh:
        fh.write(more[-20:])
    log.append(path, 5)
    live.run()
    assert live.uids(RPC_RULE) == sorted(log.probes)
    assert all(a["event"]["id"] for a in live.alerts())


@pytest.mark.parametrize("mode", MODES)
def test_rename_into_a_dated_folder(live, mode):
    """zeekctl: logs/current/conn.log -> logs/2024-06-01/conn.10:00:00-11:00:00.log; lines
    written just before the rename, not yet read, are read from the renamed file."""
    current = live.logs / "current"
    current.mkdir()
    log = ConnLog()
    (current / "conn.log").write_bytes(header() + log.lines(12))
    live.start()
    live.run()
    log.append(current / "conn.log", 9)
    with change(live, mode):
        dated = live.logs / "2024-06-01"
        dated.mkdir()
        os.rename(current / "conn.log", dated / "conn.10:00:00-11:00:00.log")
        (current / "conn.log").write_bytes(header("2024-06-01-11-00-00") + log.lines(6))
    assert live.uids(RPC_RULE) == sorted(log.probes)


@pytest.mark.parametrize("mode", MODES)
def test_rename_then_gzip(live, mode):
    """The rotated file is compressed and the original removed: only what lies past the
    checkpoint is read from the .gz (offsets count decompressed bytes)."""
    log, path = live.begin(30)
    log.append(path, 12)  # not yet read when the file is rotated
    with change(live, mode):
        rotated = live.logs / "conn.10:00:00-11:00:00.log"
        os.rename(path, rotated)
        with open(rotated, "rb") as source, gzip.open(f"{rotated}.gz", "wb") as target:
            shutil.copyfileobj(source, target)
        os.unlink(rotated)
    assert live.uids(RPC_RULE) == sorted(log.probes)


def test_gzip_being_written_is_read_when_complete(live):
    """Found after a restart, a .gz still being written (a truncated stream) is read past
    the checkpoint only once its stream is complete."""
    log, path = live.begin(30)
    live.stop()
    log.append(path, 12)
    data = gzip.compress(path.read_bytes())
    os.unlink(path)
    live.start()
    target = live.logs / "conn.log.gz"
    target.write_bytes(data[: len(data) // 2])  # compression under way
    live.run()
    assert len(live.uids(RPC_RULE)) < len(log.probes)
    target.write_bytes(data)
    live.run()
    assert live.uids(RPC_RULE) == sorted(log.probes)


@pytest.mark.parametrize("mode", MODES)
def test_copytruncate(live, mode):
    """logrotate's copytruncate: the copy holds the unread lines, the truncated file starts
    again with new content."""
    log, path = live.begin(20)
    log.append(path, 10)
    with change(live, mode):
        shutil.copyfile(path, live.logs / "conn.log.1")
        with open(path, "r+b") as fh:
            fh.truncate(0)
        path.write_bytes(header("2024-06-01-11-00-00") + log.lines(8))
    assert live.uids(RPC_RULE) == sorted(log.probes)


@pytest.mark.parametrize("mode", MODES)
def test_new_file_with_an_identical_header(live, mode):
    """Same header (same #open second), different lines: a new file, read from its start."""
    log, path = live.begin(5)
    with change(live, mode):
        os.rename(path, live.logs / "conn.old.log")
        path.write_bytes(header() + log.lines(5))
    assert live.uids(RPC_RULE) == sorted(log.probes)


def test_identical_header_beside_the_old_file(live):
    """A second log with the same header while the first still grows: both are read."""
    first, second = ConnLog(), ConnLog(first=1000)
    (live.logs / "a").mkdir()
    (live.logs / "b").mkdir()
    (live.logs / "a" / "conn.log").write_bytes(header())
    live.start()
    live.run()
    (live.logs / "b" / "conn.log").write_bytes(header())
    live.run()
    first.append(live.logs / "a" / "conn.log", 6)
    second.append(live.logs / "b" / "conn.log", 6)
    live.run()
    first.append(live.logs / "a" / "conn.log", 6)
    live.run()
    assert live.uids(RPC_RULE) == sorted(first.probes + second.probes)


def test_deleted_while_running_is_read_to_its_end(live):
    """The followed file stays open: lines written just before the file was deleted are
    still read, nothing is lost."""
    log, path = live.begin(9)
    log.append(path, 9)
    os.unlink(path)
    live.run()
    assert live.uids(RPC_RULE) == sorted(log.probes)
    assert "lost" not in live.messages.getvalue().replace("0 bytes lost", "")


def test_deleted_while_stopped_before_it_was_read_is_reported_lost(live):
    log, path = live.begin(9)
    partial = log.lines(1)
    with open(path, "ab") as fh:
        fh.write(partial[:40])  # a line being written when the watcher stopped
    live.run()
    live.stop()
    os.unlink(path)
    live.start()
    live.run()
    assert "deleted or moved away before it was read to the end: 40 bytes lost" in live.messages.getvalue()
    assert live.watch.totals.lost_bytes == 40
    live.restart()
    live.run()
    assert live.watch.totals.lost_bytes == 0  # reported once


def test_json_lines_and_files_added_later(live):
    """Zeek JSON needs no header; a file that appears later is read from its start."""
    import json

    path = live.logs / "conn.json"
    rows = [{"ts": 1717236000.5 + i, "uid": f"CJ{i}", "id.orig_h": f"45.83.64.{i + 1}", "id.orig_p": 4000,
             "id.resp_h": "10.20.0.10", "id.resp_p": 135, "proto": "tcp", "conn_state": "REJ"} for i in range(6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    live.start()
    live.run()
    with open(path, "a") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows[3:]))
    log = ConnLog()
    (live.logs / "later").mkdir()
    (live.logs / "later" / "conn.log").write_bytes(header() + log.lines(6))
    live.run()
    assert live.uids(RPC_RULE) == sorted([f"CJ{i}" for i in range(6)] + log.probes)


INBOUND_135 = """
title: Any inbound TCP/135
logsource: {category: network_connection, product: windows}
detection:
    inbound: {Initiated: 'false', Protocol: tcp}
    local_first: {SourcePort: 135}
    remote_first: {DestinationPort: 135}
    condition: inbound and (local_first or remote_first)
"""


@pytest.mark.corpus
def test_evtx_is_read_once_when_it_stops_changing(live, corpus, tmp_path):
    """EVTX cannot be read from the middle: read whole once unchanged for the settle time,
    with the alerts `hunt` gives; a later change is not read again."""
    (tmp_path / "inbound.yml").write_text(INBOUND_135)
    live._plan = plan_hunt([str(tmp_path / "inbound.yml")], bundled=False)
    source = corpus / "evtx-attack-samples/Discovery/dicovery_4661_net_group_domain_admins_target.evtx"
    target = live.logs / "Security.evtx"
    shutil.copyfile(source, target)
    live.start()
    live.run()
    assert live.alerts() == []  # just written: it may still grow
    time.sleep(0.3)
    live.run()
    expected = [a.to_dict() for a in Hunt(list(expand_inputs([str(target)])), live._plan, live._engine)]
    assert len(live.alerts()) == len(expected) == 2
    assert sorted(a["event"]["id"] for a in live.alerts()) == sorted(a["event"]["id"] for a in expected)
    with open(target, "ab") as fh:
        fh.write(b"\0" * 4096)
    time.sleep(0.3)
    live.run()
    assert len(live.alerts()) == 2
