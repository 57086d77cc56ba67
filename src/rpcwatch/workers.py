"""Worker processes that read inputs side by side, one pool per run.

Reading holds Python's GIL (the byte scan, packet tracking, the EVTX parser), so the
readers spread work over processes, not threads. :class:`WorkerPool` owns the pool and
its policy and imports nothing heavy: the command line starts the workers before it
imports the rule engine, so the workers' start-up (importing the readers) runs on another
core while this process loads the rules. The pool of the current run is found through
the run context (:mod:`rpcwatch.context`).
"""
from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.context import BaseContext

#: plain files smaller than this are read in-process (workers cost a start-up)
PARALLEL_MIN_SIZE = 48 << 20
#: several files are read side by side by the workers only when there is this much to read
SEVERAL_FILES_MIN_SIZE = 32 << 20

#: True in a worker process: work handed to a worker never fans out again (the identity
#: of this process, not a setting)
_in_worker = False


class WorkerPool:
    """The reader processes of one run: how many (``--workers``; ``None`` one per core,
    0 or 1 reads everything in this process), started on first use or ahead of time."""

    def __init__(self, requested: int | None = None):
        self.requested = requested
        self._pool: Executor | None = None
        self._starting: threading.Thread | None = None
        self._warm_up: list[Future] = []
        self._broken = False

    def count(self) -> int:
        if self.requested is not None:
            return self.requested
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

    def pool(self) -> Executor | None:
        """The pool, started on first use; ``None`` on a single core, in a worker process,
        or when the workers could not start.

        Workers come from a fork server where the platform has one: a clean process that
        has imported rpcwatch's readers and nothing else, so workers start fast, inherit no
        threads (forking a process that runs DuckDB's or Arrow's threads is not safe), and
        the caller's main module is never imported again (``spawn`` would run it)."""
        if self.count() < 2 or _in_worker or self._broken:
            return None
        if self._pool is None:
            context: BaseContext
            if "forkserver" in multiprocessing.get_all_start_methods():
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(["rpcwatch.sources"])
            else:
                context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(max_workers=self.count(), mp_context=context,
                                             initializer=_become_worker)
        return self._pool

    def disable(self) -> None:
        """No more worker processes in this run (they could not start)."""
        self._broken = True

    def start(self, paths: Sequence[str]) -> None:
        """Start the workers without waiting for them, when some file is large enough to
        use them or several files hold enough to read side by side (directories walked).
        :meth:`ready` waits."""
        if self.count() < 2 or _in_worker or self._starting or not worth_workers(paths):
            return
        pool = self.pool()
        if pool is not None:
            # Starting a process through the fork server waits until the server has imported
            # the readers; a thread does that waiting so this one can go on.
            self._starting = threading.Thread(target=self._start_each, args=(pool,), name="rpcwatch-workers",
                                              daemon=True)
            self._starting.start()

    def _start_each(self, pool: Executor) -> None:
        try:
            self._warm_up.extend(pool.submit(_ready) for _ in range(self.count()))
        except BrokenProcessPool:
            self.disable()

    def ready(self) -> None:
        """Wait for the workers :meth:`start` started; if they could not start, read in
        this process."""
        if self._starting is not None:
            self._starting.join()
        try:
            for future in self._warm_up:
                future.result()
        except BrokenProcessPool:
            self.disable()

    def close(self) -> None:
        """Stop the workers (at the end of the run)."""
        if self._starting is not None:
            self._starting.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def worker_pool() -> Executor | None:
    """The current run's pool (see :class:`WorkerPool.pool`)."""
    from rpcwatch.context import current

    return current().workers.pool()


def worker_count() -> int:
    from rpcwatch.context import current

    return current().workers.count()


def _become_worker() -> None:
    global _in_worker
    _in_worker = True


def worth_workers(paths: Sequence[str]) -> bool:
    files = total = 0
    for size in _file_sizes(paths):
        if size >= PARALLEL_MIN_SIZE:
            return True
        files, total = files + 1, total + size
        if files >= 2 and total >= SEVERAL_FILES_MIN_SIZE:
            return True
    return False


def _file_sizes(paths: Sequence[str]):
    """Sizes of the files at ``paths``, directories walked; what cannot be seen is skipped
    ('-', a URI, a missing path: reported later by the readers)."""
    for path in paths:
        if os.path.isdir(path):
            for folder, _, names in os.walk(path):
                for name in names:
                    yield _size(os.path.join(folder, name))
        else:
            yield _size(path)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except (OSError, ValueError):
        return 0


def _ready() -> bool:
    return True
