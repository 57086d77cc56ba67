"""Packets to Zeek-``conn.log``-shaped connections.

TCP follows Zeek's ``TCPSessionAdapter``: per-endpoint states (inactive, SYN sent,
SYN-ACK sent, partial, established, closed, reset) advanced by each packet's flags,
sequence space relative to the first sequence number (payload sizes come from sequence
numbers, as in Zeek), the ``history`` letters with Zeek's once-only and logarithmic
rules, and ``conn_state`` derived from the two end states exactly as ``conn_state()`` in
Zeek's ``base/protocols/conn/main.zeek``. UDP and ICMP follow Zeek's simpler rules;
ICMP puts type and code (or the counterpart type) in the port fields.

Connections are removed on Zeek-like timers (attempt and close delays, inactivity) so a
multi-GB capture keeps only live connections in memory.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

from rpcwatch.sources.dcerpc import DceRpcSession, looks_like_dce_rpc
from rpcwatch.sources.packets import ICMP, ICMP6, TCP, UDP, Decoded

# Endpoint states (Zeek's TCP_ENDPOINT_*)
INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET = range(7)

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
SEQ_MASK = 0xFFFFFFFF
TOO_LARGE_SEQ_DELTA = 1 << 20

# Zeek's timers (seconds): tcp_attempt_delay, tcp_close_delay, *_inactivity_timeout
ATTEMPT_DELAY = 5.0
CLOSE_DELAY = 5.0
INACTIVITY_TIMEOUT = {TCP: 300.0, UDP: 60.0, ICMP: 60.0, ICMP6: 60.0}
#: how often (in capture time) idle connections are looked for
SWEEP_INTERVAL = 1.0

DCE_RPC_PORT = 135
#: remembered endpoint-mapper answers (address, port), oldest dropped first
EXPECTED_LIMIT = 65536

#: Zeek's ``likely_server_ports`` from the analyzers it loads by default: decides which
#: side of a connection seen without its SYN (or a UDP flow) is the server
LIKELY_SERVER_PORTS = {
    TCP: frozenset({21, 22, 23, 25, 53, 80, 81, 88, 102, 110, 135, 139, 143, 389, 443, 445,
                    502, 513, 514, 563, 585, 587, 614, 631, 636, 989, 990, 992, 993, 995,
                    1080, 1433, 1723, 2811, 3128, 3268, 3306, 3389, 5222, 5223, 5269, 5432,
                    5900, 5901, 5902, 5903, 6379, 6666, 6667, 6668, 6669, 8000, 8080,
                    8888, 20000}),
    UDP: frozenset({53, 67, 68, 69, 88, 123, 137, 138, 161, 162, 500, 514, 1812, 1813, 2152,
                    3544, 4789, 5060, 5353, 5355, 6081}),
}

ICMP4_COUNTERPART = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
ICMP6_COUNTERPART = {128: 129, 129: 128, 130: 131, 131: 130, 133: 134, 134: 133, 135: 136,
                     136: 135, 139: 140, 140: 139, 141: 142, 142: 141, 144: 145, 145: 144,
                     146: 147, 147: 146}

PROTO_NAMES = {TCP: "tcp", UDP: "udp", ICMP: "icmp", ICMP6: "icmp"}
#: Zeek's test for "originator sent a SYN then a RST, nothing from the responder"
RSTOS0_HISTORY = re.compile(r"\^?S[^HAFGIQ]*R.*")


def seq_delta(a: int, b: int) -> int:
    """Signed 32-bit distance from sequence number ``b`` to ``a``."""
    return ((a - b + 0x80000000) & SEQ_MASK) - 0x80000000


class Endpoint:
    """One side of a connection. Sequence numbers other than ``start`` are relative to it
    and unbounded, so connections past 4 GiB need no wrap counting."""

    __slots__ = ("state", "prev_state", "start", "last", "ack", "fin_count", "did_close",
                 "last_syn", "last_fin", "last_rst", "seen", "rxmit", "rxmit_next",
                 "zero_windows", "zero_windows_next", "packets", "ip_bytes", "wire_bytes",
                 "payload_bytes", "missed")

    def __init__(self) -> None:
        self.state = self.prev_state = INACTIVE
        self.start = self.last = self.ack = 0
        self.fin_count = 0
        self.did_close = False
        self.last_syn = self.last_fin = self.last_rst = 0
        self.seen = 0  # history letters already recorded (bit mask)
        self.rxmit = self.zero_windows = 0
        self.rxmit_next = self.zero_windows_next = 1
        self.packets = self.ip_bytes = self.wire_bytes = 0
        self.payload_bytes = 0  # UDP/ICMP payload (TCP sizes come from sequence numbers)
        self.missed = 0

    def set_state(self, state: int) -> None:
        self.prev_state = self.state
        self.state = state

    def init_seq(self, start: int, last: int) -> None:
        self.start = start & SEQ_MASK
        self.ack = 0
        self.last = last

    def relative(self, seq: int, reference: int) -> int:
        """``seq`` in this endpoint's relative space, taken near ``reference``."""
        return reference + seq_delta(seq, (self.start + reference) & SEQ_MASK)

    def tcp_size(self, peer: Endpoint) -> int:
        """Zeek's ``TCP_Endpoint::Size()``: payload bytes from the sequence space."""
        if (self.prev_state == SYN_SENT and self.state == RESET and peer.state == INACTIVE
                and self.ack not in (0, 1)):
            return 0
        size = max(self.last, self.ack)
        if size > 0:
            size -= 1  # the SYN's sequence number
        if self.fin_count and size > 0:
            size -= 1
        return size


