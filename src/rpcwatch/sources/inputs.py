"""Turn command-line paths into readable inputs: files, directories, zip members, stdin; gzip."""
from __future__ import annotations

import io
import os
import queue
import re
import stat
import sys
import threading
import zipfile
from abc import abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, cast

from isal import isal_zlib as _zlib  # ISA-L inflates gzip about three times faster than zlib; same API

from rpcwatch.sources.base import ByteStream, ReadStats

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
ZIP_MAGIC = b"PK\x03\x04"
COMPRESSED_BLOCK = 1 << 20
#: inflated bytes handed out per inflater call (what corruption can cost on standard input)
INFLATE_PIECE = 64 << 10
#: inflated bytes prepared per read of a gzip stream: deflate inflates up to 1,032 times its
#: size, so one compressed block may stand for a GiB; it is inflated this much at a time
INFLATE_BATCH = 4 << 20
#: inflated data is prepared this far ahead of the reader, in blocks of this size
READ_AHEAD_BLOCK, READ_AHEAD_DEPTH = 4 << 20, 8
HEAD_SIZE = 64 * 1024
#: the size of the blocks line-oriented readers take from a stream (each ends on a line)
LINE_BLOCK = 16 << 20


class InputError(Exception):
    """A path given by the user that cannot be used at all (missing, unreadable)."""


@dataclass(frozen=True)
class InputFile:
    """One log input. ``path`` is what users see in summaries and alerts (``log.file.path``)."""

    path: str
    opener: Callable[[], ByteStream]
    size: int | None = None
    #: the file on disk whose bytes are exactly the stream's (None for compressed, piped or
    #: archived input); readers may read ranges of it directly
    disk_path: str | None = None
    #: told how many bytes were consumed, by readers that read ranges of ``disk_path``
    progress: Callable[[int], None] | None = None
    #: the file on disk this input is (compressed or not), for a worker process to open again
    reopen_path: str | None = None

    def open_raw(self) -> ByteStream:
        return self.opener()


def expand_inputs(paths: list[str]) -> Iterator[InputFile]:
    """Yield the inputs behind the given paths: directories recursively (sorted, hidden
    entries skipped), zip archives member by member, ``-`` as standard input."""
    for given in paths:
        if given == "-":
            # typeshed declares it BinaryIO, which has no readinto; it is an io.BufferedReader
            yield InputFile("-", lambda: cast(io.BufferedReader, sys.stdin.buffer))
            continue
        path = Path(given)
        if path.is_dir():
            yield from _directory_inputs(path)
        elif path.exists():
            yield from _file_inputs(path)  # a FIFO named here is read: <(zcat log.gz) is one
        else:
            raise InputError(f"{given}: no such file or directory")


def _directory_inputs(root: Path) -> Iterator[InputFile]:
    """The regular files under a directory, recursively; what cannot be read there is an
    input that says why (an unreadable folder, a FIFO or device that would block the
    run), and a directory without files says so too."""
    found = False
    problems: list[OSError] = []

    def unreadable(problem: OSError) -> None:
        nonlocal found
        found = True
        problems.append(problem)

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            found = True
            kind = _special_kind(path)
            if kind:
                yield InputFile(str(path), _raiser(OSError(f"not a regular file ({kind}); skipped")))
            else:
                yield from _file_inputs(path)
        yield from _unreadable(problems)
    yield from _unreadable(problems)
    if not found and not problems:
        yield InputFile(str(root), _raiser(OSError("directory holds no files")))


def _unreadable(problems: list[OSError]) -> Iterator[InputFile]:
    """Folders os.walk could not list, as inputs that say why."""
    for problem in problems:
        yield InputFile(str(problem.filename), _raiser(problem))
    problems.clear()


def _special_kind(path: Path) -> str | None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return None  # reported when it is opened
    if stat.S_ISREG(mode):
        return None
    for test, kind in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return kind
    return "special file"


def _file_inputs(path: Path) -> Iterator[InputFile]:
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        yield InputFile(str(path), _raiser(exc))
        return
    if magic == ZIP_MAGIC and zipfile.is_zipfile(path):
        yield from _zip_members(path)
        return
    yield InputFile(str(path), lambda: open(path, "rb"), size=_size(path), disk_path=str(path),
                    reopen_path=str(path))


