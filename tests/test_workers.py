"""When the command line starts reader processes before it loads the rules."""
from __future__ import annotations

from rpcwatch import workers


def test_workers_are_worth_it_for_large_files_directories_and_several_inputs(tmp_path):
    small, other = tmp_path / "conn.log", tmp_path / "dns.log"
    small.write_bytes(b"x\n")
    other.write_bytes(b"y\n")
    large = tmp_path / "big.log"
    with open(large, "wb") as out:  # sparse: the size is what counts
        out.truncate(workers.PARALLEL_MIN_SIZE)

    assert not workers._worth_workers([str(small)])
    assert not workers._worth_workers(["-", str(small), str(tmp_path / "missing.log")])
    assert workers._worth_workers([str(small), str(other)])
    assert workers._worth_workers([str(tmp_path)])
    assert workers._worth_workers([str(large)])


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
