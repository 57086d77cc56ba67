"""Following files: discover them under the watched paths, recognise each by the
fingerprint of its content, and hand out the complete lines written since the checkpoint.

A *logical file* (a :class:`FileRecord` in the state store) is content: the blake2b hash of
its first ``FINGERPRINT_BYTES`` bytes after decompression, or of all of it while it is
shorter. Its *holders* are the files on disk that have that content now: the file being
written, a renamed file, a gzip'd copy, the copy logrotate's ``copytruncate`` makes. Offsets
count decompressed bytes, so whichever holder is read, reading resumes at the same place:

* growth: a plain holder larger than the offset is read from the offset (complete lines);
* rename (into a dated folder): the same inode under a new name, or after a restart the
  same fingerprint; nothing is read again;
* rename + gzip: the ``.gz`` has the same fingerprint; once its stream is complete and
  there is no plain holder left, only what lies past the offset is read;
* copytruncate: the copy keeps the record; the truncated file (smaller than its offset, or
  whose first bytes changed) becomes a new logical file read from its start;
* a new file with an identical header: its first bytes differ from the old file's as soon
  as data follows the header (fingerprints cover data, not the header alone);
* deletion: plain files stay open while followed, so a file deleted before it was read to
  the end is still read to its end; a file that went away while rpcwatch was stopped, with
  data known to be unread, is reported as lost with the byte count.

Formats that cannot be read from the middle (EVTX, pcap: see ``Reader.resume_context``)
are read once, whole, when they have not changed for ``SETTLE_SECONDS``.
"""
from __future__ import annotations

import hashlib
import io
import os
import stat
import time
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rpcwatch.sources import ReadStats, sniff_reader
from rpcwatch.sources.base import Reader
from rpcwatch.sources.inputs import GZIP_MAGIC, HEAD_SIZE, InputFile, open_decompressed
from rpcwatch.watch.state import FILE_RETENTION, FileRecord, StateStore

#: bytes of content that identify a file (Filebeat's fingerprint default length)
FINGERPRINT_BYTES = 1024
#: most bytes read from one file in one batch (a backlog is read in several batches)
PIECE_BYTES = 32 << 20
#: most bytes read in one batch over all files
BATCH_BYTES = 64 << 20
#: a file read whole (EVTX, pcap) is complete when unchanged this long
SETTLE_SECONDS = 5.0
#: files followed with an open descriptor (more are followed by name, reopened when they grow)
MAX_OPEN = 256
UNSUPPORTED = "unsupported"


@dataclass
class Holder:
    """A file on disk holding a logical file's content."""

    path: str
    dev: int
    ino: int
    size: int
    mtime_ns: int
    compressed: bool
    record: FileRecord | None = None
    fd: int | None = None
    changed: float = field(default_factory=time.monotonic)
    #: a compressed holder read to its end, or found truncated at this size (not retried unchanged)
    tried_size: int = -1
    #: no longer under the watched paths (deleted, moved away), kept open until read to the end
    gone: bool = False

    @property
    def key(self) -> tuple[int, int]:
        return self.dev, self.ino


@dataclass
class Piece:
    """What to read of one logical file now, as an input for the hunt machinery (new
    complete lines after their resume context, or a whole file), and the offset after it."""

    record: FileRecord
    source: InputFile
    end: int


@dataclass
class Loss:
    path: str
    reason: str
    bytes: int


def fingerprint(content: bytes) -> str:
    return hashlib.blake2b(content, digest_size=16).hexdigest()


