"""Parallel block scanning gives exactly what serial scanning gives."""
from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rpcwatch.context import RunContext
from rpcwatch.sources import LogReading, expand_inputs, prefilter, scan
from rpcwatch.sources.prefilter import LineFilter, Literal, PrefilterPlan

HEADER = ("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n"
          "#fields\tts\tuid\tid.orig_h\tid.resp_h\tid.resp_p\tproto\n#types\ttime\tstring\taddr\taddr\tport\tenum\n")
PLAN = PrefilterPlan({"zeek.conn": frozenset({Literal("135", "number")})})


def rows(count: int, offset: int = 0) -> str:
    return "".join(f"{1700000000 + i}.5\tC{i + offset}\t8.8.{i % 256}.1\t10.0.0.{i % 250}\t"
                   f"{135 if i % 7 == 0 else 445}\ttcp\n" for i in range(count))


def read(path, plan=PLAN):
    reading = LogReading(list(expand_inputs([str(path)])), plan)
    uids = [uid for batch in reading.batches() for uid in batch.data.column("uid").to_pylist()]
    return uids, reading.stats[0]


@pytest.fixture
def tiny_ranges(monkeypatch):
    """Ranges of a few KB so that lines, header blocks and bad lines straddle range ends,
    scanned by the workers (which they are only for a pattern Hyperscan cannot compile)."""
    monkeypatch.setattr(scan, "RANGE_SIZE", 4093)
    monkeypatch.setattr(scan, "PARALLEL_MIN_SIZE", 1)
    monkeypatch.setattr(prefilter, "_hyperscan_database", lambda alternatives: None)


def test_workers_scan_a_large_file_only_when_the_prefilter_needs_re2(monkeypatch):
    """Hyperscan's scan is cheaper here than in workers; RE2's is not."""
    pattern = LineFilter(frozenset({Literal("135", "number")}), "zeek-tsv").pattern
    large = scan.PARALLEL_MIN_SIZE
    assert not scan.scan_pays_in_workers(large, pattern)
    assert not scan.scan_pays_in_workers(large, None) and not scan.scan_pays_in_workers(large, b"")
    monkeypatch.setattr(prefilter, "_hyperscan_database", lambda alternatives: None)
    with RunContext():  # a fresh cache of compiled matchers
        assert scan.scan_pays_in_workers(large, pattern)
        assert not scan.scan_pays_in_workers(large - 1, pattern)


def test_parallel_and_serial_scans_agree(tmp_path, tiny_ranges, monkeypatch):
    text = (HEADER + rows(3000) + "a broken line\n" + rows(500, 3000) + "#close\tx\n"
            + HEADER.replace("#path\tconn", "#path\tconn") + rows(1000, 5000) + "1\t2\n")
    path = tmp_path / "conn.log"
    path.write_text(text)
    parallel, parallel_stats = read(path)
    monkeypatch.setattr(scan, "PARALLEL_MIN_SIZE", 1 << 40)
    serial, serial_stats = read(path)
    assert parallel == serial and len(serial) == sum(1 for i in range(3000) if i % 7 == 0) + \
        sum(1 for i in range(500) if i % 7 == 0) + sum(1 for i in range(1000) if i % 7 == 0)
    assert parallel_stats.records == serial_stats.records == 4502
    assert parallel_stats.skipped == serial_stats.skipped == {"wrong number of fields (expected 6)": 2}
    assert parallel_stats.bytes_read == serial_stats.bytes_read == path.stat().st_size


def test_parallel_json(tmp_path, tiny_ranges):
    lines = [json.dumps({"ts": i, "uid": f"C{i}", "id.resp_p": 135 if i % 5 == 0 else 80, "proto": "tcp",
                         "conn_state": "S0"}) for i in range(4000)]
    lines.insert(1234, "{not json at all")
    path = tmp_path / "conn.log"
    path.write_text("\n".join(lines) + "\n")
    uids, stats = read(path)
    assert uids == [f"C{i}" for i in range(0, 4000, 5)]
    assert stats.records == 4001 and stats.skipped_total == 1


def test_unicode_case_folding_and_many_literals_per_line(monkeypatch):
    """Caseless literals fold as the rules compare (the Kelvin sign is a k); a line with
    several matches is kept once; the RE2 fallback keeps the same lines."""
    caseless = LineFilter(frozenset({Literal("kerberos"), Literal("ntlm")}), "zeek-json")
    block = "a \u212aerberos line\nKERBEROS and ntlm\nnothing\nNtLm\n".encode()
    expected = "a \u212aerberos line\nKERBEROS and ntlm\nNtLm\n".encode()
    assert caseless.select(block) == expected
    monkeypatch.setattr(prefilter, "_hyperscan_database", lambda alternatives: None)
    assert prefilter.LineMatcher(caseless.pattern).kept(block) == expected


