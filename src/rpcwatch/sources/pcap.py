"""Packet captures (pcap, pcapng; gzip is undone before) as Zeek ``conn`` and ``dce_rpc`` logs.

The capture is streamed record by record (:mod:`~rpcwatch.sources.capture`), each frame's
headers decoded (:mod:`~rpcwatch.sources.packets`), packets grouped into connections the
way Zeek does it (:mod:`~rpcwatch.sources.connections`) and DCE/RPC parsed where Zeek would
(:mod:`~rpcwatch.sources.dcerpc`). Finished connections become rows of ``zeek.conn`` and
their DCE/RPC calls rows of ``zeek.dce_rpc``, with the columns and Arrow types of the Zeek
log reader, so the Zeek rules run unchanged on captures.
"""
from __future__ import annotations

import hashlib
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc

from rpcwatch.sources.base import MAX_EXAMPLES, Reader, ReadStats, TableBatch, register
from rpcwatch.sources.capture import is_capture, iter_records
from rpcwatch.sources.connections import PROTO_NAMES, Connection, ConnectionTable
from rpcwatch.sources.dcerpc import DceRpcSession
from rpcwatch.sources.inputs import InputFile
from rpcwatch.sources.packets import NO_CONNECTION, decode
from rpcwatch.sources.prefilter import PrefilterPlan

# the worker pool of the plain-log scanner is shared
from rpcwatch.workers import PARALLEL_MIN_SIZE, worker_count, worker_pool

BATCH_ROWS = 65536
BASE62_DIGITS = pa.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))
#: a uid is two halves of 47 bits (8 base62 digits each), nearly the 96 bits of Zeek's
UID_HALF_MASK = (1 << 47) - 1
UID_HALF_DIGITS = 8
UID_MULTIPLIERS = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F)
#: how much of the capture's start seeds the connection uids
UID_SEED_BYTES = 1 << 16

ID_FIELDS = [("id.orig_h", pa.string()), ("id.orig_p", pa.int64()),
             ("id.resp_h", pa.string()), ("id.resp_p", pa.int64())]
CONN_SCHEMA = pa.schema([
    ("ts", pa.float64()), ("uid", pa.string()), *ID_FIELDS,
    ("proto", pa.string()), ("service", pa.string()), ("duration", pa.float64()),
    ("orig_bytes", pa.int64()), ("resp_bytes", pa.int64()), ("conn_state", pa.string()),
    ("local_orig", pa.bool_()), ("local_resp", pa.bool_()), ("missed_bytes", pa.int64()),
    ("history", pa.string()), ("orig_pkts", pa.int64()), ("orig_ip_bytes", pa.int64()),
    ("resp_pkts", pa.int64()), ("resp_ip_bytes", pa.int64()),
    ("tunnel_parents", pa.list_(pa.string())),
])
DCE_RPC_SCHEMA = pa.schema([
    ("ts", pa.float64()), ("uid", pa.string()), *ID_FIELDS, ("rtt", pa.float64()),
    ("named_pipe", pa.string()), ("endpoint", pa.string()), ("operation", pa.string()),
])
#: a capture knows nothing of Site::local_nets
ALWAYS_NULL = {"local_orig", "local_resp"}


@lru_cache(maxsize=1 << 16)
def address_text(raw: bytes) -> str:
    """Canonical text of a 4- or 16-byte address (IPv6 compressed, lowercase)."""
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


class UidMaker:
    """Zeek-like uids (``C`` + 16 base62 digits) for a whole column of connection numbers.

    Each half of the uid is ``(number * odd constant + key) mod 2**47``, a one-to-one
    mapping, with the key taken from the capture's first bytes: the same capture always
    gets the same uids, different captures different ones, and no two connections of a
    capture share one. It is computed with Arrow kernels, batch by batch.
    """

    def __init__(self, seed: bytes):
        digest = hashlib.blake2b(seed, digest_size=16).digest()
        self._keys = (int.from_bytes(digest[:8], "little") & UID_HALF_MASK,
                      int.from_bytes(digest[8:], "little") & UID_HALF_MASK)

    def column(self, numbers: pa.Array) -> pa.Array:
        value = pc.cast(numbers, pa.uint64())
        digits = []
        for multiplier, key in zip(UID_MULTIPLIERS, self._keys):
            half = pc.bit_wise_and(pc.add(pc.multiply(value, _u64(multiplier)), _u64(key)),
                                   _u64(UID_HALF_MASK))
            for _ in range(UID_HALF_DIGITS):
                quotient = pc.divide(half, _u64(62))
                digits.append(pc.take(BASE62_DIGITS, pc.subtract(half, pc.multiply(quotient, _u64(62)))))
                half = quotient
        return pc.binary_join_element_wise(pa.scalar("C"), *digits, "")


def _u64(value: int) -> pa.Scalar:
    return pa.scalar(value, pa.uint64())