# history bits, per endpoint
H_SYN, H_FIN, H_RST, H_FIN_RST, H_DATA, H_ACK, H_MULTI = 1, 2, 4, 8, 16, 32, 64


class ConnectionKey(NamedTuple):
    """Addresses and ports as the originator and responder of a connection."""

    orig_h: bytes
    orig_p: int
    resp_h: bytes
    resp_p: int


class Connection:
    __slots__ = ("proto", "key", "flipped", "number", "ts", "last_time", "orig", "resp", "history",
                 "dce", "dce_checked", "dce_held", "attempt_deadline")

    def __init__(self, proto: int, key: ConnectionKey, number: int, ts: float, flipped: bool):
        self.proto = proto
        self.key = key
        #: the first packet came from the responder
        self.flipped = flipped
        self.number = number  # position of its first packet in the capture (for uids)
        self.ts = self.last_time = ts
        self.orig = Endpoint()
        self.resp = Endpoint()
        self.history = ["^"] if flipped else []
        self.dce: DceRpcSession | None = None
        self.dce_checked = 0  # directions whose first payload was checked (bit 1 orig, 2 resp)
        self.dce_held: list[tuple[bool, int, bytes, float]] = []
        self.attempt_deadline = 0.0

    # -- history ------------------------------------------------------------------------

    def check_history(self, is_orig: bool, bit: int, code: str) -> bool:
        """Record ``code`` the first time ``bit`` is seen from this side; True if seen before."""
        endpoint = self.orig if is_orig else self.resp
        if endpoint.seen & bit:
            return True
        endpoint.seen |= bit
        self.history.append(code if is_orig else code.lower())
        return False

    def add_history(self, is_orig: bool, code: str) -> None:
        self.history.append(code if is_orig else code.lower())

    # -- summary ------------------------------------------------------------------------

    def summary(self) -> tuple[int, int, str, int, str | None]:
        """Payload sizes, ``conn_state``, missed bytes and ``history``, as Zeek logs them."""
        history = "".join(self.history) or None
        orig, resp = self.orig, self.resp
        if self.proto == TCP:
            sizes = orig.tcp_size(resp), resp.tcp_size(orig)
            missed = orig.missed + resp.missed + max(0, orig.ack - orig.last) + max(0, resp.ack - resp.last)
            return (*sizes, _tcp_conn_state(orig.state, resp.state, history or "", sizes), missed, history)
        if self.proto == UDP:
            if orig.packets:
                state = "SF" if resp.packets else "S0"
            else:
                state = "SHR" if resp.packets else "OTH"
        else:
            state = "OTH"
        return orig.payload_bytes, resp.payload_bytes, state, 0, history

    def conn_state(self) -> str:
        return self.summary()[2]


