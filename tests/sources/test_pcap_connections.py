"""The connection table on hand-made packets: timers keep memory flat, and the TCP rules
that the corpus captures do not exercise."""
from __future__ import annotations

from rpcwatch.sources.connections import ACK, FIN, RST, SYN, Connection, ConnectionTable
from rpcwatch.sources.packets import TCP, UDP

CLIENT, SERVER = b"\xcb\x00\x72\x07", b"\x0a\x00\x00\x01"


def tcp(sport: int, flags: int, seq: int, ack: int = 0, payload: bytes = b"", reverse: bool = False) -> tuple:
    src, dst, ports = (SERVER, CLIENT, (135, sport)) if reverse else (CLIENT, SERVER, (sport, 135))
    return TCP, src, dst, *ports, 40 + len(payload), len(payload), payload, flags, seq, ack, 65535


def udp(sport: int) -> tuple:
    return UDP, CLIENT, SERVER, sport, 53, 40, 12, b"", 0, 0, 0, 0


def table_with(finished: list[Connection]) -> ConnectionTable:
    return ConnectionTable(finished.append, lambda reason: None)


def test_idle_connections_are_finished_before_the_capture_ends() -> None:
    finished: list[Connection] = []
    table = table_with(finished)
    table.packet(1, 0.0, 60, udp(40000))
    table.packet(2, 1.0, 60, tcp(40001, SYN, 1000))
    table.packet(3, 1.001, 60, tcp(40001, SYN | ACK, 5000, 1001, reverse=True))
    table.packet(4, 1.002, 60, tcp(40001, ACK, 1001, 5001))
    table.packet(5, 400.0, 60, udp(40002))  # 400 s later: both earlier ones are idle
    assert [c.key.orig_p for c in finished] == [40000, 40001]
    assert len(table) == 1
    table.flush()
    assert [c.key.orig_p for c in finished] == [40000, 40001, 40002]


def test_unanswered_attempt_is_finished_after_five_seconds() -> None:
    finished: list[Connection] = []
    table = table_with(finished)
    table.packet(1, 0.0, 60, tcp(40003, SYN, 7))
    table.packet(2, 3.0, 60, tcp(40003, SYN, 7))
    table.packet(3, 5.5, 60, udp(40004))
    assert [(c.key.orig_p, c.orig.packets, c.summary()[2]) for c in finished] == [(40003, 2, "S0")]


def test_new_syn_after_a_close_starts_a_new_connection() -> None:
    finished: list[Connection] = []
    table = table_with(finished)
    for ts, packet in enumerate([
            tcp(40005, SYN, 100), tcp(40005, SYN | ACK, 900, 101, reverse=True),
            tcp(40005, ACK, 101, 901), tcp(40005, RST | ACK, 101, 901),
            tcp(40005, SYN, 5000)]):  # the client reuses its port at once
        table.packet(ts, ts / 10, 60, packet)
    table.flush()
    assert [(c.summary()[2], "".join(c.history)) for c in finished] == [("RSTO", "ShAR"), ("S0", "S")]


def test_payload_sizes_follow_sequence_numbers_and_fin() -> None:
    finished: list[Connection] = []
    table = table_with(finished)
    for ts, packet in enumerate([
            tcp(40006, SYN, 100), tcp(40006, SYN | ACK, 900, 101, reverse=True),
            tcp(40006, ACK, 101, 901, b"x" * 72), tcp(40006, ACK, 901, 173, b"y" * 60, reverse=True),
            tcp(40006, FIN | ACK, 173, 961), tcp(40006, FIN | ACK, 961, 174, reverse=True),
            tcp(40006, ACK, 174, 962)]):
        table.packet(ts, ts / 10, 60, packet)
    table.flush()
    orig_bytes, resp_bytes, state, missed, history = finished[0].summary()
    assert (orig_bytes, resp_bytes, state, missed, history) == (72, 60, "SF", 0, "ShDdFfA")