@dataclass
class LogRows:
    """Rows of one Zeek log, kept as tuples (in schema order, without the always-null
    columns) until a batch is full; a batch turns them into columns in one step."""

    schema: pa.Schema
    rows: list[tuple] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, limit: int, uids: UidMaker) -> pa.Table:
        """The first ``limit`` rows as a table; they are removed from the list. Rows hold
        the connection's number where the uid goes; uids are made for the whole column."""
        taken = self.rows[:limit]
        del self.rows[:limit]
        columns = iter(zip(*taken)) if taken else iter(() for _ in self.schema)
        arrays = []
        for f in self.schema:
            if f.name in ALWAYS_NULL:
                arrays.append(pa.nulls(len(taken), type=f.type))
            elif f.name == "uid":
                arrays.append(uids.column(pa.array(next(columns), type=pa.int64())))
            elif f.name == "tunnel_parents":
                arrays.append(_parent_uids(pa.array(next(columns), type=pa.int64()), uids))
            else:
                arrays.append(pa.array(next(columns), type=f.type))
        return pa.Table.from_arrays(arrays, schema=self.schema)


def _parent_uids(numbers: pa.Array, uids: UidMaker) -> pa.Array:
    """Zeek's ``tunnel_parents``: the set holding the uid of what carried the connection,
    unset for a connection seen outside any tunnel."""
    if numbers.null_count == len(numbers):
        return pa.nulls(len(numbers), type=pa.list_(pa.string()))
    offsets = pa.array(range(len(numbers) + 1), type=pa.int32())
    return pa.ListArray.from_arrays(offsets, uids.column(numbers), mask=pc.is_null(numbers))


class ZeekLogBuilder:
    """Turns finished connections into ``zeek.conn`` and ``zeek.dce_rpc`` rows."""

    def __init__(self, uid: UidMaker):
        self.uid = uid
        self.conn = LogRows(CONN_SCHEMA)
        self.dce_rpc = LogRows(DCE_RPC_SCHEMA)

    def add(self, conn: Connection) -> None:
        uid = conn.number  # replaced by the uid when the batch is built
        key = conn.key
        ends = (address_text(key.orig_h), key.orig_p, address_text(key.resp_h), key.resp_p)
        self._add_conn(conn, uid, ends)
        if conn.dce is not None:
            self._add_calls(conn.dce, uid, ends)

    def _add_conn(self, conn: Connection, uid: int, ends: tuple) -> None:
        orig, resp = conn.orig, conn.resp
        orig_bytes: int | None
        resp_bytes: int | None
        orig_bytes, resp_bytes, state, missed, history = conn.summary()
        duration: float | None = conn.last_time - conn.ts
        if conn.last_time <= conn.ts:  # Zeek leaves duration and sizes unset for a connection that took no time
            duration = orig_bytes = resp_bytes = None
        self.conn.rows.append((
            conn.ts, uid, *ends, PROTO_NAMES[conn.proto],
            "dce_rpc" if conn.dce is not None and conn.dce.confirmed else None,
            duration, orig_bytes, resp_bytes, state, missed, history,
            orig.packets, orig.ip_bytes, resp.packets, resp.ip_bytes, conn.tunnel))

    def _add_calls(self, dce: DceRpcSession, uid: int, ends: tuple) -> None:
        self.dce_rpc.rows.extend(
            (call.ts, uid, *ends, call.rtt, call.named_pipe, call.endpoint, call.operation)
            for call in dce.calls)

    def batches(self, path: str, final: bool = False) -> Iterator[TableBatch]:
        """Full batches of at most ``BATCH_ROWS`` rows (and, when ``final``, the rest)."""
        for table, rows in (("zeek.conn", self.conn), ("zeek.dce_rpc", self.dce_rpc)):
            while len(rows) >= BATCH_ROWS or (final and len(rows)):
                yield TableBatch(table, rows.take(BATCH_ROWS, self.uid), path, PcapReader.format_name)


@dataclass
class _Problems:
    """Per-reason counts of things that went wrong, reported once at the end."""

    #: problems in the analysis of packets that were still counted in their connection
    analysis: bool = False
    counts: dict[str, list[int]] = field(default_factory=dict)

    def count(self, reason: str, packet: int) -> None:
        entry = self.counts.get(reason)
        if entry is None:
            self.counts[reason] = [1, packet]
        else:
            entry[0] += 1

    def report(self, stats: ReadStats) -> None:
        for reason, (count, first) in self.counts.items():
            where = f"first at packet {first}"
            if self.analysis or reason.startswith(NO_CONNECTION):
                stats.warn(reason, count, where=where)  # nothing Zeek would log is missing
            else:
                stats.skip(reason + " (packet skipped)", count, where=where)


@dataclass(frozen=True)
class Shard:
    """One of ``count`` workers reading the same capture: it tracks the packets between
    the pairs of hosts that fall to it (so an endpoint-mapper answer and the connection it
    announces stay together), and only worker 0 reports what concerns every packet."""

    index: int
    count: int

    def owns(self, src: bytes, dst: bytes) -> bool:
        # symmetric in the two addresses, and the same in every process (unlike hash())
        return (int.from_bytes(src, "big") ^ int.from_bytes(dst, "big")) % self.count == self.index

    @property
    def reports(self) -> bool:
        return self.index == 0


