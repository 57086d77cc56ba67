"""The OTRF Empire PsExec recording (DCE/RPC over TCP to svcctl) as triage inputs, with the
client moved to the internet.

Network: the victim-side capture (WORKSTATION6) made into Zeek-shaped conn.log and
dce_rpc.log records: one conn record per TCP connection, one dce_rpc record per answered
request, interface names from the bind's UUID and operation names from the request's
opnum (Zeek's naming). Only the names this recording needs are known here; the rest
would be ``unknown-<opnum>`` as Zeek writes them. Host: the NXLog NDJSON recording as a
``windows`` Arrow table with the Windows reader's names (Hostname -> Computer,
RecordNumber -> EventRecordID). Every value comes from the recordings; only the client's
address is rewritten.
"""
from __future__ import annotations

import hashlib
import json
import socket
import struct
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import dpkt
import pyarrow as pa

DATASET = "otrf-security-datasets/datasets/atomic/windows/lateral_movement"
NETWORK = f"{DATASET}/network/empire_psexec_dcerpc_tcp_svcctl.zip"
CAPTURE = "empire_psexec_dcerpc_tcp_svcctl_WORKSTATION6_2020-09-20121608.cap"
HOST = f"{DATASET}/host/empire_psexec_dcerpc_tcp_svcctl.zip"
CLIENT = "172.18.39.5"          # WORKSTATION5, the attacker side in the lab
VICTIM = "172.18.39.6"          # WORKSTATION6
INTERNET_CLIENT = "45.83.64.5"  # where the client is moved to
VICTIM_HOST = "WORKSTATION6.theshire.local"

#: Zeek's names (consts.zeek) for the interfaces and opnums of this recording
INTERFACES = {
    uuid.UUID("e1af8308-5d1f-11c9-91a4-08002b14a0fa"): ("epmapper", {2: "ept_lookup", 3: "ept_map"}),
    uuid.UUID("367abb81-9844-35f1-ad32-98f038001003"): ("svcctl", {
        0: "CloseServiceHandle", 2: "DeleteService", 12: "CreateServiceW", 15: "OpenSCManagerW",
        16: "OpenServiceW", 19: "StartServiceW", 24: "CreateServiceA", 27: "OpenSCManagerA",
        28: "OpenServiceA", 31: "StartServiceA", 64: "OpenSCManager2"}),
}
_BIND, _BIND_ACK, _ALTER, _REQUEST, _RESPONSE = 11, 12, 14, 0, 2


@dataclass
class _Connection:
    ts: float
    uid: str
    orig: tuple[str, int]
    resp: tuple[str, int]
    flags_seen: set = field(default_factory=set)
    orig_bytes: int = 0
    resp_bytes: int = 0
    orig_pkts: int = 0
    resp_pkts: int = 0
    last: float = 0.0
    contexts: dict = field(default_factory=dict)
    pending: dict = field(default_factory=dict)
    rpc: list = field(default_factory=list)

    def conn_state(self) -> str:
        if "resp_rst" in self.flags_seen and "synack" not in self.flags_seen:
            return "REJ"
        if "synack" not in self.flags_seen:
            return "S0"
        return "SF" if {"orig_fin", "resp_fin"} <= self.flags_seen else "S1"


def _rewrite(address: str) -> str:
    return INTERNET_CLIENT if address == CLIENT else address


def zeek_records(corpus: Path) -> tuple[list[dict], list[dict]]:
    """conn.log and dce_rpc.log records of the victim-side capture (TCP only)."""
    with zipfile.ZipFile(corpus / NETWORK) as archive, archive.open(CAPTURE) as capture:
        connections: dict[tuple, _Connection] = {}
        for ts, frame in dpkt.pcap.Reader(capture):
            packet = dpkt.ethernet.Ethernet(frame).data
            if not isinstance(packet, dpkt.ip.IP) or not isinstance(packet.data, dpkt.tcp.TCP):
                continue
            _packet(connections, ts, socket.inet_ntoa(packet.src), socket.inet_ntoa(packet.dst), packet.data)
    conn, dce_rpc = [], []
    for c in sorted(connections.values(), key=lambda c: c.ts):
        ends = {"id.orig_h": _rewrite(c.orig[0]), "id.orig_p": c.orig[1],
                "id.resp_h": _rewrite(c.resp[0]), "id.resp_p": c.resp[1]}
        conn.append({"ts": c.ts, "uid": c.uid, **ends, "proto": "tcp",
                     **({"service": "dce_rpc"} if c.rpc else {}), "duration": round(c.last - c.ts, 6),
                     "orig_bytes": c.orig_bytes, "resp_bytes": c.resp_bytes, "conn_state": c.conn_state(),
                     "orig_pkts": c.orig_pkts, "resp_pkts": c.resp_pkts})
        for answered, rtt, endpoint, operation in c.rpc:
            dce_rpc.append({"ts": answered, "uid": c.uid, **ends, "rtt": rtt, "named_pipe": str(c.resp[1]),
                            "endpoint": endpoint, "operation": operation})
    return conn, dce_rpc


