"""JSON lines on a stream (standard output by default): the simplest sink.

A pipe cannot be truncated after a crash, so a batch written before the crash and not
yet checkpointed is written again: at least once."""
from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import IO

from rpcwatch.outputs.jsonl import dumps
from rpcwatch.outputs.sinks.base import AT_LEAST_ONCE, Rejection, Sink, SinkSettings, SinkUnavailable


class StreamSink(Sink):
    schemes = ("stdout",)
    guarantee = AT_LEAST_ONCE

    def __init__(self, settings: SinkSettings, stream: IO[str] | None = None):
        super().__init__(settings)
        self._stream = stream

    @property
    def name(self) -> str:
        return "stdout"

    def open(self, recovery: dict | None = None) -> None:
        self._opened()

    def _opened(self) -> IO[str]:
        """The stream given, else standard output."""
        if self._stream is None:
            self._stream = sys.stdout
        return self._stream

    def write(self, documents: Sequence[dict]) -> None:
        self._opened().write("".join(dumps(document) + "\n" for document in documents))

    def flush(self) -> list[Rejection]:
        try:
            self._opened().flush()
        except BrokenPipeError as exc:
            raise SinkUnavailable(f"{self.name}: the reader went away ({exc})") from None
        return []
