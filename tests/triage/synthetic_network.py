"""A day of an organisation's network as Zeek logs, with planted RPC intrusions and ground truth.

Hundreds of internal hosts live an ordinary day: workstations ask their domain controller
for DNS, LDAP and Kerberos, map drives on their file server over SMB, call the endpoint
mapper at logon, a few administrators RDP to a jump host, and everybody browses: a
personal set of sites all day plus new ones at a rate of their own. Servers talk to the
domain controllers and to a handful of update and monitoring services (one of them
periodic, as monitoring agents are). Into that day the generator plants, from internet
sources, what triage must tell apart:

========================  =============================================================  =====
kind                      what the source does                                           stage
========================  =============================================================  =====
``scanner``               TCP/135 probes that are refused or unanswered (single hosts,     1
                          a sweep of a subnet, the same exposed host again and again)
``benign-session``        a completed handshake to TCP/135 of an exposed host, nothing     2
                          more; the host goes on with its ordinary day
``rpc-negotiation``       a session, then endpoint-mapper calls (as research scanners do)  3
``remote-execution``      a session, endpoint mapper, then svcctl CreateService/Start-     4
                          Service on a dynamic port; nothing visible follows
``full-intrusion``        remote execution, then the victim sweeps internal hosts on       6/7
                          135/445 (some refuse), moves laterally (an SMB session with
                          data and svcctl calls to a new host) and, for stage 7, beacons
                          every minute to a new external host or calls back the source
========================  =============================================================  =====

Victims are chosen among quiet servers and busy workstations, early in the day (a short
baseline) and later (a long one). Every record is deterministic for a seed. The ground
truth (:class:`PlantedSource`) says per internet source what a correct triage reports.
"""
from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass
from pathlib import Path

DAY = 86_400.0
START = 1_717_200_000.0  # 2024-06-01T00:00:00Z
CONN_FIELDS = ("ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "service", "duration",
               "orig_bytes", "resp_bytes", "conn_state", "local_orig", "local_resp", "missed_bytes", "history",
               "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes", "tunnel_parents")
CONN_TYPES = ("time", "string", "addr", "port", "addr", "port", "enum", "string", "interval", "count", "count",
              "string", "bool", "bool", "count", "string", "count", "count", "count", "count", "set[string]")
RPC_FIELDS = ("ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "rtt", "named_pipe", "endpoint",
              "operation")
RPC_TYPES = ("time", "string", "addr", "port", "addr", "port", "interval", "string", "string", "string")
HISTORY = {"SF": "ShADadFf", "REJ": "Sr", "S0": "S", "RSTO": "ShADR", "S1": "ShAD"}


@dataclass
class PlantedSource:
    """Ground truth for one internet source."""

    source: str
    kind: str
    #: the stage a correct triage reaches, and the stages it must show from direct evidence
    stage: int
    direct: tuple[int, ...]
    victims: tuple[str, ...]
    #: when the source first touched the victims (epoch seconds)
    time: float
    notes: str = ""
    #: connections to TCP/135 (scanners: each a refused or unanswered probe)
    probes: int = 1

    @property
    def opens_incident(self) -> bool:
        return self.stage >= 2


@dataclass
class NetworkDay:
    folder: Path
    planted: dict[str, PlantedSource]
    internal_hosts: int
    conn_rows: int
    rpc_rows: int


@dataclass
class _Host:
    address: str
    role: str                      # workstation, server, dc, file, jump
    file_server: str = ""
    dc: str = ""
    usual_sites: tuple[str, ...] = ()
    browse_rate: float = 0.0       # new sites per working hour
    admin: bool = False


