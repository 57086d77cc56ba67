"""Alert enrichment: ``reason``, ``risk_score``, ``threat`` (MITRE ATT&CK) and the rule's
investigation guide, added to every alert as it leaves the hunt (docs/alerts.md)."""
from __future__ import annotations

from typing import Any

from rpcwatch.config import Config
from rpcwatch.sigma.compiler import CompiledRule
from rpcwatch.triage.mitre import threat_of
from rpcwatch.triage.risk import alert_risk
from rpcwatch.triage.scope import AddressScope


class AlertEnricher:
    """Call with an alert and the rule that raised it; returns the same alert, enriched."""

    def __init__(self, config: Config):
        self.scope = AddressScope(config)
        self._threats: dict[tuple[str, ...], dict | None] = {}

    def __call__(self, alert: dict, rule: CompiledRule) -> dict:
        outcome = alert.get("event", {}).get("outcome")
        alert["reason"] = self.reason(alert)
        alert["risk_score"] = alert_risk(rule.level, outcome, carried_data(alert))
        if rule.tags not in self._threats:
            self._threats[rule.tags] = threat_of(rule.tags)
        if self._threats[rule.tags] is not None:
            alert["threat"] = self._threats[rule.tags]
        if rule.guide:
            alert["rule"]["investigation_guide"] = rule.guide
        return alert

    def reason(self, alert: dict) -> str:
        """One sentence: what, from where to where, and how it ended."""
        if "correlation" in alert:
            return _correlation_reason(alert)
        outcome = alert.get("event", {}).get("outcome") or "unknown"
        source, destination = _get(alert, "source", "ip"), _get(alert, "destination", "ip")
        if source is None or destination is None:
            return _event_reason(alert, outcome)
        text = (f"{_what(alert)} from {source} ({self.scope.of_endpoint(alert, 'source')}) "
                f"to {destination} ({self.scope.of_endpoint(alert, 'destination')})")
        host = _get(alert, "host", "name")
        if host:
            text += f" on host {host}"
        return f"{text}, {outcome}"


def _correlation_reason(alert: dict) -> str:
    """A correlation's group, its value against the condition, and its time span."""
    found = alert["correlation"]
    group = ", ".join(f"{name} {value}" for name, value in found["group"].items()) or "all events"
    value = found["value"]
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    return (f"{alert['rule']['name']}: {group}; {found['type']} {shown} ({found['condition']}) within "
            f"{found['timespan']}, {found['events_count']} events from {found['first_seen']} to {found['last_seen']}")


def _event_reason(alert: dict, outcome: str) -> str:
    """An event without both ends of a connection (a process start, a service install): the
    rule, the event and where it happened, the process and the account."""
    code, host = _get(alert, "event", "code"), _get(alert, "host", "name")
    parts = [alert["rule"]["name"]]
    where = " ".join(filter(None, (f"event {code}" if code is not None else "", f"on {host}" if host else "")))
    if where:
        parts.append(where)
    executable, user = _get(alert, "process", "executable"), _get(alert, "user", "name")
    if executable:
        parts.append(f"process {executable}")
    if user:
        parts.append(f"user {user}")
    if outcome != "unknown" or len(parts) == 1:
        parts.append(outcome)
    return ", ".join(parts)


def carried_data(alert: dict) -> bool:
    """Payload in both directions, or an answered RPC call (a dce_rpc record)."""
    if _get(alert, "rpc", "operation"):
        return True
    sent, received = _get(alert, "source", "bytes"), _get(alert, "destination", "bytes")
    return isinstance(sent, (int, float)) and isinstance(received, (int, float)) and sent > 0 and received > 0


def _what(alert: dict) -> str:
    transport = str(_get(alert, "network", "transport") or "ip").upper()
    port = _get(alert, "destination", "port")
    channel = f"{transport}/{port}" if port is not None else transport
    interface, operation = _get(alert, "rpc", "interface"), _get(alert, "rpc", "operation")
    if interface or operation:
        return f"DCE/RPC {' '.join(str(p) for p in (interface, operation) if p)} on {channel}"
    protocol = _get(alert, "network", "protocol")
    return f"{channel} ({protocol})" if protocol else channel


def _get(alert: dict, section: str, key: str) -> Any:
    part = alert.get(section)
    return part.get(key) if isinstance(part, dict) else None
