"""Where an address stands: internal, the internet, or neither (non-routable).

Decided by the configured networks (``Config.internal``, ``Config.non_routable``) and, when
the log has it, the sensor's own verdict (Zeek's ``local_orig``/``local_resp``), the same
way the bundled rules decide. Triage asks this for every distinct address of a run, so
membership is a binary search in the networks' merged key ranges (``networks.py``), not
a test per network.
"""
from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

import numpy as np

from rpcwatch.alerts import Alert
from rpcwatch.config import Config
from rpcwatch.networks import IPAddress, IPNetwork, address_key, merged_key_ranges, parse_address

#: where IPv4 addresses lie in the common key space (as IPv4-mapped IPv6)
_IPV4_LO = int(address_key(ipaddress.IPv4Address(0)), 16)
_IPV4_HI = _IPV4_LO + (1 << 32) - 1

Scope = Literal["internal", "internet", "non-routable", "unknown"]


class _Ranges:
    """Exact membership in a list of networks (IPv4 and IPv6 in one key space)."""

    def __init__(self, networks: Sequence[IPNetwork]):
        ranges = merged_key_ranges(networks)
        self._starts = [lo for lo, _ in ranges]
        self._ends = [hi for _, hi in ranges]
        # the same ranges cut to the IPv4 part of the key space, as IPv4 numbers
        ipv4 = [(max(int(lo, 16), _IPV4_LO) - _IPV4_LO, min(int(hi, 16), _IPV4_HI) - _IPV4_LO) for lo, hi in ranges
                if int(hi, 16) >= _IPV4_LO and int(lo, 16) <= _IPV4_HI]
        self._ipv4_starts = np.array([lo for lo, _ in ipv4], dtype=np.int64)
        self._ipv4_ends = np.array([hi for _, hi in ipv4], dtype=np.int64)

    def __contains__(self, address: IPAddress) -> bool:
        key = address_key(address)
        index = bisect.bisect_right(self._starts, key) - 1
        return index >= 0 and key <= self._ends[index]

    def holds_ipv4(self, numbers: np.ndarray) -> np.ndarray:
        """Membership of many IPv4 addresses given as numbers."""
        index = np.searchsorted(self._ipv4_starts, numbers, side="right") - 1
        return (index >= 0) & (numbers <= self._ipv4_ends[np.maximum(index, 0)]) if len(self._ipv4_ends) else \
            np.zeros(len(numbers), dtype=bool)


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

    def of_ipv4(self, numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`of_address` for many IPv4 addresses given as numbers: whether each is
        internal, and whether it is non-routable (neither: the internet)."""
        internal = self._internal.holds_ipv4(numbers)
        return internal, ~internal & self._non_routable.holds_ipv4(numbers)

    def of_endpoint(self, alert: Alert, side: str) -> Scope:
        """The scope of an alert's ``source`` or ``destination``, with the sensor's verdict."""
        if side == "source":
            return self.of(alert.source_ip, alert.source_local)
        return self.of(alert.destination_ip, alert.destination_local)