def track_capture(stream: BinaryIO, stats: ReadStats, path: str = "",
                  observer: Callable[[Connection], None] | None = None,
                  shard: Shard | None = None) -> Iterator[TableBatch]:
    """Read a capture stream and yield its conn and dce_rpc rows in bounded batches.
    ``observer`` also sees every finished :class:`Connection` (e.g. for its frame bytes)."""
    seed = stream.read(UID_SEED_BYTES)
    builder = ZeekLogBuilder(UidMaker(seed))
    packet_problems, analysis_problems = _Problems(), _Problems(analysis=True)
    reports = shard is None or shard.reports
    capture_stats = stats if reports else ReadStats(stats.path)
    count = 0

    def finished(conn: Connection) -> None:
        builder.add(conn)
        if observer is not None:
            observer(conn)

    table = ConnectionTable(finished, lambda reason: analysis_problems.count(reason, count))
    packet, tunnelled = table.packet, table.tunnelled
    conn_rows, dce_rpc_rows = builder.conn.rows, builder.dce_rpc.rows
    for ts, link_type, frame, wire_len in iter_records(stream, capture_stats, head=seed):
        count += 1
        decoded = decode(link_type, frame)
        if isinstance(decoded, tuple):
            if shard is not None and not shard.owns(decoded[1], decoded[2]):
                continue
            packet(count, ts, wire_len, decoded)
        elif isinstance(decoded, str):
            if reports:  # every shard sees every frame: one counts
                packet_problems.count(decoded, count)
            continue
        else:  # in a tunnel: what the inner packet lacks is counted by the shard that owns it
            if shard is not None and not shard.owns(decoded.src, decoded.dst):
                continue
            problem = tunnelled(count, ts, wire_len, decoded)
            if problem is not None:
                packet_problems.count(problem, count)
        if len(conn_rows) >= BATCH_ROWS or len(dce_rpc_rows) >= BATCH_ROWS:
            yield from builder.batches(path)
    table.flush()
    if reports:
        stats.records = count
    packet_problems.report(stats)
    analysis_problems.report(stats)
    yield from builder.batches(path, final=True)


@register
class PcapReader(Reader):
    """pcap (both byte orders, micro- and nanosecond) and pcapng captures."""

    format_name = "pcap"

    @classmethod
    def sniff(cls, head: bytes) -> bool:
        return is_capture(head)

    def read(self, source: InputFile, stream: BinaryIO, stats: ReadStats,
             prefilter: PrefilterPlan | None = None) -> Iterator[TableBatch]:
        stats.format = self.format_name
        disk_path = source.disk_path
        pool = worker_pool() if disk_path and (source.size or 0) >= PARALLEL_MIN_SIZE else None
        if pool is None or disk_path is None:
            yield from track_capture(stream, stats, path=source.path)
        else:
            yield from track_in_workers(pool, disk_path, source, stats)


def track_in_workers(pool: Executor, disk_path: str, source: InputFile, stats: ReadStats) -> Iterator[TableBatch]:
    """A large capture on disk (``source``, at ``disk_path``), tracked by every worker
    process, each for its share of the host pairs. Workers spill their batches to Arrow IPC
    files, read back one batch at a time in worker order, so memory stays bounded and the
    output does not depend on timing."""
    shards = [Shard(index, worker_count()) for index in range(worker_count())]
    with tempfile.TemporaryDirectory(prefix="rpcwatch-pcap-") as spill:
        futures = [pool.submit(_track_shard, disk_path, source.path, shard, spill) for shard in shards]
        for future in futures:
            shard_stats, spilled = future.result()
            _merge_stats(stats, shard_stats)
            if source.progress is not None:
                source.progress((source.size or 0) // len(shards))
            for table, file in spilled.items():
                with pa.ipc.open_stream(file) as reader:
                    for batch in reader:
                        yield TableBatch(table, pa.Table.from_batches([batch]), source.path,
                                         PcapReader.format_name)
                os.unlink(file)


def _track_shard(disk_path: str, path: str, shard: Shard, spill: str) -> tuple[ReadStats, dict[str, str]]:
    """Worker side of :func:`track_in_workers`."""
    stats = ReadStats(path)
    files: dict[str, str] = {}
    writers: dict[str, pa.ipc.RecordBatchStreamWriter] = {}
    with open(disk_path, "rb") as stream:
        for batch in track_capture(stream, stats, path=path, shard=shard):
            writer = writers.get(batch.table)
            if writer is None:
                files[batch.table] = os.path.join(spill, f"{shard.index}.{batch.table}.arrows")
                writer = writers[batch.table] = pa.ipc.new_stream(files[batch.table], batch.data.schema)
            writer.write_table(batch.data)
    for writer in writers.values():
        writer.close()
    return stats, files


def _merge_stats(total: ReadStats, part: ReadStats) -> None:
    total.records += part.records
    total.bytes_read += part.bytes_read
    total.skipped.update(part.skipped)
    total.warnings.update(part.warnings)
    total.lost.extend(part.lost)
    for reason, examples in part.examples.items():
        seen = total.examples.setdefault(reason, [])
        seen.extend(examples[:MAX_EXAMPLES - len(seen)])
