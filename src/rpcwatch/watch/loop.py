"""``rpcwatch watch``: follow, detect, deliver, checkpoint; again and again.

One turn of the loop is one batch: the complete lines written since the checkpoints (at
most ``BATCH_BYTES``) go through the same readers, compiled rules and engine as ``hunt``;
their alerts go to every sink; then one transaction commits the new checkpoints, the
spool of what a sink did not take, the sinks' recovery data and the correlation state.
SIGTERM and SIGINT end the loop after the batch in hand and one last look at the files
are delivered and committed (exit 0); SIGHUP reopens file sinks before the next batch.
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Sequence

from rpcwatch.hunt import Engine, Hunt, HuntPlan
from rpcwatch.outputs.sinks.base import Sink
from rpcwatch.outputs.sinks.file import FileSink
from rpcwatch.outputs.table import safe_text
from rpcwatch.sigma.correlation import Correlator
from rpcwatch.sources import ReadStats
from rpcwatch.watch.delivery import Delivery, SinkOutcome
from rpcwatch.watch.follow import Follower, Piece
from rpcwatch.watch.state import StateStore

CORRELATION = "correlation"


@dataclass
class WatchOptions:
    paths: list[str]
    state: Path
    poll: float = 0.25
    once: bool = False
    #: bytes of spooled alerts per sink before reading pauses
    spool_limit: int = 256 << 20
    #: longest pause between two tries of a sink that failed
    retry_max: float = 30.0
    #: whole-file formats (EVTX, pcap) are read when unchanged this long
    settle: float = 5.0


@dataclass
class WatchTotals:
    batches: int = 0
    records: int = 0
    alerts: int = 0
    skipped: int = 0
    lost_bytes: int = 0
    started: float = field(default_factory=time.monotonic)


class Watch:
    def __init__(self, options: WatchOptions, plan: HuntPlan, engine: Engine, sinks: Sequence[Sink],
                 messages: IO[str] = sys.stderr):
        self.options = options
        self._plan, self._engine = plan, engine
        self._messages = messages
        self.store = StateStore(options.state)
        # never follow what rpcwatch itself writes
        exclude = {str(sink.path) for sink in sinks if isinstance(sink, FileSink)} | \
            {str(self.store.path), f"{self.store.path}-wal", f"{self.store.path}-shm"}
        self.follower = Follower(self.store, options.paths, exclude, options.settle)
        self.delivery = Delivery(sinks, self.store, options.spool_limit, options.retry_max, self.say)
        self.correlator = Correlator(plan.rule_set.correlations)
        self.totals = WatchTotals()
        self._stop = threading.Event()
        self._reopen = False
        #: ids of correlation alerts raised in this batch (committed with it)
        self._new_correlations: list[str] = []

    def say(self, message: str) -> None:
        print(f"rpcwatch: {safe_text(message).plain}", file=self._messages, flush=True)

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        self.start()
        try:
            while not self._stop.is_set():
                busy = self.step()
                if self.options.once and not busy:
                    break
                if not busy:
                    self._stop.wait(self.options.poll)
            else:
                self.step()  # what was written before the signal, one last batch
        finally:
            self.finish()
        return 0

    def start(self) -> None:
        blob = self.store.correlation_state()
        if blob is not None and hasattr(self.correlator, "restore"):
            self.correlator.restore(blob)
        self.delivery.open()
        self.say(f"state in {self.options.state}")
        for sink in self.delivery.sinks:
            self.say(f"delivering to {sink.name} ({sink.guarantee})")

    def step(self) -> bool:
        """One batch; True when more is waiting (a backlog of lines or of spooled alerts):
        the next batch follows without the poll interval's pause."""
        if self._reopen:
            self._reopen = False
            self.delivery.reopen()
        paused = self.delivery.full
        pieces = [] if paused else self.follower.poll(settled=self.options.once)
        documents = self._detect(pieces) if pieces else []
        if not documents and not pieces and not self.delivery.spooled:
            if self.follower.changed:
                self._commit(pieces, [])
            return False
        outcomes = self.delivery.send(documents, force=self.options.once)
        self._commit(pieces, outcomes)
        read_more = bool(pieces) and (self.follower.behind or self.options.once)
        return read_more or any(outcome.unspool for outcome in outcomes)

    def _detect(self, pieces: list[Piece]) -> list[dict]:
        hunt = Hunt([piece.source for piece in pieces], self._plan, self._engine, correlator=self.correlator)
        alerts = list(hunt)
        self._report_reading(hunt.report.stats)
        self.totals.batches += 1
        alerts = self._new_only(alerts)
        self.totals.alerts += len(alerts)
        return alerts

    def _new_only(self, alerts: list[dict]) -> list[dict]:
        """A correlation's episode is raised once, however often its windows are evaluated."""
        ids = [a["event"]["id"] for a in alerts if a["event"].get("dataset") == CORRELATION]
        if not ids:
            return alerts
        emitted = self.store.emitted(ids)
        kept = []
        for alert in alerts:
            if alert["event"].get("dataset") == CORRELATION:
                if alert["event"]["id"] in emitted:
                    continue
                emitted.add(alert["event"]["id"])
                self._new_correlations.append(alert["event"]["id"])
            kept.append(alert)
        return kept

    def _commit(self, pieces: list[Piece], outcomes: list[SinkOutcome]) -> None:
        self.follower.advance(pieces)
        with self.store.transaction() as tx:
            self.follower.save(tx)
            self.delivery.record(tx, outcomes)
            if self._new_correlations:
                tx.mark_emitted(self._new_correlations)
                self._new_correlations = []
            if pieces and hasattr(self.correlator, "snapshot"):
                tx.set_correlation_state(self.correlator.snapshot())
        for loss in self.follower.losses:
            self.totals.lost_bytes += loss.bytes
            self.say(f"{loss.path}: {loss.reason}: {loss.bytes:,} bytes lost")
        for warning in self.follower.warnings:
            self.say(warning)
        self.follower.losses, self.follower.warnings = [], []

    def _report_reading(self, stats: list[ReadStats]) -> None:
        for item in stats:
            self.totals.records += item.records
            self.totals.skipped += item.skipped_total
            for problem in ([item.error] if item.error else []) + item.lost + [
                    f"{count} records skipped: {reason}" for reason, count in item.skipped.items()]:
                self.say(f"{item.path}: {problem}")

    def finish(self) -> None:
        for name, count in self.delivery.pending():
            self.say(f"{name}: {count:,} alerts spooled, delivered when it is reachable again")
        elapsed = time.monotonic() - self.totals.started
        self.say(f"stopped: {self.totals.records:,} records read in {self.totals.batches:,} batches, "
                 f"{self.totals.alerts:,} alerts, {self.totals.skipped:,} records skipped, "
                 f"{self.totals.lost_bytes:,} bytes lost, {elapsed:.1f} s")
        self.follower.close()
        self.delivery.close()
        self.store.close()

    # -- signals --------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, lambda *_: self.stop())
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, lambda *_: setattr(self, "_reopen", True))
