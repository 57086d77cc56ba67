"""``rpcwatch watch``: follow, detect, deliver, checkpoint; again and again.

One turn of the loop is one batch: the complete lines written since the checkpoints (at
most ``BATCH_BYTES``) go through the same readers, compiled rules and engine as ``hunt``;
their alerts go to every sink; then one transaction commits the new checkpoints, the
spool of what a sink did not take, the sinks' recovery data and the correlation state.
SIGTERM and SIGINT end the loop after the batch in hand and one last look at the files
are delivered and committed (exit 0); SIGHUP reopens file sinks before the next batch.
"""
from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from rpcwatch.alerts import Alert
from rpcwatch.hunt import Engine, Hunt, HuntPlan, new_correlator
from rpcwatch.outputs.sinks.base import Sink
from rpcwatch.outputs.sinks.file import FileSink
from rpcwatch.outputs.table import safe_text
from rpcwatch.sigma.correlation import CorrelationStateError, Correlator
from rpcwatch.sources import ReadStats
from rpcwatch.triage.enrich import enrich
from rpcwatch.watch.delivery import Delivery, SinkOutcome
from rpcwatch.watch.follow import Follower, Piece
from rpcwatch.watch.state import StateStore

CORRELATION = "correlation"
#: state key of the log clock: the newest event the correlations saw, and when lines last came
LOG_CLOCK = "log_clock"


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
    #: a correlation episode is reported once no record this many seconds older than the log
    #: time read so far could extend it (logs are not written in time order: Zeek writes a
    #: connection when it ends); a later record is still evaluated, late, and counted
    correlation_lateness: float = 300.0


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
        self.correlator = new_correlator(plan.rule_set.correlations)
        self.totals = WatchTotals()
        self._stop = threading.Event()
        self._reopen = False
        #: ids of correlation alerts raised in this batch (committed with it)
        self._new_correlations: list[str] = []
        #: the newest event the correlations observed, and when the last new lines came
        #: (the correlations' watermark, see _watermark)
        self._newest_event: float | None = None
        self._last_data = time.time()

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
        if blob is not None:
            try:
                self.correlator = Correlator.restore(self._plan.rule_set.correlations, blob,
                                                     self.correlator.limits)
            except CorrelationStateError as exc:
                self.say(f"correlation windows start afresh: {exc}")
        clock = self.store.meta(LOG_CLOCK)
        if clock is not None:  # the log time reached and when, as the last run left them (cron: --once)
            self._newest_event, self._last_data = json.loads(clock)
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
        documents = self._detect(pieces)
        if not documents and not pieces and not self.delivery.spooled:
            if self.follower.changed:
                self._commit(pieces, [])
            return False
        outcomes = self.delivery.send(documents, force=self.options.once)
        self._commit(pieces, outcomes)
        read_more = bool(pieces) and (self.follower.behind or self.options.once)
        return read_more or any(outcome.unspool for outcome in outcomes)

    def _detect(self, pieces: list[Piece]) -> list[dict]:
        found: list[Alert] = []
        if pieces:
            hunt = Hunt([piece.source for piece in pieces], self._plan, self._engine, correlator=self.correlator)
            found = list(hunt)
            self._report_reading(hunt.report.stats)
            for loss in hunt.report.correlation_losses:
                self.say(f"correlation limit reached: {loss}")
            if hunt.newest_event is not None:
                self._newest_event = max(self._newest_event or hunt.newest_event, hunt.newest_event)
            self._last_data = time.time()
            self.totals.batches += 1
        found += self.correlator.poll(self._watermark())
        alerts = self._new_only(list(enrich(found, self._plan.config)))
        self.totals.alerts += len(alerts)
        return [alert.to_dict() for alert in alerts]

    def _watermark(self) -> float | None:
        """Log time up to which every record has been read: the newest event seen, moved on
        by the wall-clock time the logs have been quiet since, less the lateness allowed.
        Catching up on a backlog, it follows the records; once the logs are quiet, the
        clock (a quiet log is a log whose time goes on without records)."""
        if self._newest_event is None:
            return None
        quiet = max(0.0, time.time() - self._last_data)
        return self._newest_event + quiet - self.options.correlation_lateness

    def _new_only(self, alerts: list[Alert]) -> list[Alert]:
        """A correlation's episode is raised once, also when a restart from the last
        committed state closes it again."""
        ids = [a.event_id for a in alerts if a.dataset == CORRELATION]
        if not ids:
            return alerts
        emitted = self.store.emitted(ids)
        kept = []
        for alert in alerts:
            if alert.dataset == CORRELATION:
                if alert.event_id in emitted:
                    continue
                emitted.add(alert.event_id)
                self._new_correlations.append(alert.event_id)
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
            if pieces:
                tx.set_correlation_state(self.correlator.snapshot())
                tx.set_meta(LOG_CLOCK, json.dumps([self._newest_event, self._last_data]).encode())
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
