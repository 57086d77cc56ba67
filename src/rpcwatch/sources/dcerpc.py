"""Connection-oriented DCE/RPC (v5) over TCP, turned into Zeek ``dce_rpc.log`` records.

The wire format follows Zeek's DCE/RPC analyzer (``dce_rpc-protocol.pac``): 16-byte PDU
headers, bodies parsed on the last fragment, the opnum of a response taken from the last
request on the same presentation context. What becomes a log record follows Zeek's
``base/protocols/dce-rpc/main.zeek`` closely, including its quirks (a record is written
on each response; a call still open when the connection ends is written once more with
the previous call's operation), so the Zeek ``dce_rpc`` rules see the same rows.

Differences from Zeek, on purpose: alter_context PDUs are parsed like binds (Zeek skips
them and then guesses the interface of their contexts), and the port an endpoint-mapper
``ept_map`` reply hands out is remembered so the next connection to it is analysed even
when its first PDU does not match Zeek's detection signature.
"""
from __future__ import annotations

import json
import re
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

PTYPE_REQUEST = 0
PTYPE_RESPONSE = 2
PTYPE_BIND = 11
PTYPE_BIND_ACK = 12
PTYPE_ALTER_CONTEXT = 14
HEADER_LEN = 16
FLAG_FIRST = 0x01
FLAG_LAST = 0x02
FLAG_OBJECT = 0x80
EPMAPPER_UUID = "e1af8308-5d1f-11c9-91a4-08002b14a0fa"
EPT_MAP = 3
#: only this much of a (reassembled) PDU body is kept: enough for every field read here
BODY_LIMIT = 8192
#: at most this many out-of-order TCP segments are held per direction before a gap is skipped
HELD_SEGMENTS = 64

#: Zeek's DPD signature for DCE/RPC on ports other than 135 (``dpd.sig``)
SIGNATURE = re.compile(rb"\x05[\x00\x01][\x00-\x13]")
#: protocol tower floor "TCP port" (lhs: protocol 0x07; rhs: 2-byte port, big-endian)
TCP_FLOOR = re.compile(rb"\x01\x00\x07\x02\x00(..)", re.DOTALL)
IP_FLOOR = re.compile(rb"\x01\x00\x09\x04\x00(....)", re.DOTALL)


@dataclass(frozen=True)
class NameTables:
    """Interface (UUID) and operation (opnum) names, as Zeek logs them."""

    interfaces: dict[str, str]
    operations: dict[tuple[str, int], str]
    ignored: dict[str, frozenset[str]]

    def endpoint(self, interface: str) -> str:
        return self.interfaces.get(interface) or f"unknown-{interface}"

    def operation(self, interface: str, opnum: int) -> str:
        return self.operations.get((interface, opnum)) or f"unknown-{opnum}"

    def is_ignored(self, endpoint: str, operation: str) -> bool:
        ignored = self.ignored.get(endpoint)
        return ignored is not None and (operation in ignored or "*" in ignored)


@lru_cache(maxsize=1)
def name_tables() -> NameTables:
    text = resources.files("rpcwatch.sources").joinpath("data/dce_rpc_names.json").read_text()
    raw = json.loads(text)
    interfaces, operations = {}, {}
    for interface, entry in raw["interfaces"].items():
        interfaces[interface] = entry["name"]
        for opnum, name in enumerate(entry.get("operations", [])):
            if name is not None:
                operations[(interface, opnum)] = name
    ignored = {endpoint: frozenset(names) for endpoint, names in raw["ignored_operations"].items()}
    return NameTables(interfaces, operations, ignored)


def looks_like_dce_rpc(payload: bytes) -> bool:
    """Zeek's detection signature, applied to the first payload of a direction."""
    return SIGNATURE.match(payload) is not None


@dataclass(frozen=True)
class DceRpcCall:
    """One ``dce_rpc.log`` row (connection fields are added by the caller)."""

    ts: float
    rtt: float | None
    named_pipe: str | None
    endpoint: str
    operation: str


@dataclass
class _CallInfo:
    """Zeek's ``DCE_RPC::Info`` record, reused across the calls of one connection."""

    ts: float
    rtt: float | None = None
    named_pipe: str | None = None
    endpoint: str | None = None
    operation: str | None = None


