"""Suppression: one alert per key and time window, standing for all it folds.

Windows are per key and half-open: the first alert of a key opens ``[t, t + window)``;
an alert of the same key at ``t + window`` or later opens the next one. Alerts are
ordered by time first, so the result does not depend on input order. Without a window,
each key keeps one alert for the whole run. The rule is always part of the key.
"""
from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from rpcwatch.alerts import Alert, is_alert_field, iso_from_micros

MAX_FIELDS = 3
_UNITS = {"ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


class SuppressionError(ValueError):
    """A suppression option that cannot be used (exit code 2)."""


def parse_duration(text: str) -> int:
    """Microseconds of ``90s``, ``5m``, ``1h30m``, ``500ms``, ``2d``; a bare number is seconds."""
    compact = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", compact):
        compact += "s"
    parts = _PART.findall(compact)
    if not parts or "".join(number + unit for number, unit in parts) != compact:
        raise SuppressionError(f"--window {text!r}: expected a duration such as 30s, 5m, 1h30m or 2d")
    micros = round(sum(float(number) * _UNITS[unit] for number, unit in parts))
    if micros <= 0:
        raise SuppressionError(f"--window {text!r}: must be longer than zero")
    return micros


@dataclass(frozen=True)
class Suppression:
    fields: tuple[str, ...]
    #: window length in microseconds; None: one window for the whole run
    window: int | None = None
    window_text: str | None = None

    @classmethod
    def parse(cls, fields: str, window: str | None) -> Suppression:
        names = tuple(name.strip() for name in fields.split(","))
        if not all(names):
            raise SuppressionError(f"--suppress {fields!r}: empty field name")
        if len(names) > MAX_FIELDS:
            raise SuppressionError(f"--suppress takes at most {MAX_FIELDS} fields, got {len(names)}")
        unknown = [name for name in names if not is_alert_field(name)]
        if unknown:  # a misspelt field would be null in every alert and fold them all into one
            raise SuppressionError(f"--suppress: no alert has the field(s) {', '.join(map(repr, unknown))} "
                                   "(fields are named as in the JSON alerts: source.ip, destination.ip, "
                                   "destination.port, rule.name, original.<native field>, ...)")
        return cls(names, parse_duration(window) if window else None, window)

    def key(self, alert: Alert) -> tuple:
        return (alert.rule.id or alert.rule.name,) + tuple(_hashable(alert.value(f)) for f in self.fields)


def suppress(alerts: Iterable[Alert], spec: Suppression) -> list[Alert]:
    """The first alert of each key and window, with ``count``, ``first_seen``, ``last_seen``
    and ``suppression`` (fields, values, window, the record ids of every folded alert)."""
    by_key: dict[tuple, list[tuple[int | None, int, Alert]]] = defaultdict(list)
    for order, alert in enumerate(alerts):
        by_key[spec.key(alert)].append((alert.micros, order, alert))
    shown = []
    for members in by_key.values():
        members.sort(key=lambda m: (m[0] is None, m[0] or 0, m[1]))
        for window in _windows(members, spec.window):
            shown.append((window[0][0], window[0][1], _folded(window, spec)))
    shown.sort(key=lambda s: (s[0] is None, s[0] or 0, s[1]))
    return [alert for _, _, alert in shown]


def _windows(members: list[tuple[int | None, int, Alert]], length: int | None) -> Iterable[list]:
    current: list = []
    for member in members:
        if current and _opens_new_window(current[0][0], member[0], length):
            yield current
            current = []
        current.append(member)
    if current:
        yield current


def _opens_new_window(start: int | None, time: int | None, length: int | None) -> bool:
    if length is None or start is None or time is None:
        return start is not None and time is None  # undated alerts share one window per key
    return time >= start + length


def _folded(window: list[tuple[int | None, int, Alert]], spec: Suppression) -> Alert:
    first = window[0][2]
    times = [t for t, _, _ in window if t is not None]
    return replace(first, folded={
        "count": len(window),
        "first_seen": iso_from_micros(min(times)) if times else None,
        "last_seen": iso_from_micros(max(times)) if times else None,
        "suppression": {
            "fields": list(spec.fields),
            "values": [first.value(f) for f in spec.fields],
            "window": spec.window_text,
            "record_ids": [alert.record_id for _, _, alert in window],
        },
    })


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value
