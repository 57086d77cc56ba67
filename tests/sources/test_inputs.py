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