def test_a_prefilter_that_keeps_nearly_every_line_stops_filtering(monkeypatch):
    """Thousands of rules can demand so many literals that every line holds one: after a
    sample the filter hands lines through unscanned (always sound: the rules still decide)."""
    monkeypatch.setattr(prefilter, "USELESS_SAMPLE", 1000)
    everywhere = LineFilter(frozenset({Literal("a")}), "zeek-json")
    block = b"a1\n" * 400 + b"zz\n" * 10
    assert everywhere.select(block) == b"a1\n" * 400
    later = b"zz\n" * 5 + b"a2\n"
    assert everywhere.select(later) == later
    selective = LineFilter(frozenset({Literal("q")}), "zeek-json")
    mostly_not = b"q1\n" * 40 + b"zz\n" * 400
    assert selective.select(mostly_not) == b"q1\n" * 40
    assert selective.select(later + b"q3\n") == b"q3\n"


def read_all(paths, plan=PLAN):
    """Per input: its stats, and the rows of every table in reading order."""
    reading = LogReading(list(expand_inputs([str(p) for p in paths])), plan)
    tables: dict[str, list] = {}
    for batch in reading.batches():
        tables.setdefault(batch.table, []).extend(batch.data.to_pylist())
    stats = [(s.path, s.format, s.records, dict(s.skipped), s.lost, s.error, sorted(s.tables)) for s in reading.stats]
    return stats, tables


def test_files_read_side_by_side_by_workers_equal_reading_them_here(tmp_path, monkeypatch):
    import gzip
    from pathlib import Path

    from rpcwatch import workers
    from rpcwatch.context import RunContext

    examples = Path(__file__).resolve().parents[2] / "examples"
    (tmp_path / "a_conn.log").write_text(HEADER + rows(400) + "a broken line\n" + rows(100, 400))
    (tmp_path / "b_conn.log.gz").write_bytes(gzip.compress((HEADER + rows(2000, 1000)).encode())[:-200])
    (tmp_path / "c_unknown.txt").write_text("not a log\n")
    paths = [tmp_path, examples]
    monkeypatch.setattr(workers, "SEVERAL_FILES_MIN_SIZE", 0)
    with RunContext(workers=workers.WorkerPool(2)) as run:
        side_by_side = read_all(paths, plan=None)
        assert run.workers._pool is not None  # the files went to the workers
    with RunContext(workers=workers.WorkerPool(0)):
        here = read_all(paths, plan=None)
    assert side_by_side == here
    stats = {Path(s[0]).name: s for s in here[0]}
    assert stats["a_conn.log"][3] and stats["b_conn.log.gz"][4] and stats["c_unknown.txt"][5]
    assert len(stats) == 6 and {"zeek.conn", "zeek.dce_rpc", "windows"} <= set(here[1])


@given(st.binary(max_size=300) | st.lists(st.sampled_from([b"\t", b"\n", b"}", b"{", b"S", b"RC=", b"x"]),
                                          max_size=80).map(b"".join),
       st.sampled_from([b"\t", b"\n", b" ", b"SRC=", b"}\n{"]))
def test_line_and_marker_counts_are_what_bytes_count_gives(data, marker):
    """The scan's counts (numpy over the block) equal the plain byte-string definitions."""
    body = data[:-1] if data.endswith(b"\n") else data
    assert scan._lines_and_marks(data, marker) == (data.count(b"\n") + (not data.endswith(b"\n")),
                                                   data.count(marker))
    assert scan._edges(data) == body[:1] + body[-1:]


def test_a_plan_sent_with_each_input_builds_its_line_filter_once_per_process():
    import pickle

    from rpcwatch.context import RunContext
    from rpcwatch.sources.prefilter import Literal, PrefilterPlan

    plan = PrefilterPlan({"windows": frozenset({Literal("135", "number")}), "conn": None})
    other = PrefilterPlan({"windows": frozenset({Literal("445", "number")})})
    with RunContext():
        first, second = pickle.loads(pickle.dumps(plan)), pickle.loads(pickle.dumps(plan))  # two inputs' copies
        assert first.for_table("windows", "json") is second.for_table("windows", "json")
        assert first.for_table("conn", "json") is None
        assert other.for_table("windows", "json").pattern != first.for_table("windows", "json").pattern
        assert first.for_table("windows", "json").select(b'{"p":135}\n{"p":445}\n') == b'{"p":135}\n'
        assert other.for_tables("win", "json").select(b'{"p":135}\n{"p":445}\n') == b'{"p":445}\n'