def _tcp_conn_state(os: int, rs: int, history: str, sizes: tuple[int, int]) -> str:
    """Zeek's ``conn_state()`` for TCP."""
    o_inactive = os == INACTIVE or os == PARTIAL
    r_inactive = rs == INACTIVE or rs == PARTIAL
    if rs == RESET:
        if os == SYN_SENT or os == SYN_ACK_SENT or (os == RESET and sizes == (0, 0)):
            return "REJ"
        return "RSTRH" if o_inactive else "RSTR"
    if os == RESET:
        if r_inactive:
            return "RSTOS0" if _rstos0(history) else "OTH"
        return "RSTO"
    if rs == CLOSED and os == CLOSED:
        return "SF"
    if os == CLOSED:
        return "SH" if r_inactive else "S2"
    if rs == CLOSED:
        return "SHR" if o_inactive else "S3"
    if os == SYN_SENT and rs == INACTIVE:
        return "S0"
    if os == ESTABLISHED and rs == ESTABLISHED:
        return "S1"
    return "OTH"


def _rstos0(history: str) -> bool:
    return RSTOS0_HISTORY.fullmatch(history) is not None


ProblemCounter = Callable[[str], None]


class ConnectionTable:
    """Live connections; finished ones are handed to ``on_finished`` as they end."""

    def __init__(self, on_finished: Callable[[Connection], None], on_problem: ProblemCounter):
        self._live: OrderedDict[tuple, Connection] = OrderedDict()
        self._on_finished = on_finished
        self._on_problem = on_problem
        self._next_sweep = 0.0
        self._expected_dce: OrderedDict[tuple[bytes, int], None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._live)

    # -- packets ------------------------------------------------------------------------

    def packet(self, number: int, ts: float, wire_len: int, decoded: Decoded) -> None:
        """One decoded packet (see :data:`~rpcwatch.sources.packets.Decoded`); ``number``
        is its position in the capture (a connection is numbered by its first packet)."""
        proto, src, dst, sport, dport, ip_len, payload_len, payload, flags, seq, ack, window = decoded
        if proto == ICMP or proto == ICMP6:
            counterpart = ICMP4_COUNTERPART if proto == ICMP else ICMP6_COUNTERPART
            dport = counterpart.get(sport, dport)
        # a connection is filed under the direction of its first packet
        live = self._live
        key = (proto, src, sport, dst, dport)
        conn = live.get(key)
        from_first_sender = True
        if conn is None:
            reverse = (proto, dst, dport, src, sport)
            conn = live.get(reverse)
            if conn is not None:
                key, from_first_sender = reverse, False
        # every way of ending takes ATTEMPT_DELAY or more, or a new SYN: test cheaply first
        if conn is not None and (ts - conn.ts > ATTEMPT_DELAY or flags & SYN) and self._ended_before(
                conn, ts, proto, flags, seq):
            self._finish(key)
            conn, key, from_first_sender = None, (proto, src, sport, dst, dport), True
        if conn is None:
            conn = self._start(key, number, ts, proto, src, dst, sport, dport, flags)
        else:
            live.move_to_end(key)
        is_orig = from_first_sender != conn.flipped
        endpoint = conn.orig if is_orig else conn.resp
        endpoint.packets += 1
        endpoint.ip_bytes += ip_len
        endpoint.wire_bytes += wire_len
        if proto == TCP:
            self._tcp(conn, is_orig, ts, flags, seq, ack, window, payload_len, payload)
        else:
            conn.last_time = ts
            endpoint.payload_bytes += payload_len
            if proto == UDP:
                conn.check_history(is_orig, H_DATA, "D")
        if ts >= self._next_sweep:
            self._sweep(ts)

    def _start(self, key: tuple, number: int, ts: float, proto: int, src: bytes, dst: bytes,
               sport: int, dport: int, flags: int) -> Connection:
        flipped = _originator_is_destination(proto, sport, dport, flags)
        if flipped:
            ends = ConnectionKey(dst, dport, src, sport)
        else:
            ends = ConnectionKey(src, sport, dst, dport)
        conn = Connection(proto, ends, number, ts, flipped)
        self._live[key] = conn
        if proto == TCP and (ends.resp_p == DCE_RPC_PORT or (ends.resp_h, ends.resp_p) in self._expected_dce):
            conn.dce = self._dce_session()
        return conn

    def _ended_before(self, conn: Connection, ts: float, proto: int, flags: int, seq: int) -> bool:
        """Whether Zeek would already have removed ``conn`` when this packet arrives, or
        would take the packet as the start of a new connection on the same ports."""
        if ts - conn.last_time > INACTIVITY_TIMEOUT[proto]:
            return True
        if proto != TCP:
            return False
        if _done(conn, ts):
            return True
        orig, resp = conn.orig, conn.resp
        closed = orig.did_close or resp.did_close
        # Zeek's IsReuse(): a new initial SYN after a close, with a new sequence number
        if flags & SYN and not flags & ACK and closed:
            return (seq & SEQ_MASK) != orig.start
        return False

    # -- TCP: Zeek's TCPSessionAdapter::Process ------------------------------------------

    def _tcp(self, conn: Connection, is_orig: bool, ts: float, flags: int, base_seq: int,
             ack_seq: int, window: int, length: int, payload: bytes) -> None:
        endpoint, peer = (conn.orig, conn.resp) if is_orig else (conn.resp, conn.orig)
        syn, fin, rst = flags & SYN, flags & FIN, flags & RST
        seg_len = length + (1 if syn else 0) + (1 if fin else 0) - (length if rst else 0)
        if syn or endpoint.state == INACTIVE:
            _init_endpoint(endpoint, syn, base_seq, seg_len)
        last = endpoint.last
        rel_seq = last + ((base_seq - endpoint.start - last + 0x80000000) & SEQ_MASK) - 0x80000000
        if syn or fin or rst:
            _update_flag_history(conn, is_orig, endpoint, flags, rel_seq, length)
        elif length or flags & ACK:  # data, else a pure ACK: each recorded once per side
            bit = H_DATA if length else H_ACK
            if not endpoint.seen & bit:
                endpoint.seen |= bit
                conn.add_history(is_orig, "D" if length else "A")
        if window == 0 and not rst and peer.state != CLOSED and endpoint.state != RESET:
            endpoint.zero_windows += 1
            if endpoint.zero_windows == endpoint.zero_windows_next:
                conn.add_history(is_orig, "W")
                endpoint.zero_windows_next *= 10
        if not (conn.orig.did_close and conn.resp.did_close):
            conn.last_time = ts
        if fin:
            endpoint.fin_count += 1
        if flags & ACK:
            if peer.state == INACTIVE:
                peer.init_seq(ack_seq - 1, 0)
            elif not rst:
                rel_ack = peer.relative(ack_seq, peer.ack)
                if rel_ack > peer.ack and not (ack_seq == 0 and rel_ack - peer.ack > TOO_LARGE_SEQ_DELTA):
                    peer.ack = rel_ack
        delta_last = self._update_last_seq(conn, is_orig, endpoint, rel_seq + seg_len, flags, length, payload)
        do_close = _update_state(conn, endpoint, peer, is_orig, flags, base_seq, length, delta_last)
        if payload and (conn.dce is not None or conn.dce_checked != 3):
            self._deliver_dce(conn, is_orig, rel_seq + 1 if syn else rel_seq, length, payload, ts, rst)
        if do_close:
            endpoint.did_close = True
        if conn.orig.state in (SYN_SENT, SYN_ACK_SENT) and not conn.attempt_deadline:
            conn.attempt_deadline = conn.ts + ATTEMPT_DELAY

    def _update_last_seq(self, conn: Connection, is_orig: bool, endpoint: Endpoint, last: int,
                         flags: int, length: int, payload: bytes) -> int:
        delta_last = last - endpoint.last
        if flags & (SYN | RST) and abs(delta_last) > TOO_LARGE_SEQ_DELTA:
            pass
        elif flags & FIN and endpoint.last == 1:
            endpoint.last = last
        elif endpoint.state == RESET:
            pass
        elif delta_last > 0:
            advance = delta_last - (1 if flags & FIN else 0) - (1 if flags & SYN else 0)
            endpoint.missed += max(0, advance - len(payload)) if not flags & RST else 0
            endpoint.last = last
        elif length > 0:
            endpoint.rxmit += 1
            if endpoint.rxmit == endpoint.rxmit_next:
                conn.add_history(is_orig, "T")
                endpoint.rxmit_next *= 10
        return delta_last

    # -- DCE/RPC ------------------------------------------------------------------------

    def _dce_session(self) -> DceRpcSession:
        return DceRpcSession(self._on_problem)

    def _deliver_dce(self, conn: Connection, is_orig: bool, seq: int, length: int, payload: bytes,
                     ts: float, rst: int) -> None:
        if rst:
            return
        if conn.dce is None:
            if not self._detect_dce(conn, is_orig, seq, payload, ts):
                return
        conn.dce.deliver(is_orig, seq, payload, ts)
        while conn.dce.mapped_ports:
            address, port = conn.dce.mapped_ports.pop()
            self._remember(address or conn.key.resp_h, port)
        if len(payload) < length:
            self._on_problem("payload cut by snaplen (DCE/RPC analysis of that direction stopped)")

    def _detect_dce(self, conn: Connection, is_orig: bool, seq: int, payload: bytes, ts: float) -> bool:
        """Zeek's DPD: the signature on the first payload of either direction; the first
        payloads are held so the analyzer sees both streams from their start."""
        bit = 1 if is_orig else 2
        if conn.dce_checked & bit:
            return False
        conn.dce_checked |= bit
        if not looks_like_dce_rpc(payload):
            conn.dce_held.append((is_orig, seq, payload, ts))
            if conn.dce_checked == 3:
                conn.dce_held.clear()
            return False
        conn.dce = self._dce_session()
        for held in conn.dce_held:
            conn.dce.deliver(*held)
        conn.dce_held.clear()
        return True

    def _remember(self, address: bytes, port: int) -> None:
        self._expected_dce[(address, port)] = None
        if len(self._expected_dce) > EXPECTED_LIMIT:
            self._expected_dce.popitem(last=False)

    # -- removal ------------------------------------------------------------------------

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + SWEEP_INTERVAL
        live = self._live
        while live:
            key, conn = next(iter(live.items()))
            if now - conn.last_time <= INACTIVITY_TIMEOUT[conn.proto] and not _done(conn, now):
                break
            self._finish(key)

    def _finish(self, key: tuple) -> None:
        conn = self._live.pop(key)
        if conn.dce is not None:
            conn.dce.finish()
        self._on_finished(conn)

    def flush(self) -> None:
        """End of capture: every connection still open is finished."""
        for key in list(self._live):
            self._finish(key)


