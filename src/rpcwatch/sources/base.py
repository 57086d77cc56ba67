"""What every reader shares: the batch it yields, the statistics it keeps, its interface."""
from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from rpcwatch.sources.inputs import InputFile
    from rpcwatch.sources.prefilter import PrefilterPlan

from rpcwatch.schema import RAW_COLUMN  # noqa: F401  (readers import it from here)

#: Largest number of example locations kept per skip reason (the count is always exact).
MAX_EXAMPLES = 5


class ByteStream(Protocol):
    """An input as opened, before buffering: a file, an archive member, standard input,
    or a stream wrapping one (inflating, counting, reading a range)."""

    def read(self, size: int = -1, /) -> bytes: ...

    def readinto(self, buffer: memoryview, /) -> int: ...

    def close(self) -> object: ...


@dataclass(frozen=True)
class TableBatch:
    """Rows of one logical table (``zeek.conn``, ``windows.event``, ...) read from one input."""

    table: str
    data: pa.Table
    path: str
    #: the format that produced the rows, e.g. ``zeek-tsv``
    format: str = ""


@dataclass
class ReadStats:
    """What one input yielded and what it had to skip, with reasons.

    Readers never raise on bad content: they call :meth:`skip` and go on.
    """

    path: str
    format: str = "unknown"
    records: int = 0
    bytes_read: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    #: problems that did not cost a record (repaired or informational), counted like skips
    warnings: Counter = field(default_factory=Counter)
    #: why the input as a whole could not be read (unknown format, I/O error), if so
    error: str | None = None
    #: losses that cannot be counted in records (a truncated or corrupt stream), with where
    lost: list[str] = field(default_factory=list)
    #: the logical tables the input holds records of, whether or not the prefilter kept any
    #: (triage says which evidence the inputs cannot show); readers that cannot tell
    #: before parsing get the tables of the batches they yield
    tables: set[str] = field(default_factory=set)

    def skip(self, reason: str, count: int = 1, where: str | None = None) -> None:
        self.skipped[reason] += count
        self._remember(reason, where)

    def lose(self, reason: str, where: str | None = None) -> None:
        """The rest of a stream (or a part of unknown size) could not be read."""
        self.lost.append(reason if where is None else f"{reason} ({where})")

    def warn(self, reason: str, count: int = 1, where: str | None = None) -> None:
        self.warnings[reason] += count
        self._remember(reason, where)

    def _remember(self, reason: str, where: str | None) -> None:
        if where is not None:
            seen = self.examples.setdefault(reason, [])
            if len(seen) < MAX_EXAMPLES:
                seen.append(where)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


READERS: list[type[Reader]] = []


def register(reader: type[Reader]) -> type[Reader]:
    """Class decorator: make a reader known to format sniffing (first registered, first asked)."""
    READERS.append(reader)
    return reader


class Reader(ABC):
    """One input format. Subclasses register themselves with :func:`register`."""

    #: short format name shown in summaries (``zeek-tsv``)
    format_name: ClassVar[str]

    @classmethod
    @abstractmethod
    def sniff(cls, head: bytes) -> bool:
        """True when the first bytes (decompressed) look like this format."""

    @abstractmethod
    def read(
        self,
        source: InputFile,
        stream: io.BufferedReader,
        stats: ReadStats,
        prefilter: PrefilterPlan | None = None,
    ) -> Iterator[TableBatch]:
        """Yield the input's records as Arrow tables, counting what was skipped in ``stats``."""

    @classmethod
    def resume_context(cls, head: bytes) -> bytes | None:
        """What must stand before a later piece of a growing input for it to read alone,
        given the input's first bytes: ``b""`` for line formats whose lines stand on their
        own, ``None`` for formats that cannot be read from the middle (binary containers,
        read once when complete). Live mode prepends it to each new piece."""
        return None if b"\x00" in head[:4096] else b""

#: epoch seconds a timestamp can have (the years 1 to 9999, what ISO-8601 and Python write)
EARLIEST_SECONDS, LATEST_SECONDS = -62135596800.0, 253402300799.999


def representable_seconds(seconds: pa.Array, field: str, stats: ReadStats) -> pa.Array:
    """Epoch seconds with NaN, infinities and times outside the years 1-9999 unset, each
    counted: such a time cannot be written as a timestamp or placed in a window."""
    ok = pc.and_(pc.greater_equal(seconds, EARLIEST_SECONDS), pc.less_equal(seconds, LATEST_SECONDS))
    bad = pc.sum(pc.invert(pc.fill_null(ok, True))).as_py() or 0
    if not bad:
        return seconds
    stats.warn(f"{field} is not a time in the years 1-9999 (NaN, infinite or out of range; kept as unset)",
               count=bad)
    return pc.if_else(ok, seconds, pa.scalar(None, seconds.type))
