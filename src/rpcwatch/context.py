"""The run context: what a run decides once and every layer reads, instead of module
globals set by the command line and reset by tests.

A :class:`RunContext` carries the worker-process policy and pool and the named limits
(docs/reliability.md). The command line enters one for the run (``with RunContext(...)``);
code that runs without one (a library call, a test) gets a default context. The current
context is a :class:`contextvars.ContextVar`, so a context entered in one run or thread
never leaks into another.
"""
from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass, field, fields

from rpcwatch.workers import WorkerPool


class LimitError(ValueError):
    """A limit set to a value it cannot take (exit code 2)."""


@dataclass(frozen=True)
class Limits:
    """What no input can make rpcwatch exceed; each is named in docs/reliability.md with
    what happens when it is reached."""

    #: a line longer than this is skipped and counted (its neighbours are kept)
    max_line_bytes: int = 8 << 20
    #: per correlation rule (docs/sigma-support.md): events waiting to be put in time
    #: order, groups held, events in one group's window, events in all windows
    correlation_reorder_events: int = 200_000
    correlation_groups: int = 100_000
    correlation_window_events: int = 100_000
    correlation_held_events: int = 500_000

    @classmethod
    def from_mapping(cls, values: dict, where: str) -> Limits:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise LimitError(f"{where}: unknown limit(s): {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(sorted(known))})")
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise LimitError(f"{where}: {name} must be a positive whole number, not {value!r}")
        return cls(**values)


@dataclass
class RunContext:
    limits: Limits = field(default_factory=Limits)
    workers: WorkerPool = field(default_factory=WorkerPool)
    #: compiled prefilter matchers by pattern (each learns whether it pays, per run)
    line_matchers: dict = field(default_factory=dict)
    #: prefilter line filters by plan and (table, format): a worker gets the plan with each
    #: input, and building a filter of thousands of literals takes tens of milliseconds
    line_filters: dict = field(default_factory=dict)
    _token: Token | None = field(default=None, repr=False)

    def __enter__(self) -> RunContext:
        self._token = _current.set(self)
        return self

    def __exit__(self, *exc) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        self.workers.close()


_default = RunContext()
_current: ContextVar[RunContext] = ContextVar("rpcwatch_run_context", default=_default)


def current() -> RunContext:
    """The context of the run in progress (the default one outside any run)."""
    return _current.get()
