"""``syslog+tcp://HOST:PORT`` and ``syslog+tls://HOST:PORT``: RFC 5424 messages with
octet-counting framing (RFC 6587 section 3.4.1), at least once.

Each alert is one message: ``<PRI>1 TIMESTAMP HOSTNAME rpcwatch PROCID alert [SD] MSG``
with the alert's main fields as structured data (``rpcwatch@32473``: 32473 is the
enterprise number RFC 5612 reserves for documentation; set ``sd_id`` to your own) and the
alert as JSON in MSG. With ``format = "cef"`` (``--syslog-format cef``) MSG is an ArcSight
CEF record instead, and there is no structured data. Severity follows the rule's level.

Plain syslog has no acknowledgement. ``flush`` returns when the receiver's TCP stack has
acknowledged every byte (the socket's send queue is empty, ``SIOCOUTQ``), so a receiver
that went away is noticed and the batch is sent again on a new connection; a receiver that
crashes after its TCP stack took a message may lose it, as with any shipper speaking
plain syslog.
"""
from __future__ import annotations

import fcntl
import os
import select
import socket
import ssl
import struct
import termios
import time
from collections.abc import Sequence

from rpcwatch import __version__
from rpcwatch.alerts import document_field, document_record_id, epoch_micros
from rpcwatch.outputs.jsonl import dumps
from rpcwatch.outputs.sinks.base import AT_LEAST_ONCE, Rejection, Sink, SinkError, SinkSettings, SinkUnavailable

FACILITIES = {"kern": 0, "user": 1, "daemon": 3, "auth": 4, "authpriv": 10, "local0": 16, "local1": 17,
              "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23}
#: RFC 5424 severity and CEF severity (0-10) by rule level
SEVERITIES = {"critical": (2, 10), "high": (3, 8), "medium": (4, 5), "low": (5, 3), "informational": (6, 1)}
DEFAULT_SEVERITY = (5, 3)
NILVALUE = "-"
FORMATS = ("rfc5424", "cef")


class SyslogSink(Sink):
    schemes = ("syslog+tcp", "syslog+tls")
    guarantee = AT_LEAST_ONCE
    options = frozenset({"format", "facility", "ca_file", "cert_file", "key_file", "timeout", "sd_id",
                         "hostname"})

    def __init__(self, settings: SinkSettings):
        super().__init__(settings)
        if not self.url.hostname or not self.url.port:
            raise SinkError(f"{self.name}: give a host and a port ({self.url.scheme}://HOST:PORT)")
        self.format = str(self.option("format", "rfc5424"))
        if self.format not in FORMATS:
            raise SinkError(f"{self.name}: format must be one of {', '.join(FORMATS)}")
        facility = str(self.option("facility", "local0"))
        if facility not in FACILITIES:
            raise SinkError(f"{self.name}: unknown facility {facility!r} ({', '.join(FACILITIES)})")
        self.facility = FACILITIES[facility]
        self.sd_id = str(self.option("sd_id", "rpcwatch@32473"))
        self.hostname = _header_field(str(self.option("hostname") or socket.gethostname()), 255)
        self.timeout = float(self.option("timeout", 10.0))
        self._tls = self._tls_context() if self.url.scheme == "syslog+tls" else None
        self._socket: socket.socket | None = None
        self._pending: list[bytes] = []

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.option("ca_file"))
        if self.option("cert_file"):
            context.load_cert_chain(self.option("cert_file"), self.option("key_file"))
        return context

    def write(self, documents: Sequence[dict]) -> None:
        for document in documents:
            message = self.message(document).encode("utf-8")
            self._pending.append(b"%d %s" % (len(message), message))

    def message(self, alert: dict) -> str:
        level = str(alert.get("rule", {}).get("level", "")).lower()
        severity, cef_severity = SEVERITIES.get(level, DEFAULT_SEVERITY)
        header = (f"<{self.facility * 8 + severity}>1 {alert.get('@timestamp') or NILVALUE} {self.hostname} "
                  f"rpcwatch {os.getpid()} alert")
        if self.format == "cef":
            return f"{header} {NILVALUE} {cef_record(alert, cef_severity)}"
        return f"{header} {structured_data(self.sd_id, alert)} {dumps(alert)}"

    def flush(self) -> list[Rejection]:
        data, self._pending = b"".join(self._pending), []
        if not data:
            return []
        try:
            connection = self._connection()
            connection.sendall(data)
            self._await_acknowledged(connection)
        except (OSError, ssl.SSLError) as exc:
            self._disconnect()
            raise SinkUnavailable(f"{self.name}: {exc.strerror or exc}" if isinstance(exc, OSError)
                                  and exc.strerror else f"{self.name}: {exc}") from None
        return []

    def _connection(self) -> socket.socket:
        if self._socket is not None and _peer_closed(self._socket):
            self._disconnect()
        if self._socket is None:
            raw = socket.create_connection((self.url.hostname, self.url.port), timeout=self.timeout)
            self._socket = self._tls.wrap_socket(raw, server_hostname=self.url.hostname) if self._tls else raw
        return self._socket

    def _await_acknowledged(self, connection: socket.socket) -> None:
        """Wait until the peer's TCP stack acknowledged all bytes sent (Linux SIOCOUTQ)."""
        deadline = time.monotonic() + self.timeout
        while _unacknowledged(connection) > 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the receiver did not acknowledge the batch within {self.timeout:g} s")
            time.sleep(0.002)

    def _disconnect(self) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            finally:
                self._socket = None

    def close(self) -> None:
        self._disconnect()


