"""Where an address stands: internal, the internet, or neither (non-routable).

Decided by the configured networks (``Config.internal``, ``Config.non_routable``) and, when
the log has it, the sensor's own verdict (Zeek's ``local_orig``/``local_resp``), the same
way the bundled rules decide. Triage asks this for every distinct address of a run, so
membership is a binary search in the networks' merged key ranges (``networks.py``), not
a test per network.
"""
from __future__ import annotations

import bisect
from functools import lru_cache
from typing import Literal, Sequence

from rpcwatch.alerts import Alert
from rpcwatch.config import Config
from rpcwatch.networks import IPAddress, IPNetwork, address_key, merged_key_ranges, parse_address

Scope = Literal["internal", "internet", "non-routable", "unknown"]


class _Ranges:
    """Exact membership in a list of networks (IPv4 and IPv6 in one key space)."""

    def __init__(self, networks: Sequence[IPNetwork]):
        ranges = merged_key_ranges(networks)
        self._starts = [lo for lo, _ in ranges]
        self._ends = [hi for _, hi in ranges]

    def __contains__(self, address: IPAddress) -> bool:
        key = address_key(address)
        index = bisect.bisect_right(self._starts, key) - 1
        return index >= 0 and key <= self._ends[index]


class AddressScope:
    def __init__(self, config: Config):
        self._internal = _Ranges(config.internal.networks)
        self._non_routable = _Ranges(config.non_routable.networks)
        self.of = lru_cache(maxsize=1 << 16)(self._of)

    def _of(self, address: str | None, sensor_says_local: bool | None = None) -> Scope:
        parsed = parse_address(str(address)) if address is not None else None
        if parsed is None:
            return "unknown"
        if sensor_says_local is True:
            return "internal"
        return self.of_address(parsed)

    def of_address(self, address: IPAddress) -> Scope:
        """The scope of a parsed address by the configured networks alone."""
        if address in self._internal:
            return "internal"
        if address in self._non_routable:
            return "non-routable"
        return "internet"

    def of_endpoint(self, alert: Alert, side: str) -> Scope:
        """The scope of an alert's ``source`` or ``destination``, with the sensor's verdict."""
        if side == "source":
            return self.of(alert.source_ip, alert.source_local)
        return self.of(alert.destination_ip, alert.destination_local)
