"""Where an address stands: internal, the internet, or neither (non-routable).

Decided by the configured networks (``Config.internal``, ``Config.non_routable``) and, when
the log has it, the sensor's own verdict (Zeek's ``local_orig``/``local_resp``), the same
way the bundled rules decide.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Literal

from rpcwatch.alerts import Alert
from rpcwatch.config import Config
from rpcwatch.networks import parse_address

Scope = Literal["internal", "internet", "non-routable", "unknown"]


class AddressScope:
    def __init__(self, config: Config):
        self._config = config
        self.of = lru_cache(maxsize=1 << 16)(self._of)

    def _of(self, address: str | None, sensor_says_local: bool | None = None) -> Scope:
        if address is None or parse_address(str(address)) is None:
            return "unknown"
        if sensor_says_local is True or str(address) in self._config.internal:
            return "internal"
        if str(address) in self._config.non_routable:
            return "non-routable"
        return "internet"

    def of_endpoint(self, alert: Alert, side: str) -> Scope:
        """The scope of an alert's ``source`` or ``destination``, with the sensor's verdict."""
        if side == "source":
            return self.of(alert.source_ip, alert.source_local)
        return self.of(alert.destination_ip, alert.destination_local)
