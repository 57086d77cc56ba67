"""Zeek TSV and JSON reading: formats, types, bad input, and real corpus files."""
from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pyarrow as pa
import pytest

from rpcwatch.sources import LogReading, expand_inputs
from rpcwatch.sources.inputs import InputFile
from rpcwatch.sources.prefilter import Literal, PrefilterPlan

HEADER = (
    "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n"
    "#open\t2024-04-19-01-00-01\n"
    "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tlocal_resp\ttunnel_parents\n"
    "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tbool\tset[string]\n"
)
ROW = "1713488627.117664\tC8spCJhr6b5Xd0NBf\t152.32.151.121\t43962\t64.225.56.201\t135\ttcp\t-\tT\t-\n"


def read(path, prefilter=None):
    reading = LogReading(list(expand_inputs([str(path)])), prefilter)
    tables = {}
    for batch in reading.batches():
        tables.setdefault(batch.table, []).append(batch.data)
    merged = {name: pa.concat_tables(parts, promote_options="permissive") for name, parts in tables.items()}
    return merged, reading.stats


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_tsv_types_unset_empty_escapes_and_sets(tmp_path):
    row = ("1713488627.5\tC1\t10.0.0.1\t1\t10.0.0.2\t135\ttcp\t(empty)\tF\tCa,Cb\n"
           "1713488628.5\tC2\t10.0.0.1\t2\t10.0.0.2\t135\ttcp\tdce\\x5frpc\\xe2\\x82\\xac\t-\t(empty)\n")
    tables, stats = read(write(tmp_path, "conn.log", HEADER + row))
    conn = tables["zeek.conn"]
    assert conn.schema.field("ts").type == pa.float64()
    assert conn.schema.field("id.resp_p").type == pa.int64()
    assert conn.schema.field("local_resp").type == pa.bool_()
    assert conn.column("service").to_pylist() == ["", "dce_rpc\u20ac"]
    assert conn.column("local_resp").to_pylist() == [False, None]
    assert conn.column("tunnel_parents").to_pylist() == [["Ca", "Cb"], []]
    assert stats[0].records == 2 and stats[0].skipped_total == 0


def test_several_header_blocks_with_different_fields_and_node_name(tmp_path):
    second = HEADER.replace("#fields\tts", "#fields\t_node_name\tts").replace("#types\ttime", "#types\tstring\ttime")
    text = HEADER + ROW + "#close\t2024-04-19-02-00-00\n" + second + "worker-1\t" + ROW + "#close\tx\n"
    tables, stats = read(write(tmp_path, "conn.log", text))
    conn = tables["zeek.conn"]
    assert conn.num_rows == 2
    assert conn.column("_node_name").to_pylist() == [None, "worker-1"]
    assert conn.column("id.orig_h").to_pylist() == ["152.32.151.121"] * 2
    assert stats[0].records == 2


def test_plain_tsv_header_without_metadata(tmp_path):
    text = "ts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tlocal_resp\n" \
           "1713488627.1\tC1\t1.2.3.4\t5\t10.0.0.1\t135\ttcp\tT\n"
    tables, stats = read(write(tmp_path, "conn.txt", text))
    conn = tables["zeek.conn"]
    assert stats[0].format == "zeek-tsv"
    assert conn.column("id.resp_p").to_pylist() == [135]
    assert conn.column("local_resp").to_pylist() == [True]


def test_separator_written_with_a_tab(corpus):
    """zat's conn_date_issue.log writes '#separator<TAB>\\x09' (a real malformed header)."""
    tables, stats = read(corpus / "zat/data/conn_date_issue.log")
    assert tables["zeek.conn"].num_rows == 3 and stats[0].skipped_total == 0


def test_bad_lines_are_counted_and_the_rest_is_kept(tmp_path):
    text = (HEADER + ROW + "garbage line without tabs\n" + ROW.replace("\t-\n", "\n")
            + "1\t2\t3\t4\t5\t6\t7\t8\t9\t10\t11\t12\n" + ROW.replace("C8s", "C9s"))
    tables, stats = read(write(tmp_path, "conn.log", text))
    assert tables["zeek.conn"].column("uid").to_pylist() == ["C8spCJhr6b5Xd0NBf", "C9spCJhr6b5Xd0NBf"]
    assert stats[0].records == 5
    assert stats[0].skipped == {"wrong number of fields (expected 10)": 3}
    assert len(stats[0].examples["wrong number of fields (expected 10)"]) == 3


def test_bad_lines_are_found_even_when_the_prefilter_drops_them(tmp_path):
    plan = PrefilterPlan({"zeek.conn": frozenset({Literal("135", "number")})})
    text = HEADER + ROW + "garbage\n" + ROW.replace("\t135\t", "\t445\t")
    tables, stats = read(write(tmp_path, "conn.log", text), plan)
    assert tables["zeek.conn"].num_rows == 1
    assert stats[0].records == 3 and stats[0].skipped_total == 1


