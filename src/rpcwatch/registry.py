"""Named implementations, imported only when chosen.

The command line offers every name a registry holds (argparse ``choices``) without
importing the implementations: Spark, rich or pySigma's backends would add seconds to a
start-up that needs none of them. Each entry is ``"module:attribute"``."""
from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
from typing import Any


class Registry:
    def __init__(self, kind: str, entries: Mapping[str, str]):
        self.kind = kind
        self._entries = dict(entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def register(self, name: str, target: str) -> None:
        self._entries[name] = target

    def load(self, name: str) -> Any:
        try:
            module, _, attribute = self._entries[name].partition(":")
        except KeyError:
            raise KeyError(f"no {self.kind} named {name!r} (known: {', '.join(self.names())})") from None
        return getattr(import_module(module), attribute)
