"""What every sink shares: the delivery contract live mode relies on, settings, secrets.

A sink receives batches of alerts (JSON-ready ECS dicts, docs/alerts.md, each with
``event.id``): ``write`` hands it a batch, ``flush`` returns only when the receiver has
acknowledged everything written since the last flush. ``flush`` raises
:class:`SinkUnavailable` when the receiver cannot take the batch now (the caller keeps the
batch and retries it whole later) and :class:`SinkError` when it never will (bad
credentials, a bad URL). Documents the receiver refuses for good, alone (a mapping error),
are returned by ``flush`` with the reason, so the caller can keep them aside instead of
retrying them forever.
"""
from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar
from urllib.parse import SplitResult, urlsplit

#: delivery guarantees, as docs/live.md states them
NO_DUPLICATES = "no duplicates"
AT_LEAST_ONCE = "at least once"


class SinkUnavailable(Exception):
    """The receiver cannot take the batch now (unreachable, busy, 5xx): retry it later."""


class SinkError(Exception):
    """The sink cannot work as configured (credentials refused, bad URL, bad option)."""


@dataclass(frozen=True)
class Rejection:
    """A document the receiver refused for good, and why."""

    document: dict
    reason: str


@dataclass(frozen=True)
class SinkSettings:
    """One sink as given: ``--to URL`` or a ``[[sinks]]`` table of rpcwatch.toml."""

    url: str
    options: Mapping[str, object] = field(default_factory=dict)
    #: where the settings came from, for messages (``--to``, ``rpcwatch.toml``)
    origin: str = "--to"


class Sink(ABC):
    #: URL schemes this sink is registered under
    schemes: ClassVar[tuple[str, ...]]
    guarantee: ClassVar[str]
    #: option names this sink accepts besides ``url`` (anything else is a configuration error)
    options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, settings: SinkSettings):
        self.settings = settings
        self.url = urlsplit(settings.url)
        unknown = set(settings.options) - self.options - {"url"}
        if unknown:
            raise SinkError(f"{self.shown(self.url)}: unknown option(s) {', '.join(sorted(unknown))} "
                            f"(accepted: {', '.join(sorted(self.options)) or 'none'})")

    @classmethod
    def shown(cls, url: SplitResult) -> str:
        """A URL of this sink as shown in messages: scheme, host, port and path, never a secret."""
        return display_url(url)

    @property
    def name(self) -> str:
        return self.shown(self.url)

    @property
    def key(self) -> str:
        """Stable name of the sink in the state store (its spool and recovery data)."""
        digest = hashlib.blake2b(self.settings.url.encode(), digest_size=6).hexdigest()
        return f"{self.name}#{digest}"

    def open(self, recovery: dict | None = None) -> None:  # noqa: B027 (optional hook)
        """Connect or open; ``recovery`` is what :meth:`recovery` returned at the last
        committed batch (a file sink truncates what a crash left after it)."""

    @abstractmethod
    def write(self, documents: Sequence[dict]) -> None:
        """Take a batch of alerts (JSON-ready dicts with ``event.id``)."""

    @abstractmethod
    def flush(self) -> list[Rejection]:
        """Return once the receiver acknowledged everything written since the last flush,
        with the documents it refused for good; raise :class:`SinkUnavailable` (retry the
        batch later) or :class:`SinkError` (the configuration is wrong)."""

    def recovery(self) -> dict | None:
        """Data to commit with the batch just flushed, handed to :meth:`open` after a crash."""
        return None

    def reopen(self) -> None:  # noqa: B027 (optional hook)
        """SIGHUP: files are reopened (logrotate moved them); connections stay."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release the connection or file."""

    def option(self, name: str, default=None):
        return self.settings.options.get(name, default)

    def secret(self, name: str, environment: str) -> str | None:
        """A secret from the configuration (``name``, or the variable named by ``name_env``),
        else from the environment variable ``environment``. Never from the URL."""
        value = self.option(name)
        if value is None and self.option(f"{name}_env"):
            value = os.environ.get(str(self.option(f"{name}_env")))
        if value is None:
            value = os.environ.get(environment)
        return None if value in (None, "") else str(value)


def display_url(url: SplitResult) -> str:
    """scheme://host:port/path without user, password or query (which may carry tokens)."""
    host = url.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{url.port}" if url.port else ""
    if not url.netloc:
        return f"{url.scheme}:{url.path}"
    return f"{url.scheme}://{host}{port}{url.path}"

