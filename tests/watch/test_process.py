"""``rpcwatch watch`` as a process: signals, and kill -9 at random moments while a Zeek
log grows and rotates. The file sink and an Elasticsearch stand-in must end with every
expected alert, none twice."""
from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from outputs.sinks.standins import ElasticsearchStandIn

from watch.processes import rpcwatch, start_watch, until_started
from watch.zeek_writer import RPC_RULE, ConnLog, header

KILLS = 20


def wait_for(predicate, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_sigterm_finishes_the_batch_and_exits_0_sighup_reopens_the_file(tmp_path):
    logs, out = tmp_path / "logs", tmp_path / "alerts.jsonl"
    logs.mkdir()
    log = ConnLog()
    (logs / "conn.log").write_bytes(header() + log.lines(30))
    process = start_watch(logs, tmp_path / "state", f"file:{out}", poll=0.1)
    wait_for(lambda: len(lines_of(out)) == len(log.probes))
    os.rename(out, tmp_path / "alerts.jsonl.1")  # logrotate, then its postrotate SIGHUP
    process.send_signal(signal.SIGHUP)
    wait_for(out.exists)  # reopened: the sink created the file anew
    log.append(logs / "conn.log", 30)
    wait_for(lambda: len(lines_of(out)) == 10)
    log.append(logs / "conn.log", 30)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    uids = [a["original"]["uid"] for a in lines_of(tmp_path / "alerts.jsonl.1") + lines_of(out)]
    assert sorted(uids) == sorted(log.probes)
    assert "rpcwatch: stopped: 90 records read" in stderr


class GrowingLog:
    """Writes a generated conn.log in random pieces (cut anywhere, mid-line too), rotates
    it half-way the way zeekctl does (rename into a dated folder, gzip, remove), and goes
    on in a new file with an identical header."""

    def __init__(self, source: Path, logs: Path, seed: int):
        text = source.read_bytes()
        head_end = text.index(b"\n", text.index(b"#types")) + 1
        head, body = text[:head_end], text[head_end:]
        middle = body.index(b"\n", len(body) // 2) + 1
        self.parts = [head + body[:middle], head + body[middle:]]
        self.logs = logs
        self.random = random.Random(seed)
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            current = self.logs / "current"
            current.mkdir()
            for number, part in enumerate(self.parts):
                path = current / "conn.log"
                written = 0
                while written < len(part):
                    size = self.random.randint(1, 8 << 10)
                    with open(path, "ab") as fh:
                        fh.write(part[written:written + size])
                    written += size
                    time.sleep(0.02)
                if number == 0:
                    self._rotate(path)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.done.set()

    def _rotate(self, path: Path) -> None:
        dated = self.logs / "2024-06-01"
        dated.mkdir()
        rotated = dated / "conn.00:00:00-12:00:00.log"
        os.rename(path, rotated)
        with open(rotated, "rb") as source, gzip.open(f"{rotated}.gz", "wb") as target:
            shutil.copyfileobj(source, target)
        os.unlink(rotated)


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_and_duplicates_nothing(tmp_path, shared_tools, httpserver):
    generated = tmp_path / "generated.log"
    subprocess.run(["python3", str(shared_tools / "gen_zeek_conn.py"), "--rows", "40000", "--seed", "11",
                    "--rpc-rate", "0.01", "--out", str(generated)], check=True, capture_output=True)
    truth = json.loads(Path(f"{generated}.truth.json").read_text())["expected_matches"]
    reference = subprocess.run(rpcwatch() + ["hunt", str(generated), "--format", "jsonl", "-q"],
                               capture_output=True, text=True, check=True)
    expected = {a["event"]["id"] for a in map(json.loads, reference.stdout.splitlines())
                if a["event"]["dataset"] != "correlation"}
    assert sum(1 for a in map(json.loads, reference.stdout.splitlines()) if a["rule"]["name"] == RPC_RULE) == truth

    es = ElasticsearchStandIn()
    es.install(httpserver)
    logs, state, out = tmp_path / "logs", tmp_path / "state", tmp_path / "alerts.jsonl"
    logs.mkdir()
    sinks = (f"file:{out}", f"elasticsearch+http://127.0.0.1:{httpserver.port}/rpcwatch-alerts")
    writer = GrowingLog(generated, logs, seed=5)
    thread = threading.Thread(target=writer.run, daemon=True)
    thread.start()
    chance = random.Random(1)
    kills, said = 0, []
    while kills < KILLS or not writer.done.is_set():
        process = start_watch(logs, state, *sinks, poll=0.1)
        said.append(until_started(process, len(sinks)))
        time.sleep(chance.uniform(0.0, 1.5))  # then kill it at any moment of its work
        process.kill()
        said[-1] += process.communicate()[1]
        kills += 1
    thread.join()
    assert writer.error is None
    final = subprocess.run(rpcwatch() + ["watch", str(logs), "--state", str(state), "--once",
                                                 *[arg for sink in sinks for arg in ("--to", sink)]],
                           capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    assert "bytes lost" in final.stderr and ", 0 bytes lost" in final.stderr

    delivered = [a["event"]["id"] for a in lines_of(out)]
    duplicates = [event_id for event_id, count in Counter(delivered).items() if count > 1]
    assert duplicates == [], f"{len(duplicates)} alerts written twice to the file sink after {kills} kills"
    assert {i for i in delivered if i in expected} == expected
    assert expected <= set(es.documents) and set(es.creates.values()) == {1}
    assert set(delivered) == set(es.documents)
    print(f"{kills} kills; file sink repaired after {sum('removed' in t for t in said)} of them; "
          f"{es.conflicts} replays answered 409 by Elasticsearch")
