"""Alert enrichment, a stage after the run: ``reason``, ``risk_score`` and ``threat``
(MITRE ATT&CK) on every alert as it leaves the hunt (docs/alerts.md)."""
from __future__ import annotations

from collections.abc import Iterable, Iterator

from rpcwatch.alerts import Alert
from rpcwatch.config import Config
from rpcwatch.triage.mitre import threat_of
from rpcwatch.triage.risk import alert_risk
from rpcwatch.triage.scope import AddressScope


class AlertEnricher:
    """Call with an alert; returns the same alert, enriched."""

    def __init__(self, config: Config):
        self.scope = AddressScope(config)
        self._threats: dict[tuple[str, ...], dict | None] = {}

    def __call__(self, alert: Alert) -> Alert:
        alert.reason = self.reason(alert)
        alert.risk_score = alert_risk(alert.rule.level, alert.outcome, carried_data(alert))
        tags = alert.rule.tags
        if tags not in self._threats:
            self._threats[tags] = threat_of(tags)
        alert.threat = self._threats[tags]
        return alert

    def reason(self, alert: Alert) -> str:
        """One sentence: what, from where to where, and how it ended."""
        if alert.correlation is not None:
            return _correlation_reason(alert)
        outcome = alert.outcome or "unknown"
        source, destination = alert.source_ip, alert.destination_ip
        if source is None or destination is None:
            return _event_reason(alert, outcome)
        text = (f"{_what(alert)} from {source} ({self.scope.of_endpoint(alert, 'source')}) "
                f"to {destination} ({self.scope.of_endpoint(alert, 'destination')})")
        host = alert.role("host.name")
        if host:
            text += f" on host {host}"
        return f"{text}, {outcome}"


def enrich(alerts: Iterable[Alert], config: Config) -> Iterator[Alert]:
    """The alerts of a run, each enriched as it passes."""
    enricher = AlertEnricher(config)
    return map(enricher, alerts)


def _correlation_reason(alert: Alert) -> str:
    """A correlation's group, its value against the condition, and its time span."""
    found = alert.correlation or {}
    group = ", ".join(f"{name} {value}" for name, value in found["group"].items()) or "all events"
    value = found["value"]
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    return (f"{alert.rule.name}: {group}; {found['type']} {shown} ({found['condition']}) within "
            f"{found['timespan']}, {found['events_count']} events from {found['first_seen']} to {found['last_seen']}")


def _event_reason(alert: Alert, outcome: str) -> str:
    """An event without both ends of a connection (a process start, a service install): the
    rule, the event and where it happened, the process and the account."""
    code, host = alert.role("event.code"), alert.role("host.name")
    parts = [alert.rule.name]
    where = " ".join(filter(None, (f"event {code}" if code is not None else "", f"on {host}" if host else "")))
    if where:
        parts.append(where)
    executable, user = alert.role("process.executable"), alert.role("user.name")
    if executable:
        parts.append(f"process {executable}")
    if user:
        parts.append(f"user {user}")
    if outcome != "unknown" or len(parts) == 1:
        parts.append(outcome)
    return ", ".join(parts)


def carried_data(alert: Alert) -> bool:
    """Payload in both directions, or an answered RPC call (a dce_rpc record)."""
    if alert.role("rpc.operation"):
        return True
    sent, received = alert.role("source.bytes"), alert.role("destination.bytes")
    return isinstance(sent, (int, float)) and isinstance(received, (int, float)) and sent > 0 and received > 0


def _what(alert: Alert) -> str:
    transport = str(alert.transport or "ip").upper()
    port = alert.destination_port
    channel = f"{transport}/{port}" if port is not None else transport
    interface, operation = alert.role("rpc.interface"), alert.role("rpc.operation")
    if interface or operation:
        return f"DCE/RPC {' '.join(str(p) for p in (interface, operation) if p)} on {channel}"
    protocol = alert.role("network.protocol")
    return f"{channel} ({protocol})" if protocol else channel
