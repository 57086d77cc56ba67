"""Block scanning for line-oriented logs, serial or spread over worker processes.

A block is cut into *runs*: ``#`` header lines, and data lines between them. For a data
run the scan counts lines and separators (the cheap integrity check), notes whether the
bytes are clean (valid UTF-8, no NUL) and keeps the lines the prefilter lets through.
Most of a large log's bytes are only ever touched here.

For a plain file on disk the scan of independent byte ranges runs in worker processes,
one per core: the byte-level work (counting, the RE2 scan) holds Python's GIL, so
threads would not help. Workers read their range themselves (no data crosses the
process boundary but the candidate lines) and start on whole lines. Compressed or
piped input is scanned in the reading process.

A line longer than the run's ``max_line_bytes`` is never held whole: it is left out where
it is found and reported (:attr:`Run.oversize`), its neighbours are kept.
"""
from __future__ import annotations

import io
import os
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from rpcwatch.context import current
from rpcwatch.sources.inputs import iter_line_chunks, without_long_lines
from rpcwatch.sources.prefilter import compile_line_pattern
from rpcwatch.workers import PARALLEL_MIN_SIZE, worker_pool

if TYPE_CHECKING:
    from rpcwatch.sources.base import ReadStats
    from rpcwatch.sources.inputs import InputFile
    from rpcwatch.sources.prefilter import LineFilter

#: blocks handed to one worker task
RANGE_SIZE = 16 << 20


@dataclass
class Run:
    """A stretch of whole lines at ``offset`` in the input."""

    offset: int
    length: int
    #: the header lines themselves, for a run of ``#`` lines
    header: bytes | None = None
    lines: int = 0
    #: occurrences of the format's shape marker (TSV: separators; JSON: ``}\n{`` joints)
    marks: int = 0
    clean: bool = True
    #: the first byte and the last byte before the final newline (JSON lines: ``{}``)
    edges: bytes = b""
    #: the lines the prefilter kept (all data when there is no filter)
    kept: bytes = b""
    #: the run's bytes, when they are at hand (serial scanning)
    data: bytes | None = None
    #: offsets of lines longer than the limit, left out just before this run
    oversize: tuple[int, ...] = ()
    #: the run holds a carriage return somewhere (a CRLF line end, or a CR inside a line)
    returns: bool = False


def _filter(pattern: bytes | None):
    return None if pattern is None else compile_line_pattern(pattern)


def _is_clean(data: bytes) -> bool:
    if b"\x00" in data:
        return False
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def scan_block(block: bytes, offset: int, marker: bytes, pattern: bytes | None,
               headers: bytes, keep_data: bool) -> list[Run]:
    """Cut a block of whole lines into runs. ``pattern`` is the prefilter's line regex
    (``None`` keeps every line; an empty pattern keeps none); ``headers`` is how header
    lines start (Zeek TSV: ``#``; VPC flow logs: ``version ``), empty when a format has none."""
    matcher = _filter(pattern)
    runs = []
    start, size = 0, len(block)
    while start < size:
        if headers and block.startswith(headers, start):
            end = start
            while end < size and block.startswith(headers, end):
                newline = block.find(b"\n", end)
                end = size if newline < 0 else newline + 1
            runs.append(Run(offset + start, end - start, header=block[start:end]))
            start = end
            continue
        end = _next_header_line(block, start, headers) if headers else size
        data = block[start:end]
        if pattern == b"":
            kept = b""
        elif matcher is None:
            kept = data
        else:
            kept = matcher.kept(data)
        lines, marks = _lines_and_marks(data, marker)
        runs.append(Run(offset + start, end - start, lines=lines, marks=marks, clean=_is_clean(data),
                        edges=_edges(data), kept=kept, data=data if keep_data else None, returns=b"\r" in data))
        start = end
    return runs


