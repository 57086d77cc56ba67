"""When the command line starts reader processes before it loads the rules."""
from __future__ import annotations

from rpcwatch import workers


def sparse(path, size: int):
    with open(path, "wb") as out:  # the size is what counts
        out.truncate(size)
    return str(path)


def test_workers_are_worth_it_for_a_large_file_or_several_holding_enough(tmp_path):
    small, other = tmp_path / "conn.log", tmp_path / "dns.log"
    small.write_bytes(b"x\n")
    other.write_bytes(b"y\n")
    assert not workers._worth_workers([str(small)])
    assert not workers._worth_workers([str(small), str(other)])  # tiny: a start-up costs more
    assert not workers._worth_workers([str(tmp_path)])
    assert not workers._worth_workers(["-", str(tmp_path / "missing.log")])

    half = workers.SEVERAL_FILES_MIN_SIZE // 2
    assert workers._worth_workers([sparse(tmp_path / "a.log.gz", half), sparse(tmp_path / "b.log.gz", half)])
    assert workers._worth_workers([str(tmp_path)])  # the directory now holds enough
    large = tmp_path / "large"
    large.mkdir()
    assert workers._worth_workers([sparse(large / "big.log", workers.PARALLEL_MIN_SIZE)])


def test_no_workers_are_started_when_the_user_asks_for_none(tmp_path, monkeypatch):
    for name in ("_requested_workers", "_starting", "_pool"):
        monkeypatch.setattr(workers, name, None)
    monkeypatch.setattr(workers, "_warm_up_tasks", [])
    workers.set_worker_count(0)
    try:
        workers.start_workers([str(tmp_path)])
        assert workers._starting is None and workers.worker_pool() is None
        workers.workers_ready()
    finally:
        workers.set_worker_count(None)
