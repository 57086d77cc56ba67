"""Delivery of each batch's alerts to every sink, with a spool for the sinks that cannot
take them now.

For each sink, a batch is its spooled documents (oldest first) and then the new ones, so
order is kept. :meth:`Delivery.send` talks to the sinks; :meth:`Delivery.record` writes
the outcome in the batch's transaction, with the checkpoints: what a sink did not
acknowledge is spooled in the same commit that advances the checkpoint past the lines it
came from, so no alert is between the two. A sink that failed is retried after a growing
pause (up to ``retry_max`` seconds) while its documents go to the spool. The spool is
bounded: while a sink's spool holds ``spool_limit`` bytes or more, :attr:`full` says so and
live mode stops reading new lines (backpressure) rather than drop alerts.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rpcwatch.outputs.jsonl import dumps
from rpcwatch.outputs.sinks.base import Rejection, Sink, SinkError, SinkUnavailable
from rpcwatch.watch.state import StateStore, Transaction

#: spooled documents handed to a sink in one batch
SPOOL_BATCH = 5000


@dataclass
class _SinkState:
    sink: Sink
    spooled_bytes: int = 0
    spooled_count: int = 0
    failures: int = 0
    retry_at: float = 0.0
    full_warned: bool = False


@dataclass
class SinkOutcome:
    """What one sink did with one batch."""

    state: _SinkState
    #: spooled documents it acknowledged (to remove from the spool)
    unspool: list[int] = field(default_factory=list)
    unspool_bytes: int = 0
    #: new documents it did not take (to spool)
    spool: list[str] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    recovery: dict | None = None


class Delivery:
    def __init__(self, sinks: Sequence[Sink], store: StateStore, spool_limit: int, retry_max: float,
                 say: Callable[[str], None]):
        self._store = store
        self._states = [_SinkState(sink, store.spool_bytes(sink.key), store.spool_count(sink.key))
                        for sink in sinks]
        self._spool_limit = spool_limit
        self._retry_max = retry_max
        self._say = say
        self.delivered = 0
        self.rejected = 0

    @property
    def sinks(self) -> list[Sink]:
        return [state.sink for state in self._states]

    def open(self) -> None:
        for state in self._states:
            state.sink.open(self._store.recovery(state.sink.key))
            truncated = getattr(state.sink, "truncated", 0)
            if truncated:
                self._say(f"{state.sink.name}: removed {truncated:,} bytes written after the last checkpoint "
                          "(a batch interrupted by a crash; it is written again)")
            if state.spooled_count:
                self._say(f"{state.sink.name}: {state.spooled_count:,} spooled alerts to deliver")

    @property
    def full(self) -> bool:
        """A sink's spool is at its limit: reading must pause (backpressure)."""
        full = False
        for state in self._states:
            if state.spooled_bytes >= self._spool_limit:
                full = True
                if not state.full_warned:
                    state.full_warned = True
                    self._say(f"warning: the spool of {state.sink.name} is full ({state.spooled_count:,} alerts, "
                              f"{state.spooled_bytes / 2**20:,.1f} MB): reading is paused until it takes them; "
                              "no alert is dropped")
            elif state.full_warned:
                state.full_warned = False
                self._say(f"{state.sink.name}: the spool is below its limit again; reading resumes")
        return full

    @property
    def spooled(self) -> bool:
        return any(state.spooled_count for state in self._states)

    def send(self, documents: list[dict], force: bool = False) -> list[SinkOutcome]:
        """Offer the batch to every sink; ``force`` ignores the pause after a failure."""
        encoded: list[str] | None = None
        outcomes = []
        for state in self._states:
            outcome = SinkOutcome(state)
            if not force and time.monotonic() < state.retry_at:
                outcome.spool = encoded = encoded or [dumps(d) for d in documents]
            else:
                encoded = self._offer(state, documents, encoded, outcome)
            outcomes.append(outcome)
        return outcomes

    def _offer(self, state: _SinkState, documents: list[dict], encoded: list[str] | None,
               outcome: SinkOutcome) -> list[str] | None:
        spooled = self._store.spooled(state.sink.key, SPOOL_BATCH) if state.spooled_count else []
        # the new documents go after the spool: straight away only if it is emptied now
        with_new = len(spooled) == state.spooled_count
        batch = [json.loads(document) for _, document in spooled] + (documents if with_new else [])
        if not with_new:
            outcome.spool = encoded = encoded or [dumps(d) for d in documents]
        if not batch:
            return encoded
        try:
            state.sink.write(batch)
            outcome.rejected = state.sink.flush()
        except (SinkUnavailable, SinkError) as exc:
            self._failed(state, exc)
            if with_new:
                outcome.spool = encoded = encoded or [dumps(d) for d in documents]
            return encoded
        if state.failures:
            self._say(f"{state.sink.name}: delivering again")
        state.failures, state.retry_at = 0, 0.0
        outcome.unspool = [spool_id for spool_id, _ in spooled]
        outcome.unspool_bytes = sum(len(document) for _, document in spooled)
        outcome.recovery = state.sink.recovery()
        self.delivered += len(batch) - len(outcome.rejected)
        return encoded

    def _failed(self, state: _SinkState, exc: Exception) -> None:
        state.failures += 1
        pause = min(self._retry_max, 0.5 * 2 ** (state.failures - 1))
        state.retry_at = time.monotonic() + pause
        permanent = " (fix the configuration)" if isinstance(exc, SinkError) else ""
        self._say(f"{state.sink.name}: not delivered{permanent}: {exc}; alerts are spooled, "
                  f"next try in {pause:g} s")

    def record(self, tx: Transaction, outcomes: list[SinkOutcome]) -> None:
        """The outcome of :meth:`send`, in the batch's transaction."""
        for outcome in outcomes:
            state, key = outcome.state, outcome.state.sink.key
            if outcome.unspool:
                tx.unspool(outcome.unspool)
                state.spooled_count -= len(outcome.unspool)
                state.spooled_bytes -= outcome.unspool_bytes
            if outcome.spool:
                tx.spool(key, outcome.spool)
                state.spooled_count += len(outcome.spool)
                state.spooled_bytes += sum(len(document) for document in outcome.spool)
            if outcome.rejected:
                tx.reject(key, [(r.reason, dumps(r.document)) for r in outcome.rejected])
                self.rejected += len(outcome.rejected)
                self._say(f"{state.sink.name}: {len(outcome.rejected)} alert(s) refused for good, kept in the "
                          f"state store's 'rejected' table; first reason: {outcome.rejected[0].reason}")
            if outcome.recovery is not None:
                tx.set_recovery(key, outcome.recovery)

    def reopen(self) -> None:
        for state in self._states:
            state.sink.reopen()

    def close(self) -> None:
        for state in self._states:
            state.sink.close()

    def pending(self) -> list[tuple[str, int]]:
        return [(state.sink.name, state.spooled_count) for state in self._states if state.spooled_count]
