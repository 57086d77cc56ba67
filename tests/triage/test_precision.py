"""Precision on a day of an organisation's network (``synthetic_network.py``): the stage of
every planted internet source, the strength of its evidence, and no benign session
escalated by the victims' ordinary traffic."""
from __future__ import annotations

import pytest
from synthetic_network import generate_network_day

from rpcwatch.config import Config
from rpcwatch.engines.duckdb import DuckDBEngine
from rpcwatch.hunt import plan_hunt
from rpcwatch.sources import expand_inputs
from rpcwatch.triage.run import run_triage


@pytest.fixture(scope="module", params=[1, 2, 3])
def day(request, tmp_path_factory):
    network = generate_network_day(tmp_path_factory.mktemp(f"day{request.param}"), seed=request.param, hosts=300)
    result = run_triage(list(expand_inputs([str(network.folder)])), plan_hunt((), Config()), DuckDBEngine())
    return network, result


def test_the_day_is_an_ordinary_one_around_the_plants(day):
    network, _ = day
    assert network.internal_hosts == 300 and network.conn_rows > 100_000
    kinds = sorted((p.kind, p.stage) for p in network.planted.values())
    assert kinds.count(("scanner", 1)) == 30 and kinds.count(("benign-session", 2)) == 8
    assert {k for k in kinds if k[0] == "full-intrusion"} == {("full-intrusion", 6), ("full-intrusion", 7)}


def test_every_source_is_at_its_planted_stage(day):
    network, result = day
    incidents = {i.source: i for i in result.incidents}
    scanning = {source for finding in result.scanning for source in finding.sources}
    reported = {source: incidents[source].stage if source in incidents else 1 if source in scanning else None
                for source in network.planted}
    assert reported == {source: planted.stage for source, planted in network.planted.items()}
    assert set(incidents) == {s for s, p in network.planted.items() if p.opens_incident}  # nothing unplanned


def test_direct_evidence_shows_what_the_source_did(day):
    network, result = day
    for incident in result.incidents:
        planted = network.planted[incident.source]
        direct = tuple(s.number for s in incident.stages if s.strength == "direct")
        assert direct == planted.direct, incident.source
        assert incident.direct_stage == max(planted.direct)
        assert [v.address for v in incident.victims] == list(planted.victims)


def test_full_intrusions_reach_six_or_seven_with_three_and_four_direct(day):
    network, result = day
    full = [i for i in result.incidents if network.planted[i.source].kind == "full-intrusion"]
    assert len(full) == 6
    for incident in full:
        assert incident.stage in (6, 7) and incident.stages[2].strength == incident.stages[3].strength == "direct"
        assert incident.severity == "critical"
        assert all(s.strength == "circumstantial" for s in incident.stages[4:incident.stage])


def test_benign_sessions_stay_sessions_and_say_why(day):
    network, result = day
    benign = [i for i in result.incidents if network.planted[i.source].kind == "benign-session"]
    assert len(benign) == 8
    for incident in benign:
        assert (incident.stage, incident.direct_stage, incident.severity) == (2, 2, "medium")
        assert incident.risk_score == 50
    # the victims' later traffic was looked at, and judged ordinary with a reason
    judged = [j for i in benign for s in i.stages[4:] for j in s.judgement]
    assert judged and all("not counted" in j or "ordinary day" in j for j in judged)


def test_scanners_are_folded_into_scanning_findings(day):
    network, result = day
    scanners = {s for s, p in network.planted.items() if p.kind == "scanner"}
    assert {source for finding in result.scanning for source in finding.sources} == scanners
    assert sum(finding.probes for finding in result.scanning) == sum(network.planted[s].probes for s in scanners)
    probed = {host for finding in result.scanning for host in finding.hosts}
    assert probed == {host for s in scanners for host in network.planted[s].victims}
