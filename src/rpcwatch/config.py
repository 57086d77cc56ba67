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
```
Looked up in this order: ``--config PATH``, ``./rpcwatch.toml``, ``$XDG_CONFIG_HOME/rpcwatch/rpcwatch.toml``
(``~/.config/...``).
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

from rpcwatch.context import LimitError, Limits
from rpcwatch.networks import DEFAULT_INTERNAL, DEFAULT_NON_ROUTABLE, NetworkError, NetworkSet

CONFIG_NAME = "rpcwatch.toml"


class ConfigError(Exception):
    """The configuration file or a command-line setting is unusable."""


@dataclass(frozen=True)
class Config:
    internal: NetworkSet = field(default_factory=lambda: NetworkSet.parse(DEFAULT_INTERNAL))
    non_routable: NetworkSet = field(default_factory=lambda: NetworkSet.parse(DEFAULT_NON_ROUTABLE))
    placeholders: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    source: str = "defaults"

    def with_internal(self, cidrs: Sequence[str]) -> "Config":
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
    return config


def _networks(values, where: str) -> NetworkSet:
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise ConfigError(f"{where}: expected a non-empty list of CIDR networks")
    try:
        return NetworkSet.parse([str(v) for v in values])
    except NetworkError as exc:
        raise ConfigError(f"{where}: {exc}") from None
