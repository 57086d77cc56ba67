"""``file:PATH``: JSON lines appended to a file, fsync'd per batch, no duplicates.

Recovery protocol: after each batch the caller commits, with the files' checkpoints, the
file's identity (device, inode) and its size. A crash between the fsync of a batch and
that commit leaves the batch in the file although the checkpoint still points before it;
on the next start the file is truncated back to the committed size, and the batch is made
and written again. A file replaced in the meantime (logrotate while stopped) is not
touched. A failed write or fsync truncates back to the last flushed size before the batch
is retried, so a retry never leaves half a batch behind.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from rpcwatch.outputs.jsonl import dumps
from rpcwatch.outputs.sinks.base import NO_DUPLICATES, Rejection, Sink, SinkError, SinkSettings, SinkUnavailable


class FileSink(Sink):
    schemes = ("file",)
    guarantee = NO_DUPLICATES

    def __init__(self, settings: SinkSettings):
        super().__init__(settings)
        raw = settings.url.split(":", 1)[1]
        if raw.startswith("//"):  # file:///var/log/alerts.jsonl
            raw = self.url.path
        if not raw:
            raise SinkError("file: needs a path (file:alerts.jsonl)")
        self.path = Path(raw).expanduser().absolute()
        self._fd: int | None = None
        self._flushed = 0
        self._pending: list[bytes] = []
        #: what a recovery truncated, for the run's messages
        self.truncated = 0

    @property
    def name(self) -> str:
        return f"file:{self.path}"

    @property
    def key(self) -> str:
        return self.name

    def open(self, recovery: dict | None = None) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        except OSError as exc:
            raise SinkError(f"{self.name}: cannot open: {exc.strerror or exc}") from None
        info = os.fstat(self._fd)
        self._flushed = info.st_size
        if recovery and (recovery.get("dev"), recovery.get("ino")) == (info.st_dev, info.st_ino) \
                and info.st_size > recovery["size"]:
            self.truncated = info.st_size - recovery["size"]
            os.ftruncate(self._fd, recovery["size"])
            os.fsync(self._fd)
            self._flushed = recovery["size"]

    def write(self, documents: Sequence[dict]) -> None:
        self._pending.append("".join(dumps(document) + "\n" for document in documents).encode())

    def flush(self) -> list[Rejection]:
        data, self._pending = b"".join(self._pending), []
        try:
            if self._fd is None:
                self.open()
            fd = self._fd
            assert fd is not None, "open() sets it or raises"
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as exc:
            self._undo()
            raise SinkUnavailable(f"{self.name}: {exc.strerror or exc}") from None
        self._flushed += len(data)
        return []

    def _undo(self) -> None:
        """Remove what a failed batch wrote, so that its retry does not duplicate it."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, self._flushed)
        except OSError:
            self._close_fd()

    def recovery(self) -> dict | None:
        if self._fd is None:
            return None
        info = os.fstat(self._fd)
        return {"dev": info.st_dev, "ino": info.st_ino, "size": self._flushed}

    def reopen(self) -> None:
        self._close_fd()
        self.open()

    def close(self) -> None:
        self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd = None
