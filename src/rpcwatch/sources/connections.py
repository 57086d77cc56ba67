"""Packets to Zeek-``conn.log``-shaped connections.

TCP follows Zeek's ``TCPSessionAdapter``: per-endpoint states (inactive, SYN sent,
SYN-ACK sent, partial, established, closed, reset) advanced by each packet's flags,
sequence space relative to the first sequence number (payload sizes come from sequence
numbers, as in Zeek), the ``history`` letters with Zeek's once-only and logarithmic
rules, and ``conn_state`` derived from the two end states exactly as ``conn_state()`` in
Zeek's ``base/protocols/conn/main.zeek``. ``missed_bytes`` and the gap letters follow
Zeek's TCP reassembler (:class:`Endpoint` keeps the byte ranges, not the bytes). UDP and
ICMP follow Zeek's simpler rules; ICMP puts type and code (or the counterpart type) in the
port fields, and Zeek's NTP analyzer turns a connection round by the NTP mode.

Connections end on Zeek's timers, so a multi-GB capture keeps only live
connections in memory and a 5-tuple used again after a close or a reset starts a new
connection exactly when Zeek's would.
"""
from __future__ import annotations

import re
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import NamedTuple

from rpcwatch.sources.dcerpc import DceRpcSession, looks_like_dce_rpc
from rpcwatch.sources.packets import ICMP, ICMP6, TCP, UDP, Decoded, Tunnelled

# Endpoint states (Zeek's TCP_ENDPOINT_*)
INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET = range(7)

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
SEQ_MASK = 0xFFFFFFFF
TOO_LARGE_SEQ_DELTA = 1 << 20

# Zeek's timers (seconds): tcp_attempt_delay, tcp_close_delay, tcp_session_timer,
# tcp_connection_linger, *_inactivity_timeout
ATTEMPT_DELAY = 5.0
CLOSE_DELAY = 5.0
SESSION_TIMER = 6.0
CONNECTION_LINGER = 5.0
TCP_INACTIVITY = 300.0
OTHER_INACTIVITY = 60.0
INACTIVITY_TIMEOUT = {TCP: TCP_INACTIVITY, UDP: OTHER_INACTIVITY, ICMP: OTHER_INACTIVITY,
                      ICMP6: OTHER_INACTIVITY}
#: how often (in capture time) idle connections are looked for
SWEEP_INTERVAL = 1.0
#: live connections kept at most: beyond, the least recently active one is written early,
#: so memory stays bounded whatever the capture's timestamps do
LIVE_LIMIT = 1 << 19

#: Zeek's tcp_max_above_hole_without_any_acks: data held above a hole, with nothing of
#: it ever acknowledged, after which the reassembler stops (and reports no more gaps)
MAX_ABOVE_HOLE_WITHOUT_ACKS = 16384
#: separate ranges held above holes at once, after which a side's gaps are no longer
#: tracked (Zeek has no such limit; it keeps a crafted stream of holes from costing
#: quadratic time here)
MAX_HELD_RANGES = 256

DCE_RPC_PORT = 135
NTP_PORT = 123
NTP_CLIENT, NTP_SERVER = 3, 4
NTP_MESSAGE_MIN = 48
IPV4_BROADCAST = b"\xff\xff\xff\xff"
INFINITY = float("inf")
#: remembered endpoint-mapper answers (address, port), oldest dropped first
EXPECTED_LIMIT = 65536
#: remembered IP tunnels (for the inner connections' tunnel_parents), oldest dropped first
TUNNEL_LIMIT = 65536
#: IP tunnels are numbered above every packet number, so their uids never meet a connection's
TUNNEL_NUMBER_BASE = 1 << 45

