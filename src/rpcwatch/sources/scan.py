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
        body = data[:-1] if data.endswith(b"\n") else data
        runs.append(Run(offset + start, end - start, lines=data.count(b"\n") + (not data.endswith(b"\n")),
                        marks=data.count(marker), clean=_is_clean(data), edges=body[:1] + body[-1:],
                        kept=kept, data=data if keep_data else None, returns=b"\r" in data))
        start = end
    return runs


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
                headers: bytes, first: bool, max_line: int) -> list[Run]:
    """Worker task: the whole lines that begin in [start, end) of a file. A line that
    goes on more than ``max_line`` bytes is left out, reported in the last run."""
    with open(path, "rb", buffering=0) as fh:
        if not first:
            probe = os.pread(fh.fileno(), 1, start - 1)
            if probe != b"\n":
                newline = _find_newline(fh, start, end)  # no line starts here when there is none
                if newline < 0 or newline + 1 >= end:
                    return []
                start = newline + 1
        block = os.pread(fh.fileno(), end - start, start)
        oversize: tuple[int, ...] = ()
        if block and not block.endswith(b"\n"):
            cut = block.rfind(b"\n") + 1
            limit = end + max_line - (len(block) - cut) + 1
            tail_end = _find_newline(fh, end, limit)
            size = os.fstat(fh.fileno()).st_size
            line_end = tail_end + 1 if tail_end >= 0 else min(size, limit)
            if line_end - (start + cut) > max_line:
                block, oversize = block[:cut], (start + cut,)
            else:
                block += os.pread(fh.fileno(), line_end - end, end)
    if max_line < RANGE_SIZE:
        block, inside = without_long_lines(block, max_line, start)
        oversize = tuple(sorted((*inside, *oversize)))
    runs = scan_block(block, start, marker, pattern, headers, keep_data=False)
    if oversize:
        runs.append(Run(start + len(block), 0, oversize=oversize))
    return runs


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
    ``None`` when the file is too small to be worth it or there is a single core."""
    pool = worker_pool() if size - start >= PARALLEL_MIN_SIZE else None
    if pool is None:
        return None
    starts = range(start, size, RANGE_SIZE)
    results = pool.map(_scan_range, *zip(*[(path, s, min(s + RANGE_SIZE, size), marker, pattern, headers,
                                            s == start, max_line) for s in starts]))
    return (run for runs in results for run in runs)


def line_runs(source: InputFile, stream: io.BufferedReader, stats: ReadStats, line_filter: LineFilter | None,
              marker: bytes, headers: bytes, start: int = 0) -> Iterator[Run]:
    """The runs of an input from ``start``: scanned by workers when the input is a large
    plain file and a filter does most of the work, else block by block from ``stream``."""
    pattern = None if line_filter is None else line_filter.pattern
    max_line = current().limits.max_line_bytes
    if source.disk_path and pattern is not None and source.size:
        runs = scan_file_in_parallel(source.disk_path, start, source.size, marker, pattern, headers, max_line)
        first = _first_or_none(runs)
        if first is not None:
            for run in first:
                stats.bytes_read += run.length
                if source.progress:
                    source.progress(run.length)
                yield run
            return
    for chunk in iter_line_chunks(stream, max_line):
        stats.bytes_read += len(chunk.data)
        block_runs = scan_block(chunk.data, start + chunk.offset, marker, pattern, headers, keep_data=True)
        if chunk.oversize:
            block_runs.insert(0, Run(start + chunk.offset, 0, oversize=chunk.oversize))
        yield from block_runs


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