def _zip_members(path: Path) -> Iterator[InputFile]:
    with zipfile.ZipFile(path) as archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
    for member in members:
        name = member.filename
        if Path(name).name.startswith("."):
            continue

        def opener(p: Path = path, n: str = name) -> ByteStream:
            # typeshed declares IO[bytes]; reading, it is a zipfile.ZipExtFile (a buffered reader)
            return cast(zipfile.ZipExtFile, zipfile.ZipFile(p).open(n))

        yield InputFile(f"{path}!{name}", opener, size=member.file_size)


def _raiser(exc: OSError) -> Callable[[], ByteStream]:
    def opener() -> ByteStream:
        raise exc

    return opener


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


class WrappedStream(io.RawIOBase):
    """A readable raw stream over another one, which it closes when it is closed."""

    def __init__(self, raw: ByteStream | BinaryIO):
        self._raw = raw

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


class BlockStream(WrappedStream):
    """A raw stream whose bytes come block by block from :meth:`next_block` (inflated,
    read ahead, rewritten), handed out without re-slicing a block per read."""

    def __init__(self, raw: ByteStream | BinaryIO):
        super().__init__(raw)
        self._pending = b""
        self._position = 0

    @abstractmethod
    def next_block(self) -> bytes | None:
        """The next bytes (maybe none for now); None at the end."""

    def readinto(self, buffer) -> int:
        while self._position >= len(self._pending):
            block = self.next_block()
            if block is None:
                return 0
            self._pending, self._position = block, 0
        size = min(len(buffer), len(self._pending) - self._position)
        buffer[:size] = memoryview(self._pending)[self._position:self._position + size]
        self._position += size
        return size


class GzipStream(BlockStream):
    """Inflate gzip data, tolerating what the ``gzip`` module does not.

    ``gzip.GzipFile`` raises on a truncated or corrupt file and drops the data it had
    already inflated in that call; rotated Zeek logs copied while being written are
    often truncated. This stream returns every byte that could be inflated, records the
    truncation or corruption in ``stats``, and handles concatenated members.

    Inflation hands out at most :data:`INFLATE_PIECE` bytes per call, so corruption
    costs at most the piece it was found in; for a file that can be opened again that
    piece too is recovered (:meth:`_salvage`), so every byte before the damage is kept.
    """

    def __init__(self, raw: ByteStream, stats: ReadStats, reopen: Callable[[], BinaryIO] | None = None):
        super().__init__(raw)
        self._stats = stats
        self._reopen = reopen
        self._inflater = _zlib.decompressobj(31)
        self._done = False
        self.compressed_read = 0
        #: where the current member starts (compressed), and what it has produced so far
        self._member_start = 0
        self._member_out = 0
        #: the compressed block being inflated: where it starts, and what is left of it
        self._block_start = 0
        self._input = b""

    def next_block(self) -> bytes | None:
        return None if self._done else self._inflate_more()

    def _inflate_more(self) -> bytes:
        """Up to about :data:`INFLATE_BATCH` inflated bytes (memory bounded however well
        the data compresses), reading the next compressed block when this one is used up."""
        if not self._input:
            self._block_start = self.compressed_read
            self._input = self._raw.read(COMPRESSED_BLOCK)
            self.compressed_read += len(self._input)
            if not self._input:
                self._done = True
                if not self._inflater.eof and self.compressed_read:
                    self._stats.lose("truncated gzip: the data after the cut is lost",
                                     where=f"after {self.compressed_read} compressed bytes")
                return b""
        out: list[bytes] = []
        data, produced = self._input, 0
        try:
            while data and produced < INFLATE_BATCH:
                if self._inflater.eof:  # a member ended: another one, or garbage
                    if not data.startswith(GZIP_MAGIC):
                        self._stats.lose("trailing garbage after gzip data")
                        self._done, data = True, b""
                        break
                    self._inflater = _zlib.decompressobj(31)
                    self._member_start, self._member_out = self.compressed_read - len(data), 0
                piece = self._inflater.decompress(data, INFLATE_PIECE)
                out.append(piece)
                produced += len(piece)
                self._member_out += len(piece)
                data = self._inflater.unused_data if self._inflater.eof else self._inflater.unconsumed_tail
        except _zlib.error as exc:  # type: ignore[misc]  # isal's stub declares error an instance
            out.append(self._salvage(self._block_start))
            self._stats.lose(f"corrupt gzip data ({exc}): the rest is unreadable",
                             where=f"near compressed byte {self.compressed_read - len(data)}")
            self._done, data = True, b""
        self._input = data
        return b"".join(out)

    def _salvage(self, failing_block: int) -> bytes:
        """What the current member inflates to beyond what was handed out, up to the damage:
        inflated again from the member's start with ``zlib``, the failing block one byte at
        a time (an error then costs no output before it). Nothing for input that cannot be
        opened again (standard input)."""
        if self._reopen is None:
            return b""
        import zlib

        inflater, produced, kept = zlib.decompressobj(31), 0, []
        try:
            with self._reopen() as raw:
                raw.seek(self._member_start)
                ahead = failing_block - self._member_start
                while ahead > 0:
                    chunk = raw.read(min(COMPRESSED_BLOCK, ahead))
                    if not chunk:
                        return b""
                    ahead -= len(chunk)
                    while chunk:  # in pieces: what was handed out already is not kept
                        produced += len(inflater.decompress(chunk, INFLATE_PIECE))
                        chunk = inflater.unconsumed_tail
                for byte in iter(lambda: raw.read(1), b""):
                    piece = inflater.decompress(byte)
                    if produced + len(piece) > self._member_out:
                        kept.append(piece[max(0, self._member_out - produced):])
                    produced += len(piece)
                    if inflater.eof:
                        break
        except (OSError, zlib.error):
            pass
        return b"".join(kept)


