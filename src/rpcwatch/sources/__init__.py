"""Inputs to Arrow tables: find the inputs, sniff each one's format, let its reader stream it.

Adding a format = one module here that defines a :class:`~rpcwatch.sources.base.Reader`
decorated with :func:`~rpcwatch.sources.base.register`, imported below.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterator

from rpcwatch.sources import evtx, pcap, winjson, zeek  # noqa: F401  (registers their readers)
from rpcwatch.sources.base import READERS, ReadStats, Reader, TableBatch
from rpcwatch.sources.inputs import InputError, InputFile, expand_inputs, open_decompressed
from rpcwatch.sources.prefilter import PrefilterPlan

__all__ = ["InputError", "InputFile", "ReadStats", "TableBatch", "LogReading", "expand_inputs",
           "sniff_reader"]


def sniff_reader(head: bytes) -> type[Reader] | None:
    """The first registered reader that recognises the content."""
    for reader in READERS:
        if reader.sniff(head):
            return reader
    return None


class _CountingStream(io.RawIOBase):
    """Reports raw (on-disk) bytes consumed, for progress bars."""

    def __init__(self, raw: BinaryIO, on_bytes: Callable[[int], None]):
        self._raw = raw
        self._on_bytes = on_bytes

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._on_bytes(len(data))
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


@dataclass
class LogReading:
    """Reads a list of inputs one after another, keeping one :class:`ReadStats` per input."""

    inputs: list[InputFile]
    prefilter: PrefilterPlan | None = None
    on_bytes: Callable[[int], None] | None = None
    stats: list[ReadStats] = field(default_factory=list)

    def batches(self) -> Iterator[TableBatch]:
        for source in self.inputs:
            stats = ReadStats(source.path)
            self.stats.append(stats)
            yield from self._read_one(source, stats)

    def _read_one(self, source: InputFile, stats: ReadStats) -> Iterator[TableBatch]:
        try:
            source, head, stream = open_decompressed(_counted(source, self.on_bytes), stats)
        except OSError as exc:
            stats.error = f"cannot read: {exc.strerror or exc}"
            return
        try:
            if not head.strip():
                stats.format = "empty"
                return
            reader = sniff_reader(head)
            if reader is None:
                stats.error = "not a supported log format" + _why_unknown(head)
                return
            for batch in reader().read(source, stream, stats, self.prefilter):
                stats.tables.add(batch.table)
                yield batch
        except OSError as exc:
            stats.error = f"read error: {exc.strerror or exc}"
        finally:
            stream.close()


def _counted(source: InputFile, on_bytes: Callable[[int], None] | None) -> InputFile:
    if on_bytes is None or source.path == "-":
        return source
    return InputFile(source.path, lambda: _CountingStream(source.open_raw(), on_bytes), source.size,
                     source.disk_path, on_bytes)


def _why_unknown(head: bytes) -> str:
    if b"\x00" in head[:4096]:
        return " (binary content)"
    return ""
