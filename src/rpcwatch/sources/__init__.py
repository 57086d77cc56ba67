"""Inputs to Arrow tables: find the inputs, sniff each one's format, let its reader stream it.

Adding a format = one module here that defines a :class:`~rpcwatch.sources.base.Reader`
decorated with :func:`~rpcwatch.sources.base.register`, imported below.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from rpcwatch import workers
from rpcwatch.sources import ecs, evtx, netfilter, pcap, suricata, vpcflow, winjson, zeek  # noqa: F401  (registers)
from rpcwatch.sources.base import READERS, ByteStream, Reader, ReadStats, TableBatch
from rpcwatch.sources.inputs import InputError, InputFile, WrappedStream, expand_inputs, open_decompressed
from rpcwatch.sources.prefilter import PrefilterPlan

__all__ = ["InputError", "InputFile", "ReadStats", "TableBatch", "LogReading", "expand_inputs",
           "sniff_reader"]


def sniff_reader(head: bytes) -> type[Reader] | None:
    """The first registered reader that recognises the content."""
    for reader in READERS:
        if reader.sniff(head):
            return reader
    return None


class _CountingStream(WrappedStream):
    """Reports raw (on-disk) bytes consumed, for progress bars."""

    _raw: ByteStream

    def __init__(self, raw: ByteStream, on_bytes: Callable[[int], None]):
        super().__init__(raw)
        self._on_bytes = on_bytes

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._on_bytes(len(data))
        return data

    def readinto(self, buffer) -> int:
        size = self._raw.readinto(buffer) or 0  # straight into the reader's buffer: no copy
        self._on_bytes(size)
        return size


@dataclass
class LogReading:
    """Reads a list of inputs one after another, keeping one :class:`ReadStats` per input."""

    inputs: list[InputFile]
    prefilter: PrefilterPlan | None = None
    on_bytes: Callable[[int], None] | None = None
    stats: list[ReadStats] = field(default_factory=list)

    def batches(self) -> Iterator[TableBatch]:
        ahead = _ReadAhead(self.inputs, self.prefilter)
        for index, source in enumerate(self.inputs):
            result = ahead.result(index)
            if result is None:
                stats = ReadStats(source.path)
                self.stats.append(stats)
                yield from self._read_one(source, stats)
                continue
            stats, batches = result
            self.stats.append(stats)
            if self.on_bytes and source.size:
                self.on_bytes(source.size)
            yield from batches

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


#: files up to this size may be read whole by a worker process (its batches come back at once)
WORKER_FILE_LIMIT = 256 << 20


class _ReadAhead:
    """Inputs read by worker processes a few files ahead of the one being consumed.

    Reading a file (decompressing, parsing, the prefilter scan) holds Python's GIL; with
    several files, workers read them side by side and hand back their tables. Only files
    on disk of moderate size go to workers (a large plain log is scanned at Hyperscan's
    speed here, or range by range by the workers when that pays, see
    :func:`rpcwatch.sources.scan.scan_pays_in_workers`; a large capture is tracked by all
    workers at once); the order of results is the order of the inputs."""

    def __init__(self, inputs: list[InputFile], prefilter: PrefilterPlan | None):
        self._eligible = [i for i, s in enumerate(inputs)
                          if s.reopen_path and (s.size or 0) <= WORKER_FILE_LIMIT
                          and not (s.disk_path and (s.size or 0) >= workers.PARALLEL_MIN_SIZE)]
        worth_it = len(self._eligible) >= 2 and \
            sum(inputs[i].size or 0 for i in self._eligible) >= workers.SEVERAL_FILES_MIN_SIZE
        self._pool = workers.worker_pool() if worth_it else None
        self._inputs, self._prefilter = inputs, prefilter
        self._futures: dict[int, Future[tuple[ReadStats, list[TableBatch]]]] = {}
        self._next = 0  # position in _eligible of the next file to hand out
        self._window = 2 * workers.worker_count()

    def result(self, index: int) -> tuple[ReadStats, list[TableBatch]] | None:
        if self._pool is None:
            return None
        while self._next < len(self._eligible) and len(self._futures) < self._window:
            position = self._eligible[self._next]
            source = self._inputs[position]
            assert source.reopen_path is not None  # only inputs with one are eligible
            self._futures[position] = self._pool.submit(_read_in_worker, source.reopen_path, source.size,
                                                        self._prefilter)
            self._next += 1
        future = self._futures.pop(index, None)
        if future is None:
            return None
        try:
            return future.result()
        except BrokenProcessPool:  # workers could not start (see workers.worker_pool): read here
            self._pool, self._futures = None, {}
            return None


def _read_in_worker(path: str, size: int | None, prefilter: PrefilterPlan | None
                    ) -> tuple[ReadStats, list[TableBatch]]:
    source = InputFile(path, lambda: open(path, "rb"), size, disk_path=path, reopen_path=path)
    reading = LogReading([source], prefilter)
    batches = list(reading.batches())
    return reading.stats[0], batches


class _Progress:
    """Bytes of one input reported once each, though two readers may go over the same start:
    the stream (the head read to sniff the format, or the whole input) and a reader that
    reads ranges of the file on disk after it. Each goes through the input in order from
    its start; what is reported is how far the further of them has got."""

    def __init__(self, on_bytes: Callable[[int], None]):
        self._on_bytes = on_bytes
        self._streamed = self._ranged = self._reported = 0

    def streamed(self, size: int) -> None:
        self._streamed += size
        self._report(self._streamed)

    def ranged(self, size: int) -> None:
        self._ranged += size
        self._report(self._ranged)

    def _report(self, position: int) -> None:
        if position > self._reported:
            self._on_bytes(position - self._reported)
            self._reported = position


def _counted(source: InputFile, on_bytes: Callable[[int], None] | None) -> InputFile:
    if on_bytes is None or source.path == "-":
        return source
    progress = _Progress(on_bytes)
    return InputFile(source.path, lambda: _CountingStream(source.open_raw(), progress.streamed), source.size,
                     source.disk_path, progress.ranged, source.reopen_path)


def _why_unknown(head: bytes) -> str:
    if b"\x00" in head[:4096]:
        return " (binary content)"
    return ""