def _packet(connections: dict, ts: float, src: str, dst: str, tcp: dpkt.tcp.TCP) -> None:
    forward, backward = (src, tcp.sport, dst, tcp.dport), (dst, tcp.dport, src, tcp.sport)
    if forward not in connections and backward not in connections:
        if not (tcp.flags & dpkt.tcp.TH_SYN) or tcp.flags & dpkt.tcp.TH_ACK:
            return  # started before the capture: not a connection Zeek would orient
        uid = "C" + hashlib.sha1(repr(forward).encode()).hexdigest()[:17]
        connections[forward] = _Connection(ts, uid, (src, tcp.sport), (dst, tcp.dport))
    from_orig = forward in connections
    c = connections[forward if from_orig else backward]
    c.last = ts
    side = "orig" if from_orig else "resp"
    if tcp.flags & dpkt.tcp.TH_SYN and tcp.flags & dpkt.tcp.TH_ACK:
        c.flags_seen.add("synack")
    if tcp.flags & dpkt.tcp.TH_FIN:
        c.flags_seen.add(f"{side}_fin")
    if tcp.flags & dpkt.tcp.TH_RST:
        c.flags_seen.add(f"{side}_rst")
    setattr(c, f"{side}_pkts", getattr(c, f"{side}_pkts") + 1)
    setattr(c, f"{side}_bytes", getattr(c, f"{side}_bytes") + len(tcp.data))
    _dce_rpc(c, ts, bytes(tcp.data))


def _dce_rpc(c: _Connection, ts: float, payload: bytes) -> None:
    """Bind/alter-context name the interface of a context; a response answers a request."""
    if len(payload) < 24 or payload[0] != 5:
        return
    ptype, call_id = payload[2], struct.unpack("<I", payload[12:16])[0]
    if ptype in (_BIND, _ALTER):
        offset = 28  # after max_xmit/max_recv/assoc_group and the context count (+3 pad)
        for _ in range(payload[24]):
            context_id, transfers = struct.unpack("<HB", payload[offset:offset + 3])
            c.contexts[context_id] = uuid.UUID(bytes_le=payload[offset + 4:offset + 20])
            offset += 24 + 20 * transfers
    elif ptype == _REQUEST:
        context_id, opnum = struct.unpack("<HH", payload[20:24])
        c.pending[call_id] = (ts, context_id, opnum)
    elif ptype == _RESPONSE and call_id in c.pending:
        asked, context_id, opnum = c.pending.pop(call_id)
        interface = c.contexts.get(context_id)
        name, operations = INTERFACES.get(interface, (f"unknown-{interface}", {}))
        c.rpc.append((ts, round(ts - asked, 6), name, operations.get(opnum, f"unknown-{opnum}")))


def write_zeek_logs(corpus: Path, folder: Path) -> list[Path]:
    conn, dce_rpc = zeek_records(corpus)
    paths = []
    for name, records in (("conn.log", conn), ("dce_rpc.log", dce_rpc)):
        path = folder / name
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        paths.append(path)
    return paths


#: NXLog names -> the windows table's (as the Windows reader renames them)
_NXLOG_NAMES = {"Hostname": "Computer", "RecordNumber": "EventRecordID"}
_ADDRESS_FIELDS = ("SourceIp", "DestinationIp", "SourceAddress", "DestAddress")
_INTEGER_FIELDS = ("EventID", "EventRecordID")


def windows_table(corpus: Path) -> pa.Table:
    """The host recording (every event) as the ``windows`` table, client address rewritten."""
    with zipfile.ZipFile(corpus / HOST) as archive:
        member = next(n for n in archive.namelist() if n.endswith(".json"))
        events = [json.loads(line) for line in archive.read(member).splitlines() if line.strip()]
    rows = []
    for event in events:
        row = {_NXLOG_NAMES.get(k, k): v for k, v in event.items() if isinstance(v, (str, int, float))}
        for name in _ADDRESS_FIELDS:
            if name in row:
                row[name] = _rewrite(row[name])
        # Sysmon's own UTC time where it has one, else the collector's
        row["TimeCreated_SystemTime"] = event.get("UtcTime") or event.get("@timestamp")
        rows.append({k: str(v) if k not in _INTEGER_FIELDS else v for k, v in row.items()})
    names = dict.fromkeys(name for row in rows for name in row)
    schema = pa.schema([(n, pa.int64() if n in _INTEGER_FIELDS else pa.string()) for n in names])
    return pa.Table.from_pylist(rows, schema=schema)