class Follower:
    def __init__(self, store: StateStore, paths: list[str], exclude: Iterable[str] = frozenset(),
                 settle: float = SETTLE_SECONDS):
        self._store = store
        self._paths = [Path(p) for p in paths]
        self._exclude = {os.path.abspath(p) for p in exclude}
        self._settle = settle
        self._records: dict[int, FileRecord] = {record.id: record for record in store.files()}
        self._holders: dict[tuple[int, int], Holder] = {}
        #: records whose loss was reported (once)
        self._reported: set[int] = set()
        self.losses: list[Loss] = []
        self.warnings: list[str] = []
        self._dirty: set[int] = set()
        #: per record: its reader, and the resume context with the offset it was taken at
        self._readers: dict[int, type[Reader] | None] = {}
        self._contexts: dict[int, tuple[bytes, int]] = {}
        self._by_record: dict[int, list[Holder]] = {}
        #: per directory: its mtime, subdirectories and files at the last walk
        self._listings: dict[str, tuple[int, list[str], list[str]]] = {}
        self._seen: dict[str, tuple[tuple[int, int], os.stat_result]] = {}
        #: the last poll left data unread (a backlog): no pause before the next
        self.behind = False
        self._turn = 0

    # -- discovery ------------------------------------------------------------------------

    def poll(self, settled: bool = False) -> list[Piece]:
        """Look at the files and return the pieces to read now (bounded); ``settled``
        treats every whole-file format as complete (``--once``)."""
        found = dict(self._walk())
        for key, holder in list(self._holders.items()):
            if key not in found:
                self._gone(holder)
        for key, (path, info) in found.items():
            known = self._holders.get(key)
            if known is None:
                self._discover(path, info)
            else:
                self._update(known, path, info)
        self._index()
        self._report_orphans()
        return list(self._pieces(settled))

    def _index(self) -> None:
        self._by_record = defaultdict(list)
        for holder in self._holders.values():
            if holder.record is not None:
                self._by_record[holder.record.id].append(holder)

    def _walk(self) -> Iterator[tuple[tuple[int, int], tuple[str, os.stat_result]]]:
        """The regular files under the paths. A directory is listed again only when its
        mtime changed (an entry was added, removed or renamed); a file in an unchanged
        directory whose content is read completely (an archived .gz) is not looked at."""
        seen: dict[str, tuple[tuple[int, int], os.stat_result]] = {}
        for root in self._paths:
            for path, unchanged in self._files_under(str(root)):
                if os.path.abspath(path) in self._exclude:
                    continue
                known = self._seen.get(path)
                holder = self._holders.get(known[0]) if known else None
                if known and unchanged and holder is not None and holder.record is not None and holder.record.complete:
                    seen[path] = known
                    continue
                try:
                    info = os.stat(path)
                except OSError:
                    continue
                if info.st_size and stat.S_ISREG(info.st_mode):
                    seen[path] = ((info.st_dev, info.st_ino), info)
        self._seen = seen
        for path, (key, info) in seen.items():
            yield key, (path, info)

    def _files_under(self, root: str) -> Iterator[tuple[str, bool]]:
        """Files under ``root`` (sorted, hidden entries skipped), each with whether its
        directory is unchanged since the last walk."""
        if os.path.isfile(root):
            yield root, False
            return
        folders = [root]
        while folders:
            folder = folders.pop()
            try:
                mtime = os.stat(folder).st_mtime_ns
            except OSError:
                continue
            cached = self._listings.get(folder)
            unchanged = cached is not None and cached[0] == mtime
            if cached is None or not unchanged:
                try:
                    with os.scandir(folder) as listing:
                        entries = sorted((e for e in listing if not e.name.startswith(".")), key=lambda e: e.name)
                except OSError:
                    continue
                folders_in = [e.path for e in entries if e.is_dir(follow_symlinks=False)]
                files_in = [e.path for e in entries if not e.is_dir(follow_symlinks=False)]
                cached = self._listings[folder] = (mtime, folders_in, files_in)
            folders.extend(reversed(cached[1]))
            for path in cached[2]:
                yield path, unchanged

    def _discover(self, path: str, info: os.stat_result) -> None:
        try:
            with open(path, "rb") as fh:
                compressed = fh.read(2) == GZIP_MAGIC
        except OSError:
            return
        holder = Holder(path, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, compressed)
        self._holders[holder.key] = holder
        self._attach(holder)

    def _update(self, holder: Holder, path: str, info: os.stat_result) -> None:
        if holder.record is not None and path != holder.path:
            self._mark(holder.record).path = path
        holder.path = path
        if (info.st_size, info.st_mtime_ns) == (holder.size, holder.mtime_ns):
            return
        shrank = info.st_size < holder.size
        holder.size, holder.mtime_ns, holder.changed = info.st_size, info.st_mtime_ns, time.monotonic()
        record = holder.record
        if record is None:
            self._attach(holder)
        elif not holder.compressed and (shrank or not self._still_holds(holder, record)):
            self._split(holder, "truncated or rewritten (copytruncate)")
        elif not holder.compressed:
            self._grow_fingerprint(holder, record)

    def _gone(self, holder: Holder) -> None:
        """A holder no longer under the watched paths (deleted, moved away). A plain file
        still open is read to its end first: its data lives while the descriptor does."""
        record = holder.record
        if holder.fd is not None and record is not None and not holder.compressed:
            size = os.fstat(holder.fd).st_size
            if size > record.offset and (not holder.gone or size > holder.size):
                holder.gone, holder.size = True, size
                return
            if size > record.offset and self._holders_of(record) == [holder]:
                self._lose(record, "deleted with an unterminated last line", size - record.offset)
        del self._holders[holder.key]
        self._close(holder)

    # -- identity -------------------------------------------------------------------------

    def _attach(self, holder: Holder) -> None:
        head = self._head(holder, FINGERPRINT_BYTES)
        if head is None or not head:
            return
        record = self._match(head, holder)
        if record is None:
            record = self._store_new(holder, head)
        holder.record = record
        if not holder.compressed and len(head) > record.fp_length:
            self._grow_fingerprint(holder, record)

    def _holders_of(self, record: FileRecord) -> list[Holder]:
        return [h for h in self._holders.values() if h.record is record]

    def _match(self, head: bytes, holder: Holder) -> FileRecord | None:
        """The logical file whose fingerprint the content starts with, the longest first: a
        record taken while its file was short (a header) fingerprints only that much, and
        a file with the same header is another file when a longer fingerprint matches it.
        When another plain file still holds the record, the two are the same only if their
        first bytes agree as far as both go (a copy); otherwise the newcomer is new."""
        hashes: dict[int, str] = {}
        for record in sorted(self._records.values(), key=lambda r: r.fp_length, reverse=True):
            if record.fp_length > len(head):
                continue
            if record.fp_length not in hashes:
                hashes[record.fp_length] = fingerprint(head[:record.fp_length])
            if hashes[record.fp_length] != record.fingerprint:
                continue
            other = max((h for h in self._holders_of(record) if not h.compressed and h is not holder),
                        key=lambda h: h.size, default=None)
            if other is None:
                return record
            their = self._head(other, FINGERPRINT_BYTES) or b""
            common = min(len(their), len(head))
            if their[:common] == head[:common]:
                return record
        return None

    def _store_new(self, holder: Holder, head: bytes) -> FileRecord:
        size = holder.size if not holder.compressed else 0
        with self._store.transaction() as tx:
            record = tx.add_file(fingerprint(head), len(head), holder.path, size)
        self._records[record.id] = record
        return record

    def _still_holds(self, holder: Holder, record: FileRecord) -> bool:
        head = self._head(holder, record.fp_length)
        return head is not None and len(head) == record.fp_length and fingerprint(head) == record.fingerprint

    def _grow_fingerprint(self, holder: Holder, record: FileRecord) -> None:
        """A file shorter than the fingerprint length is identified by all of it; as it
        grows, so does its fingerprint (after checking that its start is unchanged)."""
        if record.fp_length >= FINGERPRINT_BYTES or holder.size <= record.fp_length:
            return
        head = self._head(holder, FINGERPRINT_BYTES)
        if head is None or fingerprint(head[:record.fp_length]) != record.fingerprint:
            return
        record.fingerprint, record.fp_length = fingerprint(head), len(head)
        self._mark(record)

    def _split(self, holder: Holder, why: str) -> None:
        """The holder's content is no longer the record's: it becomes a new file."""
        record = holder.record
        holder.record = None
        self._close(holder)
        if record is not None and not self._holders_of(record) and record.size > record.offset:
            self._lose(record, f"{why} before it was read to the end", record.size - record.offset)
        self._attach(holder)

    def _head(self, holder: Holder, size: int) -> bytes | None:
        """The first ``size`` bytes of the holder's content (decompressed)."""
        try:
            if holder.compressed:
                return _gzip_head(holder.path, size)
            return os.pread(self._fd(holder), size, 0)
        except OSError:
            return None

    # -- reading --------------------------------------------------------------------------

    def _pieces(self, settled: bool) -> Iterator[Piece]:
        budget = BATCH_BYTES
        self.behind = False
        records = list(self._records.values())
        # each poll starts one file further: a backlog in some files cannot starve the others
        self._turn = (self._turn + 1) % max(1, len(records))
        for record in records[self._turn:] + records[:self._turn]:
            if budget <= 0:
                self.behind = True  # more may wait: the next batch follows at once
                return
            piece = self._piece(record, settled, min(budget, PIECE_BYTES))
            if piece is not None:
                budget -= piece.source.size or PIECE_BYTES
                yield piece

    def _piece(self, record: FileRecord, settled: bool, limit: int) -> Piece | None:
        if record.complete or record.format == UNSUPPORTED:
            return None
        holders = self._by_record.get(record.id, ())
        plain = max((h for h in holders if not h.compressed), key=lambda h: h.size, default=None)
        holder = plain or next(iter(holders), None)
        if holder is None:
            return None
        if plain is not None:
            if plain.size > record.size:
                record.size = plain.size
                self._mark(record)
            if plain.size <= record.offset:
                return None
        elif holder.tried_size == holder.size:
            return None
        reader = self._reader(record, holder)
        if reader is None:
            return None
        context = self._context(record, holder, reader)
        if context is None:
            return self._whole(record, holder, settled)
        if plain is not None:
            return self._plain_piece(record, plain, context, limit)
        return self._compressed_piece(record, holder, context)

    def _reader(self, record: FileRecord, holder: Holder) -> type[Reader] | None:
        if record.id in self._readers:
            return self._readers[record.id]
        head = self._head(holder, HEAD_SIZE) or b""
        reader = sniff_reader(head)
        if reader is None and b"\n" not in head and len(head) < HEAD_SIZE and not holder.compressed:
            return None  # not one complete line yet: too early to tell the format
        self._readers[record.id] = reader
        if record.format != (reader.format_name if reader else UNSUPPORTED):
            record.format = reader.format_name if reader else UNSUPPORTED
            self._mark(record)
            if reader is None:
                self.warnings.append(f"{holder.path}: not a supported log format (not followed)")
        return reader

    def _context(self, record: FileRecord, holder: Holder, reader: type[Reader]) -> bytes | None:
        """What stands before a piece read from the offset (a TSV header block). Taken from
        the bytes before the offset, and kept once data lines follow it there."""
        cached = self._contexts.get(record.id)
        if cached is not None and (len(cached[0]) < cached[1] or cached[1] == record.offset):
            return cached[0]
        head = self._head(holder, min(max(record.offset, 1 << 12), HEAD_SIZE)) or b""
        context = reader.resume_context(head if record.offset == 0 else head[:record.offset])
        if context is not None:
            self._contexts[record.id] = (context, record.offset)
        return context

    def _plain_piece(self, record: FileRecord, holder: Holder, context: bytes, limit: int) -> Piece | None:
        """The complete lines past the offset, read from the file when the hunt reads them
        (no copy of the piece in memory)."""
        stop = min(holder.size, record.offset + limit)
        self.behind |= stop < holder.size
        end = _after_last_line(self._fd(holder), record.offset, stop)
        if end == record.offset:
            return None  # no complete line yet
        context = context if record.offset else b""
        fd, start = self._fd(holder), record.offset
        source = InputFile(holder.path, lambda: _RangeStream(fd, start, end, context), len(context) + end - start)
        return Piece(record, source, end)

    def _compressed_piece(self, record: FileRecord, holder: Holder, context: bytes) -> Piece | None:
        """A gzip'd file with no plain holder left: what lies past the offset, once the
        gzip stream is complete (a file still being compressed is retried when it changes)."""
        holder.tried_size = holder.size
        if record.offset == record.size and _gzip_size(holder.path) == record.offset % 2**32:
            # the usual rotation: the file was read to its end before it was compressed, as
            # the gzip trailer's size says, without inflating it all again
            record.complete = True
            self._mark(record)
            return None
        stats = ReadStats(holder.path)
        try:
            _, _, stream = open_decompressed(_input(holder.path), stats)
            with stream:
                skipped = _skip(stream, record.offset)
                rest = stream.read()
        except OSError as exc:
            self.warnings.append(f"{holder.path}: cannot read: {exc.strerror or exc}")
            return None
        if stats.lost:  # truncated: still being written, or broken for good
            return None
        record.size = skipped + len(rest)
        end = rest.rfind(b"\n") + 1
        if end < len(rest):
            self._lose(record, "the last line of the compressed file has no end", len(rest) - end)
        record.complete = True  # after this batch's commit: nothing more will come
        self._mark(record)
        data = (context if record.offset else b"") + rest[:end]
        return Piece(record, InputFile(holder.path, lambda: io.BytesIO(data), len(data)), record.offset + end)

    def _whole(self, record: FileRecord, holder: Holder, settled: bool) -> Piece | None:
        if not settled and time.monotonic() - holder.changed < self._settle:
            return None
        record.complete = True
        record.size = holder.size
        self._mark(record)
        path = holder.path
        return Piece(record, InputFile(path, lambda: open(path, "rb"), holder.size, reopen_path=path), holder.size)

    def advance(self, pieces: list[Piece]) -> None:
        """The pieces' alerts are delivered or spooled: their offsets may be committed."""
        for piece in pieces:
            piece.record.offset = piece.end
            self._mark(piece.record)

    # -- losses, bookkeeping --------------------------------------------------------------

    def _report_orphans(self) -> None:
        """Logical files with no holder left: lost if they had unread data; forgotten
        after ``FILE_RETENTION``."""
        held = set(self._by_record)
        now = time.time()
        forget = []
        for record in self._records.values():
            if record.id in held:
                if now - record.last_seen > 60:
                    record.last_seen = now
                    self._mark(record)
                continue
            if not record.complete and record.size > record.offset and record.format != UNSUPPORTED:
                self._lose(record, "deleted or moved away before it was read to the end",
                           record.size - record.offset)
            if now - record.last_seen > FILE_RETENTION:
                forget.append(record.id)
        if forget:
            with self._store.transaction() as tx:
                tx.forget_files(forget)
            for record_id in forget:
                self._records.pop(record_id, None)

    def _lose(self, record: FileRecord, reason: str, size: int) -> None:
        if record.id in self._reported:
            return
        self._reported.add(record.id)
        self.losses.append(Loss(record.path, reason, size))
        record.offset = max(record.offset, record.size)  # counted once, not again after a restart
        self._mark(record)

    def _mark(self, record: FileRecord) -> FileRecord:
        self._dirty.add(record.id)
        return record

    @property
    def changed(self) -> bool:
        """Records or losses to commit."""
        return bool(self._dirty or self.losses or self.warnings)

    def save(self, tx) -> None:
        """Write the changed records in the batch's transaction."""
        for record_id in self._dirty:
            record = self._records.get(record_id)
            if record is not None:
                tx.update_file(record)
        self._dirty.clear()

    def _fd(self, holder: Holder) -> int:
        """Plain files are kept open: one deleted before it was read to the end can still
        be read to the end (the data lives while a descriptor does)."""
        if holder.fd is None:
            open_now = [h for h in self._holders.values() if h.fd is not None]
            if len(open_now) >= MAX_OPEN:
                self._close(min(open_now, key=lambda h: h.changed))
            holder.fd = os.open(holder.path, os.O_RDONLY)
        return holder.fd

    @staticmethod
    def _close(holder: Holder) -> None:
        if holder.fd is not None:
            os.close(holder.fd)
            holder.fd = None

    def close(self) -> None:
        for holder in self._holders.values():
            self._close(holder)


