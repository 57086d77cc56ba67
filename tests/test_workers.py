"""When the command line starts reader processes before it loads the rules."""
from __future__ import annotations

from rpcwatch import workers
from rpcwatch.context import RunContext


def sparse(path, size: int):
    with open(path, "wb") as out:  # the size is what counts
        out.truncate(size)
    return str(path)


def test_workers_are_worth_it_for_a_large_file_or_several_holding_enough(tmp_path):
    small, other = tmp_path / "conn.log", tmp_path / "dns.log"
    small.write_bytes(b"x\n")
    other.write_bytes(b"y\n")
    assert not workers.worth_workers([str(small)])
    assert not workers.worth_workers([str(small), str(other)])  # tiny: a start-up costs more
    assert not workers.worth_workers([str(tmp_path)])
    assert not workers.worth_workers(["-", str(tmp_path / "missing.log")])

    half = workers.SEVERAL_FILES_MIN_SIZE // 2
    assert workers.worth_workers([sparse(tmp_path / "a.log.gz", half), sparse(tmp_path / "b.log.gz", half)])
    assert workers.worth_workers([str(tmp_path)])  # the directory now holds enough
    large = tmp_path / "large"
    large.mkdir()
    assert workers.worth_workers([sparse(large / "big.log", workers.PARALLEL_MIN_SIZE)])


def test_no_workers_are_started_when_the_user_asks_for_none(tmp_path, monkeypatch):
    monkeypatch.setattr(workers, "SEVERAL_FILES_MIN_SIZE", 0)
    sparse(tmp_path / "a.log", 10)
    sparse(tmp_path / "b.log", 10)
    with RunContext(workers=workers.WorkerPool(0)) as run:
        run.workers.start([str(tmp_path)])
        assert run.workers._starting is None and workers.worker_pool() is None
        run.workers.ready()


def test_each_run_has_its_own_pool_and_closes_it(tmp_path):
    with RunContext(workers=workers.WorkerPool(2)) as run:
        pool = workers.worker_pool()
        assert pool is not None and pool is run.workers.pool() and workers.worker_count() == 2
    assert run.workers._pool is None  # shut down with the run
    with RunContext(workers=workers.WorkerPool(0)):
        assert workers.worker_pool() is None and workers.worker_count() == 0