@dataclass
class _Direction:
    """Stream reassembly and PDU framing for one direction of the connection."""

    next_seq: int | None = None
    buffer: bytearray = field(default_factory=bytearray)
    held: dict[int, bytes] = field(default_factory=dict)
    fragments: dict[int, bytearray] = field(default_factory=dict)
    broken: bool = False


class DceRpcSession:
    """DCE/RPC state of one TCP connection: feed it payload, collect :class:`DceRpcCall`."""

    def __init__(self, on_problem: Callable[[str], None]):
        self.names = name_tables()
        self.calls: list[DceRpcCall] = []
        #: (address or None for "the server's", port) handed out by ept_map replies
        self.mapped_ports: list[tuple[bytes | None, int]] = []
        self.confirmed = False
        self._on_problem = on_problem
        self._directions = (_Direction(), _Direction())
        self._info: _CallInfo | None = None
        self._pending = False
        self._uuid: str | None = None
        self._named_pipe: str | None = None
        self._ctx_to_uuid: dict[int, str] = {}
        self._ctx_to_opnum: dict[int, int] = {}

    # -- stream -------------------------------------------------------------------------

    def deliver(self, is_orig: bool, seq: int, payload: bytes, ts: float) -> None:
        """Payload of one TCP segment at relative sequence number ``seq``."""
        direction = self._directions[0 if is_orig else 1]
        if direction.broken or not payload:
            return
        if direction.next_seq is None:
            direction.next_seq = seq
        if seq > direction.next_seq:
            self._hold(direction, seq, payload)
            return
        if seq < direction.next_seq:  # retransmission, possibly with new bytes at its end
            payload = payload[direction.next_seq - seq:]
            if not payload:
                return
        self._append(direction, payload, is_orig, ts)
        while direction.next_seq in direction.held:
            self._append(direction, direction.held.pop(direction.next_seq), is_orig, ts)

    def _hold(self, direction: _Direction, seq: int, payload: bytes) -> None:
        direction.held[seq] = payload
        if len(direction.held) > HELD_SEGMENTS:
            self._on_problem("DCE/RPC stream gap (analysis of that direction stopped)")
            direction.broken = True
            direction.held.clear()
            direction.buffer.clear()

    def _append(self, direction: _Direction, payload: bytes, is_orig: bool, ts: float) -> None:
        assert direction.next_seq is not None  # deliver() sets it before any payload is appended
        direction.next_seq += len(payload)
        direction.buffer += payload
        self._parse_pdus(direction, is_orig, ts)

    def _parse_pdus(self, direction: _Direction, is_orig: bool, ts: float) -> None:
        buffer = direction.buffer
        while len(buffer) >= HEADER_LEN:
            if buffer[0] != 5 or buffer[1] > 1:
                self._on_problem("not DCE/RPC v5 (analysis of that direction stopped)")
                direction.broken = True
                buffer.clear()
                return
            order = "<" if buffer[4] & 0x10 else ">"
            frag_len, auth_len, call_id = struct.unpack_from(order + "HHI", buffer, 8)
            if frag_len < HEADER_LEN:
                self._on_problem("DCE/RPC fragment length below header size (analysis stopped)")
                direction.broken = True
                buffer.clear()
                return
            if len(buffer) < frag_len:
                return
            pdu = bytes(buffer[:frag_len])
            del buffer[:frag_len]
            self._pdu(direction, pdu, order, auth_len, call_id, is_orig, ts)

    # -- PDUs ---------------------------------------------------------------------------

    def _pdu(self, direction: _Direction, pdu: bytes, order: str, auth_len: int, call_id: int,
             is_orig: bool, ts: float) -> None:
        ptype, flags = pdu[2], pdu[3]
        body_len = len(pdu) - HEADER_LEN - auth_len - (8 if auth_len else 0)
        if body_len < 0:
            self._on_problem("DCE/RPC auth length beyond the fragment")
            return
        self.confirmed = True
        body = self._reassembled(direction, pdu[HEADER_LEN:HEADER_LEN + body_len], flags, call_id)
        if body is None:
            return
        try:
            if ptype == PTYPE_BIND or ptype == PTYPE_ALTER_CONTEXT:
                self._bind(body, order, pdu[4], ts)
            elif ptype == PTYPE_BIND_ACK:
                self._bind_ack(body, order, ts)
            elif ptype == PTYPE_REQUEST:
                self._request(body, order, ts)
            elif ptype == PTYPE_RESPONSE:
                self._response(body, order, ts)
        except struct.error:
            self._on_problem(f"truncated DCE/RPC PDU body (type {ptype})")

    @staticmethod
    def _reassembled(direction: _Direction, fragment: bytes, flags: int, call_id: int) -> bytes | None:
        """The PDU body once its last fragment is in (as Zeek: bodies of earlier
        fragments are collected per call id; a lone fragment without the
        last-fragment flag is never parsed)."""
        first, last = flags & FLAG_FIRST, flags & FLAG_LAST
        pending = direction.fragments.get(call_id)
        if first and not last and pending is None:
            pending = direction.fragments[call_id] = bytearray()
        if pending is not None and len(pending) < BODY_LIMIT:
            pending += fragment[:BODY_LIMIT - len(pending)]
        if not last:
            return None
        if pending is None:
            return fragment
        del direction.fragments[call_id]
        return bytes(pending)

    def _bind(self, body: bytes, order: str, drep: int, ts: float) -> None:
        count = body[8]
        pos = 12
        for _ in range(count):
            context_id, syntaxes = struct.unpack_from(order + "HB", body, pos)
            interface = _uuid_text(body[pos + 4:pos + 20], drep)
            info = self._set_session(ts)
            self._ctx_to_uuid[context_id] = interface
            self._uuid = interface
            info.endpoint = self.names.endpoint(interface)
            pos += 24 + 20 * syntaxes

    def _bind_ack(self, body: bytes, order: str, ts: float) -> None:
        (size,) = struct.unpack_from(order + "H", body, 8)
        sec_addr = body[10:10 + size].rstrip(b"\x00").decode("latin-1")
        info = self._set_session(ts)
        if sec_addr:
            self._named_pipe = info.named_pipe = sec_addr

    def _request(self, body: bytes, order: str, ts: float) -> None:
        context_id, opnum = struct.unpack_from(order + "HH", body, 4)
        self._set_session(ts).ts = ts
        self._ctx_to_opnum[context_id] = opnum

    def _response(self, body: bytes, order: str, ts: float) -> None:
        (context_id,) = struct.unpack_from(order + "H", body, 4)
        opnum = self._ctx_to_opnum.get(context_id, 0)
        info = self._set_session(ts)
        # an endpoint is only ever named after a bind, which also sets the session's interface
        if info.endpoint is not None and self._uuid is not None:
            info.operation = self.names.operation(self._uuid, opnum)
            if info.ts != ts:
                info.rtt = ts - info.ts
        bound = self._ctx_to_uuid.get(context_id)
        if bound is not None:
            info.endpoint = self.names.endpoint(bound)
            info.operation = self.names.operation(bound, opnum)
        interface = bound if bound is not None else self._uuid
        if interface == EPMAPPER_UUID and opnum == EPT_MAP:
            self._remember_mapped_port(body[8:])
        self._write(info)
        self._pending = False

    def _remember_mapped_port(self, stub: bytes) -> None:
        port = TCP_FLOOR.search(stub)
        if port is None:
            return
        address = IP_FLOOR.search(stub)
        mapped = address.group(1) if address and address.group(1) != b"\x00\x00\x00\x00" else None
        self.mapped_ports.append((mapped, int.from_bytes(port.group(1), "big")))

    # -- Zeek's script-level state ------------------------------------------------------

    def _set_session(self, ts: float) -> _CallInfo:
        """The connection's call record, created on first use, with the session's names."""
        if self._info is None:
            self._info = _CallInfo(ts=ts)
        info = self._info
        self._pending = True
        if self._uuid is not None:
            info.endpoint = self.names.endpoint(self._uuid)
        if self._named_pipe is not None:
            info.named_pipe = self._named_pipe
        return info

    def _write(self, info: _CallInfo) -> None:
        if info.endpoint is None or info.operation is None:
            return
        if self.names.is_ignored(info.endpoint, info.operation):
            return
        self.calls.append(DceRpcCall(info.ts, info.rtt, info.named_pipe, info.endpoint, info.operation))

    def finish(self) -> None:
        """Connection end: Zeek writes a call whose response was never seen once more."""
        if self._pending and self._info is not None:  # _set_session sets both
            self._write(self._set_session(self._info.ts))
            self._pending = False


def _uuid_text(raw: bytes, drep: int) -> str:
    if len(raw) < 16:
        raise struct.error("short UUID")
    little_endian = drep & 0x10
    return str(uuid.UUID(bytes_le=raw) if little_endian else uuid.UUID(bytes=raw))
