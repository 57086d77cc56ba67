"""Suppression: one alert per key per window, exact at the window's edges."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from rpcwatch.alerts import Alert, epoch_micros, iso_from_micros
from rpcwatch.engines.duckdb import DuckDBEngine
from rpcwatch.hunt import Hunt, plan_hunt
from rpcwatch.sources import expand_inputs
from rpcwatch.triage.suppress import Suppression, SuppressionError, parse_duration, suppress

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MINUTE = 60_000_000


def hunt(paths) -> tuple[list[Alert], None]:
    return list(Hunt(list(expand_inputs([str(p) for p in paths])), plan_hunt(), DuckDBEngine())), None


def shown_as_documents(alerts: list[Alert], fields: str, window: str | None) -> list[dict]:
    return [a.to_dict() for a in suppress(alerts, Suppression.parse(fields, window))]


@pytest.fixture(scope="module")
def probe() -> Alert:
    """A real alert (the examples' first rejected probe) to copy with other times."""
    alerts, _ = hunt([EXAMPLES])
    return next(a for a in alerts if a.record_id == "CBb8kaw3ZqRMm2AKxh")


def at(alert: Alert, micros: int, uid: str) -> Alert:
    return replace(alert, timestamp=iso_from_micros(micros), record_id=uid, original={**alert.original, "uid": uid})


def test_window_edges(probe):
    """[t, t + 5m): just inside stays, exactly at the edge and after open new windows."""
    start = epoch_micros(probe.timestamp)
    times = {"first": start, "inside": start + 5 * MINUTE - 1, "edge": start + 5 * MINUTE,
             "edge+inside": start + 10 * MINUTE - 1, "outside": start + 10 * MINUTE + 1}
    # input order must not matter: feed them backwards
    alerts = [at(probe, t, uid) for uid, t in reversed(times.items())]
    shown = shown_as_documents(alerts, "source.ip,destination.ip", "5m")
    assert [(a["count"], a["suppression"]["record_ids"]) for a in shown] == [
        (2, ["first", "inside"]), (2, ["edge", "edge+inside"]), (1, ["outside"])]
    assert shown[0]["first_seen"] == probe.timestamp
    assert shown[0]["last_seen"] == iso_from_micros(times["inside"])
    assert shown[1]["first_seen"] == iso_from_micros(times["edge"])
    assert shown[0]["suppression"]["values"] == ["45.83.64.17", "10.20.0.10"]
    assert shown[0]["suppression"]["window"] == "5m"


def test_keys_are_per_rule_and_per_value():
    alerts, _ = hunt([EXAMPLES])
    shown = shown_as_documents(alerts, "source.ip", None)
    counts = {(a["rule"]["name"], a["source"]["ip"]): a["count"] for a in shown}
    assert counts == {("Detect RPC from Internet", "45.83.64.17"): 5,
                      ("Detect RPC from Internet", "167.94.138.44"): 1,
                      ("Detect RPC from Internet", "2a03:b0c0:3:d0::1f:7001"): 1,
                      ("DCE/RPC from Internet", "167.94.138.44"): 6,
                      ("Remote Execution over DCE/RPC from Internet", "167.94.138.44"): 2,
                      ("Detect RPC from Internet - Windows", "167.94.138.44"): 1,
                      ("RPC Sweep from Internet", "45.83.64.17"): 1,
                      ("RPC from Internet Followed by Remote Execution", "167.94.138.44"): 1}
    assert sum(a["count"] for a in shown) == len(alerts)


def test_fields_inside_the_original_record():
    alerts, _ = hunt([EXAMPLES])
    shown = shown_as_documents(alerts, "original.id.resp_h", "1h")
    assert {a["suppression"]["values"][0] for a in shown} >= {"10.20.0.12", "10.20.0.10"}


def test_rita_one_alert_per_source_per_day(corpus):
    alerts, _ = hunt([corpus / "rita"])
    shown = shown_as_documents(alerts, "source.ip", "1d")
    assert sum(a["count"] for a in shown) == 31
    by_source = {}
    for alert in shown:
        by_source.setdefault(alert["source"]["ip"], []).append(alert["count"])
    assert len(by_source) == 29
    # 83.97.73.157 came back 4 h later (one window), 172.104.242.173 11 h later (one window)
    assert by_source["83.97.73.157"] == [2] and by_source["172.104.242.173"] == [2]


@pytest.mark.parametrize("text,micros", [("30s", 30_000_000), ("5m", 5 * MINUTE), ("1h30m", 90 * MINUTE),
                                         ("500ms", 500_000), ("2d", 2 * 86_400_000_000), ("90", 90_000_000)])
def test_durations(text, micros):
    assert parse_duration(text) == micros


@pytest.mark.parametrize("fields,window,message", [
    ("a,b,c,d", "5m", "at most 3"), ("source.ip,", "5m", "empty field"), ("source.ip", "soon", "duration"),
    ("source.ip", "0s", "longer than zero"), ("src.ip", "5m", "no alert has the field")])
def test_bad_options(fields, window, message):
    with pytest.raises(SuppressionError, match=message):
        Suppression.parse(fields, window)