def _lines_and_marks(data: bytes, marker: bytes) -> tuple[int, int]:
    """The lines of a run (a last line without its newline counts) and the occurrences of
    the format's marker. ``bytes.count`` goes byte by byte where the byte is frequent (a
    TSV's tabs: about 600 MB/s); numpy compares many bytes per instruction (about 8 GB/s).
    A marker around a newline (JSON lines' ``}\\n{``) is looked for at the newlines only;
    it cannot overlap itself, so this counts what ``bytes.count`` counts."""
    codes = np.frombuffer(data, np.uint8)
    unterminated = not data.endswith(b"\n")
    if len(marker) == 1:
        return int(np.count_nonzero(codes == 10)) + unterminated, int(np.count_nonzero(codes == marker[0]))
    at = marker.find(b"\n")
    if at < 0:
        return int(np.count_nonzero(codes == 10)) + unterminated, data.count(marker)
    newlines = np.flatnonzero(codes == 10)
    starts = newlines[(newlines >= at) & (newlines - at + len(marker) <= len(data))] - at
    found = np.ones(len(starts), dtype=bool)
    for index, byte in enumerate(marker):
        if index != at:
            found &= codes[starts + index] == byte
    return len(newlines) + unterminated, int(np.count_nonzero(found))


def _edges(data: bytes) -> bytes:
    """The first byte and the last before a final newline (without copying the run)."""
    end = len(data) - data.endswith(b"\n")
    return data[:min(end, 1)] + data[max(end - 1, 0):end]


def _next_header_line(block: bytes, start: int, headers: bytes) -> int:
    """Where the next header line begins (or the end). A one-byte start (``#``) is looked
    for alone (a memchr scan), then checked to start a line: much faster than a search
    for ``\\n#`` in data where ``#`` is rare. A longer start is found with its newline."""
    if len(headers) > 1:
        at = block.find(b"\n" + headers, start)
        return len(block) if at < 0 else at + 1
    at = block.find(headers, start)
    while at > 0 and block[at - 1] != 0x0A:
        at = block.find(headers, at + 1)
    return len(block) if at < 0 else at


def _scan_range(path: str, start: int, end: int, marker: bytes, pattern: bytes | None,
                headers: bytes, first: bool, max_line: int, keep_data: bool = False) -> list[Run]:
    """The whole lines that begin in [start, end) of a file (a worker task, or a step of
    reading a file here). A line that goes on more than ``max_line`` bytes is left out,
    reported in the last run."""
    with open(path, "rb", buffering=0) as fh:
        if not first:
            probe = os.pread(fh.fileno(), 1, start - 1)
            if probe != b"\n":
                newline = _find_newline(fh, start, end)  # no line starts here when there is none
                if newline < 0 or newline + 1 >= end:
                    return []
                start = newline + 1
        block, oversize = _whole_lines(fh, start, end, max_line)
    if max_line < RANGE_SIZE:
        block, inside = without_long_lines(block, max_line, start)
        oversize = tuple(sorted((*inside, *oversize)))
    runs = scan_block(block, start, marker, pattern, headers, keep_data=keep_data)
    if oversize:
        runs.append(Run(start + len(block), 0, oversize=oversize))
    return runs


def _whole_lines(fh, start: int, end: int, max_line: int) -> tuple[bytes, tuple[int, ...]]:
    """The bytes from ``start`` to the end of the line holding byte ``end - 1``, in one read
    (a block and its tail read apart and joined cost a copy of the block). That last line is
    left out, its offset returned, when it runs on more than ``max_line`` bytes."""
    newline = _find_newline(fh, end - 1, end + max_line + 1)
    line_end = newline + 1 if newline >= 0 else min(os.fstat(fh.fileno()).st_size, end + max_line + 1)
    block = os.pread(fh.fileno(), max(line_end - start, 0), start)
    last = block.rfind(b"\n", 0, len(block) - 1) + 1
    if len(block) - last > max_line:
        return block[:last], (start + last,)
    return block, ()


def _find_newline(fh, position: int, until: int) -> int:
    """Offset of the first newline in [position, until), or -1."""
    step = 1 << 16
    while position < until:
        data = os.pread(fh.fileno(), min(step, until - position), position)
        if not data:
            return -1
        at = data.find(b"\n")
        if at >= 0:
            return position + at
        position += len(data)
    return -1