def test_invalid_utf8_is_escaped_and_the_record_kept(tmp_path):
    data = (HEADER + ROW).encode() + ROW.replace("C8s", "Cxx").encode().replace(b"tcp\t-", b"tcp\t\xff\xfe")
    tables, stats = read(write(tmp_path, "conn.log", data))
    assert tables["zeek.conn"].column("service").to_pylist() == [None, "\\xff\\xfe"]
    assert sum(stats[0].warnings.values()) == 1 and stats[0].skipped_total == 0


def test_invalid_typed_value_is_unset_not_dropped(tmp_path):
    tables, stats = read(write(tmp_path, "conn.log", HEADER + ROW.replace("\t43962\t", "\tabc\t")))
    assert tables["zeek.conn"].column("id.orig_p").to_pylist() == [None]
    assert stats[0].warnings == {"invalid port value in field id.orig_p (kept as unset)": 1}


def test_gzip_truncated_keeps_what_was_inflated(tmp_path):
    body = HEADER + ROW * 20000
    data = gzip.compress(body.encode())
    tables, stats = read(write(tmp_path, "conn.log.gz", data[: len(data) * 2 // 3]))
    rows = tables["zeek.conn"].num_rows
    assert 1000 < rows < 20000
    assert stats[0].records == rows + stats[0].skipped_total  # the cut line is the one skipped
    assert stats[0].skipped_total == 1
    assert stats[0].lost[0].startswith("truncated gzip")


def test_concatenated_gzip_members(tmp_path):
    data = gzip.compress((HEADER + ROW).encode()) + gzip.compress((HEADER + ROW).encode())
    tables, stats = read(write(tmp_path, "conn.log.gz", data))
    assert tables["zeek.conn"].num_rows == 2 and stats[0].skipped_total == 0


def test_binary_and_unknown_files_are_reported_not_fatal(tmp_path):
    write(tmp_path, "a.bin", bytes(range(256)) * 10)
    write(tmp_path, "b.txt", "hello world\n")
    write(tmp_path, "conn.log", HEADER + ROW)
    tables, stats = read(tmp_path)
    assert tables["zeek.conn"].num_rows == 1
    errors = {Path(s.path).name: s.error for s in stats}
    assert errors == {"a.bin": "not a supported log format (binary content)",
                      "b.txt": "not a supported log format", "conn.log": None}


def test_nul_bytes_inside_a_tsv_line(tmp_path):
    tables, stats = read(write(tmp_path, "conn.log", HEADER + ROW + ROW.replace("tcp", "t\x00p") + ROW))
    assert tables["zeek.conn"].num_rows == 2
    assert stats[0].skipped == {"binary data (NUL byte) in line": 1}


def test_data_before_its_header_is_held_back(tmp_path):
    """btest baselines are diff-sorted, so data may precede '#fields'."""
    tables, stats = read(write(tmp_path, "conn.log", "### btest\n" + ROW + HEADER))
    assert tables["zeek.conn"].num_rows == 1 and stats[0].skipped_total == 0


def test_stdin(monkeypatch):
    fake = io.TextIOWrapper(io.BytesIO((HEADER + ROW).encode()))
    monkeypatch.setattr("sys.stdin", fake)
    reading = LogReading([next(expand_inputs(["-"]))])
    assert sum(b.data.num_rows for b in reading.batches()) == 1


def test_json_lines_flat_keys_iso_and_millisecond_timestamps(tmp_path):
    lines = [
        {"ts": 1713488627.5, "uid": "C1", "id.orig_h": "1.2.3.4", "id.resp_p": 135, "proto": "tcp"},
        {"ts": "2024-04-19T01:03:47.5Z", "uid": "C2", "id.orig_h": "1.2.3.4", "id.resp_p": 135},
        {"ts": 1713488627500, "uid": "C3", "id": {"orig_h": "5.6.7.8"}, "id.resp_p": 135},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\n"
    tables, stats = read(write(tmp_path, "conn.log", text))
    conn = tables["zeek.conn"]
    assert stats[0].format == "zeek-json"
    assert conn.column("ts").to_pylist() == [1713488627.5, 1713488627.5, 1713488627.5]
    assert conn.column("id.orig_h").to_pylist() == ["1.2.3.4", "1.2.3.4", "5.6.7.8"]


def test_json_malformed_lines_and_conflicting_types(tmp_path):
    text = ('{"ts": 1.0, "uid": "C1", "id.resp_p": 135}\n{"ts": 2.0, "uid": "C2", "id.resp_p": "135"}\n'
            '{"ts": 3.0, "uid": \n[1,2]\n{"ts": 4.0, "uid": "C4", "id.resp_p": 135}\n')
    tables, stats = read(write(tmp_path, "conn.log", text))
    conn = tables["zeek.conn"]
    assert conn.column("uid").to_pylist() == ["C1", "C2", "C4"]
    assert conn.column("id.resp_p").to_pylist() == ["135", "135", "135"]
    assert stats[0].records == 5 and stats[0].skipped_total == 2


def test_json_records_are_routed_by_their_path(tmp_path):
    text = ('{"_path": "conn", "ts": 1.0, "uid": "C1"}\n{"_path": "dce_rpc", "ts": 2.0, "uid": "C2", '
            '"endpoint": "epmapper", "operation": "ept_map"}\n')
    tables, _ = read(write(tmp_path, "all.json", text))
    assert {name: t.num_rows for name, t in tables.items()} == {"zeek.conn": 1, "zeek.dce_rpc": 1}


def test_zip_members_are_inputs(tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "logs.zip", "w") as archive:
        archive.writestr("day1/conn.log", HEADER + ROW)
    tables, stats = read(tmp_path / "logs.zip")
    assert tables["zeek.conn"].num_rows == 1
    assert stats[0].path.endswith("logs.zip!day1/conn.log")


# ---- real files -----------------------------------------------------------------------

@pytest.mark.parametrize("relative,table,rows", [
    ("rita/test_data/missing_host/2024-04-19/conn.01:00:00-02:00:00.log.gz", "zeek.conn", 2102),
    ("rita/test_data/json_with_all_fields/conn.log", "zeek.conn", 29),
    ("zat/data/conn.log", "zeek.conn", 360),
    ("zat/data/json/dce_rpc.log", "zeek.dce_rpc", 7),
    ("zed-sample-data/zeek-default/dce_rpc.log.gz", "zeek.dce_rpc", 78),
    ("zed-sample-data/zeek-json/dce_rpc.json.gz", "zeek.dce_rpc", 78),
    ("zeek-zeek-testing/Baseline/tests.ctu-sme-11-vm-win7ad/dce_rpc.log", "zeek.dce_rpc", 1583),
    ("zeek-zeek-testing/Baseline/tests.m57-short/conn.log", "zeek.conn", 2164),
    ("slips/dataset/test9-mixed-zeek-dir/conn.log", "zeek.conn", 576),
])
def test_corpus_files_read_completely(corpus, relative, table, rows):
    tables, stats = read(corpus / relative)
    assert tables[table].num_rows == rows
    assert stats[0].records == rows and stats[0].skipped_total == 0


def test_iso_timestamps_of_json_streaming_logs(corpus):
    tables, _ = read(corpus / "zed-sample-data/zeek-json/dce_rpc.json.gz")
    tsv, _ = read(corpus / "zed-sample-data/zeek-default/dce_rpc.log.gz")
    assert tables["zeek.dce_rpc"].column("ts").to_pylist()[:3] == pytest.approx(
        tsv["zeek.dce_rpc"].column("ts").to_pylist()[:3], abs=1e-6)


def test_masked_btest_timestamps_are_unset_with_a_warning(corpus):
    tables, stats = read(corpus / "zeek-zeek/testing/btest/Baseline/scripts.base.protocols.dce-rpc.mapi/dce_rpc.log")
    assert tables["zeek.dce_rpc"].num_rows == 12
    assert tables["zeek.dce_rpc"].column("ts").null_count == 12
    assert stats[0].warnings == {"invalid time value in field ts (kept as unset)": 12}


class FailingDisk(io.RawIOBase):
    """Serves ``data`` in small reads, then fails like a dying disk."""

    def __init__(self, data: bytes):
        self.data = data

    def readable(self):
        return True

    def readinto(self, buffer):
        if not self.data:
            raise OSError(5, "Input/output error")
        size = min(len(buffer), 4096, len(self.data))
        buffer[:size], self.data = self.data[:size], self.data[size:]
        return size


def test_a_read_error_mid_file_keeps_what_was_read():
    data = (HEADER + ROW * 3000).encode()
    reading = LogReading([InputFile("flaky.log", lambda: FailingDisk(data))])
    assert sum(b.data.num_rows for b in reading.batches()) == 3000
    assert reading.stats[0].lost == [f"read error: Input/output error (after {len(data)} bytes)"]
    assert reading.stats[0].error is None


def test_a_read_error_before_any_byte_is_an_input_error():
    reading = LogReading([InputFile("dead.log", lambda: FailingDisk(b""))])
    assert list(reading.batches()) == []
    assert reading.stats[0].error == "cannot read: Input/output error"