#: Zeek's ``likely_server_ports`` from the analyzers it loads by default: decides which
#: side of a connection seen without its SYN (or a UDP flow) is the server. DHCP adds only
#: its server port 67 (68 is the client's).
LIKELY_SERVER_PORTS = {
    TCP: frozenset({21, 22, 23, 25, 53, 80, 81, 88, 102, 110, 135, 139, 143, 389, 443, 445,
                    502, 513, 514, 563, 585, 587, 614, 631, 636, 989, 990, 992, 993, 995,
                    1080, 1433, 1723, 2811, 3128, 3268, 3306, 3389, 5222, 5223, 5269, 5432,
                    5900, 5901, 5902, 5903, 6379, 6666, 6667, 6668, 6669, 8000, 8080,
                    8888, 20000}),
    UDP: frozenset({53, 67, 69, 88, 123, 137, 138, 161, 162, 500, 514, 1812, 1813, 2152,
                    3544, 4789, 5060, 5353, 5355, 6081}),
}

ICMP4_COUNTERPART = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
ICMP6_COUNTERPART = {128: 129, 129: 128, 130: 131, 131: 130, 133: 134, 134: 133, 135: 136,
                     136: 135, 139: 140, 140: 139, 141: 142, 142: 141, 144: 145, 145: 144,
                     146: 147, 147: 146}

PROTO_NAMES = {TCP: "tcp", UDP: "udp", ICMP: "icmp", ICMP6: "icmp"}
#: Zeek's test for "originator sent a SYN then a RST, nothing from the responder"
RSTOS0_HISTORY = re.compile(r"\^?S[^HAFGIQ]*R.*")


class Endpoint:
    """One side of a connection. Sequence numbers other than ``start`` are relative to it
    and unbounded, so connections past 4 GiB need no wrap counting.

    The reassembly fields follow Zeek's ``TCP_Reassembler`` without keeping bytes:
    ``delivered`` is how far the stream is contiguous (``last_reassem_seq``), ``above``
    the ranges received beyond a hole, ``trimmed`` how far the peer's acknowledgements
    have been applied (``trim_seq``)."""

    __slots__ = ("state", "prev_state", "start", "last", "ack", "fin_count", "fin_seq", "did_close",
                 "last_syn", "last_fin", "last_rst", "seen", "rxmit", "rxmit_next",
                 "zero_windows", "zero_windows_next", "gaps", "gaps_next", "packets", "ip_bytes",
                 "wire_bytes", "payload_bytes", "delivered", "above", "trimmed", "gave_up")

    def __init__(self) -> None:
        self.state = self.prev_state = INACTIVE
        self.start = self.last = self.ack = 0
        self.fin_count = self.fin_seq = 0
        self.did_close = False
        self.last_syn = self.last_fin = self.last_rst = 0
        self.seen = 0  # history letters already recorded (bit mask)
        self.rxmit = self.zero_windows = self.gaps = 0
        self.rxmit_next = self.zero_windows_next = self.gaps_next = 1
        self.packets = self.ip_bytes = self.wire_bytes = 0
        self.payload_bytes = 0  # UDP/ICMP payload (TCP sizes come from sequence numbers)
        self.delivered = self.trimmed = 1
        self.above: list[list[int]] | None = None
        self.gave_up = False

    def set_state(self, state: int) -> None:
        self.prev_state = self.state
        self.state = state

    def init_seq(self, start: int, last: int) -> None:
        self.start = start & SEQ_MASK
        self.ack = 0
        self.last = last

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

    # -- Zeek's TCP_Reassembler, as byte ranges ----------------------------------------------

    def data_sent(self, seq: int, end: int) -> None:
        """Payload ``[seq, end)`` fully captured (``DataSent``): it extends the contiguous
        stream or is held above a hole."""
        if end <= self.delivered or self.gave_up:
            return
        if seq <= self.delivered:
            self.delivered = end
            if self.above is not None:
                self._join_above()
            return
        self._hold(seq, end)

    def _hold(self, seq: int, end: int) -> None:
        above = self.above
        if above is None:
            above = self.above = []
        above.append([seq, end])
        above.sort()
        merged = [above[0]]
        for block in above[1:]:
            if block[0] <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], block[1])
            else:
                merged.append(block)
        self.above = merged
        if len(merged) > MAX_HELD_RANGES or (
                self.ack <= 1 and merged[-1][1] - self.delivered > MAX_ABOVE_HOLE_WITHOUT_ACKS):
            self.gave_up = True  # (the second: Zeek's above_hole_data_without_any_acks)
            self.above = None

    def _join_above(self) -> None:
        above = self.above
        while above and above[0][0] <= self.delivered:
            self.delivered = max(self.delivered, above.pop(0)[1])
        if not above:
            self.above = None

    def acknowledged(self, upto: int, conn: Connection, is_orig: bool) -> None:
        """The peer acknowledged this side's stream up to ``upto`` (``AckReceived``): what
        was never seen below it is a content gap."""
        if self.fin_count and upto >= self.fin_seq:
            upto = self.fin_seq - 1  # the FIN is no data
        if upto <= self.trimmed:
            return
        self.trimmed = upto
        if upto <= self.delivered or (upto <= 2 and conn.partial) or self.gave_up:
            return
        while self.above and self.above[0][0] < upto:
            block = self.above.pop(0)
            conn.content_gap(is_orig, block[0] - self.delivered)
            self.delivered = block[1]
            self._join_above()
        if upto > self.delivered:
            conn.content_gap(is_orig, upto - self.delivered)
            self.delivered = upto
        if not self.above:
            self.above = None