def scan_file_in_parallel(path: str, start: int, size: int, marker: bytes, pattern: bytes | None,
                          headers: bytes, max_line: int) -> Iterator[Run] | None:
    """Runs of a plain file from ``start`` on, scanned by worker processes, in file order;
    ``None`` when that does not pay (:func:`scan_pays_in_workers`) or there is a single core."""
    pool = worker_pool() if scan_pays_in_workers(size - start, pattern) else None
    if pool is None:
        return None
    starts = range(start, size, RANGE_SIZE)
    results = pool.map(_scan_range, *zip(*[(path, s, min(s + RANGE_SIZE, size), marker, pattern, headers,
                                            s == start, max_line) for s in starts]))
    return (run for runs in results for run in runs)


def scan_pays_in_workers(size: int, pattern: bytes | None) -> bool:
    """Whether worker processes should scan a plain file of ``size`` bytes range by range:
    only a large file whose prefilter needs RE2 (a pattern Hyperscan cannot compile). With
    Hyperscan the scan runs at over 1 GB/s in this process, and every benchmark log was read
    slower by the workers than here: their start-up and the trip of the kept lines between
    processes cost more than the share of the scan they take (docs/performance.md)."""
    if not pattern or size < PARALLEL_MIN_SIZE:
        return False
    return not compile_line_pattern(pattern).native


def line_runs(source: InputFile, stream: io.BufferedReader, stats: ReadStats, line_filter: LineFilter | None,
              marker: bytes, headers: bytes, start: int = 0) -> Iterator[Run]:
    """The runs of an input from ``start``: a plain file range by range (by the workers
    when that pays), anything else block by block from ``stream``."""
    pattern = None if line_filter is None else line_filter.pattern
    max_line = current().limits.max_line_bytes
    if source.disk_path and pattern is not None and source.size:
        runs = _first_or_none(scan_file_in_parallel(source.disk_path, start, source.size, marker, pattern,
                                                    headers, max_line))
        if runs is None:
            runs = _file_runs(source.disk_path, start, source.size, marker, pattern, headers, max_line)
        yield from _counted_runs(runs, source, stats)
        return
    for chunk in iter_line_chunks(stream, max_line):
        stats.bytes_read += len(chunk.data)
        block_runs = scan_block(chunk.data, start + chunk.offset, marker, pattern, headers, keep_data=True)
        if chunk.oversize:
            block_runs.insert(0, Run(start + chunk.offset, 0, oversize=chunk.oversize))
        yield from block_runs


def _file_runs(path: str, start: int, size: int, marker: bytes, pattern: bytes | None, headers: bytes,
               max_line: int) -> Iterator[Run]:
    """The runs of a plain file, range after range in this process; each range is read
    with one ``pread`` (no buffered stream between the file and the scan)."""
    for at in range(start, size, RANGE_SIZE):
        yield from _scan_range(path, at, min(at + RANGE_SIZE, size), marker, pattern, headers, at == start,
                               max_line, keep_data=True)


def _counted_runs(runs: Iterator[Run], source: InputFile, stats: ReadStats) -> Iterator[Run]:
    for run in runs:
        stats.bytes_read += run.length
        if source.progress:
            source.progress(run.length)
        yield run


def _first_or_none(runs: Iterator[Run] | None) -> Iterator[Run] | None:
    """The runs, or None when there are no workers or they could not start (a caller's
    main module that cannot be imported again, say): the file is then scanned here."""
    if runs is None:
        return None
    try:
        first = next(runs, None)
    except BrokenProcessPool:
        return None
    return runs if first is None else _chain(first, runs)


def _chain(first: Run, rest: Iterator[Run]) -> Iterator[Run]:
    yield first
    yield from rest


def run_bytes(source: InputFile, run: Run) -> bytes:
    """The bytes of a run: at hand when scanned in-process, else read again from the file
    (only the rare run that needs a closer look)."""
    if run.data is not None:
        return run.data
    assert source.disk_path is not None, "runs without their data come only from scanning a file on disk"
    with open(source.disk_path, "rb", buffering=0) as fh:
        return os.pread(fh.fileno(), run.length, run.offset)