class ReadAheadStream(BlockStream):
    """Reads ``raw`` in a background thread, a few blocks ahead of the consumer.

    Inflating gzip releases the GIL (``isal`` and ``zlib`` both do), so while the reader
    scans and parses one block on this thread, the next blocks are inflated on another
    core. Errors raised by ``raw`` reach the consumer at the point where they happened."""

    def __init__(self, raw: ByteStream, block_size: int = READ_AHEAD_BLOCK, depth: int = READ_AHEAD_DEPTH):
        super().__init__(raw)
        self._block_size = block_size
        self._blocks: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._finished = False

    def next_block(self) -> bytes | None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._fill, name="rpcwatch-read-ahead", daemon=True)
            self._thread.start()
        if self._finished:
            return None
        block = self._blocks.get()
        if isinstance(block, BaseException):
            self._finished = True
            raise block
        if not block:
            self._finished = True
            return None
        return block

    def _fill(self) -> None:
        try:
            while not self._stop.is_set():
                block = self._raw.read(self._block_size)
                self._put(block)
                if not block:
                    return
        except BaseException as exc:  # handed to the consumer, raised where it reads
            self._put(exc)

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._blocks.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        if self.closed:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        super().close()


class TolerantStream(WrappedStream):
    """Turns an I/O error after the first bytes into end-of-data plus a recorded loss, so
    everything read before a failing disk or network share still gets processed."""

    _raw: ByteStream

    def __init__(self, raw: ByteStream, stats: ReadStats):
        super().__init__(raw)
        self._stats = stats
        self._seen = 0
        self._failed = False

    def readinto(self, buffer) -> int:
        if self._failed:
            return 0
        try:
            size = self._raw.readinto(buffer)
        except OSError as exc:
            if not self._seen:
                raise
            self._failed = True
            self._stats.lose(f"read error: {exc.strerror or exc}", where=f"after {self._seen} bytes")
            return 0
        self._seen += size or 0
        return size or 0