def _peer_closed(connection: socket.socket) -> bool:
    """A receiver that closed the connection makes it readable at end of stream."""
    readable, _, _ = select.select([connection], [], [], 0)
    if not readable:
        return False
    connection.setblocking(False)
    try:
        return connection.recv(1) == b""
    except (BlockingIOError, ssl.SSLWantReadError):
        return False
    except OSError:
        return True
    finally:
        connection.setblocking(True)


def _unacknowledged(connection: socket.socket) -> int:
    if not hasattr(termios, "TIOCOUTQ"):
        return 0  # not Linux: the kernel accepted the bytes, nothing more is known
    buffer = fcntl.ioctl(connection.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    return struct.unpack("i", buffer)[0]


def _header_field(value: str, limit: int) -> str:
    """RFC 5424 header fields are printable US-ASCII without spaces."""
    cleaned = "".join(c if 33 <= ord(c) <= 126 else "_" for c in value)[:limit]
    return cleaned or NILVALUE


#: stands for the record's id in its log (Zeek ``uid``, Windows ``EventRecordID``)
RECORD = "record"
#: alert fields written as structured-data parameters, by parameter name
SD_FIELDS = (("eventId", "event.id"), ("rule", "rule.name"), ("ruleId", "rule.id"), ("level", "rule.level"),
             ("dataset", "event.dataset"), ("outcome", "event.outcome"), ("src", "source.ip"),
             ("srcPort", "source.port"), ("dst", "destination.ip"), ("dstPort", "destination.port"),
             ("risk", "risk_score"), ("record", RECORD))


def structured_data(sd_id: str, alert: dict) -> str:
    params = "".join(f' {name}="{sd_escape(value)}"' for name, value in _fields(alert, SD_FIELDS))
    return f"[{sd_id}{params}]"


def sd_escape(value: object) -> str:
    """RFC 5424 section 6.3.3: ``"``, ``\\`` and ``]`` in a PARAM-VALUE are escaped with ``\\``."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


#: CEF extension keys from ArcSight's dictionary, by alert field
CEF_FIELDS = (("externalId", "event.id"), ("rt", "@timestamp"), ("src", "source.ip"), ("spt", "source.port"),
              ("dst", "destination.ip"), ("dpt", "destination.port"), ("proto", "network.transport"),
              ("outcome", "event.outcome"), ("cs1", "event.dataset"), ("cs2", "log.file.path"), ("cs3", RECORD),
              ("msg", "reason"))
CEF_LABELS = " cs1Label=dataset cs2Label=logFile cs3Label=record"


def cef_record(alert: dict, severity: int) -> str:
    rule = alert.get("rule", {})
    header = "|".join(cef_header_escape(part) for part in (
        "rpcwatch", "rpcwatch", __version__, rule.get("id") or rule.get("name", ""), rule.get("name", ""),
        str(severity)))
    extension = " ".join(f"{key}={cef_value_escape(value)}" for key, value in _fields(alert, CEF_FIELDS))
    return f"CEF:0|{header}|{extension}{CEF_LABELS}"


def cef_header_escape(value: object) -> str:
    """CEF header fields: ``\\`` and ``|`` are escaped; a line break would end the record."""
    text = str(value).replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("\r", " ").replace("\n", " ")


def cef_value_escape(value: object) -> str:
    """CEF extension values: ``\\`` and ``=`` are escaped, line breaks written ``\\n``/``\\r``."""
    text = str(value).replace("\\", "\\\\").replace("=", "\\=")
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _fields(alert: dict, names: tuple[tuple[str, str], ...]):
    for name, dotted in names:
        value = document_record_id(alert) if dotted == RECORD else document_field(alert, dotted)
        if name == "rt":  # CEF's receipt time: milliseconds since the epoch
            micros = epoch_micros(value) if isinstance(value, str) else None
            value = None if micros is None else micros // 1000
        if value is not None and value != "":
            yield name, value