class ZeekLogWriter:
    """Zeek conn and dce_rpc records, uids and ephemeral ports."""

    def __init__(self, rng: random.Random, internal: ipaddress.IPv4Network):
        self.rng = rng
        self.internal = internal
        self.conn: list[tuple] = []
        self.rpc: list[tuple] = []
        self._uids = 0

    def uid(self) -> str:
        self._uids += 1
        return f"C{self._uids:08d}{self.rng.getrandbits(40):010x}"

    def port(self) -> int:
        return 49152 + self.rng.randrange(16384)

    def local(self, address: str) -> str:
        return "T" if ipaddress.ip_address(address) in self.internal else "F"

    def connection(self, ts: float, orig: str, resp: str, port: int, proto: str = "tcp", state: str = "SF",
                   service: str = "-", sent: int | None = None, received: int | None = None,
                   orig_port: int | None = None, duration: float | None = None) -> str:
        uid = self.uid()
        if state in ("REJ", "S0"):
            sent, received, duration = (0, 0, 0.0) if state == "REJ" else (None, None, None)
        else:
            sent = self.rng.randrange(200, 4000) if sent is None else sent
            received = self.rng.randrange(200, 20000) if received is None else received
            duration = round(self.rng.uniform(0.01, 30.0), 6) if duration is None else duration
        history = HISTORY.get(state, "Dd") if proto == "tcp" else "Dd"
        packets = (1, 1 if state == "REJ" else 0) if state in ("REJ", "S0") else (
            2 + (sent or 0) // 500, 2 + (received or 0) // 500)
        self.conn.append((ts, uid, orig, self.port() if orig_port is None else orig_port, resp, port, proto, service,
                          "-" if duration is None else f"{duration:.6f}", _count(sent), _count(received), state,
                          self.local(orig), self.local(resp), 0, history, packets[0],
                          packets[0] * 40 + (sent or 0), packets[1], packets[1] * 40 + (received or 0), "-"))
        return uid

    def call(self, ts: float, uid: str, orig: str, orig_port: int, resp: str, port: int, interface: str,
             operation: str) -> None:
        self.rpc.append((ts, uid, orig, orig_port, resp, port, f"{self.rng.uniform(0.0002, 0.02):.6f}",
                         str(port), interface, operation))

    def session_with_calls(self, ts: float, orig: str, resp: str, port: int, calls: list[tuple[str, str]]) -> float:
        """A TCP connection with DCE/RPC calls on it; returns when the last call was made."""
        orig_port = self.port()
        uid = self.connection(ts, orig, resp, port, service="dce_rpc", orig_port=orig_port,
                              sent=400 + 300 * len(calls), received=300 + 200 * len(calls))
        when = ts
        for interface, operation in calls:
            when += self.rng.uniform(0.05, 0.4)
            self.call(when, uid, orig, orig_port, resp, port, interface, operation)
        return when

    def write(self, folder: Path) -> tuple[int, int]:
        folder.mkdir(parents=True, exist_ok=True)
        _write_log(folder / "conn.log", "conn", CONN_FIELDS, CONN_TYPES, self.conn)
        _write_log(folder / "dce_rpc.log", "dce_rpc", RPC_FIELDS, RPC_TYPES, self.rpc)
        return len(self.conn), len(self.rpc)


def _count(value: int | None) -> str | int:
    return "-" if value is None else value


def _write_log(path: Path, name: str, fields: tuple, types: tuple, rows: list[tuple]) -> None:
    rows.sort(key=lambda row: row[0])
    with open(path, "w", encoding="utf-8") as out:
        out.write("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n")
        out.write(f"#path\t{name}\n#open\t2024-06-01-00-00-00\n")
        out.write("#fields\t" + "\t".join(fields) + "\n#types\t" + "\t".join(types) + "\n")
        for row in rows:
            out.write(f"{row[0]:.6f}\t" + "\t".join(map(str, row[1:])) + "\n")
        out.write("#close\t2024-06-02-00-00-00\n")


class _Internet:
    """Public addresses that never repeat unless asked to (sites, sources, C2 servers)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()

    def address(self) -> str:
        while True:
            first = self.rng.choice((23, 31, 37, 45, 51, 62, 77, 81, 89, 91, 104, 109, 141, 151, 176, 185, 193, 212))
            text = f"{first}.{self.rng.randrange(256)}.{self.rng.randrange(256)}.{1 + self.rng.randrange(254)}"
            if text not in self.used:
                self.used.add(text)
                return text


class _Day:
    def __init__(self, seed: int, hosts: int):
        self.rng = random.Random(seed)
        self.internet = _Internet(self.rng)
        self.w = ZeekLogWriter(self.rng, ipaddress.ip_network("10.0.0.0/8"))
        self.dcs = ["10.1.0.10", "10.1.0.11"]
        self.files = [f"10.1.0.{20 + n}" for n in range(4)]
        self.jump = "10.1.0.30"
        servers = max(6, hosts // 10)
        self.servers = [_Host(f"10.1.1.{10 + n}", "server", dc=self.dcs[n % 2]) for n in range(servers)]
        self.workstations = [_Host(f"10.1.{16 + n // 200}.{10 + n % 200}", "workstation", dc=self.dcs[n % 2],
                                   file_server=self.files[n % len(self.files)], admin=n % 12 == 0)
                             for n in range(hosts - servers)]
        popular = [self.internet.address() for _ in range(60)]
        self.update_sites = [self.internet.address() for _ in range(4)]
        self.monitoring = self.internet.address()
        for host in self.workstations:
            host.usual_sites = tuple(self.rng.sample(popular, 12))
            host.browse_rate = self.rng.choice((0.5, 2.0, 6.0, 12.0))
        for host in self.servers:
            host.usual_sites = tuple(self.rng.sample(self.update_sites, 2))

    # ---- the ordinary day ------------------------------------------------------------------
    def ordinary(self) -> None:
        for host in self.workstations:
            self._workstation(host)
        for host in self.servers:
            self._server(host)

    def _times(self, rate_per_hour: float, busy: tuple[float, float] = (8, 18), night: float = 0.15) -> list[float]:
        """Poisson event times over the day; outside working hours at ``night`` of the rate."""
        times, hour = [], 0
        while hour < 24:
            rate = rate_per_hour * (1.0 if busy[0] <= hour < busy[1] else night)
            count = _poisson(self.rng, rate)
            times += [START + 3600 * hour + self.rng.uniform(0, 3600) for _ in range(count)]
            hour += 1
        return times

    def _workstation(self, host: _Host) -> None:
        w, me = self.w, host.address
        for ts in self._times(12):
            w.connection(ts, me, host.dc, 53, proto="udp", service="dns", sent=40, received=90)
        for ts in self._times(3):
            w.connection(ts, me, host.dc, 389, service="ldap")
        for ts in self._times(1.5):
            w.connection(ts, me, host.dc, 88, service="krb_tcp")
        for ts in self._times(3):
            w.connection(ts, me, host.file_server, 445, service="smb,gssapi,ntlm")
        for ts in self._times(0.5):
            w.connection(ts, me, host.dc, 445, service="smb")
        for ts in self._times(0.6):  # group policy and logon: endpoint mapper, then the dynamic port
            w.session_with_calls(ts, me, host.dc, 135, [("epmapper", "ept_map")])
            w.connection(ts + 0.3, me, host.dc, 49668, service="dce_rpc")
        if host.admin:
            for ts in self._times(0.8, night=0.0):
                w.connection(ts, me, self.jump, 3389, service="ssl,rdp", duration=self.rng.uniform(60, 3000))
        for ts in self._times(18):
            w.connection(ts, me, self.rng.choice(host.usual_sites), 443, service="ssl")
        for ts in self._times(host.browse_rate, night=0.05):
            w.connection(ts, me, self.internet.address(), self.rng.choice((443, 443, 443, 80)),
                         service="ssl")

    def _server(self, host: _Host) -> None:
        w, me = self.w, host.address
        for ts in self._times(6, busy=(0, 24)):
            w.connection(ts, me, host.dc, 53, proto="udp", service="dns", sent=40, received=90)
        for ts in self._times(1, busy=(0, 24)):
            w.connection(ts, me, host.dc, 389, service="ldap")
        for ts in self._times(0.3, busy=(0, 24)):
            w.connection(ts, me, host.dc, 445, service="smb")
        for ts in self._times(0.5, busy=(0, 24)):
            w.connection(ts, me, self.rng.choice(host.usual_sites), 443, service="ssl")
        # a monitoring agent: every five minutes, all day (a legitimate beacon, in every baseline)
        ts = START + self.rng.uniform(0, 300)
        while ts < START + DAY:
            w.connection(ts, me, self.monitoring, 443, service="ssl", sent=900, received=1200)
            ts += 300 + self.rng.uniform(-3, 3)
        for ts in self._times(4, busy=(0, 24)):  # the exposed services' own clients, from inside
            client = self.rng.choice(self.workstations).address
            w.connection(ts, client, me, 443, service="ssl")

    # ---- what the internet does ------------------------------------------------------------
    def scanners(self, count: int, exposed: list[str]) -> list[PlantedSource]:
        planted = []
        sweep_net = "10.1.1"
        for n in range(count):
            source, ts = self.internet.address(), START + self.rng.uniform(0, DAY - 600)
            state = "REJ" if n % 3 else "S0"
            if n % 10 == 0:  # a sweep of the servers' subnet
                victims = [f"{sweep_net}.{host}" for host in range(1, 40)]
            else:  # an exposed host, now and then twice, an hour apart
                victims = [self.rng.choice(exposed)] * (1 + (n % 4 == 1))
            for index, victim in enumerate(victims):
                self.w.connection(ts + index * (3600 if len(set(victims)) == 1 else 0.05), source, victim, 135,
                                  state=state)
            planted.append(PlantedSource(source, "scanner", 1, (1,), tuple(sorted(set(victims))), ts,
                                         probes=len(victims)))
        return planted

    def benign_session(self, victim: str, ts: float) -> PlantedSource:
        source = self.internet.address()
        state = self.rng.choice(("SF", "RSTO"))
        self.w.connection(ts, source, victim, 135, state=state, sent=0, received=0 if state == "RSTO" else 72)
        return PlantedSource(source, "benign-session", 2, (1, 2), (victim,), ts)

    def rpc_negotiation(self, victim: str, ts: float) -> PlantedSource:
        source = self.internet.address()
        self.w.session_with_calls(ts, source, victim, 135, [("epmapper", "ept_lookup"), ("epmapper", "ept_lookup")])
        return PlantedSource(source, "rpc-negotiation", 3, (1, 2, 3), (victim,), ts)

    def remote_execution(self, victim: str, ts: float, source: str | None = None) -> tuple[PlantedSource, float]:
        source = source or self.internet.address()
        done = self.w.session_with_calls(ts, source, victim, 135, [("epmapper", "ept_map")])
        done = self.w.session_with_calls(done + 0.3, source, victim, 49667, [
            ("svcctl", "OpenSCManagerW"), ("svcctl", "CreateServiceW"), ("svcctl", "StartServiceW")])
        return PlantedSource(source, "remote-execution", 4, (1, 2, 3, 4), (victim,), ts), done

    def full_intrusion(self, victim: str, ts: float, c2: str) -> PlantedSource:
        """Remote execution, a sweep, lateral movement and (``c2``: beacon, callback, none) C2."""
        planted, done = self.remote_execution(victim, ts)
        w, t = self.w, done + self.rng.uniform(20, 90)
        known = {self.jump, *self.dcs, *self.files}
        targets = [host.address for host in self.rng.sample(self.workstations + self.servers, 16)
                   if host.address not in known and host.address != victim][:12]
        for target in targets:
            t += self.rng.uniform(0.2, 3)
            w.connection(t, victim, target, 445, state=self.rng.choice(("SF", "REJ", "S0", "SF")), sent=300,
                         received=300)
            w.connection(t + 0.1, victim, target, 135, state=self.rng.choice(("SF", "REJ")), sent=200, received=200)
        for target in targets[:3]:
            t += self.rng.uniform(0.5, 2)
            w.session_with_calls(t, victim, target, 135, [("epmapper", "ept_lookup")])
        lateral = targets[0]
        t += self.rng.uniform(10, 60)
        w.connection(t, victim, lateral, 445, service="smb,gssapi,ntlm", sent=180_000, received=9_000)
        w.session_with_calls(t + 2, victim, lateral, 49668, [("svcctl", "CreateServiceW"), ("svcctl", "StartServiceW")])
        stage = 6
        if c2 == "beacon":
            server, beat = self.internet.address(), t + self.rng.uniform(30, 200)
            end = min(START + DAY, beat + 6 * 3600)
            while beat < end:
                w.connection(beat, victim, server, 443, service="ssl", sent=1100 + self.rng.randrange(40),
                             received=520 + self.rng.randrange(40), duration=0.4)
                beat += 60 * self.rng.uniform(0.9, 1.1)
            stage = 7
        elif c2 == "callback":
            w.connection(t + self.rng.uniform(30, 200), victim, planted.source, 443, service="ssl", sent=24_000,
                         received=98_000, duration=120)
            stage = 7
        return PlantedSource(planted.source, "full-intrusion", stage, (1, 2, 3, 4), (victim,), ts,
                             notes=f"c2: {c2}")


def _poisson(rng: random.Random, rate: float) -> int:
    """Knuth's method (rates here are small)."""
    limit, count, product = pow(2.718281828459045, -rate), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def generate_network_day(folder: Path, seed: int = 1, hosts: int = 300) -> NetworkDay:
    """Write ``conn.log`` and ``dce_rpc.log`` of one day into ``folder``; the ground truth
    is returned. ``hosts`` internal hosts (at least 60)."""
    if hosts < 60:
        raise ValueError("the network needs at least 60 hosts")
    day = _Day(seed, hosts)
    day.ordinary()
    rng, hour = day.rng, 3600.0
    exposed = [host.address for host in day.servers[:3]]
    planted = day.scanners(30, exposed)
    quiet = day.servers[3:]
    busy = sorted(day.workstations, key=lambda h: -h.browse_rate)
    # benign sessions: on exposed servers and busy workstations, early (a short baseline) and later
    benign_victims = [(exposed[0], 0.4), (exposed[1], 9.5), (exposed[2], 15.0), (busy[0].address, 0.6),
                      (busy[1].address, 10.25), (busy[2].address, 13.5), (quiet[0].address, 11.0),
                      (exposed[0], 17.5)]
    planted += [day.benign_session(victim, START + at * hour + rng.uniform(0, 600)) for victim, at in benign_victims]
    planted.append(day.rpc_negotiation(exposed[1], START + 12.0 * hour))
    planted.append(day.rpc_negotiation(busy[3].address, START + 0.7 * hour))
    planted.append(day.remote_execution(quiet[1].address, START + 14.0 * hour)[0])
    planted.append(day.remote_execution(busy[4].address, START + 9.0 * hour)[0])
    planted.append(day.remote_execution(busy[5].address, START + 0.5 * hour)[0])
    intrusions = [(quiet[2].address, 13.0, "beacon"), (busy[6].address, 10.5, "beacon"),
                  (busy[7].address, 0.3, "beacon"), (quiet[3].address, 16.0, "callback"),
                  (busy[8].address, 11.5, "none"), (exposed[2], 19.0, "beacon")]
    planted += [day.full_intrusion(victim, START + at * hour + rng.uniform(0, 300), c2)
                for victim, at, c2 in intrusions]
    conn_rows, rpc_rows = day.w.write(Path(folder))
    return NetworkDay(Path(folder), {p.source: p for p in planted}, hosts, conn_rows, rpc_rows)
