"""Windows EVTX files, parsed by the ``evtx`` package (the Rust ``evtx`` crate).

The parser renders every record as JSON text; the texts of a batch are joined into one
buffer of JSON lines that Arrow parses in bulk and that is then flattened to Sigma
names (see :mod:`rpcwatch.sources.windows`). Python touches each record only to take
its text out of the small dict the binding yields.

Corrupt files: the parser runs with ``skip_errors=True``. A chunk or record it cannot
decode is reported as a ``RuntimeWarning`` and parsing resumes at the next chunk, so
everything readable is read; each such warning is one counted skip (the number of
records inside a broken chunk is unknowable). An error the parser cannot resume from
ends the file with a skip that says so. A file cut inside a chunk loses that chunk,
which the parser drops silently; the reader finds it from the file size.
"""
from __future__ import annotations

import io
import shutil
import struct
import tempfile
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import BinaryIO

import evtx as evtx_parser

from rpcwatch.sources.base import Reader, ReadStats, TableBatch, register
from rpcwatch.sources.inputs import InputFile
from rpcwatch.sources.prefilter import PrefilterPlan
from rpcwatch.sources.windows import WINDOWS_TABLE, EventJsonTables

EVTX_MAGIC = b"ElfFile\x00"
CHUNK_MAGIC = b"ElfChnk\x00"
FILE_HEADER_SIZE = 4096
CHUNK_SIZE = 65536
#: a batch ends at whichever comes first; both keep memory flat on big files
BATCH_RECORDS = 50_000
BATCH_TEXT_BYTES = 64 << 20
TAKE_STEP = 1000
#: the parser's own worker threads; measured in bench/bench_evtx.py (docs/windows.md):
#: one thread is fastest, as starting the pool costs more than it saves per file
PARSER_THREADS = 1
#: the parser's JSON is evtx_dump's, so the prefilter treats it as that format
PREFILTER_FORMAT = "evtx-json"

_SKIPPED_PREFIX = "Skipping EVTX data: "
CORRUPT_DATA = "corrupt EVTX chunk or record skipped by the parser (its records are lost)"
UNREADABLE_REST = "EVTX data the parser cannot resume after (rest of the file is lost)"
INCOMPLETE_CHUNK = "truncated EVTX file: last chunk incomplete (its records are lost)"
TRAILING_BYTES = "bytes after the last EVTX chunk (ignored)"


@register
class EvtxReader(Reader):
    """Binary EVTX files (``ElfFile`` magic), from disk, zip archives, gzip or stdin."""

    format_name = "evtx"

    @classmethod
    def sniff(cls, head: bytes) -> bool:
        """The file header's magic; or, when the header is damaged, a chunk where the
        first chunk starts (the records are in the chunks: the header is rebuilt)."""
        return head.startswith(EVTX_MAGIC) or head[FILE_HEADER_SIZE:FILE_HEADER_SIZE + len(CHUNK_MAGIC)] == CHUNK_MAGIC

    def read(self, source: InputFile, stream: io.BufferedReader, stats: ReadStats,
             prefilter: PrefilterPlan | None = None) -> Iterator[TableBatch]:
        stats.format = self.format_name
        line_filter = prefilter.for_table(WINDOWS_TABLE, PREFILTER_FORMAT) if prefilter else None
        with _seekable_evtx(source, stream, stats) as (file, path):
            _check_file_size(file, stats)
            try:
                parser = evtx_parser.PyEvtxParser(path or file, number_of_threads=PARSER_THREADS,
                                                  skip_errors=True)
                records = parser.records_json()
            except (OSError, RuntimeError) as exc:
                stats.error = f"unreadable EVTX file ({exc})"
                return
            tables = EventJsonTables(stats)
            # evtx's generated stub declares __next__ Optional; None is how the binding ends iteration
            for texts in _record_batches(_until_fatal_error(records, stats), stats):  # type: ignore[arg-type]
                stats.records += len(texts)
                data = "\n".join(texts).encode()
                if line_filter is not None:
                    data = line_filter.select(data)
                table = tables.build(data)
                if table is not None and table.num_rows:
                    yield TableBatch(WINDOWS_TABLE, table, source.path, self.format_name)


