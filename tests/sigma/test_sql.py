"""Sigma semantics of the SQL path, on typed Arrow data, checked by hand and against the oracle."""
from __future__ import annotations

import textwrap

import pyarrow as pa
import pytest
from oracle import evaluate
from sigma.rule import SigmaRule

from rpcwatch.engines.duckdb import DuckDBEngine
from rpcwatch.sigma.compiler import compile_rule
from rpcwatch.sigma.logsources import BoundRule

EVENTS = [
    {"__id__": 0, "proto": "tcp", "port": 135, "port_s": "135", "flag": True, "flag_s": "true",
     "ip": "10.1.2.3", "image": "C:\\Windows\\System32\\svchost.exe", "tags": ["a", "B"], "ratio": 1.5,
     "note": "", "other": "C:\\WINDOWS\\system32\\svchost.exe"},
    {"__id__": 1, "proto": "TCP", "port": 445, "port_s": " 445", "flag": False, "flag_s": "False",
     "ip": "8.8.8.8", "image": "C:\\Temp\\a*b.exe", "tags": ["c"], "ratio": 0.5, "note": "100%",
     "other": "x"},
    {"__id__": 2, "proto": "udp", "port": None, "port_s": "n/a", "flag": None, "flag_s": None,
     "ip": "::FFFF:10.9.9.9", "image": "c:\\temp\\a_b.exe", "tags": None, "ratio": None, "note": None,
     "other": None},
    {"__id__": 3, "proto": None, "port": 135, "port_s": "0135", "flag": True, "flag_s": "T",
     "ip": "fd00::1", "image": None, "tags": [], "ratio": 135.0, "note": "a\\*b", "other": "c:\\temp"},
]


def run(detection: str, events=EVENTS) -> set[int]:
    """Rows the engine matches; asserts the oracle agrees."""
    yaml = "title: t\nlogsource: {product: test}\ndetection:\n" + textwrap.indent(textwrap.dedent(detection), "    ")
    compiled = compile_rule(SigmaRule.from_yaml(yaml))
    table = pa.Table.from_pylist(events)
    bound = BoundRule(compiled, "test", compiled.expr)
    found = set()
    for _, rows in DuckDBEngine().match(table, [bound]):
        found |= set(rows.column("__id__").to_pylist())
    expected = {e["__id__"] for e in table.to_pylist() if evaluate(compiled.expr, e)}
    assert found == expected, f"engine {sorted(found)} != oracle {sorted(expected)}"
    return found


@pytest.mark.parametrize("detection,expected", [
    ("sel: {proto: tcp}\ncondition: sel", {0, 1}),
    ("sel: {proto|cased: tcp}\ncondition: sel", {0}),
    ("sel: {port: 135}\ncondition: sel", {0, 3}),
    ("sel: {port_s: 135}\ncondition: sel", {0, 3}),
    ("sel: {port_s: 445}\ncondition: sel", {1}),
    ("sel: {port: '135'}\ncondition: sel", {0, 3}),
    ("sel: {port_s|lt: 200}\ncondition: sel", {0, 3}),
    ("sel: {ratio|gte: 1.5}\ncondition: sel", {0, 3}),
    ("sel: {flag: 'true'}\ncondition: sel", {0, 3}),
    ("sel: {flag: true}\ncondition: sel", {0, 3}),
    ("sel: {flag_s: true}\ncondition: sel", {0, 3}),
    ("sel: {flag_s: 'false'}\ncondition: sel", {1}),
    ("sel: {image|endswith: '\\svchost.exe'}\ncondition: sel", {0}),
    ("sel: {image: 'C:\\Windows\\*'}\ncondition: sel", set()),  # \\* is a literal asterisk
    ("sel: {image: 'C:\\Windows\\\\*'}\ncondition: sel", {0}),  # a backslash, then a wildcard
    ("sel: {image: 'C:\\Temp\\a\\*b.exe'}\ncondition: sel", {1}),
    ("sel: {image: 'c:\\temp\\a?b.exe'}\ncondition: sel", {1, 2}),
    ("sel: {image: 'c:\\temp\\a_b.exe'}\ncondition: sel", {2}),
    ("sel: {note|endswith: '%'}\ncondition: sel", {1}),
    ("sel: {note: ''}\ncondition: sel", {0}),
    ("sel: {note: 'a\\\\*b'}\ncondition: sel", {3}),
    ("sel: {proto: null}\ncondition: sel", {3}),
    ("sel: {missing: null}\ncondition: sel", {0, 1, 2, 3}),
    ("sel: {missing: x}\ncondition: not sel", {0, 1, 2, 3}),
    ("sel: {proto: tcp}\ncondition: not sel", {2, 3}),
    ("sel: {tags: b}\ncondition: sel", {0}),
    ("sel: {tags|contains: ''}\ncondition: sel", {0, 1}),
    ("sel: {ip|cidr: 10.0.0.0/8}\ncondition: sel", {0, 2}),
    ("sel: {ip|cidr: ['fc00::/7', '8.8.8.0/24']}\ncondition: sel", {1, 3}),
    ("sel: {image|re: '(?i)system32'}\ncondition: sel", {0}),
    ("sel: {image|re: 'system32'}\ncondition: sel", set()),  # regexes are case-sensitive
    ("sel: {image|re|i: 'TEMP'}\ncondition: sel", {1, 2}),
    ("sel: {image|exists: true}\ncondition: sel", {0, 1, 2}),
    ("sel: {image|exists: false}\ncondition: sel", {3}),
    ("sel: {other|fieldref: image}\ncondition: sel", {0}),
    ("sel: {image|fieldref|startswith: other}\ncondition: sel", {0}),
    ("sel: [svchost]\ncondition: sel", {0}),
    ("sel: ['a*b.exe']\ncondition: sel", {1, 2}),
    ("sel: ['a\\*b.exe']\ncondition: sel", {1}),
    ("a: {proto: tcp}\nb: {port: 445}\nc: {flag: true}\ncondition: a or b and not c", {0, 1}),
    ("a: {proto: tcp}\nb: {port: 445}\ncondition: all of them", {1}),
    ("sel_a: {proto: udp}\nsel_b: {port: 445}\n_x: {ip: none}\ncondition: 1 of sel_*", {1, 2}),
    ("sel:\n  - proto: udp\n  - port: 445\ncondition: sel", {1, 2}),
    ("sel:\n  port:\n    - 135\n    - 445\ncondition: sel", {0, 1, 3}),
    ("sel:\n  image|contains|all: [Windows, svchost]\ncondition: sel", {0}),
])
def test_sigma_semantics(detection, expected):
    assert run(detection) == expected


def test_missing_and_unset_values_under_not():
    """Sigma's NOT is two-valued: a field that is missing or unset does not equal anything."""
    assert run("sel: {port: 135}\ncondition: not sel") == {1, 2}
    assert run("sel: {proto: tcp}\nfil: {port: 445}\ncondition: sel and not fil") == {0}