def run(packets: list[tuple[float, tuple]]) -> list[Connection]:
    finished: list[Connection] = []
    table = table_with(finished)
    for number, (ts, packet) in enumerate(packets, 1):
        table.packet(number, ts, 60, packet)
    table.flush()
    return finished


def states(connections: list[Connection]) -> list[tuple]:
    return [(c.summary()[2], "".join(c.history), c.orig.packets, c.resp.packets) for c in connections]


# -- connections ended and started again (Zeek's timers and IsReuse) ------------------------

def test_a_syn_resent_after_a_reset_is_a_new_attempt() -> None:
    """The same SYN (same sequence number) after the responder's RST: once a side has
    closed, any SYN starts a new connection."""
    attempts = run([(0.0, tcp(40010, SYN, 700)), (0.05, tcp(40010, RST | ACK, 0, 701, reverse=True)),
                    (3.0, tcp(40010, SYN, 700)), (3.05, tcp(40010, RST | ACK, 0, 701, reverse=True))])
    assert states(attempts) == [("REJ", "Sr", 1, 1), ("REJ", "Sr", 1, 1)]


def test_an_answered_probe_stays_established_when_data_follows_the_reset_later() -> None:
    """SYN, SYN-ACK, the client's RST, then data 15 s later answered by a RST: the reset
    connection was removed 5 s after the reset, so the port that answered is RSTO, not a
    rejected connection, and the late data is a connection of its own."""
    connections = run([
        (0.0, tcp(40011, SYN, 100)), (0.1, tcp(40011, SYN | ACK, 900, 101, reverse=True)),
        (0.11, tcp(40011, RST, 101)),
        (15.7, tcp(40011, ACK, 101, 901, b"GET / HTTP/1.0\r\n\r\n")), (15.8, tcp(40011, RST, 901, reverse=True))])
    assert states(connections) == [("RSTO", "ShR", 2, 1), ("RSTRH", "Dr", 1, 1)]


def test_packets_within_the_close_delay_stay_in_the_reset_connection() -> None:
    connections = run([
        (0.0, tcp(40012, SYN, 100)), (0.1, tcp(40012, SYN | ACK, 900, 101, reverse=True)),
        (0.11, tcp(40012, RST, 101)), (4.0, tcp(40012, ACK, 101, 901, b"late"))])
    assert states(connections) == [("RSTO", "ShRD", 3, 1)]


def test_a_half_closed_connection_reset_later_ends_at_the_session_timer() -> None:
    """The client closes (FIN) while the server stays open, then resets: no complete close,
    so Zeek's tcp_session_timer check (every 6 s after the FIN) removes it once 5 s passed
    without traffic; a packet 20 s later belongs to a new connection."""
    connections = run([
        (0.0, tcp(40013, SYN, 100)), (0.1, tcp(40013, SYN | ACK, 900, 101, reverse=True)),
        (0.2, tcp(40013, ACK, 101, 901)), (0.3, tcp(40013, FIN | ACK, 101, 901)),
        (1.0, tcp(40013, RST, 102)), (20.0, tcp(40013, ACK, 901, 102, reverse=True))])
    assert states(connections) == [("RSTO", "ShAFR", 4, 1), ("OTH", "^a", 0, 1)]


# -- missed bytes: Zeek's reassembler ------------------------------------------------------

def established(sport: int) -> list[tuple[float, tuple]]:
    return [(0.0, tcp(sport, SYN, 100)), (0.1, tcp(sport, SYN | ACK, 900, 101, reverse=True)),
            (0.2, tcp(sport, ACK, 101, 901))]


def test_a_reordered_segment_fills_its_hole() -> None:
    conn, = run(established(40014) + [
        (0.3, tcp(40014, ACK, 1101, 901, b"b" * 1000)),  # bytes 1001-2000 before 1-1000
        (0.31, tcp(40014, ACK, 901, 101, reverse=True)),  # duplicate ack: the hole is still open
        (0.35, tcp(40014, ACK, 101, 901, b"a" * 1000)),
        (0.4, tcp(40014, ACK, 901, 2101, reverse=True))])
    assert conn.summary()[3] == 0 and "g" not in "".join(conn.history).lower()