def _done(conn: Connection, now: float) -> bool:
    """Closed, or an unanswered attempt, long enough ago that Zeek would have removed it."""
    if conn.proto != TCP:
        return False
    if conn.orig.did_close and conn.resp.did_close:
        return now - conn.last_time > CLOSE_DELAY
    return _attempt_expired(conn, now)


def _attempt_expired(conn: Connection, now: float) -> bool:
    """Zeek's attempt timer: no answer to the SYN within ``ATTEMPT_DELAY``."""
    return (bool(conn.attempt_deadline) and now > conn.attempt_deadline
            and conn.resp.state == INACTIVE and conn.orig.state in (SYN_SENT, SYN_ACK_SENT))


def _originator_is_destination(proto: int, sport: int, dport: int, flags: int) -> bool:
    """Whether the first packet came from the responder (Zeek's role flip, history ``^``)."""
    if proto == TCP:
        if flags & SYN and not flags & ACK:
            return False
        if flags & SYN:  # SYN-ACK first: its receiver sent the SYN
            return True
        likely = LIKELY_SERVER_PORTS[TCP]
        if sport in likely:
            return sport < dport if dport in likely else True
        return False
    if proto == UDP:
        likely = LIKELY_SERVER_PORTS[UDP]
        return sport in likely and dport not in likely
    return False