@contextmanager
def _seekable_evtx(source: InputFile, stream: io.BufferedReader,
                   stats: ReadStats) -> Iterator[tuple[BinaryIO, str | None]]:
    """The input as a seekable file, and its path when the parser can open it itself.

    The parser needs random access: a plain file on disk is handed over by path; a
    stream (stdin, zip member, gzip) is spooled to a temporary file first."""
    path = Path(source.disk_path) if source.disk_path else None
    if path is not None:
        # the file's own magic, read from the file (a peek at the stream would fill its
        # 1 MiB buffer, read for nothing: the parser opens the path itself)
        with open(path, "rb") as file:
            if file.read(len(EVTX_MAGIC)) == EVTX_MAGIC:
                file.seek(0)
                stats.bytes_read = path.stat().st_size
                yield file, str(path)
                return
    with tempfile.TemporaryFile(prefix="rpcwatch-", suffix=".evtx") as spool:
        shutil.copyfileobj(stream, spool, 1 << 20)
        stats.bytes_read = spool.tell()
        _rebuild_header(spool, stats)
        spool.seek(0)
        yield spool, None


def _rebuild_header(file: BinaryIO, stats: ReadStats) -> None:
    """A file whose header is damaged (zeroed, overwritten) but whose chunks are intact:
    write the header the chunks describe (chunk count, next record id, checksum), so the
    parser reads them. The header holds no record."""
    file.seek(0)
    if file.read(len(EVTX_MAGIC)) == EVTX_MAGIC:
        return
    size = file.seek(0, 2)
    chunks, next_record = 0, 1
    while FILE_HEADER_SIZE + (chunks + 1) * CHUNK_SIZE <= size:
        file.seek(FILE_HEADER_SIZE + chunks * CHUNK_SIZE)
        chunk = file.read(40)
        if not chunk.startswith(CHUNK_MAGIC):
            break
        next_record = max(next_record, struct.unpack_from("<Q", chunk, 32)[0] + 1)
        chunks += 1
    header = bytearray(128)
    header[:8] = EVTX_MAGIC
    struct.pack_into("<QQQIHHHH", header, 8, 0, max(chunks - 1, 0), next_record, 128, 1, 3, FILE_HEADER_SIZE,
                     chunks)
    struct.pack_into("<I", header, 124, zlib.crc32(bytes(header[:120])))
    file.seek(0)
    file.write(bytes(header) + bytes(FILE_HEADER_SIZE - len(header)))
    stats.warn("EVTX file header damaged: rebuilt from its chunks", where=f"{chunks} chunks")


def _check_file_size(file: BinaryIO, stats: ReadStats) -> None:
    """EVTX files are a 4 KiB header plus whole 64 KiB chunks. The parser ignores a
    partial chunk at the end without a word; say whether it was a cut chunk or junk."""
    size = file.seek(0, 2)
    extra = (size - FILE_HEADER_SIZE) % CHUNK_SIZE if size > FILE_HEADER_SIZE else 0
    if extra:
        file.seek(size - extra)
        where = f"last {extra} bytes"
        if file.read(len(CHUNK_MAGIC)) == CHUNK_MAGIC:
            stats.skip(INCOMPLETE_CHUNK, where=where)
        else:
            stats.warn(TRAILING_BYTES, where=where)
    file.seek(0)


def _until_fatal_error(records: Iterator[dict], stats: ReadStats) -> Iterator[dict]:
    """The parser's records; an error it cannot resume after ends them, counted."""
    try:
        yield from records
    except RuntimeError as exc:
        stats.skip(UNREADABLE_REST, where=str(exc))


def _record_batches(records: Iterator[dict], stats: ReadStats) -> Iterator[list[str]]:
    finished = False
    while not finished:
        texts, finished = _take_batch(records, stats)
        if texts:
            yield texts


def _take_batch(records: Iterator[dict], stats: ReadStats) -> tuple[list[str], bool]:
    """The JSON texts of the next records, and whether the file is finished.

    Records are taken in steps of :data:`TAKE_STEP` (a list comprehension per step is
    the cheapest way through the parser's dicts) until a batch limit is reached. The
    parser reports skipped corrupt data as warnings while it iterates; they are caught
    here, around the iteration only (never across a ``yield``)."""
    texts: list[str] = []
    size = 0
    finished = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        while not finished and len(texts) < BATCH_RECORDS and size < BATCH_TEXT_BYTES:
            step = [record["data"] for record in islice(records, min(TAKE_STEP, BATCH_RECORDS - len(texts)))]
            texts += step
            size += sum(map(len, step))
            finished = not step
    for warning in caught:
        message = str(warning.message)
        if message.startswith(_SKIPPED_PREFIX):
            stats.skip(CORRUPT_DATA, where=message[len(_SKIPPED_PREFIX):])
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return texts, finished
