"""Property tests of every text reader and of the configuration against damaged input.

For any mix of good records and damage (random bytes, cut lines, NUL, invalid UTF-8,
oversized lines, deep nesting, numbers and times no type can hold, surrogate escapes):
no exception escapes the reader, every line is either read as a record or counted as
skipped with a reason, and every good record is still read. The longer, coverage-guided
run is bench/fuzz_readers.py (atheris), seeded from the corpus.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpcwatch.config import ConfigError, load_config
from rpcwatch.context import Limits, RunContext
from rpcwatch.sources import LogReading, expand_inputs
from rpcwatch.workers import WorkerPool

ZEEK_HEADER = ("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n"
               "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tconn_state\n"
               "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\n")
#: the limit the tests run with, so oversized lines stay small
MAX_LINE = 4096

damage = st.one_of(
    st.binary(min_size=1, max_size=200).map(lambda b: b.replace(b"\n", b" ")),
    st.just(b"\x00\x01\x02"),
    st.just(b"\xff\xfe invalid utf-8 \xc3"),
    st.just(b"x" * (MAX_LINE + 10)),
    st.just(b'{"a":' + b"[" * 300 + b"]" * 300 + b"}"),
    st.just(b'{"ts": 1e400, "uid": "Cx", "id.resp_p": 99999999999999999999999}'),
    st.just(b'{"ts": "9999-12-31T23:59:59-01:00", "uid": "Cy", "s": "\\ud800"}'),
    st.just(b"18446744073709551615\tC\t1.2.3.4\t-1\t5.6.7.8\t135\ttcp\tREJ"),
    st.just(b"nan\tCn\t1.2.3.4\t1\t5.6.7.8\t135\ttcp\tREJ"),
    st.just(b"#fields\tonly\tone"),
    st.just(b"{"),
    st.just(b"}"),
    st.just(b"[]"),
    st.just(b"   "),
)


def _zeek_tsv(uid: str, port: int) -> bytes:
    return f"1700000000.5\t{uid}\t45.83.64.17\t40000\t10.0.0.5\t{port}\ttcp\tREJ".encode()


def _zeek_json(uid: str, port: int) -> bytes:
    return json.dumps({"ts": 1700000000.5, "uid": uid, "id.orig_h": "45.83.64.17", "id.orig_p": 40000,
                       "id.resp_h": "10.0.0.5", "id.resp_p": port, "proto": "tcp", "conn_state": "REJ"}).encode()


def _winjson(uid: str, port: int) -> bytes:
    return json.dumps({"Event": {"System": {"EventID": 3, "EventRecordID": int(uid[1:]), "Computer": "FS-1",
                                            "Channel": "Microsoft-Windows-Sysmon/Operational"},
                                 "EventData": {"SourceIp": "45.83.64.17", "DestinationIp": "10.0.0.5",
                                               "DestinationPort": port, "RuleName": uid}}}).encode()


def _suricata(uid: str, port: int) -> bytes:
    return json.dumps({"timestamp": "2024-06-01T10:00:00.000000+0000", "flow_id": int(uid[1:]), "event_type": "flow",
                       "src_ip": "45.83.64.17", "src_port": 40000, "dest_ip": "10.0.0.5", "dest_port": port,
                       "proto": "TCP", "flow": {"state": "new"}}).encode()


def _vpcflow(uid: str, port: int) -> bytes:
    return (f"2 123456789010 eni-1235b8ca123456789 45.83.64.17 10.0.0.5 {int(uid[1:])} {port} 6 1 40 "
            "1717236000 1717236060 REJECT OK").encode()


def _netfilter(uid: str, port: int) -> bytes:
    return (f"Jun  1 10:00:00 fw kernel: [DROP-IN] IN=eth0 OUT= SRC=45.83.64.17 DST=10.0.0.5 LEN=60 TTL=50 "
            f"PROTO=TCP SPT={int(uid[1:])} DPT={port} WINDOW=64240 SYN URGP=0").encode()


def _ecs(uid: str, port: int) -> bytes:
    return json.dumps({"@timestamp": "2024-06-01T10:00:00Z", "source": {"ip": "45.83.64.17", "port": int(uid[1:])},
                       "destination": {"ip": "10.0.0.5", "port": port}, "network": {"transport": "tcp"},
                       "event": {"outcome": "failure"}}).encode()


FORMATS = {
    "zeek-tsv": (ZEEK_HEADER.encode(), _zeek_tsv, "uid"),
    "zeek-json": (b"", _zeek_json, "uid"),
    "evtx-json": (b"", _winjson, "RuleName"),
    "suricata-eve": (b"", _suricata, "flow_id"),
    "aws-vpcflow": (b"", _vpcflow, "srcport"),
    "netfilter": (b"", _netfilter, "SPT"),
    "ecs": (b"", _ecs, "source.port"),
}
#: formats whose record identity is a number (C1 is 1)
NUMBERED = {"suricata-eve", "aws-vpcflow", "netfilter", "ecs"}


def _read(path: Path) -> tuple[set, list]:
    with RunContext(limits=Limits(max_line_bytes=MAX_LINE), workers=WorkerPool(0)):
        reading = LogReading(list(expand_inputs([str(path)])))
        batches = list(reading.batches())
    return batches, reading.stats


OVERSIZE = "line longer than the limit (limits.max_line_bytes; its neighbours are kept)"
BLANK = re.compile(rb"[ \t\r]*")


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(good=st.lists(st.integers(0, 65535), min_size=1, max_size=30), bad=st.lists(damage, max_size=8),
       order=st.randoms(use_true_random=False))
def test_good_records_survive_any_damage(tmp_path, fmt, good, bad, order):
    header, record, key = FORMATS[fmt]
    lines = [record(f"C{i + 1}", port) for i, port in enumerate(good)]
    mixed = lines[1:] + bad
    order.shuffle(mixed)
    # the first record lets the format be recognised; a stray #fields header comes last
    # (it starts a new block, and lines under it are read with its fields)
    mixed = [lines[0]] + sorted(mixed, key=lambda line: line.startswith(b"#fields"))
    path = tmp_path / f"log.{fmt}"
    path.write_bytes(header + b"\n".join(mixed) + b"\n")
    batches, [stats] = _read(path)
    read = {value for batch in batches if key in batch.data.column_names
            for value in batch.data.column(key).to_pylist()}
    expected = {i + 1 if fmt in NUMBERED else f"C{i + 1}" for i in range(len(good))}
    assert expected <= read, (stats, read)
    assert stats.error is None
    # every line is a header (TSV), blank, a record read, or a line left out and counted
    data_lines = [line for line in mixed if not BLANK.fullmatch(line)
                  and not (fmt == "zeek-tsv" and line.startswith(b"#"))]
    assert stats.records + stats.skipped[OVERSIZE] == len(data_lines), stats


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_any_configuration_file_is_read_or_refused_with_a_reason(tmp_path, content):
    config = tmp_path / "rpcwatch.toml"
    config.write_bytes(content)
    try:
        load_config(config)
    except ConfigError as exc:
        assert str(exc).startswith(str(config))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=1, max_size=3000))
def test_any_bytes_are_read_or_named_never_raised(tmp_path, content):
    path = tmp_path / "input"
    path.write_bytes(content)
    batches, [stats] = _read(path)
    assert stats.error is not None or stats.format != "unknown" or not content.strip()
