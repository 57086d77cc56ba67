"""Zeek's own regression baselines next to what the pcap reader makes of the same traces.

``shared/corpus/zeek-btest`` holds traces from Zeek's btest suite with the ``conn.log``
Zeek's tests expect from them (``pairs.tsv``), and ``shared/corpus/zeek-zeek`` the
``dce_rpc.log`` baselines of Zeek's DCE/RPC tests. Baselines mask timestamps and uids, so
rows are matched on the 5-tuple and, where a 5-tuple has several rows, in order. Every
field is compared on the union of rows: a row only one side has disagrees in every field.

Used by ``tests/sources/test_pcap_zeek_baselines.py`` and ``bench/zeek_agreement.py``.
"""
from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from rpcwatch.sources.base import ReadStats
from rpcwatch.sources.inputs import InputFile, open_decompressed
from rpcwatch.sources.pcap import track_capture

from .zeek_logs import read_baseline

KEY_FIELDS = ("proto", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p")
CONN_FIELDS = ("conn_state", "history", "orig_bytes", "resp_bytes", "orig_pkts", "resp_pkts",
               "orig_ip_bytes", "resp_ip_bytes", "duration", "missed_bytes")
#: the fields a ``hist:N`` baseline (a line ``history, conn_state`` printed by the test) holds
HISTORY_FIELDS = ("history", "conn_state")
DCE_RPC_FIELDS = ("named_pipe", "endpoint", "operation", "rtt")
SECONDS_FIELDS = {"duration", "rtt"}

ZEEK_TESTS = "zeek-zeek/testing/btest"
#: Zeek's DCE/RPC baselines whose trace is in the corpus (the test reads that trace);
#: smb1-transaction-dcerpc is DCE/RPC over SMB and its trace is not in the corpus
DCE_RPC_PAIRS = {
    "dce_rpc-mapi": ("scripts.base.protocols.dce-rpc.mapi", "dce-rpc/mapi.pcap"),
    "dce_rpc-context": ("scripts.base.protocols.dce-rpc.context", "dce-rpc/cs_window7-join_stream092.pcap"),
    "dce_rpc-netlogon": ("scripts.base.protocols.dce-rpc.dce_rpc_netlogon", "dce-rpc/dce_rpc_netlogon.pcapng"),
}


@dataclass(frozen=True)
class Pair:
    """A trace and the baseline Zeek's test expects: ``kind`` is ``conn`` (a conn.log),
    ``hist:N`` (line N of a printed ``history, conn_state``) or ``dce_rpc``."""

    id: str
    trace: Path
    baseline: Path
    kind: str

    @property
    def fields(self) -> tuple[str, ...]:
        if self.kind == "dce_rpc":
            return DCE_RPC_FIELDS
        return HISTORY_FIELDS if self.kind.startswith("hist:") else CONN_FIELDS


@dataclass(frozen=True)
class Difference:
    pair: str
    row: str  # the 5-tuple and, for a repeated 5-tuple, its position
    field: str
    zeek: str | None
    ours: str | None


def baseline_pairs(corpus: Path) -> list[Pair]:
    """Every pair of ``zeek-btest/pairs.tsv`` and the DCE/RPC baselines with their traces."""
    root = corpus / "zeek-btest"
    with open(root / "pairs.tsv", newline="") as listing:
        rows = [row for row in csv.reader(listing, delimiter="\t") if row and not row[0].startswith("#")]
    pairs = [Pair(row[0], root / row[3], root / row[2], row[4]) for row in rows]
    for name, (baseline, trace) in DCE_RPC_PAIRS.items():
        pairs.append(Pair(name, corpus / ZEEK_TESTS / "Traces" / trace,
                          corpus / ZEEK_TESTS / "Baseline" / baseline / "dce_rpc.log", "dce_rpc"))
    return pairs


def reader_rows(trace: Path, table: str) -> list[dict]:
    """The rows of ``table`` the pcap reader makes of ``trace``."""
    stats = ReadStats(str(trace))
    _source, _head, stream = open_decompressed(InputFile(str(trace), lambda: open(trace, "rb")), stats)
    rows = []
    with stream:
        for batch in track_capture(stream, stats, path=str(trace)):
            if batch.table == table:
                rows.extend(batch.data.to_pylist())
    return rows


def zeek_rows(pair: Pair) -> list[dict]:
    if pair.kind.startswith("hist:"):
        line = pair.baseline.read_text().splitlines()[int(pair.kind.split(":")[1])]
        history, state = line.split(", ")
        return [{"history": history, "conn_state": state}]
    return read_baseline(pair.baseline)


def compare(pair: Pair) -> tuple[int, list[Difference]]:
    """How many rows were compared (the union of both sides) and every field that differs."""
    ours = reader_rows(pair.trace, "zeek.dce_rpc" if pair.kind == "dce_rpc" else "zeek.conn")
    zeek = zeek_rows(pair)
    if pair.kind.startswith("hist:"):  # one connection per trace; the print has no 5-tuple
        keyed_zeek, keyed_ours = {"the connection": zeek}, {"the connection": ours}
    else:
        keyed_zeek, keyed_ours = _by_key(zeek), _by_key(ours)
    rows, differences = 0, []
    for key in sorted(set(keyed_zeek) | set(keyed_ours)):
        theirs, mine = keyed_zeek.get(key, []), keyed_ours.get(key, [])
        for index in range(max(len(theirs), len(mine))):
            rows += 1
            name = key if max(len(theirs), len(mine)) == 1 else f"{key} #{index + 1}"
            zeek_row = theirs[index] if index < len(theirs) else None
            our_row = mine[index] if index < len(mine) else None
            for field in pair.fields:
                expected = _text(field, zeek_row[field]) if zeek_row is not None else "(no row)"
                found = _text(field, our_row[field]) if our_row is not None else "(no row)"
                if expected != found:
                    differences.append(Difference(pair.id, name, field, expected, found))
    return rows, differences


def agreement(pairs: list[Pair]) -> tuple[dict[str, tuple[int, int]], list[Difference]]:
    """Per field, (rows that agree, rows compared) over ``pairs``, and every difference."""
    compared: dict[str, int] = defaultdict(int)
    differing: dict[str, int] = defaultdict(int)
    differences = []
    for pair in pairs:
        rows, found = compare(pair)
        for field in pair.fields:
            compared[field] += rows
        for difference in found:
            differing[difference.field] += 1
        differences.extend(found)
    return {field: (compared[field] - differing[field], compared[field]) for field in compared}, differences


def _by_key(rows: list[dict]) -> dict[str, list[dict]]:
    keyed: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        proto, orig_h, orig_p, resp_h, resp_p = (str(row.get(f, "tcp")) for f in KEY_FIELDS)
        keyed[f"{proto} {orig_h}:{orig_p} > {resp_h}:{resp_p}"].append(row)
    return keyed


def _text(field: str, value) -> str | None:
    """A value as Zeek's ASCII writer prints it (unset: None)."""
    if value is None or value == "-":
        return None
    if field in SECONDS_FIELDS:
        return f"{float(value):.6f}"
    return str(value)
