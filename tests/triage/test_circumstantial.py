"""Circumstantial evidence (stages 5-7): the victim's later behaviour counts only when new
for this host, unusual for it, and close in time; each decision says why."""
from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import pytest
from synthetic_network import START, ZeekLogWriter

from rpcwatch.config import Config
from rpcwatch.engines.duckdb import DuckDBEngine
from rpcwatch.hunt import plan_hunt
from rpcwatch.sources import expand_inputs
from rpcwatch.triage.circumstantial import poisson_tail
from rpcwatch.triage.run import run_triage

SOURCE, VICTIM = "185.220.101.7", "10.1.1.20"
HOUR = 3600.0
SESSION = START + 12 * HOUR


class Day:
    """One victim's day in conn.log, and a session to its TCP/135 from the internet at noon."""

    def __init__(self, folder: Path, seed: int = 1):
        self.folder = folder
        self.rng = random.Random(seed)
        self.log = ZeekLogWriter(self.rng, ipaddress.ip_network("10.0.0.0/8"))
        self.log.connection(SESSION, SOURCE, VICTIM, 135, sent=0, received=72)

    def usual(self, every: float = 600, since: float = START, until: float = START + 24 * HOUR) -> Day:
        """Its domain controller over SMB and a web site, every ``every`` seconds."""
        ts = since
        while ts < until:
            self.log.connection(ts, VICTIM, "10.1.0.10", 445, service="smb")
            self.log.connection(ts + 5, VICTIM, "151.101.1.69", 443, service="ssl")
            ts += every
        return self

    def browsing(self, per_hour: float, since: float = START, until: float = START + 24 * HOUR) -> Day:
        ts = since
        while ts < until:
            ts += self.rng.expovariate(per_hour / HOUR)
            self.log.connection(ts, VICTIM, f"{self.rng.randrange(23, 200)}.{self.rng.randrange(256)}."
                                             f"{self.rng.randrange(256)}.{self.rng.randrange(1, 255)}", 443)
        return self

    def triage(self):
        self.log.write(self.folder)
        result = run_triage(list(expand_inputs([str(self.folder)])), plan_hunt((), Config()), DuckDBEngine())
        [incident] = result.incidents
        return incident


def stages(incident) -> list[str | None]:
    return [stage.strength for stage in incident.stages]


def why(incident, number: int) -> str:
    return " | ".join(incident.stages[number - 1].judgement)


def test_a_sweep_of_new_hosts_after_the_session_is_reconnaissance(tmp_path):
    day = Day(tmp_path).usual()
    for n in range(6):
        day.log.connection(SESSION + 300 + n, VICTIM, f"10.1.2.{n + 1}", 445, state="REJ")
    incident = day.triage()
    assert (incident.stage, incident.direct_stage, incident.severity) == (5, 2, "medium")
    assert incident.risk_score == 59  # 50 for the session, 3 per circumstantial stage
    assert stages(incident) == ["direct", "direct", None, None, "circumstantial", None, None]
    assert "6 first contact(s) with other internal hosts" in why(incident, 5) and "unusual (p = " in why(incident, 5)
    assert "the host's usual rate is up to 0.1" in why(incident, 5)
    assert incident.severity_reason.endswith("which raises severity to at most medium")


def test_the_same_connections_to_its_usual_servers_are_its_ordinary_day(tmp_path):
    incident = Day(tmp_path).usual().triage()
    assert incident.stage == 2
    assert why(incident, 5).endswith("had contacted before its first internet session: its ordinary day")
    assert incident.stages[4].summary.startswith("not seen: 7 later connection(s) of the victim judged ordinary")


def test_first_contacts_at_the_hosts_usual_rate_are_not_counted(tmp_path):
    incident = Day(tmp_path).usual().browsing(per_hour=30).triage()
    assert incident.stage == 2
    assert "ordinary for this host (p = " in why(incident, 7) and "not counted" in why(incident, 7)


def test_later_than_the_window_nothing_counts(tmp_path):
    day = Day(tmp_path).usual()
    for n in range(6):
        day.log.connection(SESSION + 2 * HOUR + n, VICTIM, f"10.1.2.{n + 1}", 445, state="REJ")
    assert day.triage().stage == 2


def test_a_connection_back_to_the_source_counts_on_a_busy_host(tmp_path):
    day = Day(tmp_path).usual().browsing(per_hour=30)
    day.log.connection(SESSION + 90, VICTIM, SOURCE, 443, sent=20_000, received=90_000)
    incident = day.triage()
    assert (incident.stage, incident.severity) == (7, "medium")
    assert f"1 connection(s) back to the source {SOURCE}" in why(incident, 7)


def test_a_beacon_to_a_new_host_counts_on_a_busy_host(tmp_path):
    day = Day(tmp_path).usual().browsing(per_hour=30)
    beat = SESSION + 120
    while beat < SESSION + 5 * HOUR:
        day.log.connection(beat, VICTIM, "91.234.56.78", 443, sent=1100 + day.rng.randrange(30), received=500)
        beat += 60 * day.rng.uniform(0.9, 1.1)
    incident = day.triage()
    assert incident.stage == 7
    assert "periodic connections to 91.234.56.78, first made in the window: " in why(incident, 7)
    assert "connections about every 1.0 min (timestamp score 0.9" in why(incident, 7)
    assert "a beacon, counted" in why(incident, 7)


def test_a_short_baseline_takes_the_rate_after_the_window_and_the_usual_peers_as_usual(tmp_path):
    """The session at 00:20: the host's usual peers (every 40 minutes) have barely shown
    yet; they recur all day, so they are its day, not new behaviour."""
    day = Day(tmp_path)
    day.log.conn.clear()
    day.log.connection(START + 20 * 60, SOURCE, VICTIM, 135, sent=0, received=72)
    day.usual(every=2400, since=START + 300)
    incident = day.triage()
    assert incident.stage == 2
    assert incident.victims[0].baseline["too_short"] is True


def test_without_any_reference_a_bare_session_leaves_later_traffic_uncounted(tmp_path):
    day = Day(tmp_path)
    for n in range(3):
        day.log.connection(SESSION + 60 + n, VICTIM, f"10.1.2.{n + 1}", 445)
    incident = day.triage()
    assert incident.stage == 2
    assert "nothing but a session is direct: not counted" in why(incident, 5)


def test_without_any_reference_rpc_use_lets_first_contacts_count(tmp_path):
    day = Day(tmp_path)
    day.log.connection(SESSION + 1, SOURCE, VICTIM, 49667, service="dce_rpc")  # the follow-on: stage 3
    for n in range(3):
        day.log.connection(SESSION + 60 + n, VICTIM, f"10.1.2.{n + 1}", 445)
    incident = day.triage()
    assert (incident.stage, incident.direct_stage, incident.severity) == (6, 3, "high")
    assert "the source used RPC on it directly (stage 3): counted" in why(incident, 5)


@pytest.mark.parametrize("count,expected,tail", [(0, 1.0, 1.0), (1, 0.0, 0.0), (1, 1.0, 0.6321), (3, 0.1667, 0.0007),
                                                 (8, 2.5, 0.0042), (19, 10.0, 0.0072)])
def test_poisson_tail(count, expected, tail):
    assert poisson_tail(count, expected) == pytest.approx(tail, abs=1e-4)