# history bits, per endpoint
H_SYN, H_FIN, H_RST, H_FIN_RST, H_DATA, H_ACK, H_MULTI = 1, 2, 4, 8, 16, 32, 64


class ConnectionKey(NamedTuple):
    """Addresses and ports as the originator and responder of a connection."""

    orig_h: bytes
    orig_p: int
    resp_h: bytes
    resp_p: int


class Connection:
    """One connection. Its TCP timers are the times Zeek's fire (0: not set): ``delete_at``
    the removal after a complete close (``tcp_close_delay`` after it), ``attempt_at`` the
    end of an unanswered SYN, ``expire_at`` the ``tcp_session_timer`` check of a
    connection closed on one side only; ``wake`` is the earliest (infinite: none)."""

    __slots__ = ("proto", "key", "table_key", "flipped", "number", "ts", "last_time", "orig", "resp",
                 "history", "missed", "partial", "ntp", "tunnel", "delete_at", "attempt_at", "expire_at",
                 "wake", "dce", "dce_checked", "dce_held")

    def __init__(self, proto: int, key: ConnectionKey, table_key: tuple, number: int, ts: float, flipped: bool):
        self.proto = proto
        self.key = key
        #: the key of the table of live connections (the first packet's direction)
        self.table_key = table_key
        #: packets from the first packet's sender come from the responder
        self.flipped = flipped
        self.number = number  # position of its first packet in the capture (for uids)
        self.ts = self.last_time = ts
        self.orig = Endpoint()
        self.resp = Endpoint()
        self.history = ["^"] if flipped else []
        self.missed = 0
        #: partial: Zeek's is_partial, the connection was not seen from its SYN;
        #: ntp: Zeek's NTP analyzer is attached and has not turned the connection round yet
        self.partial = self.ntp = False
        #: number of the connection or IP tunnel this one was carried in (tunnel_parents)
        self.tunnel: int | None = None
        self.delete_at = self.attempt_at = self.expire_at = 0.0
        self.wake = INFINITY
        self.dce: DceRpcSession | None = None
        self.dce_checked = 0  # directions whose first payload was checked (bit 1 orig, 2 resp)
        self.dce_held: list[tuple[bool, int, bytes, float]] = []

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

    def content_gap(self, is_orig: bool, length: int) -> None:
        """Zeek's ``TCP_Reassembler::Gap``: reported (``missed_bytes``, letter ``g``) only
        while both sides are established or closing cleanly."""
        if not (_is_clean(self.orig) and _is_clean(self.resp)):
            return
        self.missed += length
        endpoint = self.orig if is_orig else self.resp
        endpoint.gaps += 1
        if endpoint.gaps == endpoint.gaps_next:
            self.add_history(is_orig, "G")
            endpoint.gaps_next *= 10

    def set_timer(self, timer: str, when: float) -> None:
        """Set (or with 0, cancel) ``delete_at``, ``attempt_at`` or ``expire_at``."""
        setattr(self, timer, when)
        if when and when < self.wake:
            self.wake = when
        elif not when:
            self.wake = min(self.delete_at or INFINITY, self.attempt_at or INFINITY, self.expire_at or INFINITY)

    def turn_round(self) -> None:
        """Zeek's ``Connection::FlipRoles`` after the connection began: the addresses swap
        and ``^`` is written; the counters already kept per side stay where they are."""
        key = self.key
        self.key = ConnectionKey(key.resp_h, key.resp_p, key.orig_h, key.orig_p)
        self.flipped = not self.flipped
        self.history.append("^")

    # -- summary ------------------------------------------------------------------------

    def summary(self) -> tuple[int, int, str, int, str | None]:
        """Payload sizes, ``conn_state``, missed bytes and ``history``, as Zeek logs them."""
        history = "".join(self.history) or None
        orig, resp = self.orig, self.resp
        if self.proto == TCP:
            sizes = orig.tcp_size(resp), resp.tcp_size(orig)
            return (*sizes, _tcp_conn_state(orig.state, resp.state, history or "", sizes), self.missed, history)
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