class PeekStream(WrappedStream):
    """A stream whose first bytes have already been read (for sniffing) and are replayed."""

    _raw: ByteStream

    def __init__(self, head: bytes, rest: ByteStream):
        super().__init__(rest)
        self._head = head

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            data, self._head = self._head + self._raw.read(), b""
            return data
        if self._head:
            data, self._head = self._head[:size], self._head[size:]
            if len(data) < size:
                data += self._raw.read(size - len(data))
            return data
        return self._raw.read(size)

    def readinto(self, buffer) -> int:
        if not self._head:
            return self._raw.readinto(buffer)
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def open_decompressed(source: InputFile, stats: ReadStats) -> tuple[InputFile, bytes, io.BufferedReader]:
    """Open an input, undo gzip when the content says so, and return its first bytes
    (for sniffing) together with a stream that still yields them. The returned input
    has no ``disk_path`` when the stream is not the file's bytes as they are."""
    raw = TolerantStream(source.open_raw(), stats)
    head = _read_at_least(raw, 2)
    stream: ByteStream = PeekStream(head, raw)
    if head.startswith(GZIP_MAGIC):
        reopen_path = source.reopen_path
        reopen = (lambda: open(reopen_path, "rb")) if reopen_path else None
        stream = ReadAheadStream(GzipStream(stream, stats, reopen))
        source = replace(source, disk_path=None)
    head = _read_at_least(stream, HEAD_SIZE)
    if head.startswith(UTF8_BOM):  # text saved by Windows tools: the mark is not content
        head = head[len(UTF8_BOM):]
        source = replace(source, disk_path=None)
    return source, head, io.BufferedReader(PeekStream(head, stream), buffer_size=1 << 20)


def _read_at_least(stream: ByteStream, size: int) -> bytes:
    parts: list[bytes] = []
    have = 0
    while have < size:
        block = stream.read(size - have)
        if not block:
            break
        parts.append(block)
        have += len(block)
    return b"".join(parts)


@dataclass(frozen=True)
class LineChunk:
    """Whole lines of a stream, from ``offset`` on; ``oversize`` lines longer than the
    limit were left out just before (or inside) it, at the offsets given."""

    data: bytes
    offset: int
    oversize: tuple[int, ...] = ()


def iter_line_chunks(stream: io.BufferedReader, max_line: int, chunk_size: int = LINE_BLOCK) -> Iterator[LineChunk]:
    """Blocks of the stream that end on a line boundary (the last may end without a
    newline), leaving out every line longer than ``max_line`` bytes, so memory stays
    bounded however long a line is. ``stream`` must be buffered (:func:`open_decompressed`)."""
    offset = 0
    while True:
        block = stream.read(chunk_size)
        if not block:
            return
        start, oversize = offset, []
        offset += len(block)
        if not block.endswith(b"\n"):
            cut = block.rfind(b"\n") + 1
            tail = stream.readline(max_line + 1)
            offset += len(tail)
            if len(block) - cut + len(tail) > max_line:
                oversize.append(start + cut)
                block = block[:cut]
                if not tail.endswith(b"\n"):
                    offset += _skip_line(stream)
            else:
                block += tail
        if max_line < chunk_size:
            block, inside = without_long_lines(block, max_line, start)
            oversize = sorted(inside + oversize)
        yield LineChunk(block, start, tuple(oversize))


def _skip_line(stream: io.BufferedReader) -> int:
    """Read past the rest of a line without keeping it; the number of bytes passed."""
    passed = 0
    while True:
        piece = stream.readline(1 << 20)
        passed += len(piece)
        if not piece or piece.endswith(b"\n"):
            return passed


def _may_hold_a_long_line(block: bytes, max_line: int) -> bool:
    """Whether some stretch of ``max_line`` bytes may lack a newline. Such a stretch
    covers a whole aligned window of half that length, so it is enough that every window
    holds a newline: a few ``find`` calls that stop at the first newline, instead of a
    regex over every byte (which took a third of reading a log that needs every line)."""
    step = max(max_line // 2, 1)
    return any(block.find(b"\n", at, at + step) < 0 for at in range(0, len(block) - step + 1, step))


@lru_cache(maxsize=4)
def _long_line_pattern(max_line: int) -> re.Pattern[bytes]:
    return re.compile(rb"(?m)^[^\n]{%d,}\n?" % max_line)


def without_long_lines(block: bytes, max_line: int, offset: int) -> tuple[bytes, list[int]]:
    """The block without its lines longer than ``max_line`` bytes (newline included), and
    where they were."""
    if not _may_hold_a_long_line(block, max_line):
        return block, []
    pattern = _long_line_pattern(max_line)
    found = [match.start() for match in pattern.finditer(block)]
    if not found:
        return block, []
    return pattern.sub(b"", block), [offset + at for at in found]