def _init_endpoint(endpoint: Endpoint, syn: int, base_seq: int, seg_len: int) -> None:
    """Zeek's ``init_endpoint``: where the relative sequence space of a side starts."""
    state = endpoint.state
    if state == INACTIVE:
        if syn:
            endpoint.init_seq(base_seq, seg_len)
        else:  # partial connection: number as though a SYN had been seen
            endpoint.init_seq(base_seq - 1, 1)
    elif syn and base_seq & SEQ_MASK != endpoint.start:
        if state in (SYN_SENT, SYN_ACK_SENT, ESTABLISHED, PARTIAL) or (
                state == RESET and endpoint.prev_state == INACTIVE):
            endpoint.init_seq(base_seq, seg_len)


def _update_flag_history(conn: Connection, is_orig: bool, endpoint: Endpoint, flags: int,
                         rel_seq: int, length: int) -> None:
    """Zeek's ``update_history`` for a packet with SYN, FIN or RST set."""
    syn, fin, rst = flags & SYN, flags & FIN, flags & RST
    bits_set = (1 if syn else 0) + (1 if fin else 0) + (1 if rst else 0)
    if bits_set > 1:
        if fin and rst:
            conn.check_history(is_orig, H_FIN_RST, "I")
        else:
            conn.check_history(is_orig, H_MULTI, "Q")
    else:
        if syn:
            code = "H" if flags & ACK else "S"
            if conn.check_history(is_orig, H_SYN, code) and rel_seq != endpoint.last_syn:
                conn.add_history(is_orig, code)
            endpoint.last_syn = rel_seq
        elif fin:
            if conn.check_history(is_orig, H_FIN, "F") and rel_seq + length != endpoint.last_fin:
                conn.add_history(is_orig, "F")
            endpoint.last_fin = rel_seq + length
        else:
            if conn.check_history(is_orig, H_RST, "R") and rel_seq != endpoint.last_rst:
                conn.add_history(is_orig, "R")
            endpoint.last_rst = rel_seq


