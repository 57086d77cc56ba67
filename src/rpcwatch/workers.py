"""Worker processes that read inputs side by side, one pool per run.

Reading holds Python's GIL (the byte scan, packet tracking, the EVTX parser), so the
readers spread work over processes, not threads. This module owns the pool and its
policy and imports nothing heavy: the command line starts the workers before it imports
the rule engine, so the workers' start-up (importing the readers) runs on another core
while this process loads the rules.
"""
from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Sequence

#: plain files smaller than this are read in-process (workers cost a start-up)
PARALLEL_MIN_SIZE = 48 << 20
#: several files are read side by side by the workers only when there is this much to read
SEVERAL_FILES_MIN_SIZE = 32 << 20

_pool: Executor | None = None
#: worker processes asked for (``--workers``); ``None``: one per available core
_requested_workers: int | None = None
#: True in a worker process: work handed to a worker never fans out again
_in_worker = False
#: the thread that starts the workers, and one start-up task per worker
_starting: threading.Thread | None = None
_warm_up_tasks: list[Future] = []


def set_worker_count(workers: int | None) -> None:
    """Use ``workers`` reader processes (0 or 1: read in this process); ``None``: one per core."""
    global _requested_workers
    _requested_workers = workers


def worker_count() -> int:
    if _requested_workers is not None:
        return _requested_workers
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def worker_pool() -> Executor | None:
    """One pool per process, started on first use; ``None`` on a single core.

    Workers come from a fork server where the platform has one: a clean process that has
    imported rpcwatch's readers and nothing else, so workers start fast, inherit no
    threads (forking a process that runs DuckDB's or Arrow's threads is not safe), and
    the caller's main module is never imported again (``spawn`` would run it)."""
    global _pool
    workers = worker_count()
    if workers < 2 or _in_worker:
        return None
    if _pool is None:
        if "forkserver" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["rpcwatch.sources"])
        else:
            context = multiprocessing.get_context("spawn")
        _pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_become_worker)
    return _pool


def disable_workers() -> None:
    """No more worker processes in this process (they could not start)."""
    global _in_worker
    _in_worker = True


def _become_worker() -> None:
    global _in_worker
    _in_worker = True


def start_workers(paths: Sequence[str]) -> None:
    """Start the worker processes, without waiting for them, when some file is large enough
    to use them or several files hold enough to read side by side (directories walked).
    :func:`workers_ready` waits."""
    global _starting
    if worker_count() < 2 or _in_worker or _starting or not _worth_workers(paths):
        return
    pool = worker_pool()
    if pool is not None:
        # Starting a process through the fork server waits until the server has imported
        # the readers; a thread does that waiting so this one can go on.
        _starting = threading.Thread(target=_warm_up, args=(pool,), name="rpcwatch-workers", daemon=True)
        _starting.start()


def _warm_up(pool: Executor) -> None:
    try:
        _warm_up_tasks.extend(pool.submit(_ready) for _ in range(worker_count()))
    except BrokenProcessPool:
        disable_workers()


def _worth_workers(paths: Sequence[str]) -> bool:
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


def workers_ready() -> None:
    """Wait for the workers :func:`start_workers` started; if they could not start, read in
    this process."""
    if _starting is not None:
        _starting.join()
    try:
        for future in _warm_up_tasks:
            future.result()
    except BrokenProcessPool:
        disable_workers()


def _ready() -> bool:
    return True
