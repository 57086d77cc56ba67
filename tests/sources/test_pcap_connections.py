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
