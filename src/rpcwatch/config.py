"""Settings from ``rpcwatch.toml`` and the command line (the command line wins).

```toml
[networks]
# the organisation's own address space; replaces the default list
internal = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "198.51.100.0/24"]
# sources that are never the internet; replaces the default list (rarely needed)
# non_routable = [...]

[placeholders]
# values for Sigma's |expand placeholders, e.g. %Administrators%
Administrators = ["CORP\\Domain Admins", "CORP\\Enterprise Admins"]

[limits]
# what no input can make rpcwatch exceed (docs/reliability.md)
max_line_bytes = 8388608

[watch]          # rpcwatch watch (docs/live.md)
state = "/var/lib/rpcwatch"
poll = 0.25
spool_limit_mb = 256

[[sinks]]        # one table per sink: its URL and the sink's options (secrets too)
url = "splunk-hec+https://splunk.example:8088"
token_env = "HEC_TOKEN"
```
Looked up in this order: ``--config PATH``, ``./rpcwatch.toml``, ``$XDG_CONFIG_HOME/rpcwatch/rpcwatch.toml``
(``~/.config/...``).
"""
from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rpcwatch.context import LimitError, Limits
from rpcwatch.networks import DEFAULT_INTERNAL, DEFAULT_NON_ROUTABLE, NetworkError, NetworkSet

CONFIG_NAME = "rpcwatch.toml"


class ConfigError(Exception):
    """The configuration file or a command-line setting is unusable."""


@dataclass(frozen=True)
class WatchSettings:
    """``[watch]``: live mode's settings (the command line's --state and --poll win)."""

    state: str | None = None
    poll: float = 0.25
    spool_limit_mb: float = 256.0
    #: longest pause between two tries of a sink that failed
    retry_max: float = 30.0
    #: EVTX and pcap files are read when unchanged this long
    settle: float = 5.0
    #: seconds a log's records may come out of time order (docs/live.md: correlations)
    correlation_lateness: float = 300.0


@dataclass(frozen=True)
class Config:
    internal: NetworkSet = field(default_factory=lambda: NetworkSet.parse(DEFAULT_INTERNAL))
    non_routable: NetworkSet = field(default_factory=lambda: NetworkSet.parse(DEFAULT_NON_ROUTABLE))
    placeholders: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    #: ``[[sinks]]``: each a mapping with ``url`` and the sink's options (checked by the sink)
    sinks: tuple[Mapping[str, object], ...] = ()
    watch: WatchSettings = field(default_factory=WatchSettings)
    source: str = "defaults"

    def with_internal(self, cidrs: Sequence[str]) -> Config:
        """``--internal`` given on the command line replaces the internal list."""
        if not cidrs:
            return self
        return replace(self, internal=_networks(cidrs, "--internal"))


def default_config_path() -> Path | None:
    for candidate in (Path.cwd() / CONFIG_NAME,
                      Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "rpcwatch" / CONFIG_NAME):
        if candidate.is_file():
            return candidate
    return None


def load_config(path: str | Path | None = None) -> Config:
    """Read the configuration file (``path``, else the first one found), or the defaults."""
    chosen = Path(path) if path else default_config_path()
    if chosen is None:
        return Config()
    try:
        data = tomllib.loads(chosen.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{chosen}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{chosen}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{chosen}: not valid TOML ({exc})") from None
    except RecursionError:
        raise ConfigError(f"{chosen}: arrays or tables nested too deeply to read") from None
    return _from_mapping(data, str(chosen))


def _from_mapping(data: Mapping, source: str) -> Config:
    config = Config(source=source)
    networks = data.get("networks", {})
    if not isinstance(networks, Mapping):
        raise ConfigError(f"{source}: [networks] must be a table")
    unknown = set(networks) - {"internal", "non_routable"}
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) in [networks]: {', '.join(sorted(unknown))}")
    if "internal" in networks:
        config = replace(config, internal=_networks(networks["internal"], f"{source}: networks.internal"))
    if "non_routable" in networks:
        config = replace(config, non_routable=_networks(networks["non_routable"],
                                                        f"{source}: networks.non_routable"))
    placeholders = data.get("placeholders", {})
    if not isinstance(placeholders, Mapping) or not all(
            isinstance(v, (str, list)) for v in placeholders.values()):
        raise ConfigError(f"{source}: [placeholders] maps names to a string or a list of strings")
    config = replace(config, placeholders={
        name: tuple([value] if isinstance(value, str) else map(str, value))
        for name, value in placeholders.items()})
    limits = data.get("limits", {})
    if not isinstance(limits, Mapping):
        raise ConfigError(f"{source}: [limits] must be a table")
    try:
        config = replace(config, limits=Limits.from_mapping(dict(limits), f"{source}: [limits]"))
    except LimitError as exc:
        raise ConfigError(str(exc)) from None
    return replace(config, sinks=_sinks(data.get("sinks", []), source), watch=_watch(data.get("watch", {}), source))


def _sinks(tables, source: str) -> tuple[Mapping[str, object], ...]:
    if not isinstance(tables, list) or not all(isinstance(t, Mapping) and isinstance(t.get("url"), str)
                                               for t in tables):
        raise ConfigError(f"{source}: each [[sinks]] table needs a url (a string)")
    return tuple(dict(table) for table in tables)


def _watch(table, source: str) -> WatchSettings:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{source}: [watch] must be a table")
    numbers = {"poll", "spool_limit_mb", "retry_max", "settle", "correlation_lateness"}
    unknown = set(table) - numbers - {"state"}
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) in [watch]: {', '.join(sorted(unknown))}")
    for key in numbers & set(table):
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"{source}: watch.{key} must be a positive number")
    if "state" in table and not isinstance(table["state"], str):
        raise ConfigError(f"{source}: watch.state must be a directory name")
    checked: dict[str, Any] = {key: float(value) if key in numbers else value for key, value in table.items()}
    return WatchSettings(**checked)


def _networks(values, where: str) -> NetworkSet:
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise ConfigError(f"{where}: expected a non-empty list of CIDR networks")
    try:
        return NetworkSet.parse([str(v) for v in values])
    except NetworkError as exc:
        raise ConfigError(f"{where}: {exc}") from None
