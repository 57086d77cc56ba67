"""Delivery in live mode: a sink that is down does not stop detection (its alerts spool
and go out when it returns), a full spool pauses reading instead of dropping alerts,
correlations keep their windows across batches and restarts."""
from __future__ import annotations

import sqlite3
import textwrap
import time

import pytest
from outputs.sinks.standins import ElasticsearchStandIn

from rpcwatch.hunt import plan_hunt
from rpcwatch.outputs.sinks import SinkSettings, make_sink
from watch.zeek_writer import RPC_RULE, ConnLog, header

DOWN = [503] * 1000


def sinks(live, server):
    return [make_sink(SinkSettings(f"file:{live.alerts_file}")),
            make_sink(SinkSettings(f"elasticsearch+http://127.0.0.1:{server.port}/alerts",
                                   {"retries": 0, "backoff": 0.01}))]


def es_uids(es):
    return sorted(d["original"]["uid"] for d in es.documents.values() if d["rule"]["name"] == RPC_RULE)


def spooled(live):
    with sqlite3.connect(live.state / "state.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM spool").fetchone()[0]


def test_outage_spools_then_delivers(live, httpserver):
    es = ElasticsearchStandIn(whole=list(DOWN))
    es.install(httpserver)
    log, path = live.begin(12, sinks=sinks(live, httpserver), retry_max=0.05)
    assert live.uids(RPC_RULE) == sorted(log.probes)  # the file sink is not held up
    assert es.documents == {} and spooled(live) == 4
    assert "not delivered: elasticsearch+http://127.0.0.1" in live.messages.getvalue()
    log.append(path, 9)
    live.run()  # detection goes on: new lines are read, their alerts spool
    assert live.uids(RPC_RULE) == sorted(log.probes) and spooled(live) == 7
    live.stop()  # the spool survives a restart
    es.whole.clear()
    live.start(sinks=sinks(live, httpserver), retry_max=0.05)
    live.run()
    assert es_uids(es) == sorted(log.probes) and spooled(live) == 0
    assert "delivering again" in live.messages.getvalue() or set(es.creates.values()) == {1}
    log.append(path, 6)
    live.run()
    assert es_uids(es) == sorted(log.probes) == live.uids(RPC_RULE)
    assert set(es.creates.values()) == {1}


def test_a_full_spool_pauses_reading_until_the_sink_returns(live, httpserver):
    es = ElasticsearchStandIn(whole=list(DOWN))
    es.install(httpserver)
    log, path = live.begin(12, sinks=sinks(live, httpserver), retry_max=0.05, spool_limit=1)
    first = sorted(log.probes)
    log.append(path, 12)
    for _ in range(3):
        time.sleep(0.06)
        live.watch.step()
    assert live.uids(RPC_RULE) == first  # new lines wait: nothing read, nothing lost
    assert "the spool of elasticsearch+http" in live.messages.getvalue()
    assert "reading is paused until it takes them; no alert is dropped" in live.messages.getvalue()
    es.whole.clear()
    time.sleep(0.06)
    live.run()
    assert es_uids(es) == sorted(log.probes) == live.uids(RPC_RULE)
    assert "reading resumes" in live.messages.getvalue()


def test_refused_documents_are_kept_with_the_reason(live, httpserver):
    log = ConnLog()
    (live.logs / "conn.log").write_bytes(header() + log.lines(12))
    es = ElasticsearchStandIn(mapping_errors={"C000000003"})
    es.install(httpserver)
    live.start(sinks=sinks(live, httpserver))
    live.run()
    assert es_uids(es) == [uid for uid in sorted(log.probes) if uid != "C000000003"]
    assert "1 alert(s) refused for good, kept in the state store's 'rejected' table; first reason: HTTP 400 " \
           "mapper_parsing_exception" in live.messages.getvalue()
    rejected = live.watch.store.rejected(live.watch.delivery.sinks[1].key)
    assert [document["original"]["uid"] for _, document in rejected] == ["C000000003"]
    assert spooled(live) == 0  # not retried forever


