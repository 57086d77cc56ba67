"""Live mode (``rpcwatch watch``): follow logs as they are written, detect with the same
rules and engine as ``hunt``, deliver to sinks, survive crashes and rotation.

:mod:`.follow` finds and reads files, :mod:`.state` keeps the checkpoints in SQLite,
:mod:`.delivery` hands alerts to the sinks with a spool, :mod:`.loop` runs the batches.
"""
from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from rpcwatch.config import Config
from rpcwatch.outputs.sinks import SinkError, SinkSettings, make_sinks
from rpcwatch.watch.state import StateInUse


class WatchError(Exception):
    """What the user asked for cannot run (a bad sink, no rules); exit code 2."""


def default_state_dir() -> Path:
    """systemd's ``StateDirectory=`` (``$STATE_DIRECTORY``), else the XDG state directory."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "rpcwatch"


def sink_settings(config: Config, to: Sequence[str], syslog_format: str | None) -> list[SinkSettings]:
    """``--to`` replaces the configured sinks; a ``--to`` URL that a ``[[sinks]]`` table
    names takes that table's options (its secrets, its CA file)."""
    configured = {str(table["url"]): table for table in config.sinks}
    if to:
        given = [SinkSettings(url, _options(configured.get(url, {})), "--to") for url in to]
    else:
        given = [SinkSettings(url, _options(table), config.source) for url, table in configured.items()]
    if syslog_format:
        given = [SinkSettings(s.url, {**s.options, "format": syslog_format}, s.origin)
                 if s.url.startswith("syslog+") else s for s in given]
    return given


def _options(table) -> dict:
    return {key: value for key, value in table.items() if key != "url"}


def run_watch(config: Config, paths: Sequence[str], rules: Sequence[str] = (), filters: Sequence[str] = (),
              bundled: bool = True, state: str | None = None, to: Sequence[str] = (),
              syslog_format: str | None = None, once: bool = False, poll: float | None = None) -> int:
    from rpcwatch.context import current
    from rpcwatch.engines.duckdb import DuckDBEngine
    from rpcwatch.hunt import plan_hunt
    from rpcwatch.watch.loop import Watch, WatchOptions

    try:
        sinks = make_sinks(sink_settings(config, to, syslog_format))
    except SinkError as exc:
        raise WatchError(str(exc)) from None
    current().workers.requested = 0  # new lines arrive in small pieces: read here, no reader processes
    plan = plan_hunt(rules, config, bundled=bundled, filters=filters)
    if not plan.rule_set.rules:
        raise WatchError("no runnable rules" + "".join(f"\n  {p.path}: {p.reason}" for p in plan.problems))
    settings = config.watch
    options = WatchOptions(paths=list(paths), state=Path(state or settings.state or default_state_dir()),
                           poll=poll or settings.poll, once=once,
                           spool_limit=int(settings.spool_limit_mb * 2**20), retry_max=settings.retry_max,
                           settle=settings.settle, correlation_lateness=settings.correlation_lateness)
    try:
        watch = Watch(options, plan, DuckDBEngine(), sinks)
    except StateInUse as exc:
        raise WatchError(str(exc)) from None
    except (OSError, sqlite3.Error) as exc:
        raise WatchError(f"state directory {options.state}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        return watch.run()
    except SinkError as exc:  # a sink that cannot even open (a file sink in a directory it cannot write)
        raise WatchError(str(exc)) from None
