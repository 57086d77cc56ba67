"""Live mode driven in-process: a real follower, state store, engine and file sink; the
test changes files between batches (``step``) as a running or a restarted watcher sees them."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from rpcwatch.engines.duckdb import DuckDBEngine
from rpcwatch.hunt import plan_hunt
from rpcwatch.outputs.sinks import SinkSettings, make_sink
from rpcwatch.watch.loop import Watch, WatchOptions
from watch.zeek_writer import ConnLog, header


@pytest.fixture(scope="session")
def plan():
    return plan_hunt()


@pytest.fixture(scope="session")
def engine():
    return DuckDBEngine()


class Live:
    def __init__(self, root: Path, plan, engine):
        self.logs = root / "logs"
        self.logs.mkdir()
        self.state = root / "state"
        self.alerts_file = root / "alerts.jsonl"
        self._plan, self._engine = plan, engine
        self.watch: Watch | None = None
        self.messages = io.StringIO()

    def start(self, sinks=None, **options) -> Watch:
        sinks = sinks if sinks is not None else [make_sink(SinkSettings(f"file:{self.alerts_file}"))]
        self.watch = Watch(WatchOptions([str(self.logs)], self.state, settle=0.2, **options), self._plan,
                           self._engine, sinks, messages=self.messages)
        self.watch.start()
        return self.watch

    def begin(self, lines: int, sinks=None, **options) -> tuple[ConnLog, Path]:
        """A conn.log of ``lines`` lines, read by a started watcher."""
        log, path = ConnLog(), self.logs / "conn.log"
        path.write_bytes(header() + log.lines(lines))
        self.start(sinks, **options)
        self.run()
        return log, path

    def run(self) -> None:
        """Batches until nothing is left to read or deliver."""
        while self.watch.step():
            pass

    def stop(self) -> None:
        self.watch.finish()
        self.watch = None

    def restart(self, **options) -> Watch:
        self.stop()
        return self.start(**options)

    def alerts(self, rule: str | None = None) -> list[dict]:
        if not self.alerts_file.exists():
            return []
        alerts = [json.loads(line) for line in self.alerts_file.read_text().splitlines()]
        return [a for a in alerts if rule is None or a["rule"]["name"] == rule]

    def uids(self, rule: str) -> list[str]:
        return sorted(a["original"]["uid"] for a in self.alerts(rule))


@pytest.fixture
def live(tmp_path, plan, engine):
    harness = Live(tmp_path, plan, engine)
    yield harness
    if harness.watch is not None:
        harness.stop()