SWEEP = textwrap.dedent("""
    title: Probe
    id: 5d4c3b2a-1111-4111-8111-111111111111
    name: probe
    logsource: {product: zeek, service: conn}
    detection:
        sel: {conn_state: REJ, id.resp_p: 135}
        condition: sel
    level: low
    ---
    title: Small sweep
    id: 5d4c3b2a-2222-4222-8222-222222222222
    correlation:
        type: value_count
        rules: [probe]
        group-by: [id.orig_h]
        timespan: 10m
        condition: {gte: 4, field: id.resp_h}
    level: high
    """)


def sweep_lines(first: int, count: int, start: float) -> bytes:
    return b"".join(("\t".join([f"{start + i:.6f}", f"CW{first + i}", "45.83.64.17", "4000", f"10.20.0.{first + i}",
                                "135", "tcp", "-", "0.1", "0", "0", "REJ", "F", "T", "0", "Sr", "1", "44", "1", "40",
                                "-"]) + "\n").encode() for i in range(count))


@pytest.fixture
def sweep_plan(tmp_path):
    (tmp_path / "sweep.yml").write_text(SWEEP)
    plan = plan_hunt([str(tmp_path / "sweep.yml")], bundled=False)
    assert not plan.problems
    return plan


def correlations(live):
    return [a for a in live.alerts() if a["event"]["dataset"] == "correlation"]


def start_sweep(live, plan, probes: int):
    """A watcher running ``plan`` on a conn.log whose first ``probes`` lines it has read."""
    live._plan = plan
    path = live.logs / "conn.log"
    path.write_bytes(header() + sweep_lines(1, probes, 1717236000))
    live.start()
    live.run()
    return path


def move_on(live, path) -> None:
    """The log two hours on (a probe from elsewhere): every sweep episode so far is over."""
    with open(path, "ab") as fh:
        fh.write(sweep_lines(90, 1, 1717236000 + 7200).replace(b"45.83.64.17", b"45.83.64.99"))
    live.run()


def test_a_window_spans_batches_and_its_episode_is_raised_once(live, sweep_plan):
    path = start_sweep(live, sweep_plan, 2)
    with open(path, "ab") as fh:
        fh.write(sweep_lines(3, 2, 1717236060))
    live.run()
    with open(path, "ab") as fh:
        fh.write(sweep_lines(5, 3, 1717236120))
    live.run()
    assert correlations(live) == []  # the sweep may go on: its episode is open
    move_on(live, path)
    found = correlations(live)
    assert len(found) == 1 and found[0]["correlation"]["group"] == {"id.orig_h": "45.83.64.17"}
    assert found[0]["correlation"]["first_seen"] == "2024-06-01T10:00:00.000000Z"
    assert found[0]["correlation"]["events_count"] == 7


def test_restart_with_a_window_open(live, sweep_plan):
    path = start_sweep(live, sweep_plan, 3)
    live.stop()
    with open(path, "ab") as fh:
        fh.write(sweep_lines(4, 2, 1717236060))
    live.start()
    live.run()
    move_on(live, path)
    found = correlations(live)
    assert len(found) == 1 and found[0]["correlation"]["events_count"] == 5


def test_crash_between_delivery_and_commit(live, httpserver):
    """The moment kill -9 rarely hits: alerts written and acknowledged, checkpoint not yet
    committed. The restart makes the same alerts again: the file sink first removes what
    it holds past its committed size, Elasticsearch answers 409 to each replay."""
    es = ElasticsearchStandIn()
    es.install(httpserver)
    log, path = live.begin(9, sinks=sinks(live, httpserver))
    log.append(path, 12)
    watch = live.watch
    pieces = watch.follower.poll()
    watch.delivery.send(watch._detect(pieces))  # delivered ...
    assert len(live.uids(RPC_RULE)) == len(log.probes)
    watch.store.close()  # ... and the process dies before the commit
    watch.delivery.close()
    live.watch = None
    live.start(sinks=sinks(live, httpserver))
    live.run()
    assert "bytes written after the last checkpoint (a batch interrupted by a crash" in live.messages.getvalue()
    assert live.uids(RPC_RULE) == sorted(log.probes)
    assert es.conflicts == 4 and es_uids(es) == sorted(log.probes) and set(es.creates.values()) == {1}