def _is_clean(endpoint: Endpoint) -> bool:
    """Zeek's ``is_clean``: established, or closed after having been established."""
    return endpoint.state == ESTABLISHED or (endpoint.state == CLOSED and endpoint.prev_state == ESTABLISHED)


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
        #: (time, connection) of every timer set, in the order set; as every timer is set a
        #: fixed delay after the packet that sets it, that is nearly their order in time (a
        #: few are found up to a second late). One that is no longer the connection's next
        #: is skipped.
        self._timers: deque[tuple[float, Connection]] = deque()
        self._expected_dce: OrderedDict[tuple[bytes, int], None] = OrderedDict()
        self._tunnels: OrderedDict[tuple[str, bytes, bytes], int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._live)

    # -- packets ------------------------------------------------------------------------

    def packet(self, number: int, ts: float, wire_len: int, decoded: Decoded,
               tunnel: int | None = None) -> Connection:
        """One decoded packet (see :data:`~rpcwatch.sources.packets.Decoded`); ``number``
        is its position in the capture (a connection is numbered by its first packet),
        ``tunnel`` the number of what carried it. Returns its connection."""
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
        if conn is not None and (
                flags & SYN or ts >= conn.wake
                or ts - conn.last_time >= (TCP_INACTIVITY if proto == TCP else OTHER_INACTIVITY)
        ) and self._ended_before(conn, ts, flags, seq):
            self._finish(key)
            conn, key, from_first_sender = None, (proto, src, sport, dst, dport), True
        if conn is None:
            conn = self._start(key, number, ts, proto, src, dst, sport, dport, flags, tunnel)
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
                if conn.ntp:
                    _ntp_roles(conn, is_orig, payload)
        if ts >= self._next_sweep:
            self._sweep(ts)
        return conn

    def tunnelled(self, number: int, ts: float, wire_len: int, packet: Tunnelled,
                  parent: int | None = None) -> str | None:
        """A packet carried in a tunnel: the encapsulating UDP packet is a connection of
        its own (VXLAN, Geneve), an IP tunnel is not; the inner packet's connection names
        the tunnel as its parent. Returns why the inner packet was not tracked, if so."""
        if packet.outer is not None:
            parent = self.packet(number, ts, wire_len, packet.outer, parent).number
        else:
            parent = self._tunnel_number(packet, number)
        inner = packet.inner
        if isinstance(inner, tuple):
            self.packet(number, ts, wire_len, inner, parent)
            return None
        if isinstance(inner, Tunnelled):
            return self.tunnelled(number, ts, wire_len, inner, parent)
        return inner

    def _tunnel_number(self, packet: Tunnelled, number: int) -> int:
        """The number of an IP tunnel (GRE, IP in IP), by its kind and ends, as Zeek keeps
        one encapsulation per pair of tunnel addresses."""
        low, high = sorted((packet.src, packet.dst))
        ends = (packet.kind, low, high)
        tunnel = self._tunnels.get(ends)
        if tunnel is None:
            tunnel = self._tunnels[ends] = TUNNEL_NUMBER_BASE + number
            if len(self._tunnels) > TUNNEL_LIMIT:
                self._tunnels.popitem(last=False)
        else:
            self._tunnels.move_to_end(ends)
        return tunnel

    def _start(self, key: tuple, number: int, ts: float, proto: int, src: bytes, dst: bytes,
               sport: int, dport: int, flags: int, tunnel: int | None) -> Connection:
        flipped = _originator_is_destination(proto, sport, dport, flags, dst)
        if flipped:
            ends = ConnectionKey(dst, dport, src, sport)
        else:
            ends = ConnectionKey(src, sport, dst, dport)
        conn = Connection(proto, ends, key, number, ts, flipped)
        conn.tunnel = tunnel
        if len(self._live) >= LIVE_LIMIT:
            self._on_problem(f"more than {LIVE_LIMIT} connections open: the least recently active written early")
            self._finish(next(iter(self._live)))
        self._live[key] = conn
        if proto == TCP and (ends.resp_p == DCE_RPC_PORT or (ends.resp_h, ends.resp_p) in self._expected_dce):
            conn.dce = self._dce_session()
        elif proto == UDP and ends.resp_p == NTP_PORT:
            conn.ntp = True
        return conn

    def _ended_before(self, conn: Connection, ts: float, flags: int, seq: int) -> bool:
        """Whether Zeek would already have removed ``conn`` when this packet arrives, or
        would take the packet as the start of a new connection on the same ports."""
        if ts - conn.last_time >= INACTIVITY_TIMEOUT[conn.proto]:
            return True
        if conn.proto != TCP:
            return False
        if self._timer_fired(conn, ts):
            return True
        return bool(flags & SYN) and _is_reuse(conn, flags, seq)

    # -- TCP: Zeek's TCPSessionAdapter::Process ------------------------------------------

    def _tcp(self, conn: Connection, is_orig: bool, ts: float, flags: int, base_seq: int,
             ack_seq: int, window: int, length: int, payload: bytes) -> None:
        endpoint, peer = (conn.orig, conn.resp) if is_orig else (conn.resp, conn.orig)
        syn, fin, rst = flags & SYN, flags & FIN, flags & RST
        if endpoint.packets == 1:  # Zeek's SetPartialStatus, on each side's first packet
            if is_orig:
                conn.partial = not syn or bool(flags & ACK)
            elif not conn.partial:
                conn.partial = not syn
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
            endpoint.fin_seq = rel_seq + seg_len
        rel_ack = -1  # the acknowledgement in the peer's relative space
        if flags & ACK:
            if peer.state == INACTIVE:  # the peer's sequence space starts here
                peer.init_seq(ack_seq - 1, 0)
                rel_ack = 1
            else:  # the signed 32-bit distance from where the peer's acknowledgements stand
                rel_ack = peer.ack + ((ack_seq - peer.start - peer.ack + 0x80000000) & SEQ_MASK) - 0x80000000
                if rel_ack < 0:
                    rel_ack = 0
                elif not rst and rel_ack > peer.ack and not (ack_seq == 0 and rel_ack - peer.ack > TOO_LARGE_SEQ_DELTA):
                    peer.ack = rel_ack
        delta_last = self._update_last_seq(conn, is_orig, endpoint, rel_seq + seg_len, flags, length)
        if syn and is_orig and endpoint.state == INACTIVE:  # Zeek's attempt timer starts
            conn.attempt_at = conn.wake = ts + ATTEMPT_DELAY  # the first timer of a connection
            self._timers.append((conn.wake, conn))
        do_close = _update_state(conn, endpoint, peer, is_orig, flags, base_seq, length, delta_last)
        if rel_ack > peer.trimmed:  # the reassembler applies the acknowledgement (fast when in order)
            if rel_ack <= peer.delivered and not peer.fin_count:
                peer.trimmed = rel_ack
            else:
                peer.acknowledged(rel_ack, conn, not is_orig)
        data_seq = rel_seq + 1 if syn else rel_seq
        if length and not rst and rel_seq >= 0 and len(payload) == length:
            end = data_seq + length
            if data_seq <= endpoint.delivered < end and endpoint.above is None and not endpoint.gave_up:
                endpoint.delivered = end  # in order: the stream grows
            else:
                endpoint.data_sent(data_seq, end)
        if payload and (conn.dce is not None or conn.dce_checked != 3):
            self._deliver_dce(conn, is_orig, data_seq, length, payload, ts, rst)
        if do_close:
            self._closed(conn, endpoint, peer)

    def _update_last_seq(self, conn: Connection, is_orig: bool, endpoint: Endpoint, last: int,
                         flags: int, length: int) -> int:
        delta_last = last - endpoint.last
        if flags & (SYN | RST) and abs(delta_last) > TOO_LARGE_SEQ_DELTA:
            pass
        elif flags & FIN and endpoint.last == 1:
            endpoint.last = last
        elif endpoint.state == RESET:
            pass
        elif delta_last > 0:
            endpoint.last = last
        elif length > 0:
            endpoint.rxmit += 1
            if endpoint.rxmit == endpoint.rxmit_next:
                conn.add_history(is_orig, "T")
                endpoint.rxmit_next *= 10
        return delta_last

    def _closed(self, conn: Connection, endpoint: Endpoint, peer: Endpoint) -> None:
        """Zeek's ``ConnectionClosed``: once a close is complete (a reset, both sides
        closed, or nothing ever seen from the peer) every timer is cancelled and the
        connection is removed ``tcp_close_delay`` later; a half close is looked at again
        every ``tcp_session_timer``."""
        if endpoint.did_close:
            return
        endpoint.did_close = True
        if endpoint.state == RESET or peer.did_close or peer.state == INACTIVE:
            conn.attempt_at = conn.expire_at = 0.0  # the removal replaces every other timer
            conn.delete_at = conn.wake = conn.last_time + CLOSE_DELAY
            self._timers.append((conn.wake, conn))
        elif endpoint.prev_state != INACTIVE:
            self._set_timer(conn, "expire_at", conn.last_time + SESSION_TIMER)

    # -- DCE/RPC ------------------------------------------------------------------------

    def _dce_session(self) -> DceRpcSession:
        return DceRpcSession(self._on_problem)

    def _deliver_dce(self, conn: Connection, is_orig: bool, seq: int, length: int, payload: bytes,
                     ts: float, rst: int) -> None:
        if rst:
            return
        dce = conn.dce if conn.dce is not None else self._detect_dce(conn, is_orig, seq, payload, ts)
        if dce is None:
            return
        dce.deliver(is_orig, seq, payload, ts)
        while dce.mapped_ports:
            address, port = dce.mapped_ports.pop()
            self._remember(address or conn.key.resp_h, port)
        if len(payload) < length:
            self._on_problem("payload cut by snaplen (DCE/RPC analysis of that direction stopped)")

    def _detect_dce(self, conn: Connection, is_orig: bool, seq: int, payload: bytes,
                    ts: float) -> DceRpcSession | None:
        """Zeek's DPD: the signature on the first payload of either direction; the first
        payloads are held so the analyzer sees both streams from their start. Returns the
        connection's new analyzer, if the payload starts one."""
        bit = 1 if is_orig else 2
        if conn.dce_checked & bit:
            return None
        conn.dce_checked |= bit
        if not looks_like_dce_rpc(payload):
            conn.dce_held.append((is_orig, seq, payload, ts))
            if conn.dce_checked == 3:
                conn.dce_held.clear()
            return None
        dce = conn.dce = self._dce_session()
        for held in conn.dce_held:
            dce.deliver(*held)
        conn.dce_held.clear()
        return dce

    def _remember(self, address: bytes, port: int) -> None:
        self._expected_dce[(address, port)] = None
        if len(self._expected_dce) > EXPECTED_LIMIT:
            self._expected_dce.popitem(last=False)

    # -- removal ------------------------------------------------------------------------

    def _set_timer(self, conn: Connection, timer: str, when: float) -> None:
        conn.set_timer(timer, when)
        self._timers.append((when, conn))

    def _timer_fired(self, conn: Connection, now: float) -> bool:
        """Whether one of the connection's TCP timers has removed it by ``now``; a timer
        that fired without removing it is cleared (the session timer is set again)."""
        if conn.delete_at and now >= conn.delete_at:
            return True
        orig, resp = conn.orig, conn.resp
        if conn.attempt_at and now >= conn.attempt_at:
            if resp.state == INACTIVE and orig.state in (SYN_SENT, SYN_ACK_SENT):
                return True
            conn.set_timer("attempt_at", 0.0)
        if conn.expire_at and now >= conn.expire_at:
            # the last check up to now (it repeats every tcp_session_timer)
            fired = conn.expire_at + (now - conn.expire_at) // SESSION_TIMER * SESSION_TIMER
            if conn.last_time + CONNECTION_LINGER < fired and (
                    (orig.did_close and resp.did_close) or RESET in (orig.state, resp.state)
                    or INACTIVE in (orig.state, resp.state)):
                return True
            self._set_timer(conn, "expire_at", fired + SESSION_TIMER)
        return False

    def _sweep(self, now: float) -> None:
        """Connections whose timer fired, then those idle for their inactivity timeout
        (the table is in order of last activity)."""
        self._next_sweep = now + SWEEP_INTERVAL
        live, timers = self._live, self._timers
        while timers and timers[0][0] <= now:
            when, conn = timers.popleft()
            if when == conn.wake and live.get(conn.table_key) is conn and self._timer_fired(conn, now):
                self._finish(conn.table_key)
        while live:
            key, conn = next(iter(live.items()))
            if now - conn.last_time < INACTIVITY_TIMEOUT[conn.proto]:
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