def _update_state(conn: Connection, endpoint: Endpoint, peer: Endpoint, is_orig: bool,
                  flags: int, base_seq: int, length: int, delta_last: int) -> bool:
    """Zeek's ``UpdateStateMachine``; returns whether the packet closes this side."""
    state = endpoint.state
    if state == INACTIVE:
        return _inactive(conn, endpoint, peer, is_orig, flags, length)
    syn, fin, rst = flags & SYN, flags & FIN, flags & RST
    if state == SYN_SENT or state == SYN_ACK_SENT:
        do_close = False
        if fin:
            endpoint.set_state(CLOSED)
            do_close = True
        if rst:
            endpoint.set_state(RESET)
            do_close = True
        return do_close
    if state == ESTABLISHED or state == PARTIAL:
        do_close = False
        if syn and state == PARTIAL and peer.state == INACTIVE and not flags & ACK:
            endpoint.set_state(SYN_SENT)
        if fin and not rst:
            endpoint.set_state(CLOSED)
            if peer.state == RESET and peer.prev_state == CLOSED:
                peer.set_state(CLOSED)  # the peer's FIN then RST was a normal close
            do_close = True
        if rst:
            endpoint.set_state(RESET)
            do_close = True
        return do_close
    if state == CLOSED and rst and peer.state != CLOSED:
        endpoint.set_state(RESET)
        return not endpoint.did_close
    return False


def _inactive(conn: Connection, endpoint: Endpoint, peer: Endpoint, is_orig: bool, flags: int,
              length: int) -> bool:
    """Zeek's ``UpdateInactiveState`` (without the SYN/SYN-ACK role reversal)."""
    syn, fin, rst = flags & SYN, flags & FIN, flags & RST
    do_close = False
    if syn:
        if is_orig:
            endpoint.set_state(SYN_ACK_SENT if flags & ACK else SYN_SENT)
        else:
            if peer.state == SYN_SENT:
                peer.set_state(ESTABLISHED)
            endpoint.set_state(ESTABLISHED)
    if fin:
        endpoint.set_state(CLOSED)
        do_close = True
    if rst:
        endpoint.set_state(RESET)
        do_close = True
    if endpoint.state == INACTIVE:
        if not is_orig and length == 0 and conn.orig.state == SYN_SENT:
            pass  # an ACK of the SYN before the SYN-ACK: not a partial connection
        elif flags & ACK and peer.state == ESTABLISHED:
            endpoint.set_state(ESTABLISHED)  # the SYN was missed, the SYN-ACK was not
        else:
            endpoint.set_state(PARTIAL)
    return do_close
