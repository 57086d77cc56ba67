"""Input streams: inflating ahead of the reader."""
from __future__ import annotations

import io
import os

import pytest

from rpcwatch.sources.inputs import ReadAheadStream


class _Failing(io.RawIOBase):
    """Yields ``data`` in pieces, then raises."""

    def __init__(self, data: bytes, piece: int):
        self._data, self._piece, self.closed_by_reader = data, piece, False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self._data:
            raise OSError("disk gone")
        size = min(len(buffer), self._piece, len(self._data))
        buffer[:size] = self._data[:size]
        self._data = self._data[size:]
        return size

    def close(self) -> None:
        self.closed_by_reader = True
        super().close()


def test_read_ahead_yields_exactly_the_bytes_of_the_stream():
    data = os.urandom(300_000)
    stream = io.BufferedReader(ReadAheadStream(io.BytesIO(data), block_size=7_000, depth=2), 4_096)
    pieces = []
    while piece := stream.read(10_001):
        pieces.append(piece)
    assert b"".join(pieces) == data


def test_an_error_of_the_stream_reaches_the_reader_after_the_data_before_it():
    stream = ReadAheadStream(_Failing(b"x" * 50_000, 1_000), block_size=1_000, depth=3)
    got = bytearray()
    with pytest.raises(OSError, match="disk gone"):
        while True:
            chunk = stream.read(4_096)
            assert chunk  # no silent end before the error
            got += chunk
    assert bytes(got) == b"x" * 50_000


def test_closing_early_stops_the_thread_and_closes_the_stream():
    raw = _Failing(b"y" * 1_000_000, 1_000)
    stream = ReadAheadStream(raw, block_size=1_000, depth=2)
    assert stream.read(10) == b"y" * 10
    stream.close()
    assert raw.closed_by_reader and stream.closed


def test_a_gzip_bomb_is_inflated_a_few_mebibytes_at_a_time():
    """1 MiB of deflate can stand for a GiB; reading it must not hold more than a few MiB."""
    import gzip
    import tracemalloc

    from rpcwatch.sources.base import ReadStats
    from rpcwatch.sources.inputs import INFLATE_BATCH, GzipStream

    size = 256 << 20
    bomb = io.BytesIO()
    with gzip.GzipFile(fileobj=bomb, mode="wb", compresslevel=9) as out:
        for _ in range(size >> 24):
            out.write(b"\n" * (1 << 24))
    assert len(bomb.getvalue()) < 1 << 20  # one compressed block holds all of it
    bomb.seek(0)
    stats = ReadStats("bomb.gz")
    stream, total = GzipStream(bomb, stats), 0
    tracemalloc.start()
    try:
        while chunk := stream.read(1 << 20):
            assert chunk.count(b"\n") == len(chunk)
            total += len(chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == size and not stats.lost
    assert peak < 4 * INFLATE_BATCH