def _is_reuse(conn: Connection, flags: int, seq: int) -> bool:
    """Zeek's ``TCPSessionAdapter::IsReuse`` for a SYN on a known 5-tuple: once either side
    has closed, any SYN starts a new connection; before, only a SYN with a new initial
    sequence number (a SYN-ACK only on a connection whose originator never spoke)."""
    orig, resp = conn.orig, conn.resp
    first = orig
    if flags & ACK:
        if orig.state != INACTIVE:
            return False
        first = resp
    if orig.did_close or resp.did_close:
        return True
    seq &= SEQ_MASK
    if seq == first.start:
        return False
    # a SYN and its SYN-ACK seen in the wrong order: Zeek turns the connection round instead
    return not (not flags & ACK and first.state == SYN_ACK_SENT and resp.state == INACTIVE
                and seq == resp.start)


def _ntp_roles(conn: Connection, is_orig: bool, payload: bytes) -> None:
    """Zeek's NTP analyzer turns a connection round (once) on a server-mode message from
    the originator or a client-mode message from the responder."""
    if len(payload) < NTP_MESSAGE_MIN:
        return
    mode = payload[0] & 0x07
    if (mode == NTP_SERVER and is_orig) or (mode == NTP_CLIENT and not is_orig):
        conn.turn_round()
        conn.ntp = False


def _originator_is_destination(proto: int, sport: int, dport: int, flags: int, dst: bytes) -> bool:
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
        return sport in likely and dport not in likely and dst != IPV4_BROADCAST
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