def test_acknowledged_bytes_never_seen_are_missed_with_the_gap_letter() -> None:
    conn, = run(established(40015) + [
        (0.3, tcp(40015, ACK, 1101, 901, b"b" * 1000)),
        (0.4, tcp(40015, ACK, 901, 2101, reverse=True))])  # acks the 1000 bytes never captured
    assert (conn.summary()[3], "".join(conn.history)) == (1000, "ShADaG")


def test_gaps_after_a_reset_are_not_counted() -> None:
    """Zeek reports a gap only while both sides are established or closing cleanly."""
    conn, = run(established(40016) + [
        (0.3, tcp(40016, RST, 901, reverse=True)), (0.4, tcp(40016, ACK, 101, 5000, reverse=False))])
    assert conn.summary()[3] == 0


# -- UDP roles -----------------------------------------------------------------------------

NTP_CLIENT, NTP_SERVER = b"\xcb\x00\x72\x05", b"\x11\xfd\x04\xfd"


def ntp(src: bytes, dst: bytes, mode: int) -> tuple:
    message = bytes([0x20 | mode]) + bytes(47)  # version 4, 48 bytes
    return UDP, src, dst, 123, 123, 76, len(message), message, 0, 0, 0, 0


def test_ntp_server_message_first_turns_the_connection_round() -> None:
    """Zeek's misordered-ntp test (the server's mode-4 answer captured before the client's
    mode-3 request): Zeek's baseline logs the client as originator, ``D^``, S0, 2 packets
    and 96 bytes for the originator (Zeek's size counters are not turned round)."""
    conn, = run([(0.0, ntp(NTP_SERVER, NTP_CLIENT, 4)), (0.96, ntp(NTP_CLIENT, NTP_SERVER, 3))])
    assert (conn.key.orig_h, conn.key.resp_h) == (NTP_CLIENT, NTP_SERVER)
    assert conn.summary() == (96, 0, "S0", 0, "D^")
    assert (conn.orig.packets, conn.orig.ip_bytes, conn.resp.packets) == (2, 152, 0)


def test_ntp_in_order_is_not_turned_round() -> None:
    conn, = run([(0.0, ntp(NTP_CLIENT, NTP_SERVER, 3)), (0.1, ntp(NTP_SERVER, NTP_CLIENT, 4))])
    assert (conn.key.orig_h, conn.summary()[2], conn.summary()[4]) == (NTP_CLIENT, "SF", "Dd")


def test_a_reply_to_the_broadcast_address_is_not_turned_round() -> None:
    conn, = run([(0.0, (UDP, SERVER, b"\xff\xff\xff\xff", 67, 68, 328, 300, b"", 0, 0, 0, 0))])
    assert (conn.key.orig_p, conn.key.resp_p, "".join(conn.history)) == (67, 68, "D")


def test_a_side_with_too_many_holes_at_once_stops_counting_gaps() -> None:
    """More than 256 separate holes waiting for an acknowledgement: the side's gap
    accounting stops (kept linear for a crafted stream); with fewer, each is counted."""
    def holes(count: int, sport: int) -> Connection:
        segments = [(0.3 + i / 1000, tcp(sport, ACK, 111 + 20 * i, 901, b"x" * 10)) for i in range(count)]
        conn, = run(established(sport) + [(0.25, tcp(sport, ACK, 901, 101, reverse=True))] + segments + [
            (1.0, tcp(sport, ACK, 901, 111 + 20 * count, reverse=True))])
        return conn
    acknowledged, seen = 10 + 20 * 200, 10 * 200  # the first segment starts 10 bytes in
    assert holes(200, 40017).summary()[3] == acknowledged - seen
    assert holes(300, 40018).summary()[3] == 0