def _after_last_line(fd: int, start: int, stop: int) -> int:
    """The position after the last newline in [start, stop) of a file, or ``start``."""
    position = stop
    while position > start:
        size = min(1 << 16, position - start)
        at = os.pread(fd, size, position - size).rfind(b"\n")
        if at >= 0:
            return position - size + at + 1
        position -= size
    return start


class _RangeStream(io.RawIOBase):
    """``context`` and then bytes [start, end) of an open file, read straight into the
    reader's buffers."""

    def __init__(self, fd: int, start: int, end: int, context: bytes):
        self._fd = os.dup(fd)  # the follower may close its descriptor before this is closed
        self._position, self._end = start, end
        self._context = memoryview(context)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        """Bytes straight from ``pread`` (the base class would read into a temporary
        buffer and copy it)."""
        if self._context:
            size = len(self._context) if size is None or size < 0 else min(size, len(self._context))
            data, self._context = bytes(self._context[:size]), self._context[size:]
            return data
        wanted = self._end - self._position if size is None or size < 0 else min(size, self._end - self._position)
        data = os.pread(self._fd, wanted, self._position) if wanted > 0 else b""
        self._position += len(data)
        return data

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        if self._context:
            size = min(len(view), len(self._context))
            view[:size], self._context = self._context[:size], self._context[size:]
            return size
        wanted = min(len(view), self._end - self._position)
        if wanted <= 0:
            return 0
        size = os.preadv(self._fd, [view[:wanted]], self._position)
        self._position += size
        return size

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def _skip(stream, count: int) -> int:
    skipped = 0
    while skipped < count:
        block = stream.read(min(count - skipped, 1 << 20))
        if not block:
            break
        skipped += len(block)
    return skipped


def _gzip_head(path: str, size: int) -> bytes | None:
    """The first ``size`` bytes of a gzip file's content (of its first member), inflating
    no more than needed; None while a shorter stream is not complete (being written), as
    its start would not yet identify it."""
    inflater = zlib.decompressobj(31)
    out = bytearray()
    with open(path, "rb") as fh:
        while len(out) < size and not inflater.eof:
            block = inflater.unconsumed_tail or fh.read(1 << 16)
            if not block:
                return None
            try:
                out += inflater.decompress(block, size - len(out))
            except zlib.error:
                return None
    return bytes(out)


def _gzip_size(path: str) -> int | None:
    """The uncompressed size a gzip file's trailer states (of its last member, modulo 2**32)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(-4, os.SEEK_END)
            return int.from_bytes(fh.read(4), "little")
    except OSError:
        return None


def _input(path: str) -> InputFile:
    return InputFile(path, lambda: open(path, "rb"))
